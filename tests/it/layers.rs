//! The floors of the house stay true: a module imports only from the floors below
//! its own (docs/ARCHITECTURE.md), never from above and never from a neighbour on
//! the same floor. Read from the source: every `crate::name` outside comments.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and its floor, lowest first. Modules on one
/// floor may not import each other. A new module must be added here.
const FLOORS: &[(&str, u32)] = &[
    ("wire", 0),
    ("sim", 0),
    ("engine", 1),
    ("views", 2),
    ("sandbox", 3),
    ("plugins", 4),
    ("policy", 5),
    ("delegate", 6),
    ("lua", 7),
    ("app", 8),
    ("cli", 9),
    ("mcp", 9),
];

fn floor(module: &str) -> Option<u32> {
    FLOORS.iter().find(|(m, _)| *m == module).map(|(_, f)| *f)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a file names as `crate::x`, comments left out.
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let name: String = rest[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
            rest = &rest[i + 7..];
        }
    }
    found
}

/// Every import that goes up a floor or sideways: `(file, module it imports)`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let mut parts = rel.components();
        let first = parts
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .to_string();
        if parts.next().is_none() && matches!(first.as_str(), "lib.rs" | "main.rs") {
            continue; // the crate root and the entry point sit above every floor
        }
        if first == "bin" {
            continue;
        }
        let module = first.trim_end_matches(".rs").to_string();
        let Some(own) = floor(&module) else {
            bad.push(format!(
                "{}: module `{module}` has no floor in tests/layers.rs",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for used in imports(&text) {
            if used == module {
                continue;
            }
            match floor(&used) {
                Some(f) if f < own => {}
                Some(f) => bad.push(format!(
                    "{}: `{module}` (floor {own}) imports `crate::{used}` (floor {f})",
                    rel.display()
                )),
                None => {}
            }
        }
    }
    bad
}

#[test]
fn no_module_imports_from_its_own_floor_or_above() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(
        bad.is_empty(),
        "imports that go up or sideways:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_checker_catches_an_upward_and_a_sideways_import() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("engine")).unwrap();
    std::fs::create_dir_all(src.join("cli")).unwrap();
    std::fs::write(
        src.join("engine/mod.rs"),
        "// crate::lua in a comment is fine\nuse crate::wire::x;\nfn f() { crate::lua::host(); }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("cli/mod.rs"),
        "use crate::mcp::run;\nuse crate::app::App;\n",
    )
    .unwrap();
    std::fs::write(src.join("extra.rs"), "").unwrap();
    let bad = violations(src);
    assert_eq!(bad.len(), 3, "{bad:#?}");
    assert!(
        bad[0].contains("`cli` (floor 9) imports `crate::mcp`"),
        "{bad:#?}"
    );
    assert!(
        bad[1].contains("`engine` (floor 1) imports `crate::lua`"),
        "{bad:#?}"
    );
    assert!(bad[2].contains("module `extra` has no floor"), "{bad:#?}");
}

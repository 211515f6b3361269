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
    ("notify", 4),
    ("runners", 4),
    ("policy", 5),
    ("host", 6),
    ("delegate", 7),
    ("lua", 8),
    ("app", 9),
    ("cli", 10),
    ("mcp", 10),
    ("web", 11),
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

/// A line without its `//` comment (a `//` inside a string literal is kept).
fn code_of(line: &str) -> &str {
    let mut in_string = false;
    let mut escaped = false;
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The first path segment of each item after a `prefix` (`crate::x::...`, and each
/// item of a group `crate::{x, y::z}`).
fn after(code: &str, prefix: &str, found: &mut BTreeSet<String>) {
    let word = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
        // `super::super::x` is read by the longer prefix; skip the shorter match.
        if rest.starts_with("super::") {
            continue;
        }
        let names: Vec<String> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or("")
                .split(',')
                .map(word)
                .collect(),
            None => vec![word(rest)],
        };
        found.extend(names.into_iter().filter(|n| !n.is_empty() && n != "self"));
    }
}

/// The top-level modules a file names: `crate::x`, `crate::{x, y}`, and `super::`
/// paths that climb to the crate root (`depth` levels below it), comments left out.
fn imports(text: &str, depth: usize) -> BTreeSet<String> {
    let to_root = "super::".repeat(depth);
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = code_of(line);
        after(code, "crate::", &mut found);
        if depth > 0 {
            let mut climbed = BTreeSet::new();
            after(code, &to_root, &mut climbed);
            // Only a path that starts there: `super::super::x`, not `super::super::super::x`.
            found.extend(climbed);
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
                "{}: module `{module}` has no floor in tests/it/layers.rs",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        // How many `super::` reach the crate root from this file.
        let depth = rel.components().count() - usize::from(file.ends_with("mod.rs"));
        for used in imports(&text, depth) {
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
        "// crate::lua in a comment is fine\nuse crate::wire::x;\nfn f() { crate::lua::host(); }\n\
         const URL: &str = \"http://x\"; use crate::{wire, delegate::D};\n",
    )
    .unwrap();
    std::fs::write(
        src.join("cli/mod.rs"),
        "use crate::mcp::run;\nuse crate::app::App;\n",
    )
    .unwrap();
    std::fs::write(src.join("extra.rs"), "").unwrap();
    std::fs::write(src.join("views.rs"), "use super::app::App;").unwrap();
    std::fs::write(
        src.join("engine/x.rs"),
        "use super::super::policy::P;\nuse super::y;",
    )
    .unwrap();
    let bad = violations(src);
    let expected = [
        "cli/mod.rs: `cli` (floor 10) imports `crate::mcp`",
        "engine/mod.rs: `engine` (floor 1) imports `crate::delegate`",
        "engine/mod.rs: `engine` (floor 1) imports `crate::lua`",
        "engine/x.rs: `engine` (floor 1) imports `crate::policy`",
        "extra.rs: module `extra` has no floor",
        "views.rs: `views` (floor 2) imports `crate::app`",
    ];
    assert_eq!(bad.len(), expected.len(), "{bad:#?}");
    for (found, want) in bad.iter().zip(expected) {
        assert!(found.contains(want), "{found} is not {want}");
    }
}

/// The sibling files a file of `folder` names: `super::x`, `super::{x, y}`,
/// `crate::folder::x`, where `x.rs` is in the same folder.
fn siblings(folder: &Path, name: &str, own: &str, text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut add = |word: &str| {
        let word = word.trim().split("::").next().unwrap_or("").trim();
        if !word.is_empty() && word != own && folder.join(format!("{word}.rs")).is_file() {
            found.insert(word.to_string());
        }
    };
    let path = format!("crate::{name}::");
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for prefix in ["super::", path.as_str()] {
            let mut rest = code;
            while let Some(i) = rest.find(prefix) {
                rest = &rest[i + prefix.len()..];
                if let Some(list) = rest.strip_prefix('{') {
                    list.split('}')
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .for_each(&mut add);
                } else {
                    let word: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    add(&word);
                }
            }
        }
    }
    found
}

/// Cycles among the files of each folder of `src` (`mod.rs` left out: it names
/// them all), each as `folder: a -> b -> a`.
fn file_cycles(src: &Path) -> Vec<String> {
    let mut cycles = Vec::new();
    let mut folders: Vec<PathBuf> = std::fs::read_dir(src)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    for folder in folders {
        let name = folder.file_name().unwrap().to_string_lossy().to_string();
        let mut graph = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(&folder).unwrap().flatten() {
            let path = entry.path();
            let Some(stem) = path.file_stem().map(|s| s.to_string_lossy().to_string()) else {
                continue;
            };
            if path.extension().is_none_or(|e| e != "rs") || stem == "mod" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            graph.insert(stem.clone(), siblings(&folder, &name, &stem, &text));
        }
        // Depth-first search from each file; a file met again on the path is a cycle.
        fn visit(
            node: &str,
            graph: &std::collections::BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(i) = path.iter().position(|p| p == node) {
                let mut cycle = path[i..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            if !done.insert(node.to_string()) {
                return None;
            }
            path.push(node.to_string());
            for next in graph.get(node).into_iter().flatten() {
                if let Some(c) = visit(next, graph, path, done) {
                    return Some(c);
                }
            }
            path.pop();
            None
        }
        let mut done = BTreeSet::new();
        for start in graph.keys() {
            if let Some(c) = visit(start, &graph, &mut Vec::new(), &mut done) {
                cycles.push(format!("{name}: {}", c.join(" -> ")));
            }
        }
    }
    cycles
}

#[test]
fn no_two_files_of_a_folder_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let cycles = file_cycles(&src);
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_checker_catches_a_cycle_between_two_files() {
    let dir = tempfile::tempdir().unwrap();
    let lua = dir.path().join("lua");
    std::fs::create_dir_all(&lua).unwrap();
    std::fs::write(lua.join("mod.rs"), "pub mod a; pub mod b; pub mod c;").unwrap();
    std::fs::write(lua.join("a.rs"), "use super::{b, c::X};").unwrap();
    std::fs::write(lua.join("b.rs"), "// super::a in a comment\n").unwrap();
    std::fs::write(lua.join("c.rs"), "fn f() { crate::lua::a::g(); }").unwrap();
    assert_eq!(
        file_cycles(dir.path()),
        vec!["lua: a -> c -> a".to_string()]
    );
}

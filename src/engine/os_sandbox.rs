//! Protected paths held by the operating system for the shell commands of a
//! guarded session. Claude Code runs every Bash command through
//! `CLAUDE_CODE_SHELL_PREFIX` when set (2.1.197 and 2.1.332 alike: the prefix gets
//! the command line as its argument); cms points it at a small script that runs the
//! command under bubblewrap (`bwrap`) with the whole filesystem as it is, except
//! the protected paths, bound read-only. No way of writing — an interpreter, a
//! computed path, `git` plumbing, an archive, a background job that writes after
//! the turn — gets past a read-only mount. The commands run without the
//! capabilities that could undo mounts (`umount`, a remount, `nsenter` into
//! another mount namespace), root or not, and in their own pid namespace with
//! their own `/proc` (so `/proc/PID/root` of a process outside cannot lead back
//! to the unprotected filesystem) and a minimal `/dev` (no block devices). A consequence: a job a command leaves running
//! in the background ends with the command (Claude Code's `run_in_background`
//! keeps its command, and so its jobs, alive).
//!
//! What is held: every protected file or folder that exists when the session
//! starts (in the work dir, found by a bounded walk; `.git`, `.cms`, `.claude`,
//! `.mcp.json` in the folders above it; the given absolute paths), and protected
//! names that do not exist yet at the top of the work dir (`.env`, `.mcp.json`,
//! `.cms/`, `.claude/`), which the script holds with an empty placeholder, bound
//! read-only for the command's life and removed afterwards if still empty.
//! Not held: a protected name created deeper later by a glob entry (`src/x.pem`);
//! the safety policy's own check still sees those.
//!
//! Linux only, and only where bubblewrap can make mounts (not in most
//! containers); [`available`] probes once.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Longest walk of the work dir looking for protected paths.
const MAX_ENTRIES: usize = 50_000;
const MAX_DEPTH: usize = 12;
/// Protected names held by a placeholder when missing at the top of the work dir
/// (`(name, is_dir)`), if the protected-path list has them.
const PLACEHOLDERS: &[(&str, bool)] = &[
    (".env", false),
    (".mcp.json", false),
    (".cms", true),
    (".claude", true),
];
/// Capabilities a root session's commands keep (ordinary file work as root); all
/// others, `CAP_SYS_ADMIN` (mounts) and `CAP_SYS_PTRACE` first, are dropped.
const KEPT_CAPS: &[&str] = &[
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_CHOWN",
    "CAP_FSETID",
    "CAP_KILL",
];
/// Folders not worth walking into (build output, dependencies).
const SKIP: &[&str] = &["target", "dist", "build", ".venv", "__pycache__"];

/// What the sandbox of one session protects.
#[derive(Debug, Clone, Default)]
pub struct SandboxSpec {
    /// The session's working directory.
    pub work_dir: PathBuf,
    /// Protected-path entries as `protected_paths.lua` writes them (`.env`,
    /// `.env.*`, `.git/`, `config/prod.yml`).
    pub entries: Vec<String>,
    /// Absolute files and folders held read-only if they exist.
    pub roots: Vec<PathBuf>,
    /// Where the prefix script is written (a protected folder).
    pub script_dir: PathBuf,
}

/// The bubblewrap executable, if it can sandbox here (probed once). Set
/// `CMS_OS_SANDBOX=off` to do without it.
pub fn available() -> Option<PathBuf> {
    if std::env::var("CMS_OS_SANDBOX").is_ok_and(|v| v == "off" || v == "0") {
        return None;
    }
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let bwrap = crate::engine::process::resolve_binary(Path::new("bwrap")).ok()?;
            let ok = std::process::Command::new(&bwrap)
                .args([
                    "--dev-bind",
                    "/",
                    "/",
                    "--ro-bind",
                    "/",
                    "/",
                    "--",
                    "/bin/true",
                ])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                tracing::warn!(
                    "bubblewrap is installed but cannot sandbox here (no mount namespaces?)"
                );
            }
            ok.then_some(bwrap)
        })
        .clone()
}

/// Write the prefix script for `spec` and return its path, or None when there is
/// no OS sandbox here (or the script cannot be written).
pub fn shell_prefix(spec: &SandboxSpec) -> Option<String> {
    let bwrap = available()?;
    let (held, placeholders) = protected_now(spec);
    let script = render(&bwrap, &held, &placeholders);
    let name = format!("{:016x}.sh", fxhash(script.as_bytes()));
    let path = spec.script_dir.join(name);
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&spec.script_dir)?;
        if !path.exists() {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, &script)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(())
    };
    match write() {
        Ok(()) => Some(path.display().to_string()),
        Err(e) => {
            tracing::warn!("cannot write the OS sandbox script: {e}");
            None
        }
    }
}

/// A stable, dependency-free hash for naming scripts by content.
fn fxhash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn render(bwrap: &Path, held: &[PathBuf], placeholders: &[(PathBuf, bool)]) -> String {
    let mut s = String::from(
        "#!/bin/sh\n# cms: run a guarded session's shell command with its protected paths read-only.\ncmd=$1\n",
    );
    // Placeholders for missing protected names: files made by the shell itself,
    // folders by one `mkdir`; one `rm` takes away afterwards what this command
    // made and left empty. (Few processes: this runs for every command.)
    for (i, (p, _)) in placeholders.iter().enumerate() {
        let q = quote(&p.display().to_string());
        s.push_str(&format!("c{i}=0; [ -e {q} ] || [ -L {q} ] || c{i}=1\n"));
    }
    s.push_str("set --\n");
    for (i, (p, dir)) in placeholders.iter().enumerate() {
        let q = quote(&p.display().to_string());
        if *dir {
            s.push_str(&format!("[ \"$c{i}\" = 1 ] && set -- \"$@\" {q}\n"));
        } else {
            s.push_str(&format!(
                "if [ \"$c{i}\" = 1 ]; then : > {q} 2>/dev/null || c{i}=0; fi\n"
            ));
        }
    }
    s.push_str("[ $# -gt 0 ] && mkdir \"$@\" 2>/dev/null\n");
    // No capability to undo the mounts (`umount`, `mount -o remount,rw`, `nsenter`
    // into another mount namespace): as root, bubblewrap would otherwise keep them.
    // Its own pid namespace and /proc: `/proc/PID/root` of a process outside would
    // lead back into the unprotected mount namespace. A minimal /dev: no block
    // devices to edit a filesystem under its mounts (`debugfs -w`).
    s.push_str(&format!(
        "{} --dev-bind / / --unshare-pid --proc /proc --dev /dev --cap-drop ALL{}",
        quote(&bwrap.display().to_string()),
        KEPT_CAPS
            .iter()
            .map(|c| format!(" --cap-add {c}"))
            .collect::<String>()
    ));
    for p in held.iter().chain(placeholders.iter().map(|(p, _)| p)) {
        let q = quote(&p.display().to_string());
        s.push_str(&format!(" \\\n  --ro-bind-try {q} {q}"));
    }
    s.push_str(" \\\n  -- /bin/bash -c \"$cmd\"\nrc=$?\nset --\n");
    for (i, (p, dir)) in placeholders.iter().enumerate() {
        let q = quote(&p.display().to_string());
        let still_empty = if *dir {
            String::new()
        } else {
            format!(" && [ ! -s {q} ]")
        };
        s.push_str(&format!(
            "[ \"$c{i}\" = 1 ]{still_empty} && set -- \"$@\" {q}\n"
        ));
    }
    s.push_str("[ $# -gt 0 ] && rm -fd \"$@\" 2>/dev/null\nexit $rc\n");
    s
}

/// One protected-path entry, prepared for matching names.
struct Entry {
    name: String,
    dir: bool,
    glob: bool,
    path: bool,
}

fn prepare(entries: &[String]) -> Vec<Entry> {
    let mut all: Vec<String> = entries.to_vec();
    for mandatory in [".git/", ".cms/", ".claude/", ".mcp.json", ".claude.json"] {
        all.push(mandatory.into());
    }
    all.iter()
        .map(|e| {
            let dir = e.ends_with('/');
            let name = e.trim_end_matches('/').to_lowercase();
            Entry {
                glob: name.contains(['*', '?', '[']),
                path: !dir && name.contains('/'),
                dir,
                name,
            }
        })
        .collect()
}

/// A glob with `*` and `?` (and `[` taken literally), on lower-case names.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], name) || (!name.is_empty() && glob_match(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

fn name_hits(entries: &[Entry], name: &str, is_dir: bool) -> bool {
    let lower = name.to_lowercase();
    entries.iter().any(|e| {
        if e.path || (e.dir && !is_dir) {
            return false;
        }
        if e.glob {
            glob_match(e.name.as_bytes(), lower.as_bytes())
        } else {
            e.name == lower
        }
    })
}

/// The protected paths to hold read-only now, and the placeholders to make for
/// protected names missing at the top of the work dir (`(path, is_dir)`).
pub fn protected_now(spec: &SandboxSpec) -> (Vec<PathBuf>, Vec<(PathBuf, bool)>) {
    let entries = prepare(&spec.entries);
    let mut held: Vec<PathBuf> = spec.roots.iter().filter(|p| p.exists()).cloned().collect();
    let work = &spec.work_dir;
    // Relative path entries (`config/prod.yml`).
    for e in entries.iter().filter(|e| e.path && !e.glob) {
        let p = work.join(&e.name);
        if p.exists() {
            held.push(p);
        }
    }
    // The folders above the work dir: their git, cms and Claude Code config.
    for dir in work.ancestors().skip(1) {
        for name in [".git", ".cms", ".claude", ".mcp.json"] {
            let p = dir.join(name);
            if p.symlink_metadata().is_ok() {
                held.push(p);
            }
        }
    }
    // A bounded walk of the work dir.
    let mut seen = 0usize;
    let mut pending = vec![(work.clone(), 0usize)];
    while let Some((dir, depth)) = pending.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in read.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                tracing::warn!(
                    "the work dir has more than {MAX_ENTRIES} entries: protected paths deeper in it are left to the safety policy"
                );
                pending.clear();
                break;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = kind.is_dir();
            if name_hits(&entries, &name, is_dir) {
                held.push(entry.path());
            } else if is_dir && depth < MAX_DEPTH && !SKIP.contains(&name.as_str()) {
                pending.push((entry.path(), depth + 1));
            }
        }
    }
    // Protected names that do not exist yet at the top of the work dir: the
    // configuration a session would plant (each costs the command a little).
    let mut placeholders = Vec::new();
    for (name, dir) in PLACEHOLDERS {
        let listed = entries
            .iter()
            .any(|e| !e.glob && !e.path && e.name == *name);
        let p = work.join(name);
        if listed && p.symlink_metadata().is_err() {
            placeholders.push((p, *dir));
        }
    }
    held.sort();
    held.dedup();
    (held, placeholders)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_protected_paths_and_placeholders() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("w");
        std::fs::create_dir_all(w.join(".git/hooks")).unwrap();
        std::fs::create_dir_all(w.join("src/certs")).unwrap();
        std::fs::write(w.join("src/certs/server.pem"), "x").unwrap();
        std::fs::write(w.join(".env.local"), "x").unwrap();
        std::fs::write(w.join("src/main.rs"), "x").unwrap();
        let spec = SandboxSpec {
            work_dir: w.clone(),
            entries: vec![
                ".env".into(),
                ".env.*".into(),
                "*.pem".into(),
                ".git/".into(),
            ],
            roots: vec![dir.path().join("missing")],
            script_dir: dir.path().join("s"),
        };
        let (held, placeholders) = protected_now(&spec);
        assert!(held.contains(&w.join(".git")), "{held:?}");
        assert!(held.contains(&w.join("src/certs/server.pem")), "{held:?}");
        assert!(held.contains(&w.join(".env.local")), "{held:?}");
        assert!(!held.iter().any(|p| p.ends_with("main.rs")));
        assert!(!held.contains(&dir.path().join("missing")));
        assert!(
            placeholders.contains(&(w.join(".env"), false)),
            "{placeholders:?}"
        );
        assert!(
            placeholders.contains(&(w.join(".cms"), true)),
            "{placeholders:?}"
        );
        assert!(glob_match(b".env.*", b".env.prod"));
        assert!(!glob_match(b".env.*", b".envrc"));
    }

    #[test]
    fn the_prefix_holds_protected_paths_and_leaves_no_placeholder() {
        if available().is_none() {
            eprintln!("skipping: no bubblewrap here");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("w");
        std::fs::create_dir_all(w.join(".git")).unwrap();
        std::fs::write(w.join(".git/config"), "[core]\n").unwrap();
        let spec = SandboxSpec {
            work_dir: w.clone(),
            entries: vec![".env".into(), ".git/".into()],
            roots: Vec::new(),
            script_dir: dir.path().join("s"),
        };
        let prefix = shell_prefix(&spec).unwrap();
        let out = std::process::Command::new(&prefix)
            .arg("echo x > .env; echo x >> .git/config; mkdir .cms/x; echo ok > made.txt; exit 3")
            .current_dir(&w)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "the command's own exit code");
        assert!(w.join("made.txt").exists());
        assert_eq!(
            std::fs::read_to_string(w.join(".git/config")).unwrap(),
            "[core]\n"
        );
        for p in [".env", ".cms", ".claude", ".mcp.json"] {
            assert!(!w.join(p).exists(), "{p} left behind");
        }
    }
}

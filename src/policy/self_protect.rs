//! What no guarded session may change, whatever its preset and whatever the Lua
//! scripts say: cms's own configuration (`.cms/`, the user's config dir,
//! `$CMS_HOME`), Claude Code's (`.claude/`, `~/.claude/`, `~/.claude.json`,
//! `.mcp.json`, `$CLAUDE_CONFIG_DIR`) and git's internals (`.git/`). A session that
//! could write these could rewrite the policy that guards it, or the settings and
//! hooks of the CLI it runs in. Checked here, in Rust, before any script runs, so
//! an edited `protected_paths.lua` cannot drop them by accident; the operating
//! system layer ([`crate::engine::os_sandbox`]) holds them read-only as well.

use crate::sandbox::{paths, shell};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Folder names protected wherever they appear in a path.
pub const DIR_NAMES: &[&str] = &[".git", ".cms", ".claude"];
/// File names protected wherever they appear.
pub const FILE_NAMES: &[&str] = &[".mcp.json", ".claude.json"];
/// Names a Bash word may not mention unless the command only reads.
const MENTIONS: &[&str] = &[
    ".git",
    ".cms",
    ".claude",
    ".mcp.json",
    ".claude.json",
    ".config/cms",
    ".claude-multi-session",
];

/// Commands that only read what they are given (their redirections are checked
/// on their own).
const READERS: &[&str] = &[
    "cat",
    "less",
    "more",
    "head",
    "tail",
    "grep",
    "rg",
    "egrep",
    "fgrep",
    "ls",
    "wc",
    "stat",
    "file",
    "diff",
    "cmp",
    "md5sum",
    "sha1sum",
    "sha256sum",
    "pwd",
    "realpath",
    "readlink",
    "basename",
    "dirname",
    "du",
    "tree",
    "jq",
    "test",
    "[",
    "echo",
    "printf",
    "true",
    "false",
];
/// Read-only git subcommands.
const GIT_READERS: &[&str] = &[
    "status",
    "log",
    "diff",
    "show",
    "rev-parse",
    "ls-files",
    "blame",
    "grep",
    "describe",
];

/// The absolute folders and files protected for every guarded session: the user's
/// cms config dir, `$CMS_HOME`, Claude Code's user config, from cms's environment
/// (read once: the environment of a running cms does not change).
pub fn roots() -> &'static [PathBuf] {
    static ROOTS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(find_roots)
}

fn find_roots() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = env("HOME");
    let mut out = Vec::new();
    if let Some(d) = env("CMS_CONFIG_DIR") {
        out.push(d);
    }
    if let Some(d) = env("XDG_CONFIG_HOME") {
        out.push(d.join("cms"));
    }
    if let Some(h) = &home {
        out.push(h.join(".config/cms"));
        out.push(h.join(".claude"));
        out.push(h.join(".claude.json"));
        out.push(h.join(".claude-multi-session"));
    }
    if let Some(d) = env("CMS_HOME") {
        out.push(d);
    }
    if let Some(d) = env("CLAUDE_CONFIG_DIR") {
        out.push(d);
    }
    let canonical: Vec<PathBuf> = out
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    out.extend(canonical);
    out.sort();
    out.dedup();
    out
}

/// Why writing `path` (as a tool gives it, from `cwd`) is refused, or None.
pub fn path_violation(path: &str, cwd: &Path, roots: &[PathBuf]) -> Option<String> {
    if path.is_empty() {
        return None;
    }
    let resolved = paths::resolve(path, cwd);
    let lexical = if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        cwd.join(path)
    };
    for full in [&resolved, &lexical] {
        for part in full.components() {
            let name = part.as_os_str().to_string_lossy().to_lowercase();
            if DIR_NAMES.contains(&name.as_str()) || FILE_NAMES.contains(&name.as_str()) {
                return Some(format!(
                    "{path} is part of {} (protected for every guarded session: {name})",
                    owner(&name)
                ));
            }
        }
        if let Some(root) = roots.iter().find(|r| full.starts_with(r)) {
            return Some(format!(
                "{path} is inside {} (cms's or Claude Code's own configuration, protected for every guarded session)",
                root.display()
            ));
        }
    }
    None
}

fn owner(name: &str) -> &'static str {
    match name {
        ".git" => "git's internals",
        ".cms" => "cms's configuration",
        _ => "Claude Code's configuration",
    }
}

/// Why this tool call is refused, or None. `input` is the tool's input.
pub fn violation(tool: &str, input: &Value, cwd: &Path) -> Option<String> {
    let roots = roots();
    let field = match tool {
        "Write" | "Edit" | "MultiEdit" => Some("file_path"),
        "NotebookEdit" => Some("notebook_path"),
        _ => None,
    };
    if let Some(field) = field {
        if let Some(p) = input[field].as_str() {
            if let Some(why) = path_violation(p, cwd, roots) {
                return Some(format!("{why}: {tool} may not change it"));
            }
        }
        for e in input["edits"].as_array().into_iter().flatten() {
            if let Some(why) = e["file_path"]
                .as_str()
                .and_then(|p| path_violation(p, cwd, roots))
            {
                return Some(why);
            }
        }
        return None;
    }
    if tool == "Bash" {
        let command = input["command"].as_str()?;
        return bash_violation(command, cwd, roots)
            .map(|why| format!("Bash command refused: {why}"));
    }
    None
}

/// Why a Bash line is refused, or None: a write into a protected place, or any
/// mention of one by a command that does not only read.
pub fn bash_violation(line: &str, cwd: &Path, roots: &[PathBuf]) -> Option<String> {
    let commands = match shell::parse(line) {
        Ok(c) => c,
        Err(e) => return Some(e.to_string()),
    };
    for cmd in commands {
        for r in cmd.redirects.iter().filter(|r| r.writes()) {
            if let Some(why) = path_violation(&r.target, cwd, roots) {
                return Some(format!("it redirects output into {}: {why}", r.target));
            }
            if let Some(hit) = mentions(&r.target, roots) {
                return Some(format!("it redirects output into {} ({hit})", r.target));
            }
        }
        let name = program(&cmd);
        if reads_only(&cmd) {
            continue;
        }
        for word in cmd.assigns.iter().chain(cmd.argv.iter().skip(1)) {
            if let Some(hit) = mentions(word, roots) {
                return Some(format!(
                    "`{name}` is given {word:?}, which names {hit} (protected for every guarded session)"
                ));
            }
        }
    }
    None
}

/// The program a command runs, without its folder (`/bin/rm` → `rm`).
fn program(cmd: &shell::Command) -> &str {
    cmd.argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .unwrap_or("")
}

/// A known reader, or a read-only git subcommand.
fn reads_only(cmd: &shell::Command) -> bool {
    let name = program(cmd);
    READERS.contains(&name)
        || (name == "git"
            && cmd
                .argv
                .iter()
                .skip(1)
                .find(|a| !a.starts_with('-'))
                .is_some_and(|sub| GIT_READERS.contains(&sub.as_str())))
}

/// Whether a Bash line provably only reads: every command is a known reader (or a
/// read-only git subcommand) and nothing is redirected into a file other than
/// `/dev/null`. Used where no OS sandbox holds protected paths.
pub fn harmless(line: &str) -> bool {
    let Ok(commands) = shell::parse(line) else {
        return false;
    };
    commands.iter().all(|cmd| {
        let writes_file = cmd
            .redirects
            .iter()
            .any(|r| r.writes() && r.target != "/dev/null");
        !writes_file
            && cmd.assigns.is_empty()
            && reads_only(cmd)
            && !cmd.argv.iter().any(|a| a.contains('$') || a.contains('`'))
    })
}

/// The protected name or folder `word` mentions, if any.
fn mentions(word: &str, roots: &[PathBuf]) -> Option<String> {
    let w = word.to_lowercase();
    for name in MENTIONS {
        let mut from = 0;
        while let Some(i) = w[from..].find(name) {
            let s = from + i;
            let e = s + name.len();
            let before = w[..s].chars().next_back();
            let after = w[e..].chars().next();
            let word_char = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
            if !before.is_some_and(word_char) && !after.is_some_and(|c| word_char(c) || c == '.') {
                return Some((*name).to_string());
            }
            from = s + 1;
            while !w.is_char_boundary(from) {
                from += 1;
            }
        }
    }
    roots
        .iter()
        .map(|r| r.display().to_string())
        .find(|r| word.contains(r.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn denied(tool: &str, input: Value) -> bool {
        let cwd = std::env::temp_dir();
        violation(tool, &input, &cwd).is_some()
    }

    #[test]
    fn configuration_and_git_internals_are_refused() {
        for p in [
            ".cms/safety.lua",
            ".cms/plugins/x/init.lua",
            "src/../.claude/settings.local.json",
            ".CLAUDE/settings.json",
            ".mcp.json",
            "sub/.mcp.json",
            ".git/hooks/post-checkout",
            "~/.claude/settings.json",
            "~/.claude.json",
            "~/.config/cms/safety.lua",
        ] {
            assert!(
                denied("Write", json!({"file_path": p, "content": "x"})),
                "{p}"
            );
        }
        for c in [
            "echo x > .cms/safety.lua",
            "python3 -c \"open('.claude/settings.json','w')\"",
            "cp /tmp/x ~/.config/cms/safety.lua",
            "git --git-dir=.git config core.hooksPath /tmp",
            "cd .git && touch hooks/x",
            "tee .mcp.json",
            "sed -i s/a/b/ ~/.claude.json",
        ] {
            assert!(denied("Bash", json!({ "command": c })), "{c}");
        }
    }

    #[test]
    fn ordinary_work_passes() {
        for p in [
            "src/main.rs",
            ".gitignore",
            ".github/workflows/ci.yml",
            "cms.md",
        ] {
            assert!(
                !denied("Write", json!({"file_path": p, "content": "x"})),
                "{p}"
            );
        }
        for c in [
            "git status",
            "git log --oneline",
            "cat .git/config",
            "ls .claude",
            "cargo build",
            "echo hi > src/out.txt",
            "git add .gitignore",
        ] {
            assert!(!denied("Bash", json!({ "command": c })), "{c}");
        }
    }
}

#[cfg(test)]
mod harmless_tests {
    use super::harmless;

    #[test]
    fn only_reading_lines_are_harmless() {
        for ok in [
            "ls -la",
            "cat a | grep x | wc -l",
            "git status",
            "git log --oneline > /dev/null",
        ] {
            assert!(harmless(ok), "{ok}");
        }
        for bad in [
            "touch x",
            "echo x > f",
            "python3 -c 'print(1)'",
            "git commit -m x",
            "cat $F",
            "X=1 ls",
            "ls; rm -rf /",
        ] {
            assert!(!harmless(bad), "{bad}");
        }
    }
}

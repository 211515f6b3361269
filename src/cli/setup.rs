//! `cms setup`: register `cms mcp` with Claude Code, where Claude Code reads MCP
//! servers today: `~/.claude.json` (`mcpServers`, user scope, `--global`) and
//! `./.mcp.json` (project scope, `--local`). Every other key of those files is kept,
//! a file is backed up (`*.cms.bak`) before it changes, and writes are atomic.
//! `--guide` puts the strategy guide into CLAUDE.md between markers, so running it
//! again replaces the block instead of adding a second one.

use super::args::SetupArgs;
use super::out::{self, outln};
use crate::engine::EngineConfig;
use serde_json::{json, Map, Value};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

/// The server's name in Claude Code: its tools are `mcp__cms__<tool>`.
const SERVER: &str = "cms";
const START: &str = "<!-- cms:start -->";
const END: &str = "<!-- cms:end -->";

/// The guide block for CLAUDE.md (the long form is STRATEGY.md).
const GUIDE: &str = include_str!("../../scripts/guide.md");

pub fn run(a: SetupArgs, cfg: &EngineConfig, json_out: bool) -> i32 {
    match setup(a, cfg) {
        Ok(actions) => {
            if json_out {
                let _ = outln!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "actions": actions }))
                        .unwrap_or_default()
                );
            } else {
                for (file, action) in &actions {
                    let _ = outln!("{action:<10} {file}");
                }
                let _ = outln!("Restart Claude Code to pick this up (it rewrites ~/.claude.json itself, so close it while running setup).");
            }
            0
        }
        Err(e) => out::fail(json_out, e),
    }
}

type Actions = Vec<(String, String)>;

fn home() -> Result<PathBuf, String> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| "HOME is not set: cannot find ~/.claude.json".to_string())
}

fn setup(mut a: SetupArgs, cfg: &EngineConfig) -> Result<Actions, String> {
    let cwd = std::env::current_dir().map_err(|e| format!("no working directory: {e}"))?;
    let home = home()?;
    let user_file = home.join(".claude.json");
    let project_file = cwd.join(".mcp.json");
    let user_guide = home.join(".claude/CLAUDE.md");
    let project_guide = cwd.join("CLAUDE.md");
    let mut actions = Vec::new();
    if a.uninstall {
        for file in [&user_file, &project_file] {
            actions.push((file.display().to_string(), edit_servers(file, None)?));
        }
        for file in [&user_guide, &project_guide] {
            actions.push((file.display().to_string(), edit_guide(file, false)?));
        }
        return Ok(actions);
    }
    if !a.global && !a.local {
        ask(&mut a)?;
    }
    let entry = entry(cfg)?;
    if a.global {
        actions.push((
            user_file.display().to_string(),
            edit_servers(&user_file, Some(&entry))?,
        ));
        if a.guide {
            actions.push((
                user_guide.display().to_string(),
                edit_guide(&user_guide, true)?,
            ));
        }
    }
    if a.local {
        actions.push((
            project_file.display().to_string(),
            edit_servers(&project_file, Some(&entry))?,
        ));
        if a.guide {
            actions.push((
                project_guide.display().to_string(),
                edit_guide(&project_guide, true)?,
            ));
        }
    }
    Ok(actions)
}

/// The interactive questions, when no scope flag was given.
fn ask(a: &mut SetupArgs) -> Result<(), String> {
    if !std::io::stdin().is_terminal() {
        return Err(
            "choose where to install: --global (all projects) or --local (this project); \
                    without them setup asks, which needs a terminal"
                .into(),
        );
    }
    let read = |q: &str| -> Result<String, String> {
        super::out::text(q).map_err(|e| e.to_string())?;
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        Ok(line.trim().to_lowercase())
    };
    let scope = read("Install cms for all projects (g) or only this one (l)? [g] ")?;
    match scope.as_str() {
        "" | "g" | "global" => a.global = true,
        "l" | "local" => a.local = true,
        other => return Err(format!("'{other}' is neither g nor l")),
    }
    let guide = read("Add the delegation guide to CLAUDE.md? [y/N] ")?;
    a.guide = matches!(guide.as_str(), "y" | "yes");
    Ok(())
}

/// How Claude Code starts the server: this very binary, by absolute path (GUI-started
/// Claude Code may not share the shell's PATH), with the settings in force now.
fn entry(cfg: &EngineConfig) -> Result<Value, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the cms executable: {e}"))?;
    let mut env = Map::new();
    if std::env::var_os("CMS_HOME").is_some() {
        env.insert("CMS_HOME".into(), json!(cfg.home.display().to_string()));
    }
    if std::env::var_os("CMS_CLAUDE_BIN").is_some() {
        env.insert(
            "CMS_CLAUDE_BIN".into(),
            json!(cfg.claude_bin.display().to_string()),
        );
    }
    Ok(
        json!({ "type": "stdio", "command": exe.display().to_string(), "args": ["mcp"], "env": env }),
    )
}

/// Add (Some) or remove (None) the cms entry of `mcpServers` in a JSON file, keeping
/// everything else. Returns what happened.
fn edit_servers(file: &Path, entry: Option<&Value>) -> Result<String, String> {
    let existing = match std::fs::read_to_string(file) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let mut doc: Value = match &existing {
        Some(text) if !text.trim().is_empty() => serde_json::from_str(text).map_err(|e| {
            format!("{} is not valid JSON ({e}); nothing was changed — fix or move it, then run setup again", file.display())
        })?,
        _ => json!({}),
    };
    let Some(root) = doc.as_object_mut() else {
        return Err(format!(
            "{} does not hold a JSON object; nothing was changed",
            file.display()
        ));
    };
    let action = match entry {
        Some(entry) => {
            let servers = root.entry("mcpServers").or_insert_with(|| json!({}));
            let Some(servers) = servers.as_object_mut() else {
                return Err(format!(
                    "\"mcpServers\" in {} is not an object; nothing was changed",
                    file.display()
                ));
            };
            match servers.get(SERVER) {
                Some(old) if old == entry => return Ok("unchanged".into()),
                Some(_) => {
                    servers.insert(SERVER.into(), entry.clone());
                    "updated"
                }
                None => {
                    servers.insert(SERVER.into(), entry.clone());
                    "added"
                }
            }
        }
        None => {
            let removed = root
                .get_mut("mcpServers")
                .and_then(Value::as_object_mut)
                .and_then(|s| s.remove(SERVER))
                .is_some();
            if !removed {
                return Ok("absent".into());
            }
            "removed"
        }
    };
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())? + "\n";
    write_file(file, existing.is_some(), &text)?;
    Ok(action.into())
}

/// Put the guide block into (or take it out of) a CLAUDE.md; text outside the
/// markers is never touched.
fn edit_guide(file: &Path, install: bool) -> Result<String, String> {
    let existing = match std::fs::read_to_string(file) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let text = existing.clone().unwrap_or_default();
    let block = format!("{START}\n{}\n{END}", GUIDE.trim_end());
    let found = text
        .find(START)
        .and_then(|s| text[s..].find(END).map(|e| (s, s + e + END.len())));
    let (new, action) = match (found, install) {
        (Some((s, e)), true) => {
            if text[s..e] == block {
                return Ok("unchanged".into());
            }
            (format!("{}{block}{}", &text[..s], &text[e..]), "updated")
        }
        (None, true) => {
            let sep = if text.is_empty() || text.ends_with("\n\n") {
                ""
            } else if text.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            (format!("{text}{sep}{block}\n"), "added")
        }
        (Some((s, e)), false) => {
            let before = text[..s].strip_suffix('\n').unwrap_or(&text[..s]);
            let after = text[e..].strip_prefix('\n').unwrap_or(&text[e..]);
            (
                format!(
                    "{before}{}{after}",
                    if before.is_empty() || after.is_empty() {
                        ""
                    } else {
                        "\n"
                    }
                ),
                "removed",
            )
        }
        (None, false) => return Ok("absent".into()),
    };
    write_file(file, existing.is_some(), &new)?;
    Ok(action.into())
}

/// The file a path names, following symlinks (also a dangling one: the file it
/// would create). Writing there keeps a dotfiles link a link.
fn through_links(file: &Path) -> PathBuf {
    let mut path = file.to_path_buf();
    for _ in 0..40 {
        let is_link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            break;
        }
        match std::fs::read_link(&path) {
            Ok(target) => {
                path = match path.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                }
            }
            Err(_) => break,
        }
    }
    path
}

/// Back the file up (when it exists), then replace it atomically, keeping its
/// permissions; a new file is 0600. A symlink is written through: its target
/// gets the new text and the link stays. The text is never readable by others
/// on the way: the temporary file is created 0600.
fn write_file(file: &Path, exists: bool, text: &str) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let target = through_links(file);
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    if exists {
        let backup = file.with_file_name(format!("{}.cms.bak", name(file)));
        std::fs::copy(&target, &backup).map_err(|e| {
            format!(
                "cannot back up {} to {}: {e}",
                file.display(),
                backup.display()
            )
        })?;
    }
    let tmp = target.with_file_name(format!(".{}.cms-{}.tmp", name(&target), std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot write {}: {e}", tmp.display()));
    }
    if exists {
        if let Ok(meta) = std::fs::metadata(&target) {
            let mode = meta.permissions().mode() & 0o7777;
            let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode));
        }
    }
    std::fs::rename(&tmp, &target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot replace {}: {e}", target.display())
    })
}

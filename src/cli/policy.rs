//! `cms policy check FILE`, `cms policy show [NAME]` and `cms policy init`: the
//! safety policy as it is in force here (layers, scripts, limits, presets,
//! strategies), one script's text, and a copy of the built-in ones to edit.

use super::args::PolicyCommand;
use super::out::{self, errln, outln};
use super::render::money;
use crate::policy::{self, Layers, PolicyService, ScriptKind};
use crate::sandbox::scripts;
use serde_json::json;
use std::io::IsTerminal;

/// Run a `cms policy` command; returns the exit code.
pub fn run(cmd: PolicyCommand, json: bool) -> i32 {
    match cmd {
        PolicyCommand::Check { file, kind } => {
            let kind = kind.as_deref().and_then(ScriptKind::parse);
            match policy::check_file(&file, kind) {
                Ok(msg) => {
                    if json {
                        let _ = outln!("{}", json!({ "file": file, "ok": true, "report": msg }));
                    } else {
                        let _ = outln!("{msg}");
                    }
                    0
                }
                Err(e) => out::fail(json, e),
            }
        }
        PolicyCommand::Show {
            name: Some(name),
            builtin,
        } => show_script(&name, builtin, json),
        PolicyCommand::Init { force } => init(force, json),
        PolicyCommand::Show { name: None, .. } => {
            let cwd = std::env::current_dir().unwrap_or_default();
            let layers = Layers::standard(&cwd);
            let (service, report) =
                match PolicyService::start(layers.clone(), policy::DECISION_LIMIT) {
                    Ok(s) => s,
                    Err(e) => return out::fail(json, e),
                };
            let mut presets = Vec::new();
            for name in ["read-only", "review", "edit", "full", "plan"] {
                if let Ok(p) = service.preset(name) {
                    presets.push(p);
                }
            }
            let limits = service.limits();
            if json {
                let v = json!({
                    "layers": layers.dirs,
                    "scripts": report.origins,
                    "errors": report.errors,
                    "limits": limits,
                    "presets": presets,
                    "strategies": layers.strategies(),
                });
                let _ = outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                let _ = outln!(
                    "layers (later wins): built-in, {}",
                    layers
                        .dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let _ = outln!("scripts in force:");
                for o in &report.origins {
                    let _ = outln!("  {o}");
                }
                for e in &report.errors {
                    let _ = outln!("  NOT LOADED: {e}");
                }
                let _ = outln!(
                    "limits: cost {} / {} turns / {}s per interaction",
                    limits.max_cost.map_or("-".into(), money),
                    limits.max_turns.map_or("-".into(), |t| t.to_string()),
                    limits.timeout.map_or("-".into(), |t| format!("{t:.0}"))
                );
                let _ = outln!("presets:");
                for p in &presets {
                    let _ = outln!(
                        "  {:<10} {:<8} {}",
                        p.name,
                        p.permission_mode,
                        p.description
                    );
                }
                let _ = outln!("strategies: {}", layers.strategies().join(", "));
            }
            if report.errors.is_empty() {
                0
            } else {
                1
            }
        }
    }
}

/// `cms policy show NAME`: the script's text as it is in force (or built in).
fn show_script(name: &str, builtin: bool, json: bool) -> i32 {
    let cwd = std::env::current_dir().unwrap_or_default();
    let layers = Layers::standard(&cwd);
    let rel = format!("{}.lua", name.strip_suffix(".lua").unwrap_or(name));
    let found = if builtin {
        scripts::builtin(&rel)
    } else {
        for u in layers.untrusted() {
            errln!("cms: {u}");
        }
        layers.find(&rel)
    };
    let Some(src) = found else {
        let mut known: Vec<String> = scripts::BUILTIN
            .iter()
            .map(|(n, _)| n.trim_end_matches(".lua").to_string())
            .filter(|n| !n.starts_with("strategies/"))
            .collect();
        let strategies = if builtin {
            Layers::builtin_only().strategies()
        } else {
            layers.strategies()
        };
        known.extend(strategies.iter().map(|s| format!("strategies/{s}")));
        return out::fail(
            json,
            format!(
                "no {}script '{name}' (known: {})",
                if builtin { "built-in " } else { "" },
                known.join(", ")
            ),
        );
    };
    if json {
        let v =
            json!({ "name": rel.trim_end_matches(".lua"), "origin": src.origin, "code": src.code });
        let _ = outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        // A person sees where it comes from; a redirect gets the file as it is.
        if std::io::stdout().is_terminal() {
            let _ = outln!("-- in force: {}", src.origin);
        }
        let _ = out::text(&src.code);
        if !src.code.ends_with('\n') {
            let _ = outln!();
        }
    }
    0
}

/// `cms policy init`: the built-in scripts, copied into the user's config dir.
fn init(force: bool, json: bool) -> i32 {
    let Some(dir) = scripts::user_dir() else {
        return out::fail(
            json,
            "no config dir: set CMS_CONFIG_DIR (or HOME) and run it again",
        );
    };
    let targets: Vec<_> = scripts::BUILTIN
        .iter()
        .map(|(rel, code)| (dir.join(rel), *code))
        .collect();
    let existing: Vec<String> = targets
        .iter()
        // A link counts as there, dangling or not: nothing is written through it.
        .filter(|(p, _)| p.symlink_metadata().is_ok())
        .map(|(p, _)| p.display().to_string())
        .collect();
    if !force && !existing.is_empty() {
        return out::fail(
            json,
            format!(
                "already there: {}; nothing was written (--force overwrites them)",
                existing.join(", ")
            ),
        );
    }
    let mut written = Vec::new();
    for (path, code) in &targets {
        // A whole new file in place of the old one (or of a link), never half of one.
        let tmp = path.with_extension("lua.cms-new");
        let wrote = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, code))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = wrote {
            return out::fail(json, format!("cannot write {}: {e}", path.display()));
        }
        written.push(path.display().to_string());
    }
    if json {
        let v = json!({ "dir": dir, "written": written });
        let _ = outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for w in &written {
            let _ = outln!("wrote {w}");
        }
        let _ = outln!(
            "These now replace the built-in scripts (cms reloads them as you save). \
             Check an edit with `cms policy check FILE`; delete a file to go back to the built-in one."
        );
    }
    0
}

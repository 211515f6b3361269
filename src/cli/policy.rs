//! `cms policy check FILE` and `cms policy show`: the safety policy as it is in
//! force here (layers, scripts, limits, presets, strategies).

use super::args::PolicyCommand;
use super::out::{self, outln};
use super::render::money;
use crate::policy::{self, Layers, PolicyService};
use serde_json::json;

/// Run a `cms policy` command; returns the exit code.
pub fn run(cmd: PolicyCommand, json: bool) -> i32 {
    match cmd {
        PolicyCommand::Check { file } => match policy::check_file(&file) {
            Ok(msg) => {
                if json {
                    let _ = outln!("{}", json!({ "file": file, "ok": true }));
                } else {
                    let _ = outln!("{msg}");
                }
                0
            }
            Err(e) => out::fail(json, e),
        },
        PolicyCommand::Show => {
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

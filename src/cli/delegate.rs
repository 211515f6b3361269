//! `cms delegate`, `continue`, `finish`, `abort` and `cms policy`: the frontend of
//! [`crate::delegate`] and [`crate::policy`]. Delegation runs strategies, which
//! are Lua, so these commands start a Lua host beside the engine.

use super::args::{Command, DelegateArgs, PolicyCommand};
use super::commands::{init_runtime, shutdown_signal, text_arg};
use super::out::{errln, outln};
use super::render::money;
use crate::delegate::{self, DelegateOptions, DelegateResult};
use crate::engine::{EngineConfig, Manager};
use crate::lua::HostOptions;
use crate::policy::{self, Layers, PolicyService};
use serde_json::json;

/// Run a delegation command; returns the exit code. `completed` and `needs_input`
/// exit 0; `check_failed`, `failed`, `cost_exceeded` and `turns_exceeded` exit 1
/// (the result is printed either way).
pub fn run(cfg: EngineConfig, cmd: Command, json: bool) -> i32 {
    let rt = match init_runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(json, &e),
    };
    let local = tokio::task::LocalSet::new();
    rt.block_on(local.run_until(async move {
        let manager = match Manager::new(cfg) {
            Ok(m) => m,
            Err(e) => return fail(json, &e.to_string()),
        };
        let _progress = super::progress::watch(&manager).map(super::commands::AbortOnDrop);
        let (host, attached) = match super::script::start_host(&manager, HostOptions::default()) {
            Ok(h) => h,
            Err(e) => return fail(json, &e),
        };
        let work = async {
            match cmd {
                Command::Delegate(a) => {
                    let opts = options(a).map_err(|e| e.to_string())?;
                    delegate::delegate(host.lua(), &manager, &attached.service, opts, None)
                        .await
                        .map(|r| Printed::Result(Box::new(r)))
                        .map_err(|e| e.to_string())
                }
                Command::Continue(a) => {
                    let message = text_arg(&a.message).map_err(|e| e.to_string())?;
                    delegate::continue_task(
                        host.lua(),
                        &manager,
                        &attached.service,
                        &a.name,
                        &message,
                        None,
                    )
                    .await
                    .map(|r| Printed::Result(Box::new(r)))
                    .map_err(|e| e.to_string())
                }
                Command::Finish(a) => delegate::finish(&manager, &a.name)
                    .await
                    .map(|r| {
                        Printed::End(
                            json!(r),
                            format!(
                                "[{}] finished, total {}, {} turns",
                                r.name,
                                money(r.total_cost),
                                r.total_turns
                            ),
                        )
                    })
                    .map_err(|e| e.to_string()),
                Command::Abort(a) => delegate::abort(&manager, &a.name)
                    .await
                    .map(|r| {
                        Printed::End(
                            json!(r),
                            format!(
                                "[{}] aborted, total {}, {} turns",
                                r.name,
                                money(r.total_cost),
                                r.total_turns
                            ),
                        )
                    })
                    .map_err(|e| e.to_string()),
                _ => Err("not a delegation command".to_string()),
            }
        };
        let outcome = tokio::select! {
            r = crate::delegate::strategy_sliced(host.lua(), work) => Some(r),
            _ = shutdown_signal() => None,
        };
        let code = match outcome {
            None => {
                manager.kill_all().await;
                return fail(
                    json,
                    "interrupted: every session this command started was stopped",
                )
                .max(130);
            }
            Some(Err(e)) => fail(json, &e),
            Some(Ok(Printed::Result(r))) => {
                if json {
                    let _ = outln!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                } else {
                    let _ = outln!("{}", result_text(&r));
                }
                match r.status.as_str() {
                    "completed" | "needs_input" => 0,
                    _ => {
                        if let Some(e) = &r.error {
                            errln!("Error: {e}");
                        }
                        1
                    }
                }
            }
            Some(Ok(Printed::End(v, text))) => {
                if json {
                    let _ = outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                } else {
                    let _ = outln!("{text}");
                }
                0
            }
        };
        manager.shutdown().await;
        code
    }))
}

enum Printed {
    Result(Box<DelegateResult>),
    End(serde_json::Value, String),
}

fn fail(json: bool, message: &str) -> i32 {
    if json {
        let _ = outln!("{}", json!({ "error": message }));
    }
    errln!("Error: {message}");
    1
}

fn options(a: DelegateArgs) -> Result<DelegateOptions, super::commands::CliError> {
    Ok(DelegateOptions {
        task: text_arg(&a.task)?,
        name: a.name,
        model: a.model,
        preset: a.preset,
        max_cost: a.max_cost,
        max_turns: a.max_turns,
        timeout: a.timeout,
        safety: !a.no_safety,
        context: a.context,
        work_dir: a.work_dir,
        system_prompt: a.system_prompt,
        agent: a.agent,
        strategy: a.strategy,
        check: a.check,
        max_attempts: a.max_attempts,
        review_model: None,
    })
}

/// The result for people.
pub fn result_text(r: &DelegateResult) -> String {
    let mut out = String::new();
    if !r.response.is_empty() {
        out.push_str(r.response.trim_end());
        out.push_str("\n\n");
    }
    out.push_str(&format!(
        "[{}] {}  cost={} turns={} {:.1}s  preset={} strategy={}{}",
        r.name,
        r.status,
        money(r.cost),
        r.turns,
        r.duration as f64 / 1000.0,
        r.preset,
        r.strategy,
        if r.can_continue {
            "  (cms continue --name ... to go on)"
        } else {
            ""
        }
    ));
    if let Some(s) = &r.safety {
        let limits = &s.limits;
        out.push_str(&format!(
            "\nsafety: {} violation(s); limits {} / {} turns / {}s",
            s.total_violations,
            limits.max_cost_usd.map_or("-".into(), money),
            limits.max_turns.map_or("-".into(), |t| t.to_string()),
            limits
                .timeout_secs
                .map_or("-".into(), |t| format!("{t:.0}"))
        ));
        for v in &s.violations {
            out.push_str(&format!("\n  {} ({}): {}", v.rule, v.action, v.message));
        }
    } else {
        out.push_str("\nsafety: off (--no-safety)");
    }
    for d in &r.denied_before_execution {
        out.push_str(&format!(
            "\ndenied before running: {}: {}",
            d.tool, d.reason
        ));
    }
    for (i, c) in r.checks.iter().enumerate() {
        out.push_str(&format!(
            "\ncheck {}: {}",
            i + 1,
            if c.passed { "passed" } else { "failed" }
        ));
    }
    for rv in &r.reviews {
        out.push_str(&format!(
            "\nreview by {}: {}",
            rv.session,
            rv.response.lines().next().unwrap_or("")
        ));
    }
    out
}

/// `cms policy check FILE` and `cms policy show`.
pub fn policy_command(cmd: PolicyCommand, json: bool) -> i32 {
    match cmd {
        PolicyCommand::Check { file } => match policy::service::check_file(&file) {
            Ok(msg) => {
                if json {
                    let _ = outln!("{}", json!({ "file": file, "ok": true }));
                } else {
                    let _ = outln!("{msg}");
                }
                0
            }
            Err(e) => fail(json, &e),
        },
        PolicyCommand::Show => {
            let cwd = std::env::current_dir().unwrap_or_default();
            let layers = Layers::standard(&cwd);
            let (service, report) =
                match PolicyService::start(layers.clone(), policy::DECISION_LIMIT) {
                    Ok(s) => s,
                    Err(e) => return fail(json, &e.to_string()),
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

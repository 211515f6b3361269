//! `cms delegate`, `continue`, `finish` and `abort`: the frontend of
//! [`crate::delegate`]. Delegation runs strategies, which are Lua, so these
//! commands start a Lua host beside the engine.

use super::args::{Command, DelegateArgs};
use super::out::{self, outln};
use super::outcome::text_arg;
use super::render::money;
use crate::app::runtime::shutdown_signal;
use crate::app::{exit, App, HostUse, LuaApp};
use crate::delegate::{self, DelegateOptions, DelegateResult};
use crate::engine::EngineConfig;
use crate::lua::HostOptions;
use serde_json::json;

/// Run a delegation command; returns the exit code. `completed` and `needs_input`
/// exit 0; `check_failed`, `failed`, `cost_exceeded` and `turns_exceeded` exit 1
/// (the result is printed either way).
pub fn run(cfg: EngineConfig, cmd: Command, json: bool, want: HostUse) -> i32 {
    let app = match App::open(cfg, want) {
        Ok(app) => app,
        Err(e) => return out::fail(json, e),
    };
    let manager = app.sessions().clone();
    let name = match &cmd {
        Command::Delegate(a) => Some(a.opts.name.clone()),
        Command::Continue(a) => Some(a.name.clone()),
        _ => None,
    };
    let what = super::progress::Watch {
        only: name.iter().cloned().collect(),
        stream: false,
        status: name.is_some() && !json,
    };
    let progress = app.block_on(async { super::progress::watch(manager.as_ref(), what) });
    // The strategy's rounds (checks, reviews) as they happen, on stderr for a person.
    if let Some(p) = progress.as_ref().filter(|_| super::progress::wanted()) {
        crate::delegate::on_progress(p.printer());
    }
    app.run_local(async {
        let LuaApp {
            host,
            policy: attached,
        } = match app.lua(HostOptions::default()) {
            Ok(h) => h,
            Err(e) => return out::fail(json, e),
        };
        let work = async {
            match cmd {
                Command::Delegate(a) => {
                    let opts = options(a.opts).map_err(|e| e.to_string())?;
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
                Command::Finish(a) => delegate::finish(manager.as_ref(), &a.name)
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
                Command::Abort(a) => delegate::abort(manager.as_ref(), &a.name)
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
                if json {
                    let _ = outln!(
                        "{}",
                        json!({ "error": exit::interrupted_text("this command") })
                    );
                }
                return exit::interrupted("this command");
            }
            Some(Err(e)) => out::fail(json, e),
            Some(Ok(Printed::Result(r))) => {
                if json {
                    let _ = outln!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                } else {
                    let _ = outln!("{}", result_text(&r));
                }
                match r.status.as_str() {
                    "completed" | "needs_input" => 0,
                    _ => match &r.error {
                        Some(e) => exit::fail(e),
                        None => exit::FAILED,
                    },
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
    })
}

enum Printed {
    Result(Box<DelegateResult>),
    End(serde_json::Value, String),
}

fn options(a: DelegateArgs) -> Result<DelegateOptions, super::outcome::CliError> {
    Ok(DelegateOptions {
        task: text_arg(&a.task)?,
        ..a
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

//! The session commands: spawn, send, resume, pause, fork, stop, kill, interrupt,
//! status, output, list, history, delete, batch, cleanup. Reading commands open
//! the store and answer at once; the others run on the app's runtime, with the
//! safety policy loaded only for a guarded session.

use super::args::Command;
use super::out::errln;
use super::outcome::{text_arg, CliError, Json, Outcome, Printed};
use super::render;
use crate::app::App;
use crate::engine::{BatchSpec, EngineConfig, Manager, Response, SessionOptions, SessionRecord};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn read_command(m: &Manager, cmd: &Command, json: bool) -> Result<Outcome, CliError> {
    Ok(match cmd {
        Command::List => {
            let recs = m.list()?;
            let text = if json {
                String::new()
            } else {
                render::list_table(&recs)
            };
            Outcome::Done(Printed {
                text,
                json: Json::Records(recs),
            })
        }
        Command::Status(a) => {
            let rec = m.status(&a.name)?;
            done(render::status_text(&rec), render::record_json(&rec))
        }
        Command::Output(a) => {
            let text = m.output(&a.name)?;
            let shown = match &text {
                Some(t) => render::truncated(t, a.full),
                None => "(no output yet)".into(),
            };
            done(shown, json!({"name": a.name, "output": text}))
        }
        Command::History(a) => {
            let items = m.history(&a.name)?;
            done(
                render::history_text(&a.name, &items),
                crate::views::history_json(&items),
            )
        }
        _ => unreachable!("not a reading command"),
    })
}

fn done(text: String, json: Value) -> Outcome {
    Outcome::Done(Printed {
        text,
        json: json.into(),
    })
}

pub(super) fn run_async(cfg: EngineConfig, cmd: Command, json: bool) -> Result<Outcome, CliError> {
    let app = App::start(cfg).map_err(CliError::Input)?;
    let manager = app.manager().clone();
    // A delegated session stays guarded when sent to directly: load the safety
    // policy for the commands that can restart a guarded one (an unguarded session
    // needs no Lua state and no watcher).
    let restarts = match &cmd {
        Command::Send(a) => Some(a.name.as_str()),
        Command::Resume(a) => Some(a.name.as_str()),
        Command::Fork(a) => Some(a.name.as_str()),
        _ => None,
    };
    let guarded = restarts
        .and_then(|name| manager.status(name).ok())
        .is_some_and(|rec| rec.options.guard.is_some());
    let _policy = if guarded {
        let cwd = std::env::current_dir().unwrap_or_default();
        Some(app.guard(&cwd).map_err(CliError::Input)?)
    } else {
        None
    };
    let _progress = app.block_on(async { super::progress::watch(&manager) });
    app.run_until_signal(async_command(&manager, cmd, json))
        .unwrap_or(Err(CliError::Interrupted))
}

/// A `--timeout` (checked above 0 by clap).
fn secs(t: f64) -> Option<Duration> {
    Some(Duration::from_secs_f64(t))
}

fn turn_outcome(rec: &SessionRecord, r: &Response) -> Outcome {
    let printed = Printed {
        text: render::response_block(rec, r),
        json: render::turn_json(rec, Some(r)).into(),
    };
    if r.is_error {
        Outcome::Failed(printed, format!("the turn failed: {}", r.error_summary()))
    } else {
        Outcome::Done(printed)
    }
}

fn state_outcome(rec: &SessionRecord, verb: &str) -> Outcome {
    done(
        format!("Session '{}' {verb}", rec.name),
        crate::views::record_json(rec),
    )
}

async fn async_command(m: &Arc<Manager>, cmd: Command, json: bool) -> Result<Outcome, CliError> {
    Ok(match cmd {
        Command::Spawn(mut a) => {
            a.prompt = text_arg(&a.prompt)?;
            let req = a.into_request(false)?;
            let (_, r) = m.spawn(req.clone()).await?;
            m.shutdown().await;
            turn_outcome(&m.status(&req.name)?, &r)
        }
        Command::Send(a) => {
            let message = text_arg(&a.message)?;
            let r = m.send(&a.name, &message, secs(a.timeout)).await?;
            if a.stop {
                m.stop(&a.name).await?;
            }
            m.shutdown().await;
            turn_outcome(&m.status(&a.name)?, &r)
        }
        Command::Resume(a) => {
            let message = a.message.as_deref().map(text_arg).transpose()?;
            let (_, r) = m
                .resume(&a.name, message.as_deref(), secs(a.timeout))
                .await?;
            m.shutdown().await;
            let rec = m.status(&a.name)?;
            match r {
                Some(r) => turn_outcome(&rec, &r),
                None => done(
                    format!("Session '{}' resumed", rec.name),
                    render::turn_json(&rec, None),
                ),
            }
        }
        Command::Pause(a) => state_outcome(&m.pause(&a.name).await?, "paused"),
        Command::Fork(a) => {
            let message = a.message.as_deref().map(text_arg).transpose()?;
            let overrides = SessionOptions {
                model: a.model,
                ..SessionOptions::default()
            };
            let (_, r) = m
                .fork(
                    &a.name,
                    &a.new_name,
                    message.as_deref(),
                    overrides,
                    secs(a.timeout),
                )
                .await?;
            m.shutdown().await;
            let rec = m.status(&a.new_name)?;
            match r {
                Some(r) => turn_outcome(&rec, &r),
                None => done(
                    format!("Forked '{}' → '{}'", a.name, a.new_name),
                    render::turn_json(&rec, None),
                ),
            }
        }
        Command::Stop(a) => state_outcome(&m.stop(&a.name).await?, "stopped"),
        Command::Kill(a) => state_outcome(&m.kill(&a.name).await?, "killed"),
        Command::Interrupt(a) => {
            m.interrupt(&a.name).await?;
            done(
                format!("Session '{}' interrupted", a.name),
                json!({"name": a.name, "interrupted": true}),
            )
        }
        Command::Delete(a) => {
            m.delete(&a.name).await?;
            done(
                format!("Session '{}' deleted", a.name),
                json!({"name": a.name, "deleted": true}),
            )
        }
        Command::Batch(a) => batch(m, &a.file, a.concurrency as usize).await?,
        Command::Cleanup(a) => {
            let removed = m.cleanup(a.days)?;
            let mut text = format!("Removed {} session(s)", removed.len());
            for n in &removed {
                text.push_str(&format!("\n  {n}"));
            }
            done(text, json!({ "removed": removed }))
        }
        Command::List | Command::Status(_) | Command::Output(_) | Command::History(_) => {
            read_command(m, &cmd, json)?
        }
        Command::Demo(_)
        | Command::Script(_)
        | Command::Repl(_)
        | Command::LuaTypes
        | Command::Delegate(_)
        | Command::Continue(_)
        | Command::Finish(_)
        | Command::Abort(_)
        | Command::Policy(_)
        | Command::Mcp
        | Command::Setup(_)
        | Command::Trust(_)
        | Command::Untrust(_)
        | Command::Plugins(_)
        | Command::Completions(_)
        | Command::Man(_)
        | Command::CompleteNames => {
            unreachable!("handled before the runtime starts")
        }
    })
}

async fn batch(
    m: &Arc<Manager>,
    file: &std::path::Path,
    concurrency: usize,
) -> Result<Outcome, CliError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Input(format!("cannot read batch file {}: {e}", file.display())))?;
    let specs: Vec<BatchSpec> = serde_json::from_str(&text).map_err(|e| {
        CliError::Input(format!(
            "batch file {} is not a JSON array of {{name, prompt, ...}} objects: {e}",
            file.display()
        ))
    })?;
    crate::engine::manager::check_batch(&specs)
        .map_err(|e| CliError::Input(format!("batch file {}: {e}", file.display())))?;
    let show_progress = std::io::stderr().is_terminal();
    let reqs = specs
        .into_iter()
        .map(|s| s.into_request(true))
        .collect::<Result<Vec<_>, _>>()?;
    let outcomes = m
        .batch(reqs, concurrency, |p| {
            if show_progress {
                let status = if p.outcome.ok { "ok" } else { "FAILED" };
                errln!("[{}/{}] {} {status}", p.done, p.total, p.outcome.name);
            }
        })
        .await;
    let mut text = Vec::new();
    for o in &outcomes {
        match (&o.response, &o.error) {
            (Some(r), None) => text.push(format!(
                "[{}] ok cost={} turns={} duration={:.1}s\n{}\n",
                o.name,
                render::money(r.cost_usd),
                r.num_turns,
                r.duration_ms as f64 / 1000.0,
                r.text.trim_end()
            )),
            (_, Some(e)) => text.push(format!("[{}] FAILED: {e}\n", o.name)),
            (None, None) => {}
        }
    }
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    let printed = Printed {
        text: text.join("\n").trim_end().to_string(),
        json: crate::views::batch_json(&outcomes).into(),
    };
    Ok(if failed == 0 {
        Outcome::Done(printed)
    } else {
        Outcome::Failed(
            printed,
            format!("{failed} of {} batch sessions failed", outcomes.len()),
        )
    })
}

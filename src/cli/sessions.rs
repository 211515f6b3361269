//! The session commands: spawn, send, resume, pause, fork, stop, kill, interrupt,
//! status, output, list, history, delete, batch, cleanup. Reading commands open
//! the store and answer at once; the others run on the app's runtime, with the
//! safety policy loaded only for a guarded session.

use super::args::{Command, ListArgs, SortKey};
use super::out::errln;
use super::outcome::{text_arg, CliError, Json, Outcome, Printed};
use super::progress::Watching;
use super::render;
use crate::app::{App, HostUse};
use crate::engine::manager::BatchProgress;
use crate::engine::{BatchSpec, EngineConfig, Response, SessionOptions, SessionRecord, Sessions};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn read_command(
    m: &dyn Sessions,
    cmd: &Command,
    json: bool,
) -> Result<Outcome, CliError> {
    let paint = super::style::stdout();
    Ok(match cmd {
        Command::List(a) => {
            let recs = select(m.list()?, a);
            let text = if json {
                String::new()
            } else {
                render::sessions_table(&recs, a.wide, paint)
            };
            Outcome::Done(Printed {
                text,
                json: Json::Records(recs),
            })
        }
        Command::Status(a) => {
            let rec = m.status(&a.name)?;
            done(render::status_text(&rec, paint), render::record_json(&rec))
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
            let mut items = m.history(&a.name)?;
            if let Some(n) = a.last {
                items.drain(..items.len().saturating_sub(n));
            }
            done(
                render::history_text(&a.name, &items),
                crate::views::history_json(&items),
            )
        }
        _ => unreachable!("not a reading command"),
    })
}

/// The sessions `cms list` shows: filtered by `--state` and `--live`, in `--sort` order.
fn select(mut recs: Vec<SessionRecord>, a: &ListArgs) -> Vec<SessionRecord> {
    recs.retain(|r| {
        (a.state.is_empty() || a.state.contains(&r.state)) && (!a.live || r.pid.is_some())
    });
    // Each key's natural order: names A-Z, the largest and most recent first.
    match a.sort {
        SortKey::Name => recs.sort_by(|x, y| x.name.cmp(&y.name)),
        SortKey::Cost => recs.sort_by(|x, y| y.total_cost_usd.total_cmp(&x.total_cost_usd)),
        SortKey::Turns => recs.sort_by_key(|r| std::cmp::Reverse(r.total_turns)),
        SortKey::Activity => recs.sort_by_key(|r| std::cmp::Reverse(r.updated_at)),
        SortKey::Created => recs.sort_by_key(|r| std::cmp::Reverse(r.created_at)),
    }
    if a.reverse {
        recs.reverse();
    }
    recs
}

/// `cms list --watch`: the table redrawn every few seconds until Ctrl-C (which ends
/// the process: nothing is held).
/// (`--json` is refused before this: see `commands`.)
pub(super) fn watch_list(m: &dyn Sessions, a: &ListArgs) -> Result<(), CliError> {
    if !std::io::stdout().is_terminal() {
        return Err(CliError::Usage(
            "--watch redraws a terminal, and stdout is not one; leave out --watch".into(),
        ));
    }
    // Between a tenth of a second and a day (a huge or tiny number is not a panic
    // or a busy loop).
    let every = Duration::from_secs_f64(a.watch.unwrap_or(2.0).clamp(0.1, 86_400.0));
    loop {
        let recs = select(m.list()?, a);
        let table = render::sessions_table(&recs, a.wide, super::style::stdout());
        let now = crate::views::timestamp(crate::engine::events::now_ms());
        let shown = super::out::with(|w| {
            write!(
                w,
                "\x1b[H\x1b[2Jcms list every {:.1}s (Ctrl-C to stop)  {now}\n\n{table}\n",
                every.as_secs_f64()
            )
        });
        if shown.is_err() {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}

fn done(text: String, json: Value) -> Outcome {
    Outcome::Done(Printed {
        text,
        json: json.into(),
    })
}

pub(super) fn run_async(
    cfg: EngineConfig,
    cmd: Command,
    json: bool,
    want: HostUse,
) -> Result<Outcome, CliError> {
    if let Command::Cleanup(a) = &cmd {
        // It may ask a question: before the runtime, so Ctrl-C ends it plainly.
        return cleanup(cfg, a, json);
    }
    let interrupted = interrupted_name(&cmd);
    let app = App::open(cfg, want).map_err(CliError::Input)?;
    let manager = app.sessions().clone();
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
    // The session a turn runs in: its progress only, and on a terminal its answer as
    // it streams.
    let what = super::progress::Watch {
        only: interrupted.iter().cloned().collect(),
        stream: interrupted.is_some() && super::progress::streaming(json),
        status: interrupted.is_some() && !json,
    };
    let watching = app.block_on(async { super::progress::watch(manager.as_ref(), what) });
    let creates = matches!(cmd, Command::Spawn(_) | Command::Fork(_));
    app.run_until_signal(async_command(&manager, cmd, json, watching.as_ref()))
        .unwrap_or_else(|| {
            // A session this command was creating, stopped before Claude Code gave it
            // a conversation, can never be resumed: it goes, so its name is free again.
            if let Some(n) = interrupted.as_deref().filter(|_| creates) {
                let unborn = manager
                    .status(n)
                    .is_ok_and(|r| r.claude_session_id.is_none());
                if unborn && app.block_on(manager.delete(n)).is_ok() {
                    return Err(CliError::Interrupted(format!(
                        "session '{n}' was stopped before Claude Code gave it a conversation, \
                         so it was removed; spawn it again"
                    )));
                }
            }
            Err(CliError::Interrupted(interrupted_message(
                manager.as_ref(),
                interrupted.as_deref(),
            )))
        })
}

/// `cms approvals`: every tool call waiting for a decision.
async fn approvals(m: &dyn Sessions) -> Result<Outcome, CliError> {
    let all = m.approvals().await?;
    let now = crate::engine::events::now_ms();
    let text = if all.is_empty() && m.location() == crate::engine::Where::InProcess {
        "No tool call waits for a decision in this process (without a session host, a call \
         waits in the command that runs its session)"
            .to_string()
    } else if all.is_empty() {
        "No tool call waits for a decision".to_string()
    } else {
        all.iter()
            .map(|a| {
                let left = ((a.deadline_ms - now).max(0) / 1000) as u64;
                format!(
                    "{}  {}  (id {}; {}; denied in {} unless decided)",
                    a.session,
                    a.summary(),
                    a.id,
                    a.reason,
                    humantime::format_duration(Duration::from_secs(left))
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(done(text, serde_json::to_value(&all).unwrap_or_default()))
}

/// `cms approve` / `cms deny`.
async fn decide(
    m: &dyn Sessions,
    name: &str,
    id: Option<String>,
    allow: bool,
    reason: Option<String>,
    always: bool,
) -> Result<Outcome, CliError> {
    if allow {
        if let Some(g) = crate::policy::isolation::inherited() {
            return Err(CliError::Input(format!(
                "cms refused: a guarded session (preset '{}') cannot approve tool calls; a person does",
                g.preset.as_deref().unwrap_or("read-only")
            )));
        }
    }
    // Without an id, the person means the call they saw: refuse to guess among several.
    if id.is_none() {
        let waiting: Vec<_> = m
            .approvals()
            .await?
            .into_iter()
            .filter(|a| a.session == name)
            .collect();
        if waiting.len() > 1 {
            let ids: Vec<String> = waiting
                .iter()
                .map(|a| format!("{} ({})", a.id, a.summary()))
                .collect();
            return Err(CliError::Input(format!(
                "{} tool calls of '{name}' wait for a decision; name one with --id: {}",
                waiting.len(),
                ids.join(", ")
            )));
        }
    }
    let a = m
        .decide(crate::engine::ApprovalVerdict {
            session: name.to_string(),
            id,
            allow,
            reason,
            by: "cli".into(),
            always,
        })
        .await?;
    let verb = if allow { "approved" } else { "denied" };
    let also = if always {
        format!("; later {} calls of '{name}' run without asking", a.tool)
    } else {
        String::new()
    };
    Ok(done(
        format!("{verb}: {} in '{name}'{also}", a.summary()),
        json!({"session": name, "id": a.id, "tool": a.tool, "allowed": allow, "always": always}),
    ))
}

/// A `--timeout` (checked above 0 by clap).
fn secs(t: f64) -> Option<Duration> {
    Some(Duration::from_secs_f64(
        t.min(crate::engine::spec::LONGEST_SECS),
    ))
}

/// A turn's end: its text and summary line (only the summary when the text was
/// streamed as it came), or its JSON.
fn turn_outcome(rec: &SessionRecord, r: &Response, streamed: bool) -> Outcome {
    let mut text = if streamed {
        format!("\n{}", render::response_footer(rec, r))
    } else {
        render::response_block(rec, r)
    };
    let denied = render::denials(rec, r);
    if !denied.is_empty() {
        text = format!("{text}\n{denied}");
    }
    let printed = Printed {
        text,
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

/// Whether the text of `name`'s turn, just returned, was streamed (after its last
/// events are shown).
async fn streamed(watching: Option<&Watching>, name: &str) -> bool {
    match watching {
        Some(w) => w.settle(name).await,
        None => false,
    }
}

async fn async_command(
    m: &Arc<dyn Sessions>,
    cmd: Command,
    json: bool,
    watching: Option<&Watching>,
) -> Result<Outcome, CliError> {
    Ok(match cmd {
        Command::Spawn(a) => {
            let mut spec = a.spec;
            spec.prompt = text_arg(&spec.prompt)?;
            let req = spec.into_request(false)?;
            let (_, r) = m.spawn(req.clone()).await?;
            m.shutdown().await;
            let streamed = streamed(watching, &req.name).await;
            turn_outcome(&m.status(&req.name)?, &r, streamed)
        }
        Command::Send(a) => {
            let message = text_arg(&a.message)?;
            let r = m.send(&a.name, &message, secs(a.timeout)).await?;
            if a.stop {
                m.stop(&a.name).await?;
            }
            m.shutdown().await;
            let streamed = streamed(watching, &a.name).await;
            turn_outcome(&m.status(&a.name)?, &r, streamed)
        }
        Command::Resume(a) => {
            let message = a.message.as_deref().map(text_arg).transpose()?;
            let (_, r) = m
                .resume(&a.name, message.as_deref(), secs(a.timeout))
                .await?;
            m.shutdown().await;
            let rec = m.status(&a.name)?;
            match r {
                Some(r) => turn_outcome(&rec, &r, streamed(watching, &a.name).await),
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
                Some(r) => turn_outcome(&rec, &r, streamed(watching, &a.new_name).await),
                None => done(
                    format!("Forked '{}' → '{}'", a.name, a.new_name),
                    render::turn_json(&rec, None),
                ),
            }
        }
        Command::Stop(a) => state_outcome(&m.stop(&a.name).await?, "stopped"),
        Command::Kill(a) => {
            if m.has_process(&a.name)? {
                state_outcome(&m.kill(&a.name).await?, "killed")
            } else {
                nothing_to_kill(&m.status(&a.name)?)
            }
        }
        Command::Approvals => approvals(m.as_ref()).await?,
        Command::Approve(a) => {
            decide(
                m.as_ref(),
                &a.session.name,
                a.id.clone(),
                true,
                None,
                a.always_for_session,
            )
            .await?
        }
        Command::Deny(a) => {
            decide(
                m.as_ref(),
                &a.session.name,
                a.id.clone(),
                false,
                Some(a.reason.clone()),
                false,
            )
            .await?
        }
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
        Command::Cleanup(_) => unreachable!("cleanup runs before the runtime starts"),
        Command::List(_) | Command::Status(_) | Command::Output(_) | Command::History(_) => {
            read_command(m.as_ref(), &cmd, json)?
        }
        Command::Demo(_)
        | Command::Hosts
        | Command::Script(_)
        | Command::Repl(_)
        | Command::LuaTypes
        | Command::Delegate(_)
        | Command::Continue(_)
        | Command::Finish(_)
        | Command::Abort(_)
        | Command::Policy(_)
        | Command::Mcp
        | Command::Serve(_)
        | Command::Host(_)
        | Command::Logs(_)
        | Command::Attach(_)
        | Command::Top
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
    m: &Arc<dyn Sessions>,
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
        .batch(reqs, concurrency, &mut |p: BatchProgress<'_>| {
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

/// What Ctrl-C (or SIGTERM) left behind: every session the command was driving is
/// killed and recorded as stopped (resumable), its unfinished turn in its history.
fn interrupted_message(m: &dyn Sessions, name: Option<&str>) -> String {
    let resumable = |n: &str| m.status(n).is_ok_and(|r| r.claude_session_id.is_some());
    if m.location() == crate::engine::Where::Host {
        // The host interrupted the turn this command asked for; the session lives on.
        return match name {
            Some(n) => format!(
                "the turn of session '{n}' was interrupted; the session stays live in the cms \
                 host, its history records the turn, and `cms send --name {n}` goes on"
            ),
            None => "the turns this command asked for were interrupted; their sessions stay \
                 live in the cms host"
                .into(),
        };
    }
    match name {
        Some(n) if !resumable(n) => format!(
            "session '{n}' was stopped before Claude Code gave it a conversation, so it cannot \
             be resumed: `cms delete --name {n}`, then spawn it again"
        ),
        Some(n) => format!(
            "session '{n}' was stopped (its process killed) before the turn finished; its history \
             records the turn as interrupted, and `cms send --name {n}` resumes it"
        ),
        None => "every session this command was driving was stopped (its process killed); \
                 `cms send` resumes each"
            .into(),
    }
}

/// The session a command drives, for the words after Ctrl-C.
fn interrupted_name(cmd: &Command) -> Option<String> {
    match cmd {
        Command::Send(a) => Some(a.name.clone()),
        Command::Resume(a) => Some(a.name.clone()),
        Command::Fork(a) => Some(a.new_name.clone()),
        Command::Spawn(a) => Some(a.spec.name.clone()),
        _ => None,
    }
}

/// `cms kill` of a session with no process: nothing changes, and it says so (exit 0:
/// what was asked for, no process, holds).
fn nothing_to_kill(rec: &SessionRecord) -> Outcome {
    done(
        format!(
            "'{}' has no running process; nothing to kill (it is {})",
            rec.name,
            rec.state.as_str()
        ),
        crate::views::record_json(rec),
    )
}

/// `cms cleanup`: shows what it would remove; removes after a yes on a terminal, or
/// with `--yes`. Not on a terminal and without `--yes` it refuses (exit 1), as a
/// script that meant to remove would rather fail than silently do nothing.
fn cleanup(
    cfg: EngineConfig,
    a: &super::args::CleanupArgs,
    json: bool,
) -> Result<Outcome, CliError> {
    let Some(m) = crate::engine::Manager::open_existing(cfg)? else {
        return Ok(cleanup_outcome(&[], &[], a.dry_run));
    };
    let idle: Vec<String> = m.idle(a.days)?.into_iter().map(|r| r.name).collect();
    if idle.is_empty() || a.dry_run {
        return Ok(cleanup_outcome(&[], &idle, a.dry_run));
    }
    if !a.yes {
        let asking = !json && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
        if !asking {
            return Err(CliError::Input(format!(
                "cleanup would remove {} session(s) idle for more than {} day(s): {}; \
                 nothing was removed: pass --yes to remove them (--dry-run only lists them)",
                idle.len(),
                a.days,
                idle.join(", ")
            )));
        }
        errln!(
            "These {} session(s) have been idle for more than {} day(s):",
            idle.len(),
            a.days
        );
        for n in &idle {
            errln!("  {n}");
        }
        if !confirm("Remove them for good? [y/N] ") {
            return Ok(Outcome::Failed(
                Printed {
                    text: String::new(),
                    json: json!({ "removed": [] }).into(),
                },
                "nothing was removed".into(),
            ));
        }
    }
    let removed = m.remove_idle(&idle, a.days)?;
    Ok(cleanup_outcome(&removed, &idle, false))
}

fn cleanup_outcome(removed: &[String], idle: &[String], dry_run: bool) -> Outcome {
    let (head, names) = if dry_run {
        (format!("Would remove {} session(s)", idle.len()), idle)
    } else if idle.is_empty() {
        ("Nothing to remove".to_string(), idle)
    } else {
        (format!("Removed {} session(s)", removed.len()), removed)
    };
    let mut text = head;
    for n in names {
        text.push_str(&format!("\n  {n}"));
    }
    let value = if dry_run {
        json!({ "removed": [], "would_remove": idle, "dry_run": true })
    } else {
        json!({ "removed": removed })
    };
    done(text, value)
}

/// Ask on the terminal; anything but y/yes (or a closed stdin) is no.
fn confirm(question: &str) -> bool {
    use std::io::Write;
    let mut err = std::io::stderr();
    let _ = write!(err, "{question}");
    let _ = err.flush();
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// A reading command (`list`, `status`, `output`, `history`): it creates nothing, so
/// a `CMS_HOME` that does not exist is said to be so, and a file is an error.
pub(super) fn read_existing(
    cfg: EngineConfig,
    cmd: &Command,
    json: bool,
) -> Result<Outcome, CliError> {
    let home = cfg.home.clone();
    if let Some(m) = crate::engine::Manager::open_existing(cfg)? {
        return read_command(m.as_ref(), cmd, json);
    }
    let name = match cmd {
        Command::Status(a) => &a.name,
        Command::Output(a) => &a.name,
        Command::History(a) => &a.name,
        _ => {
            return Ok(Outcome::Done(Printed {
                text: format!(
                    "No sessions yet (CMS_HOME={} does not exist)",
                    home.display()
                ),
                json: Json::Records(Vec::new()),
            }))
        }
    };
    Err(CliError::Input(format!(
        "session '{name}' not found: there are no sessions yet (CMS_HOME={} does not exist)",
        home.display()
    )))
}

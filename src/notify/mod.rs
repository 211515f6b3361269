//! Notifications: when a session finishes a turn, asks a question, waits for a
//! person's decision, fails, or spends its budget, the host tells the user the way
//! `notify.lua` says (built-in, or the user's `~/.config/cms/notify.lua`, read again
//! when it changes): a terminal bell, a desktop notification (`notify-send` where
//! there is one), a command of the user's (ntfy, Slack, a phone), or a Lua function.
//!
//! It never holds a session up: events are read from the engine's channel, turned
//! into notices, rate-limited, and handed to one thread of its own that runs the Lua
//! (under a time limit) and starts the commands (killed past their time). Notices
//! that come faster than they can be told are dropped, and the log says so.

use crate::engine::{EventKind, SessionEvent};
use crate::sandbox::limits::{call_limited, load_limited};
use crate::sandbox::scripts::{Layers, Source};
use crate::sandbox::{error_text, new_state, StateOptions};
use mlua::{Function, Lua, LuaSerdeExt, Table, Value};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Longest `notify(n)` may run.
const LUA_LIMIT: Duration = Duration::from_secs(2);
/// Longest a notification command may run before it is killed.
const COMMAND_LIMIT: Duration = Duration::from_secs(10);
/// Notices waiting for the notifying thread; more are dropped.
const BACKLOG: usize = 64;

/// What happened, as the user hears of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    /// `turn_done`, `needs_input`, `waiting_approval`, `failed`, `budget_spent`.
    pub kind: &'static str,
    pub session: String,
    /// One line for a person.
    pub message: String,
}

/// Turns a session's events into notices (it remembers each session's last text,
/// so a turn that ends on a question is `needs_input`).
#[derive(Default)]
pub struct Classifier {
    last_text: HashMap<String, String>,
}

impl Classifier {
    pub fn notice(&mut self, e: &SessionEvent) -> Option<Notice> {
        let s = e.session.clone();
        let (kind, message) = match &e.kind {
            EventKind::Text { text } => {
                self.last_text.insert(s, text.clone());
                return None;
            }
            EventKind::Result {
                is_error: false,
                cost_usd,
                ..
            } => {
                let text = self.last_text.remove(&s).unwrap_or_default();
                if text.trim_end().ends_with('?') {
                    let q = text.trim().lines().last().unwrap_or_default();
                    ("needs_input", format!("'{s}' asks: {}", clip(q, 200)))
                } else {
                    (
                        "turn_done",
                        format!("'{s}' finished a turn (${cost_usd:.4})"),
                    )
                }
            }
            EventKind::Result { subtype, .. } => {
                self.last_text.remove(&s);
                ("failed", format!("'{s}': the turn failed ({subtype})"))
            }
            EventKind::Approval { tool, reason, .. } => (
                "waiting_approval",
                format!(
                    "'{s}' waits for your decision on {tool}: {}",
                    clip(reason, 200)
                ),
            ),
            EventKind::Violation { rule, message, .. }
                if rule == "cost_exceeded" || rule == "turns_exceeded" =>
            {
                ("budget_spent", format!("'{s}': {}", clip(message, 200)))
            }
            _ => return None,
        };
        Some(Notice {
            kind,
            session: e.session.clone(),
            message,
        })
    }
}

fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Tell the user of the notices in `events` until the channel closes.
pub fn start(mut events: broadcast::Receiver<SessionEvent>, layers: Layers) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Notice>(BACKLOG);
    let spawned = std::thread::Builder::new()
        .name("cms-notify".into())
        .spawn(move || {
            let mut teller = Teller::new(layers);
            while let Ok(n) = rx.recv() {
                teller.tell(&n);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("notifications are off: cannot start their thread: {e}");
        return;
    }
    tokio::spawn(async move {
        let mut classify = Classifier::default();
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(n) = classify.notice(&e) {
                        if tx.try_send(n).is_err() {
                            tracing::warn!("a notification was dropped: too many at once");
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("notifications skipped {n} events");
                }
                Err(_) => break,
            }
        }
    });
}

/// The notifying thread: `notify.lua`, loaded again when it changes, and the rates.
struct Teller {
    layers: Layers,
    loaded: Option<(String, Lua, Table)>,
    /// When each (session, kind) was last told.
    last: HashMap<(String, &'static str), Instant>,
    /// When notices were told in the last minute.
    recent: Vec<Instant>,
}

/// The settings of `notify.lua` that Rust applies.
struct Settings {
    kinds: HashMap<String, bool>,
    bell: bool,
    desktop: bool,
    command: Option<Vec<String>>,
    min_interval: Duration,
    per_minute: usize,
}

impl Teller {
    fn new(layers: Layers) -> Teller {
        Teller {
            layers,
            loaded: None,
            last: HashMap::new(),
            recent: Vec::new(),
        }
    }

    /// The module of `notify.lua` as it is now.
    fn module(&mut self) -> Result<(&Lua, Table), String> {
        let src: Source = self
            .layers
            .find("notify.lua")
            .ok_or("no notify.lua in any layer")?;
        let fresh = self
            .loaded
            .as_ref()
            .is_none_or(|(code, ..)| *code != src.code);
        if fresh {
            let lua = new_state(StateOptions {
                allow_unsafe: false,
                memory_limit: 32 << 20,
                confine_files: true,
            })
            .map_err(|e| e.to_string())?;
            let m: Table = load_limited(&lua, || {
                lua.load(src.code.as_str())
                    .set_name(format!("@{}", src.origin))
                    .eval()
            })
            .map_err(|e| error_text(&e))?;
            self.loaded = Some((src.code, lua, m));
        }
        let (_, lua, m) = self.loaded.as_ref().expect("loaded above");
        Ok((lua, m.clone()))
    }

    fn tell(&mut self, n: &Notice) {
        let (settings, custom) = match self.module() {
            Ok((_, m)) => (
                settings(&m),
                m.get::<Option<Function>>("notify").ok().flatten(),
            ),
            Err(e) => {
                tracing::warn!("notify.lua does not load, so nobody is told: {e}");
                return;
            }
        };
        if !settings.kinds.get(n.kind).copied().unwrap_or(false) {
            return;
        }
        let now = Instant::now();
        let key = (n.session.clone(), n.kind);
        if self
            .last
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < settings.min_interval)
        {
            return;
        }
        self.recent
            .retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        if self.recent.len() >= settings.per_minute {
            tracing::warn!(
                "notification not sent: more than {} a minute",
                settings.per_minute
            );
            return;
        }
        self.last.insert(key, now);
        self.recent.push(now);
        // The user's function first: `false` means it told the user itself.
        if let Some(f) = custom {
            let Some((lua, _)) = self.loaded.as_ref().map(|(_, l, m)| (l, m)) else {
                return;
            };
            let arg = match lua.to_value(n) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!("notify: {e}");
                    return;
                }
            };
            match call_limited::<Value>(lua, LUA_LIMIT, &f, arg) {
                Ok(Value::Boolean(false)) => return,
                Ok(_) => {}
                Err(e) => tracing::warn!("notify.lua's notify() failed: {}", error_text(&e)),
            }
        }
        if settings.bell {
            use std::io::{IsTerminal, Write};
            let mut err = std::io::stderr();
            if err.is_terminal() {
                let _ = write!(err, "\x07");
            }
        }
        if settings.desktop && on_path("notify-send") {
            run(&[
                "notify-send".into(),
                "-a".into(),
                "cms".into(),
                format!("cms: {}", n.kind.replace('_', " ")),
                n.message.clone(),
            ]);
        }
        if let Some(argv) = settings.command {
            let argv: Vec<String> = argv
                .iter()
                .map(|a| {
                    a.replace("{kind}", n.kind)
                        .replace("{session}", &n.session)
                        .replace("{message}", &n.message)
                })
                .collect();
            run(&argv);
        }
    }
}

fn settings(m: &Table) -> Settings {
    let kinds = m
        .get::<Option<Table>>("on")
        .ok()
        .flatten()
        .map(|t| {
            t.pairs::<String, bool>()
                .flatten()
                .collect::<HashMap<String, bool>>()
        })
        .unwrap_or_default();
    Settings {
        kinds,
        bell: m.get::<Option<bool>>("bell").ok().flatten().unwrap_or(true),
        desktop: m
            .get::<Option<bool>>("desktop")
            .ok()
            .flatten()
            .unwrap_or(true),
        command: m.get::<Option<Vec<String>>>("command").ok().flatten(),
        min_interval: Duration::from_secs_f64(
            m.get::<Option<f64>>("min_interval")
                .ok()
                .flatten()
                .unwrap_or(10.0)
                .clamp(0.0, 86_400.0),
        ),
        per_minute: m
            .get::<Option<usize>>("per_minute")
            .ok()
            .flatten()
            .unwrap_or(20),
    }
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// Start `argv` with no shell and its output discarded; killed past its time. Never
/// waits on the notifying thread's caller.
fn run(argv: &[String]) {
    let Some((bin, args)) = argv.split_first() else {
        return;
    };
    let child = std::process::Command::new(bin)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match child {
        Ok(mut c) => {
            let started = Instant::now();
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if started.elapsed() > COMMAND_LIMIT => {
                        let _ = c.kill();
                        let _ = c.wait();
                        tracing::warn!(
                            "the notification command {bin} took over {COMMAND_LIMIT:?}: killed"
                        );
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    Err(_) => break,
                }
            }
        }
        Err(e) => tracing::warn!("cannot run the notification command {bin}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(session: &str, kind: EventKind) -> SessionEvent {
        SessionEvent {
            session: session.into(),
            at_ms: 0,
            kind,
        }
    }

    fn result(is_error: bool) -> EventKind {
        EventKind::Result {
            cost_usd: 0.5,
            session_cost_usd: 1.0,
            num_turns: 1,
            is_error,
            subtype: if is_error {
                "error_max_turns"
            } else {
                "success"
            }
            .into(),
        }
    }

    #[test]
    fn events_become_the_notices_people_want() {
        let mut c = Classifier::default();
        assert_eq!(
            c.notice(&ev(
                "a",
                EventKind::Text {
                    text: "done.".into()
                }
            )),
            None
        );
        assert_eq!(c.notice(&ev("a", result(false))).unwrap().kind, "turn_done");
        c.notice(&ev(
            "a",
            EventKind::Text {
                text: "Which file?".into(),
            },
        ));
        let n = c.notice(&ev("a", result(false))).unwrap();
        assert_eq!(
            (n.kind, n.message.as_str()),
            ("needs_input", "'a' asks: Which file?")
        );
        assert_eq!(c.notice(&ev("b", result(true))).unwrap().kind, "failed");
        let approval = EventKind::Approval {
            id: "1".into(),
            tool: "Write".into(),
            input: serde_json::Value::Null,
            reason: "outside".into(),
            deadline_ms: 0,
        };
        assert_eq!(
            c.notice(&ev("c", approval)).unwrap().kind,
            "waiting_approval"
        );
        let spent = EventKind::Violation {
            rule: "cost_exceeded".into(),
            message: "Cost $3 exceeded limit $2".into(),
            action: "killed".into(),
            tool: None,
        };
        assert_eq!(c.notice(&ev("d", spent)).unwrap().kind, "budget_spent");
        assert_eq!(
            c.notice(&ev(
                "d",
                EventKind::State {
                    state: crate::engine::SessionState::Idle
                }
            )),
            None
        );
    }
}

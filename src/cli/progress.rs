//! What a person sees of sessions' events while a command runs.
//!
//! - Progress lines on stderr: a session busy in another cms command (and its place
//!   in line), the CLI's API retries as they happen. Only for a person: shown when
//!   stderr is a terminal, or when `CMS_PROGRESS=1` asks for it (logs of unattended
//!   runs). The final error of a turn names its retries either way.
//! - On a terminal, a turn's answer as it streams ([`Watch::stream`]): its text on
//!   stdout, its tool uses as progress lines; the command then prints only its
//!   summary line ([`Watching::settle`] says whether the text was shown).
//! - [`feed`]: the events of some sessions handed to a renderer, counted so a
//!   caller can wait for the end of a turn it asked for (`cms attach`, `cms logs -f`);
//!   [`describe`] is the one line each event deserves there.
//!
//! Text events are whole text blocks (the engine asks Claude Code for no partial
//! messages), so each is shown as its own paragraph.

use super::out::{self, errln};
use super::style;
use crate::engine::lease::Holder;
use crate::engine::{EventKind, SessionEvent, SessionState, Sessions};
use serde_json::Value;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Whether progress lines go to stderr.
pub fn wanted() -> bool {
    match std::env::var("CMS_PROGRESS").as_deref() {
        Ok("1") | Ok("always") => true,
        Ok("0") | Ok("never") => false,
        _ => std::io::stderr().is_terminal(),
    }
}

/// Whether a turn's answer streams to stdout as it arrives: a person reads stdout
/// (a terminal) and no `--json` was asked for. Off a terminal stdout stays as it
/// always was: the whole answer once the turn is done.
pub fn streaming(json: bool) -> bool {
    !json && std::io::stdout().is_terminal()
}

/// What a command shows while it runs.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    /// Only the events of these sessions (empty: every session this process sees).
    pub only: Vec<String>,
    /// Stream the text of their turns to stdout, their tool uses as progress lines.
    pub stream: bool,
    /// A one-line status of the (one) session on a terminal's stderr while it works:
    /// spinner, state, current tool and target, cost so far, time.
    pub status: bool,
}

/// The status line: drawn on a tick, cleared before any other line is written, so
/// it never mixes with them.
struct StatusLine {
    session: String,
    state: String,
    tool: Option<String>,
    cost: Option<f64>,
    started: std::time::Instant,
    frame: usize,
    shown: bool,
}

impl StatusLine {
    fn clear(&mut self) {
        if self.shown {
            use std::io::Write;
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            self.shown = false;
        }
    }

    fn draw(&mut self) {
        use std::io::Write;
        const SPIN: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
        self.frame = (self.frame + 1) % SPIN.len();
        let mut parts = vec![
            format!("{} {}", SPIN[self.frame], self.session),
            self.state.clone(),
        ];
        if let Some(t) = &self.tool {
            parts.push(t.clone());
        }
        if let Some(c) = self.cost {
            parts.push(super::render::money(c));
        }
        parts.push(format!("{}s", self.started.elapsed().as_secs()));
        let text = clip(&parts.join(" · "), 100);
        let _ = write!(std::io::stderr(), "\r\x1b[K{}", dim(&text, style::stderr()));
        self.shown = true;
    }

    fn saw(&mut self, e: &SessionEvent) {
        match &e.kind {
            EventKind::State { state } => self.state = state.as_str().replace('_', " "),
            EventKind::ToolUse { name, input, .. } => {
                self.tool = Some(match target(input) {
                    Some(t) => format!("{name} {}", clip(&t, 50)),
                    None => name.clone(),
                })
            }
            EventKind::Approval { .. } => self.state = "waits for your decision".into(),
            EventKind::Retry(_) => self.state = "retrying".into(),
            EventKind::Result {
                session_cost_usd, ..
            } => {
                self.cost = Some(*session_cost_usd);
                self.tool = None;
            }
            _ => {}
        }
    }
}

/// How many results and text blocks a feed has shown, per session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    pub results: usize,
    pub texts: usize,
}

#[derive(Default)]
struct Seen {
    counts: Mutex<HashMap<String, Mark>>,
    changed: Notify,
}

impl Seen {
    fn mark(&self, name: &str) -> Mark {
        self.counts
            .lock()
            .map(|c| c.get(name).copied().unwrap_or_default())
            .unwrap_or_default()
    }

    fn saw(&self, e: &SessionEvent) {
        if let Ok(mut counts) = self.counts.lock() {
            let c = counts.entry(e.session.clone()).or_default();
            match &e.kind {
                EventKind::Result { .. } => c.results += 1,
                EventKind::Text { text } if !text.trim().is_empty() => c.texts += 1,
                _ => return,
            }
        }
        self.changed.notify_waiters();
    }
}

/// Events handed to a renderer while it lives: dropping it stops them.
pub struct Feed {
    task: JoinHandle<()>,
    seen: Arc<Seen>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the end of a turn showed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settled {
    /// Some text of the turn was shown.
    pub text: bool,
    /// Its `result` event was shown.
    pub result: bool,
}

impl Feed {
    /// Where the counts of `name` stand now: take it before asking for a turn.
    pub fn mark(&self, name: &str) -> Mark {
        self.seen.mark(name)
    }

    /// A turn of `name` asked for after `since` has returned: wait (a moment at
    /// most: its events may trail its answer) until its `result` event was shown.
    pub async fn settle(&self, name: &str, since: Mark) -> Settled {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
        loop {
            let changed = self.seen.changed.notified();
            let now = self.seen.mark(name);
            let settled = Settled {
                text: now.texts > since.texts,
                result: now.results > since.results,
            };
            if settled.result || tokio::time::Instant::now() >= deadline {
                return settled;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// Hand every event of the sessions in `only` (every session when empty) to `show`,
/// in order, until the event stream ends or the feed is dropped. Subscribed before
/// it returns: a request made after it has all its events shown.
pub fn feed(
    sessions: &dyn Sessions,
    only: Vec<String>,
    mut show: impl FnMut(&SessionEvent) + Send + 'static,
) -> Feed {
    let mut events = sessions.subscribe();
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    let task = tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match events.recv().await {
                Ok(e) if only.is_empty() || only.contains(&e.session) => {
                    show(&e);
                    counts.saw(&e);
                }
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            }
        }
    });
    Feed { task, seen }
}

/// Progress lines (and with [`Watch::stream`] the streamed answer) while it lives.
pub struct Watching {
    feed: Feed,
    stream: bool,
    status: Option<(Arc<Mutex<StatusLine>>, JoinHandle<()>)>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some((line, ticker)) = &self.status {
            ticker.abort();
            if let Ok(mut l) = line.lock() {
                l.clear();
            }
        }
    }
}

impl Watching {
    /// A function that prints a progress line the way the feed does: the status line
    /// steps aside for it (for what is told outside the events, a delegation's rounds).
    pub fn printer(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let line = self.status.as_ref().map(|(l, _)| l.clone());
        let paint = style::stderr();
        move |text: &str| {
            let mut held = line.as_ref().and_then(|l| l.lock().ok());
            if let Some(l) = held.as_mut() {
                l.clear();
            }
            errln!("{}", dim(&format!("  {text}"), paint));
        }
    }

    /// A turn of `name` has returned: once its last events are shown, whether its
    /// text was streamed (the summary then leaves the text out).
    pub async fn settle(&self, name: &str) -> bool {
        self.stream && self.feed.settle(name, Mark::default()).await.text
    }
}

/// Print progress lines for the sessions `what` names until the event stream ends
/// or the returned guard is dropped; stream their answers when it asks. None when
/// nobody would see anything.
pub fn watch(sessions: &dyn Sessions, what: Watch) -> Option<Watching> {
    let progress = wanted();
    if !progress && !what.stream {
        return None;
    }
    let stream = what.stream;
    let one = what.only.len() == 1;
    let status = (what.status && one && std::io::stderr().is_terminal()).then(|| {
        Arc::new(Mutex::new(StatusLine {
            session: what.only[0].clone(),
            state: "starting".into(),
            tool: None,
            cost: None,
            started: std::time::Instant::now(),
            frame: 0,
            shown: false,
        }))
    });
    let line_for_feed = status.clone();
    let feed = feed(sessions, what.only, move |e| {
        // The status line steps aside for every other line, and learns from the event.
        let mut held = line_for_feed.as_ref().and_then(|l| l.lock().ok());
        if let Some(l) = held.as_mut() {
            l.saw(e);
            l.clear();
        }
        show_event(e, stream, progress, one);
    });
    let status = status.map(|line| {
        let ticking = line.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(120));
            loop {
                tick.tick().await;
                if let Ok(mut l) = ticking.lock() {
                    l.draw();
                }
            }
        });
        (line, ticker)
    });
    Some(Watching {
        feed,
        stream,
        status,
    })
}

/// One event as a command shows it: streamed text, a dim tool line, or a progress line.
fn show_event(e: &SessionEvent, stream: bool, progress: bool, one: bool) {
    match &e.kind {
        EventKind::Text { text } if stream => print_text(text),
        EventKind::ToolUse { .. } | EventKind::Permission { .. } if stream && progress => {
            if let Some(l) = describe(e) {
                let who = if one {
                    String::new()
                } else {
                    format!("{}: ", e.session)
                };
                errln!("{}", dim(&format!("  {who}{l}"), style::stderr()));
            }
        }
        _ if progress => {
            if let Some(l) = line(e) {
                errln!("{l}");
            }
        }
        _ => {}
    }
}

/// A text block on stdout, as its own paragraph. Every write ends a line, so a
/// progress line on stderr never lands in the middle of the text.
pub fn print_text(text: &str) {
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return;
    }
    let _ = out::with(|w| {
        w.write_all(text.as_bytes())?;
        w.write_all(b"\n")
    });
}

/// `text` dimmed when `paint`.
pub fn dim(text: &str, paint: bool) -> String {
    use clap::builder::styling::Effects;
    style::paint(text, style::Style::new().effects(Effects::DIMMED), paint)
}

/// The progress line an event deserves on stderr, if any.
pub fn line(e: &SessionEvent) -> Option<String> {
    match &e.kind {
        EventKind::Waiting {
            holder_pid,
            holder_kind,
            position,
        } => {
            let who = Holder {
                pid: *holder_pid,
                kind: holder_kind.clone(),
            }
            .who();
            let place = match position {
                1 => "next in line".to_string(),
                n => format!("{n} in line"),
            };
            Some(format!(
                "cms: session '{}' is busy in {who}; waiting ({place}; --no-wait refuses instead)",
                e.session
            ))
        }
        EventKind::Queued { position } => {
            let place = match position {
                1 => "next in line".to_string(),
                n => format!("{n} in line"),
            };
            Some(format!(
                "cms: session '{}' waits for a free slot ({place}; host.max_live and host.max_turns in safety.lua set how many)",
                e.session
            ))
        }
        EventKind::Approval {
            tool,
            input,
            reason,
            ..
        } => {
            let what = target(input).map(|t| format!(" {t}")).unwrap_or_default();
            Some(format!(
                "cms: session '{}' waits for your decision on {tool}{what} ({reason}): \
                 `cms approve {0}` or `cms deny {0} --reason ...`",
                e.session
            ))
        }
        EventKind::Retry(r) => {
            let status = match r.error_status {
                Some(s) => format!("API error {s}"),
                None => "API unreachable".to_string(),
            };
            let why = r
                .error
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            Some(format!(
                "cms: session '{}': {status}{why}; retry {}/{} in {:.1}s",
                e.session,
                r.attempt,
                r.max_retries,
                r.retry_delay_ms / 1000.0
            ))
        }
        _ => None,
    }
}

/// One line for an event that is not text, as `cms logs` and `cms attach` show it;
/// None for those not worth a line (text, init, a tool's successful result, the
/// cost baseline).
pub fn describe(e: &SessionEvent) -> Option<String> {
    Some(match &e.kind {
        EventKind::Text { .. }
        | EventKind::Init { .. }
        | EventKind::CostBaseline(_)
        | EventKind::ToolResult {
            is_error: false, ..
        } => return None,
        EventKind::ToolUse { name, input, .. } => match target(input) {
            Some(t) => format!("→ {name} {t}"),
            None => format!("→ {name}"),
        },
        EventKind::ToolResult { content, .. } => {
            format!("  the tool failed: {}", clip(&content_text(content), 160))
        }
        EventKind::Permission {
            tool,
            allowed,
            reason,
        } => {
            let verdict = if *allowed { "allowed" } else { "denied" };
            match reason.as_deref().filter(|r| !r.is_empty()) {
                Some(r) => format!("  {verdict} {tool}: {}", clip(r, 160)),
                None => format!("  {verdict} {tool}"),
            }
        }
        EventKind::Decided {
            tool,
            allowed,
            by,
            reason,
            ..
        } => {
            let verdict = if *allowed { "approved" } else { "denied" };
            match reason.as_deref().filter(|r| !r.is_empty()) {
                Some(r) => format!("  {verdict} by {by}: {tool}: {}", clip(r, 160)),
                None => format!("  {verdict} by {by}: {tool}"),
            }
        }
        EventKind::Retry(_)
        | EventKind::Waiting { .. }
        | EventKind::Queued { .. }
        | EventKind::Approval { .. } => {
            let l = line(e)?;
            let prefix = format!("cms: session '{}': ", e.session);
            match l.strip_prefix(&prefix) {
                Some(rest) => format!("! {rest}"),
                None => format!("! {}", l.trim_start_matches("cms: ")),
            }
        }
        EventKind::Violation {
            rule,
            message,
            action,
            tool,
        } => {
            let on = tool
                .as_deref()
                .map(|t| format!(" ({t})"))
                .unwrap_or_default();
            format!("! safety rule {rule}{on}: {message} [{action}]")
        }
        EventKind::Result {
            cost_usd,
            session_cost_usd,
            num_turns,
            is_error,
            subtype,
        } => {
            let turns = if *num_turns == 1 { "turn" } else { "turns" };
            let failed = if *is_error {
                format!(" · failed ({subtype})")
            } else {
                String::new()
            };
            format!(
                "= {} · session {} · {num_turns} {turns}{failed}",
                super::render::money(*cost_usd),
                super::render::money(*session_cost_usd)
            )
        }
        EventKind::State { state } => format!("· {state}"),
        EventKind::Error { message } => format!("! {}", clip(message, 300)),
        EventKind::Exit { code, signal } => match (code, signal) {
            (_, Some(s)) => format!("· the process ended (signal {s})"),
            (Some(c), None) => format!("· the process ended (exit code {c})"),
            (None, None) => "· the process ended".to_string(),
        },
    })
}

/// Whether a state is worth a line between turns (`busy` and `idle` come with
/// every turn).
pub fn notable_state(state: SessionState) -> bool {
    !matches!(
        state,
        SessionState::Busy | SessionState::Idle | SessionState::Retrying
    )
}

/// What a tool works on: its file, command, pattern or address.
fn target(input: &Value) -> Option<String> {
    [
        "file_path",
        "notebook_path",
        "command",
        "pattern",
        "path",
        "url",
        "query",
        "description",
    ]
    .iter()
    .find_map(|k| input.get(*k).and_then(Value::as_str))
    .filter(|s| !s.trim().is_empty())
    .map(|s| clip(s, 120))
}

/// A tool result's text (a string, or blocks of text).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One line of at most `n` characters.
pub fn clip(s: &str, n: usize) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        format!("{}…", one_line.chars().take(n).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::events::ApiRetryEvent;

    fn event(kind: EventKind) -> SessionEvent {
        SessionEvent {
            session: "s".into(),
            at_ms: 0,
            kind,
        }
    }

    #[test]
    fn retries_and_waits_read_as_sentences() {
        let retry = event(EventKind::Retry(ApiRetryEvent {
            attempt: 2,
            max_retries: 10,
            retry_delay_ms: 1200.0,
            error_status: Some(529),
            error: Some("overloaded".into()),
        }));
        assert_eq!(
            line(&retry).unwrap(),
            "cms: session 's': API error 529 (overloaded); retry 2/10 in 1.2s"
        );
        assert_eq!(
            describe(&retry).unwrap(),
            "! API error 529 (overloaded); retry 2/10 in 1.2s"
        );
        let wait = event(EventKind::Waiting {
            holder_pid: Some(12),
            holder_kind: Some("cli".into()),
            position: 2,
        });
        let text = line(&wait).unwrap();
        assert!(text.contains("another cms command (pid 12)") && text.contains("2 in line"));
        assert!(line(&event(EventKind::Text { text: "x".into() })).is_none());
    }

    #[test]
    fn tool_uses_name_their_target_and_results_their_cost() {
        let read = event(EventKind::ToolUse {
            id: "1".into(),
            name: "Read".into(),
            input: serde_json::json!({"file_path": "src/main.rs"}),
        });
        assert_eq!(describe(&read).unwrap(), "→ Read src/main.rs");
        let bash = event(EventKind::ToolUse {
            id: "2".into(),
            name: "Bash".into(),
            input: serde_json::json!({"command": "cargo test\n  --all"}),
        });
        assert_eq!(describe(&bash).unwrap(), "→ Bash cargo test --all");
        let denied = event(EventKind::Permission {
            tool: "Write".into(),
            allowed: false,
            reason: Some("protected path".into()),
        });
        assert_eq!(describe(&denied).unwrap(), "  denied Write: protected path");
        let result = event(EventKind::Result {
            cost_usd: 0.001,
            session_cost_usd: 0.003,
            num_turns: 1,
            is_error: false,
            subtype: "success".into(),
        });
        assert_eq!(
            describe(&result).unwrap(),
            "= $0.0010 · session $0.0030 · 1 turn"
        );
        assert!(describe(&event(EventKind::Text { text: "x".into() })).is_none());
        let ok = event(EventKind::ToolResult {
            tool_use_id: "1".into(),
            is_error: false,
            content: Value::Null,
        });
        assert!(describe(&ok).is_none());
    }
}

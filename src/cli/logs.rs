//! `cms logs NAME [-f] [--json]`: what a session did, read from the store (each
//! interaction's message and answer with its kind, time and cost, and the recorded
//! events between: tools used, permission decisions, retries, errors), in time
//! order; then with `-f` what it does, live from the session host, until Ctrl-C.
//!
//! Reading never starts a host. `-f` follows the name: when no host runs, or the
//! session is not live, it waits (a later `cms send` from another shell starts
//! both); when the host ends, it waits for the next one. Under `--no-host` sessions
//! live in the commands that drive them, so `-f` follows what the store records.
//! `--json` prints one JSON object a line: each event as `SessionEvent` serializes,
//! each interaction as an `interaction` event.

use super::args::LogsArgs;
use super::out::{self, errln};
use super::outcome::CliError;
use super::progress::{self, describe};
use crate::app::exit;
use crate::app::runtime::{init_runtime, shutdown_signal};
use crate::engine::store::StoredEvent;
use crate::engine::{EngineConfig, EventKind, Interaction, Manager, SessionEvent, Sessions};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Run `cms logs`; `no_host` when sessions live in the commands (`--no-host`).
pub fn run(cfg: EngineConfig, a: LogsArgs, json: bool, no_host: bool) -> i32 {
    let name = a.name.clone();
    let store = match open(&cfg, &name) {
        Ok(m) => m,
        Err(e) => return out::fail(json, e),
    };
    let rt = match a.follow.then(init_runtime).transpose() {
        Ok(rt) => rt,
        Err(e) => return out::fail(json, e),
    };
    // Subscribed before the history is read: nothing falls between the two.
    let live = match &rt {
        Some(rt) if !no_host => match rt.block_on(subscribe(&cfg)) {
            Ok(live) => live,
            Err(e) => return out::fail(json, e),
        },
        _ => None,
    };
    let mut shown = Shown::default();
    if let Err(e) = catch_up(store.as_ref(), &name, json, &mut shown) {
        return out::fail(json, e);
    }
    if !json && shown.printed == 0 {
        let _ = out::line(format_args!("No interactions for '{name}' yet."));
    }
    let Some(rt) = rt.filter(|_| !out::is_closed()) else {
        return exit::OK;
    };
    let follow = async {
        if no_host {
            follow_store(store.as_ref(), &name, json, shown).await
        } else {
            follow_host(&cfg, store.as_ref(), &name, json, shown, live).await
        }
    };
    let code = rt.block_on(async {
        tokio::select! {
            r = follow => r,
            // Ctrl-C is how a follow ends: not a failure.
            _ = shutdown_signal() => exit::OK,
        }
    });
    rt.shutdown_background();
    code
}

/// The store, when the session is in it: an unknown session (or no store yet) is an
/// error naming it. Nothing is created.
fn open(cfg: &EngineConfig, name: &str) -> Result<Arc<Manager>, CliError> {
    let Some(m) = Manager::open_existing(cfg.clone())? else {
        return Err(CliError::Input(format!(
            "session '{name}' not found: there are no sessions yet (CMS_HOME={} does not \
             exist); `cms spawn {name} PROMPT` starts one",
            cfg.home.display()
        )));
    };
    m.status(name)?;
    Ok(m)
}

type Recorded = (Vec<Interaction>, Vec<StoredEvent>);

fn read(m: &dyn Sessions, name: &str) -> Result<Recorded, CliError> {
    Ok((m.history(name)?, m.store().events(name)?))
}

/// What has been printed, so following goes on from there.
#[derive(Debug, Default, Clone)]
struct Shown {
    interactions: usize,
    events: usize,
    /// The time of the last recorded event printed: a live event this old was in it.
    until_ms: i64,
    /// Lines printed.
    printed: usize,
    /// The day of the last line printed (a line of a new day is headed by it).
    day: String,
}

impl Shown {
    fn catch_up(&mut self, history: &[Interaction], events: &[StoredEvent]) {
        self.interactions = history.len();
        self.events = events.len();
        self.until_ms = events.iter().map(|e| e.at).max().unwrap_or(self.until_ms);
    }
}

/// A recorded event as it was published.
fn event_of(name: &str, e: &StoredEvent) -> Option<SessionEvent> {
    let mut v = e.data.clone();
    let obj = v.as_object_mut()?;
    obj.insert("session".into(), name.into());
    obj.insert("at_ms".into(), e.at.into());
    obj.entry("event").or_insert_with(|| e.kind.clone().into());
    serde_json::from_value(v).ok()
}

/// One line of the timeline.
enum Item<'a> {
    Asked(&'a Interaction),
    Answered(&'a Interaction),
    Event(SessionEvent),
}

/// Interactions and recorded events in order: each message, the events of its turn
/// (those recorded after the previous turn ended), its answer; the events after the
/// last turn at the end. A process that ended before a message was sent is shown
/// before it (turns report their duration; the simulator's are often 0 ms).
fn timeline<'a>(
    name: &str,
    history: &'a [Interaction],
    events: &[StoredEvent],
) -> Vec<(i64, Item<'a>)> {
    // (turn, phase, time): phase 0 before the message, 1 the message, 2 its events, 3 its answer.
    let mut items: Vec<((usize, u8, i64), Item<'a>)> = Vec::new();
    for (n, i) in history.iter().enumerate() {
        items.push(((n, 1, began(i)), Item::Asked(i)));
        items.push(((n, 3, i.at), Item::Answered(i)));
    }
    for e in events {
        let Some(ev) = event_of(name, e) else {
            continue;
        };
        let turn = history.partition_point(|i| i.at < e.at);
        let before = matches!(ev.kind, EventKind::Exit { .. })
            && history.get(turn).is_some_and(|i| e.at < began(i));
        let phase = if before { 0 } else { 2 };
        items.push(((turn, phase, e.at), Item::Event(ev)));
    }
    // Stable: events of one moment keep the store's order.
    items.sort_by_key(|(key, _)| *key);
    items.into_iter().map(|((_, _, at), i)| (at, i)).collect()
}

/// When an interaction's turn began.
fn began(i: &Interaction) -> i64 {
    i.at - i.duration_ms.min(i64::MAX as u64) as i64
}

/// Print what the store recorded since `shown` (everything the first time).
fn catch_up(
    store: &dyn Sessions,
    name: &str,
    json: bool,
    shown: &mut Shown,
) -> Result<(), CliError> {
    let (history, events) = read(store, name)?;
    let new_history = history.get(shown.interactions..).unwrap_or_default();
    let new_events = events.get(shown.events..).unwrap_or_default();
    for (at, item) in timeline(name, new_history, new_events) {
        let text = match (&item, json) {
            (Item::Asked(_), true) => continue,
            (Item::Answered(i), true) => interaction_json(i).to_string(),
            (Item::Event(e), true) => serde_json::to_string(e).unwrap_or_default(),
            (_, false) => match item_text(at, &item) {
                Some(line) => shown.dated(at, line),
                None => continue,
            },
        };
        if out::line(format_args!("{text}")).is_err() {
            break;
        }
        shown.printed += 1;
    }
    shown.catch_up(&history, &events);
    Ok(())
}

impl Shown {
    /// `line`, headed by its day when the day changed.
    fn dated(&mut self, at: i64, line: String) -> String {
        let stamp = crate::views::timestamp(at);
        let day = stamp.get(..10).unwrap_or_default();
        if day == self.day {
            return line;
        }
        self.day = day.to_string();
        let head = progress::dim(&format!("── {day} (UTC)"), paint());
        format!("{head}\n{line}")
    }
}

/// An interaction as a JSON line: its history entry, as an `interaction` event.
fn interaction_json(i: &Interaction) -> Value {
    let mut v = serde_json::to_value(crate::views::history_view(i)).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("event".into(), "interaction".into());
        obj.insert("at_ms".into(), i.at.into());
    }
    v
}

fn paint() -> bool {
    super::style::stdout()
}

/// `HH:MM:SS` (UTC) of a time.
fn clock(at: i64) -> String {
    let stamp = crate::views::timestamp(at);
    stamp.get(11..19).unwrap_or(&stamp).to_string()
}

/// `time mark text`, the text's further lines indented under its first.
fn block(at: i64, mark: &str, text: &str) -> String {
    let time = clock(at);
    let indent = " ".repeat(time.chars().count() + mark.chars().count() + 2);
    let mut lines = text.trim_end().lines();
    let mut out = format!(
        "{} {mark} {}",
        progress::dim(&time, paint()),
        lines.next().unwrap_or_default()
    );
    for l in lines {
        out.push('\n');
        if !l.is_empty() {
            out.push_str(&indent);
            out.push_str(l);
        }
    }
    out
}

fn item_text(at: i64, item: &Item) -> Option<String> {
    Some(match item {
        Item::Asked(i) => {
            let kind = progress::dim(&format!("  ({})", i.kind), paint());
            let text = block(at, ">", &i.message);
            match text.split_once('\n') {
                Some((first, rest)) => format!("{first}{kind}\n{rest}"),
                None => format!("{text}{kind}"),
            }
        }
        Item::Answered(i) => {
            let mut s = match i.response.as_deref().filter(|r| !r.trim().is_empty()) {
                Some(r) => format!("{}\n", block(at, "<", r)),
                None => String::new(),
            };
            let turns = if i.turns == 1 { "turn" } else { "turns" };
            let summary = format!(
                "{} · {} {turns} · {:.1}s{}",
                super::render::money(i.cost_usd),
                i.turns,
                i.duration_ms as f64 / 1000.0,
                if i.is_error { " · failed" } else { "" }
            );
            s.push_str(&block(at, "=", &summary));
            if let Some(e) = &i.error {
                s.push('\n');
                s.push_str(&block(at, "!", e));
            }
            s
        }
        Item::Event(e) => live_text(e)?,
    })
}

/// A live event as a line (text as a block).
fn live_text(e: &SessionEvent) -> Option<String> {
    match &e.kind {
        EventKind::Text { text } if !text.trim().is_empty() => Some(block(e.at_ms, "<", text)),
        EventKind::Text { .. } => None,
        _ => {
            let line = describe(e)?;
            let line = line.trim_start();
            let (mark, rest) = line.split_at(line.find(' ').unwrap_or(0));
            Some(block(e.at_ms, mark.trim(), rest.trim_start()))
        }
    }
}

/// Print one live event; false once stdout is closed.
fn print_live(e: &SessionEvent, json: bool, shown: &mut Shown) -> bool {
    let text = if json {
        serde_json::to_string(e).unwrap_or_default()
    } else {
        match live_text(e) {
            Some(t) => shown.dated(e.at_ms, t),
            None => return true,
        }
    };
    shown.printed += 1;
    out::line(format_args!("{text}")).is_ok()
}

/// A subscription to the events of the host running now.
struct Live {
    client: Arc<crate::host::HostClient>,
    events: tokio::sync::broadcast::Receiver<SessionEvent>,
    pid: Option<u32>,
}

/// Subscribe to the events of the running host (None: none runs). Answered by the
/// time it returns: what the host does after this is seen.
async fn subscribe(cfg: &EngineConfig) -> Result<Option<Live>, CliError> {
    let Some((client, _)) = crate::host::connect(cfg, "cli", false).await? else {
        return Ok(None);
    };
    let events = client.subscribe();
    // One round trip after the subscription: the host has it.
    let _ = client.request(crate::host::protocol::Op::Status).await;
    let pid = client.info().await.map(|i| i.pid);
    Ok(Some(Live {
        client,
        events,
        pid,
    }))
}

/// Follow the session's live events from the host: the host running now, or the
/// next one that starts (what it did before the subscription is read from the
/// store first).
async fn follow_host(
    cfg: &EngineConfig,
    store: &dyn Sessions,
    name: &str,
    json: bool,
    mut shown: Shown,
    mut live: Option<Live>,
) -> i32 {
    let mut said_no_host = false;
    loop {
        let mut l = match live.take() {
            Some(l) => l,
            None => match subscribe(cfg).await {
                Ok(Some(l)) => {
                    if let Err(e) = catch_up(store, name, json, &mut shown) {
                        return out::fail(json, e);
                    }
                    l
                }
                Ok(None) => {
                    if !said_no_host && !json {
                        errln!(
                            "cms logs: no session host runs for {}; waiting for '{name}' to \
                             become live (Ctrl-C to stop)",
                            cfg.home.display()
                        );
                    }
                    said_no_host = true;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
                Err(e) => return out::fail(json, e),
            },
        };
        said_no_host = false;
        if !json && !l.client.has_process(name).unwrap_or(false) {
            errln!("cms logs: '{name}' is not live; following it from when it is (Ctrl-C to stop)");
        }
        // A host that has gone is noticed within a couple of seconds.
        let mut check = tokio::time::interval(Duration::from_secs(2));
        check.tick().await;
        loop {
            use tokio::sync::broadcast::error::RecvError;
            tokio::select! {
                e = l.events.recv() => match e {
                    Ok(e) if e.session == name => {
                        let seen = e.kind.worth_keeping() && e.at_ms <= shown.until_ms;
                        if !seen && !print_live(&e, json, &mut shown) {
                            return exit::OK;
                        }
                        if matches!(e.kind, EventKind::Result { .. } | EventKind::Exit { .. }) {
                            // What the store has now was shown live.
                            if let Ok((history, events)) = read(store, name) {
                                shown.catch_up(&history, &events);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        errln!("cms logs: {n} events went by too fast to show")
                    }
                    Err(RecvError::Closed) => break,
                },
                _ = check.tick() => {
                    let now = crate::host::probe(cfg).await.ok().flatten().map(|i| i.pid);
                    if now != l.pid {
                        break;
                    }
                    if store.status(name).is_err() {
                        return out::fail(json, format!("session '{name}' was deleted"));
                    }
                }
            }
        }
        if !json {
            errln!("cms logs: the session host ended; waiting for the next one");
        }
    }
}

/// Follow what the store records (sessions of `--no-host` commands live in those
/// commands): new interactions and events, checked a few times a second.
async fn follow_store(store: &dyn Sessions, name: &str, json: bool, mut shown: Shown) -> i32 {
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Err(e) = catch_up(store, name, json, &mut shown) {
            return out::fail(json, e);
        }
        if out::is_closed() {
            return exit::OK;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn interaction(at: i64, message: &str, response: &str) -> Interaction {
        Interaction {
            id: 1,
            session: "a".into(),
            at,
            kind: "send".into(),
            message: message.into(),
            response: Some(response.into()),
            cost_usd: 0.001,
            turns: 1,
            duration_ms: 2000,
            is_error: false,
            subtype: Some("success".into()),
            error: None,
            tools_used: vec![],
            permission_denials: Value::Null,
            claude_session_id: None,
        }
    }

    #[test]
    fn a_turn_reads_message_events_answer_in_time_order() {
        let history = [interaction(10_000, "fix it", "done\nall of it")];
        let tool = StoredEvent {
            at: 9_000,
            kind: "tool_use".into(),
            data: json!({"event": "tool_use", "id": "t", "name": "Read", "input": {"file_path": "a.rs"}}),
        };
        let items = timeline("a", &history, &[tool]);
        let lines: Vec<String> = items
            .iter()
            .filter_map(|(at, i)| item_text(*at, i))
            .collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], "00:00:08 > fix it  (send)");
        assert!(lines[1].starts_with("00:00:09 → Read a.rs"), "{lines:?}");
        assert!(
            lines[2].starts_with(
                "00:00:10 < done\n           all of it\n00:00:10 = $0.0010 · 1 turn · 2.0s"
            ),
            "{lines:?}"
        );
        let e = event_of(
            "a",
            &StoredEvent {
                at: 5,
                kind: "exit".into(),
                data: json!({"event": "exit", "code": 0, "signal": null}),
            },
        )
        .unwrap();
        assert_eq!(
            (e.session.as_str(), e.at_ms, e.kind.name()),
            ("a", 5, "exit")
        );
    }
}

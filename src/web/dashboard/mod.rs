//! The dashboard: the page at `/` (plain HTML, CSS and JavaScript carried in the
//! binary, no build step, nothing fetched from elsewhere) and the JSON and
//! server-sent-events API it is made of, on the face's listener behind its guard (the
//! login cookie, or `Authorization: Bearer TOKEN` for other clients). The person at
//! the page is the user: what they decide is recorded as decided by `dashboard`.
//!
//! # API
//!
//! Every answer is JSON. An error is `{"error": "..."}` with a status that fits (400
//! a bad request, 404 an unknown session or approval, 409 a session that cannot do it
//! now: busy, paused, not running) and a message that says what to do. A session is
//! as `cms list --json` shows one (`name`, `state`, `model`, `total_cost_usd`,
//! `total_turns`, `updated_at`, ...); an approval as `cms approvals --json`, with
//! `summary` and `target` (what the tool call acts on) added.
//!
//! | Request | Answer |
//! |---|---|
//! | `GET /api/sessions` | `{"sessions": [session]}`, most recently active first |
//! | `GET /api/sessions/{name}` | `{"session", "last_output", "turn_text", "approvals"}`: `turn_text` is the running turn's text so far (null between turns) |
//! | `GET /api/sessions/{name}/history?limit=N` | `{"session": name, "history": [entry]}`, the last N turns (default 50), oldest first, as `cms history --json` |
//! | `POST /api/sessions/{name}/send` `{"message": "..."}` | 202 `{"session", "accepted": true}` at once; the turn runs in the background and is heard on `/api/events` (its text, its `result`; an `error` event when it fails) |
//! | `POST /api/sessions/{name}/interrupt` | `{"session", "interrupted": true}` (409 when no turn runs) |
//! | `POST /api/sessions/{name}/stop` | `{"session": session}` (stopped, resumable: a later send resumes it) |
//! | `GET /api/approvals` | `{"approvals": [approval]}`, oldest first |
//! | `POST /api/approvals/{id}` `{"verdict": "allow"\|"deny", "reason"?, "session"?, "always"?}` | `{"session", "id", "tool", "allowed"}` |
//! | `GET /api/costs?days=N` | `{"today", "days": [{"day", "cost_usd", "messages"}], "total_usd", "messages", "sessions": [{"name", "cost_usd", "messages"}]}`: the last N days (default 7, at most 366) in the host's local time, today first, days without a message included; the total is of every message answered (turn) recorded |
//! | `GET /api/events` | server-sent events, see below |
//!
//! `/api/events` starts with an event `hello` (`{"sessions", "approvals"}`: the state
//! to start from), then carries each of the host's session events as an unnamed event
//! (`data:` the [`SessionEvent`](crate::engine::SessionEvent) JSON: `session`, `at_ms`,
//! `event` and its fields), the dashboard's own `send_failed` the same way (`session`,
//! `at_ms`, `event`, `message`: a message sent with `POST .../send` was not answered,
//! and why), a comment every 15 s to keep the connection open, and `resync`
//! (`{"missed", "sessions", "approvals"}`) when this client fell behind and events
//! were lost: start again from it.

mod api;
mod events;

use super::WebState;
use crate::engine::{EventKind, SessionEvent, Sessions};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Router};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::broadcast;

const INDEX: &str = include_str!("../page/index.html");
const APP_JS: &str = include_str!("../page/app.js");
const STYLE: &str = include_str!("../page/style.css");
const ICON: &str = include_str!("../page/icon.svg");

/// The most of a running turn's text kept for a page that opens it mid-turn.
const TURN_TEXT_MAX: usize = 256 * 1024;

/// What the page may load and where it may connect: its own files only, and no
/// other site may frame it (a click on a framed Allow button would approve a call).
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
    frame-ancestors 'none'";

/// The dashboard's routes; it follows `state`'s sessions from now on (a page opened
/// mid-turn sees the turn's text so far). Call it inside the runtime.
pub fn routes(state: &WebState) -> Router<WebState> {
    let dash = Arc::new(Dash::default());
    dash.watch(&state.sessions);
    Router::new()
        .route("/", get(page))
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
        .route("/favicon.ico", get(|| asset("image/svg+xml", ICON)))
        .route("/api/sessions", get(api::sessions))
        .route("/api/sessions/{name}", get(api::session))
        .route("/api/sessions/{name}/history", get(api::history))
        .route("/api/sessions/{name}/send", post(api::send))
        .route("/api/sessions/{name}/interrupt", post(api::interrupt))
        .route("/api/sessions/{name}/stop", post(api::stop))
        .route("/api/approvals", get(api::approvals))
        .route("/api/approvals/{id}", post(api::decide))
        .route("/api/costs", get(api::costs))
        .route("/api/events", get(events::events))
        .route("/api/{*rest}", any(api::unknown))
        .layer(Extension(dash))
}

async fn page() -> Response {
    let mut r = asset("text/html; charset=utf-8", INDEX).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: the logout form posted from the page would carry `Origin: null`.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

/// A file of the page (asked again each time: a new cms serves its new page).
async fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// What the dashboard keeps beside the host's sessions.
#[derive(Default)]
pub(crate) struct Dash {
    /// Events the dashboard adds to the host's: `send_failed`.
    own: OnceLock<broadcast::Sender<Value>>,
    /// Sessions running a turn sent from the dashboard, and whether it was
    /// interrupted (then its failure is no news).
    sending: Mutex<HashMap<String, bool>>,
    /// Each session's running turn, as its events told it (from the first request on).
    turns: Arc<Mutex<HashMap<String, Turn>>>,
    watching: OnceLock<()>,
}

/// A session's running turn (or the last one, once it ended).
#[derive(Default)]
struct Turn {
    running: bool,
    text: String,
}

impl Dash {
    fn own(&self) -> &broadcast::Sender<Value> {
        self.own.get_or_init(|| broadcast::channel(256).0)
    }

    /// Tell every page listening that a message sent from the dashboard failed.
    fn send_failed(&self, session: &str, message: &str) {
        let _ = self.own().send(serde_json::json!({
            "session": session,
            "at_ms": crate::engine::events::now_ms(),
            "event": "send_failed",
            "message": message,
        }));
    }

    /// Note that the dashboard sends `name` a turn; false when one it sent still runs.
    fn start_sending(&self, name: &str) -> bool {
        let mut sending = self.sending.lock().unwrap_or_else(|p| p.into_inner());
        if sending.contains_key(name) {
            return false;
        }
        sending.insert(name.to_string(), false);
        true
    }

    /// Note that `name`'s turn is being interrupted (or the session stopped) on purpose.
    fn interrupting(&self, name: &str) {
        let mut sending = self.sending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(interrupted) = sending.get_mut(name) {
            *interrupted = true;
        }
    }

    /// The turn the dashboard sent `name` ended; whether it was interrupted.
    fn done_sending(&self, name: &str) -> bool {
        let mut sending = self.sending.lock().unwrap_or_else(|p| p.into_inner());
        sending.remove(name).unwrap_or(false)
    }

    /// The running turn's text so far (None between turns).
    fn turn_text(&self, name: &str) -> Option<String> {
        let turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        turns
            .get(name)
            .filter(|t| t.running)
            .map(|t| t.text.clone())
    }

    /// Follow the host's events to know each running turn's text (once, from the
    /// first request on: the router is made before the host runs).
    fn watch(&self, sessions: &Arc<dyn Sessions>) {
        self.watching.get_or_init(|| {
            let mut rx = sessions.subscribe();
            let turns = self.turns.clone();
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(e) => follow(&turns, &e),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::debug!("the dashboard missed {n} events of the host");
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
        });
    }
}

/// Take one event into the running turns: a turn starts when the session becomes
/// busy from a state that was not, its text grows with each `text` event.
fn follow(turns: &Mutex<HashMap<String, Turn>>, e: &SessionEvent) {
    let mut turns = turns.lock().unwrap_or_else(|p| p.into_inner());
    match &e.kind {
        // A turn that ended keeps nothing here (its text is in the history).
        EventKind::State { state } if !state.is_busy() => {
            turns.remove(&e.session);
        }
        EventKind::State { state } => {
            let t = turns.entry(e.session.clone()).or_default();
            if !t.running {
                t.text.clear();
            }
            t.running = state.is_busy();
        }
        EventKind::Text { text } => {
            let t = turns.entry(e.session.clone()).or_default();
            // Each event is a whole text block (claude runs without
            // --include-partial-messages): each on its own line, as on the page.
            if !t.text.is_empty() && !t.text.ends_with('\n') && !text.starts_with('\n') {
                t.text.push('\n');
            }
            t.text.push_str(text);
            if t.text.len() > TURN_TEXT_MAX {
                let mut cut = t.text.len() - TURN_TEXT_MAX;
                while !t.text.is_char_boundary(cut) {
                    cut += 1;
                }
                t.text.drain(..cut);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SessionState;

    fn event(kind: EventKind) -> SessionEvent {
        SessionEvent {
            session: "s".into(),
            at_ms: 0,
            kind,
        }
    }

    #[test]
    fn a_turns_text_starts_when_the_session_turns_busy_and_survives_an_approval() {
        let dash = Dash::default();
        let state = |s| event(EventKind::State { state: s });
        let text = |t: &str| event(EventKind::Text { text: t.into() });
        for e in [
            state(SessionState::Busy),
            text("old"),
            state(SessionState::Idle),
        ] {
            follow(&dash.turns, &e);
        }
        assert_eq!(dash.turn_text("s"), None, "no turn runs");
        for e in [
            state(SessionState::Busy),
            text("he"),
            state(SessionState::WaitingApproval),
            state(SessionState::Busy),
            text("llo"),
        ] {
            follow(&dash.turns, &e);
        }
        assert_eq!(dash.turn_text("s").as_deref(), Some("he\nllo"));
        follow(&dash.turns, &text(&"é".repeat(TURN_TEXT_MAX / 2 + 1)));
        let kept = dash.turn_text("s").unwrap();
        assert!(kept.len() <= TURN_TEXT_MAX && kept.ends_with('é'));
    }
}

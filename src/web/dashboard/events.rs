//! `GET /api/events`: the host's session events as server-sent events, after a
//! `hello` with the state to start from; a `resync` with a fresh state when this
//! client fell behind (see the module above).

use super::api::approval_json;
use super::Dash;
use crate::views::record_json;
use crate::web::{guard, WebState};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};

/// How often an idle stream sends a comment (proxies and browsers keep it open).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn events(
    State(st): State<WebState>,
    Extension(dash): Extension<Arc<Dash>>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    dash.watch(&st.sessions);
    // Listen before reading the state, so nothing falls between the two.
    let host = relay(st.sessions.subscribe(), st.clone());
    let own = relay(dash.own().subscribe(), st.clone());
    let hello = snapshot(&st, None).await;
    let first = stream::once(async move { Ok(Event::default().event("hello").data(hello)) });
    // A stream opened with the login cookie ends when that login does (logout,
    // expiry), looked at with each event and at each tick.
    let login = match headers.contains_key(axum::http::header::AUTHORIZATION) {
        true => None,
        false => guard::cookie(&headers, guard::COOKIE),
    };
    let ticks = stream::unfold((), |()| async {
        tokio::time::sleep(KEEP_ALIVE).await;
        Some((Ok(Event::default().comment("")), ()))
    });
    let gate = st.guard.clone();
    let events = first
        .chain(stream::select(stream::select(host, own), ticks))
        .take_while(move |_| {
            let live = login.as_deref().is_none_or(|id| gate.is_login(id));
            std::future::ready(live)
        });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// Each event of `rx` as an SSE event; a `resync` when some were lost.
fn relay<T: serde::Serialize + Clone + Send + 'static>(
    rx: broadcast::Receiver<T>,
    st: WebState,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold((rx, st), |(mut rx, st)| async move {
        let event = match rx.recv().await {
            Ok(e) => Event::default()
                .json_data(&e)
                .unwrap_or_else(|_| Event::default().comment("an event that is not JSON")),
            Err(RecvError::Lagged(n)) => {
                tracing::debug!("a dashboard fell {n} events behind: it starts again");
                let state = snapshot(&st, Some(n)).await;
                Event::default().event("resync").data(state)
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), (rx, st)))
    })
}

/// The sessions and the waiting approvals, as JSON text (`missed`: events lost).
async fn snapshot(st: &WebState, missed: Option<u64>) -> String {
    let sessions = st.sessions.clone();
    let list = tokio::task::spawn_blocking(move || sessions.list())
        .await
        .ok()
        .and_then(|r| {
            r.map_err(|e| tracing::warn!("the dashboard cannot list sessions: {e}"))
                .ok()
        })
        .unwrap_or_default();
    let approvals = st.sessions.approvals().await.unwrap_or_default();
    let mut v = json!({
        "sessions": list.iter().map(record_json).collect::<Vec<Value>>(),
        "approvals": approvals.iter().map(approval_json).collect::<Vec<Value>>(),
    });
    if let Some(n) = missed {
        v["missed"] = json!(n);
    }
    v.to_string()
}

//! What a script's host shares with the functions it installs, and `cms.on`:
//! handlers by event name, subscribed lazily, delivered after every engine call on
//! the script's thread, each under the callback time limit.

use crate::engine::{SessionEvent, Sessions};
use crate::sandbox::limits::call_limited;
use mlua::{Function, Lua};
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// State shared by the host and the functions it installs.
pub struct HostShared {
    pub callback_limit: Duration,
    pub policy: Option<Arc<crate::policy::PolicyService>>,
    pub handlers: RefCell<Vec<Handler>>,
    pub next_handler: Cell<u64>,
    pub(crate) events: RefCell<Option<broadcast::Receiver<SessionEvent>>>,
    /// Sessions this host started without `keep = true`: stopped when it ends.
    pub started: Started,
    /// Where an `approval` handler's answer goes.
    pub sessions: Arc<dyn Sessions>,
    /// Whether this Lua may approve tool calls (see `HostOptions::may_approve`).
    pub may_approve: bool,
    /// The sessions this Lua has a handle on: an `approval` handler decides only
    /// theirs (through the host it hears every session's events).
    pub touched: RefCell<std::collections::HashSet<String>>,
}

/// Names of the sessions a script or the REPL started and did not keep; shared with
/// the signal handler, which stops them too.
pub type Started = Arc<std::sync::Mutex<Vec<String>>>;

/// Remember that `name` was started here and should end with the script (unless kept).
pub(crate) fn started(shared: &HostShared, name: &str, keep: bool) {
    if let Ok(mut s) = shared.started.lock() {
        s.retain(|n| n != name);
        if !keep {
            s.push(name.to_string());
        }
    }
}

/// Stop the sessions in `started` that live on in the session host (in process
/// they end with the process anyway); the list is emptied.
pub async fn stop_started(sessions: &dyn Sessions, started: &Started) {
    if sessions.location() != crate::engine::Where::Host {
        return;
    }
    let names = std::mem::take(&mut *started.lock().unwrap_or_else(|e| e.into_inner()));
    for name in names {
        if let Err(e) = sessions.stop(&name).await {
            tracing::debug!("could not stop {name}: {e}");
        }
    }
}

pub struct Handler {
    pub id: u64,
    /// An event name (`tool_use`, `result`, ...) or `*`.
    pub event: String,
    pub func: Function,
}

/// Subscribe lazily: only a host with handlers pays for events.
pub(crate) fn ensure_subscribed(manager: &dyn Sessions, shared: &HostShared) {
    let mut events = shared.events.borrow_mut();
    if events.is_none() {
        *events = Some(manager.subscribe());
    }
}

/// Remember that this Lua drives `name` (its `approval` handler may decide it).
pub(crate) fn touch(shared: &HostShared, name: &str) {
    shared.touched.borrow_mut().insert(name.to_string());
}

/// Await an engine call while delivering events to the handlers every 50 ms, so a
/// handler hears of (and may answer) what happens during the call: an `approval` of
/// the very turn the script waits for.
pub(crate) async fn while_dispatching<F: std::future::Future>(
    lua: &Lua,
    shared: &HostShared,
    work: F,
) -> F::Output {
    tokio::pin!(work);
    if shared.handlers.borrow().is_empty() {
        return work.await;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = tick.tick() => dispatch_events(lua, shared),
        }
    }
}

/// Deliver pending events to the `cms.on` handlers. Called after every engine call
/// returns (all events of a turn are published before its response), so handlers
/// run at predictable points, on the script's thread.
pub(crate) fn dispatch_events(lua: &Lua, shared: &HostShared) {
    loop {
        let next = match shared.events.borrow_mut().as_mut() {
            Some(rx) => rx.try_recv(),
            None => return,
        };
        match next {
            Ok(event) => deliver(lua, shared, &event),
            Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => return,
        }
    }
}

fn deliver(lua: &Lua, shared: &HostShared, event: &SessionEvent) {
    let name = event.kind.name();
    let funcs: Vec<Function> = shared
        .handlers
        .borrow()
        .iter()
        .filter(|h| h.event == name || h.event == "*")
        .map(|h| h.func.clone())
        .collect();
    if funcs.is_empty() {
        return;
    }
    let table = match crate::sandbox::convert::to_lua(lua, event) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("cannot pass event {name} to Lua: {e}");
            return;
        }
    };
    for f in funcs {
        match call_limited::<mlua::MultiValue>(lua, shared.callback_limit, &f, table.clone()) {
            Ok(answer) => {
                if let crate::engine::EventKind::Approval { id, .. } = &event.kind {
                    answer_approval(shared, &event.session, id, answer);
                }
            }
            // The handler failed; the host goes on.
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "cms.on('{name}') handler failed: {e}");
            }
        }
    }
}

/// An `approval` handler that returned `"allow"` or `"deny", reason` decides the
/// call (in the background: the handler itself must not wait); nil leaves it to
/// someone else.
fn answer_approval(shared: &HostShared, session: &str, id: &str, answer: mlua::MultiValue) {
    if !shared.touched.borrow().contains(session) {
        tracing::debug!(
            "cms.on('approval'): '{session}' is not this script's session; not decided here"
        );
        return;
    }
    let mut it = answer.into_iter();
    let verb = match it.next() {
        Some(mlua::Value::String(s)) => s.to_string_lossy(),
        _ => return,
    };
    let allow = match verb.as_str() {
        "allow" if !shared.may_approve => {
            tracing::warn!(
                "cms.on('approval'): this Lua may not approve tool calls; left to a person"
            );
            return;
        }
        "allow" => true,
        "deny" => false,
        other => {
            tracing::warn!(
                "cms.on('approval'): \"{other}\" is not an answer (\"allow\", \"deny\" or nil)"
            );
            return;
        }
    };
    let reason = match it.next() {
        Some(mlua::Value::String(s)) => Some(s.to_string_lossy()),
        _ => None,
    };
    let verdict = crate::engine::ApprovalVerdict {
        session: session.to_string(),
        id: Some(id.to_string()),
        allow,
        reason,
        by: "lua".into(),
        always: false,
    };
    let sessions = shared.sessions.clone();
    tokio::spawn(async move {
        if let Err(e) = sessions.decide(verdict).await {
            tracing::warn!("cms.on('approval'): the decision did not land: {e}");
        }
    });
}

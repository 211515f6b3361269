//! The dashboard's JSON requests (see the table in the module above): each reads the
//! host's sessions or steers one, and answers in JSON; an error says what to do.

use super::Dash;
use crate::engine::approval::{tool_target, Approval, Verdict};
use crate::engine::{EngineError, Remedy, SessionState, Sessions};
use crate::views::{history_json, money, record_json};
use crate::web::guard::refuse;
use crate::web::WebState;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};
use std::sync::Arc;

/// Turns of a history when the request names no `limit`.
const HISTORY_DEFAULT: usize = 50;
/// Days of costs when the request names no `days`, and the most it may name.
const DAYS_DEFAULT: u32 = 7;
const DAYS_MAX: u32 = 366;

/// A refusal: its status and what to do.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        refuse(self.0, self.1)
    }
}

type Answer = Result<Response, ApiError>;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::CONFLICT, message.into())
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match e.code() {
            "not_found" => StatusCode::NOT_FOUND,
            "invalid_name" | "invalid" => StatusCode::BAD_REQUEST,
            "already_exists" | "paused" | "busy" | "held_elsewhere" | "not_live"
            | "no_session_id" | "budget_spent" | "host_budget_spent" => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let how = match e.remedy() {
            None => None,
            Some(Remedy::ListSessions) => {
                Some("GET /api/sessions lists the sessions there are".to_string())
            }
            Some(Remedy::DeleteOrRename(n)) => {
                Some(format!("pick another name, or `cms delete {n}` first"))
            }
            Some(Remedy::Resume(n)) => Some(format!("resume it first: `cms resume {n}`")),
            Some(Remedy::SendWhereHeld(n)) | Some(Remedy::UseHost(n)) => Some(format!(
                "wait until the process that holds it ends it (`cms status {n}` shows who holds it)"
            )),
            Some(Remedy::TryAgainLater(_)) => {
                Some("try again when its turn is done, or interrupt it".to_string())
            }
            Some(Remedy::ShowStatus(n)) => Some(format!("GET /api/sessions/{n} shows its state")),
            Some(Remedy::InstallClaude) => Some(
                "install Claude Code where the host runs, or set CMS_CLAUDE_BIN for `cms serve`"
                    .to_string(),
            ),
        };
        match how {
            Some(how) => ApiError(status, format!("{e}: {how}")),
            None => ApiError(status, e.to_string()),
        }
    }
}

/// Run a read of the store (SQLite, blocking) off the async threads.
async fn blocking<T: Send + 'static>(
    st: &WebState,
    f: impl FnOnce(&dyn Sessions) -> crate::engine::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let sessions = st.sessions.clone();
    tokio::task::spawn_blocking(move || f(sessions.as_ref()))
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the request failed: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

fn ok(v: Value) -> Answer {
    Ok(Json(v).into_response())
}

/// A JSON body of type `T`, or what is wrong with it.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes, shape: &str) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(bad(format!("the request has no body: send JSON {shape}")));
    }
    serde_json::from_slice(bytes).map_err(|e| bad(format!("the body is not JSON {shape}: {e}")))
}

/// The query of a request, or what is wrong with it and the shape it should have.
fn query<T>(q: Result<Query<T>, QueryRejection>, shape: &str) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| bad(format!("{}: write {shape}", e.body_text())))
}

/// An approval as the page shows it: what waits, and what it acts on.
pub fn approval_json(a: &Approval) -> Value {
    let mut v = serde_json::to_value(a).unwrap_or_default();
    if let Value::Object(m) = &mut v {
        m.insert("summary".into(), json!(a.summary()));
        m.insert("target".into(), json!(tool_target(&a.input)));
    }
    v
}

pub async fn sessions(State(st): State<WebState>, Extension(dash): Extension<Arc<Dash>>) -> Answer {
    dash.watch(&st.sessions);
    let all = blocking(&st, |s| s.list()).await?;
    ok(json!({ "sessions": all.iter().map(record_json).collect::<Vec<_>>() }))
}

pub async fn session(
    State(st): State<WebState>,
    Extension(dash): Extension<Arc<Dash>>,
    Path(name): Path<String>,
) -> Answer {
    dash.watch(&st.sessions);
    let n = name.clone();
    let rec = blocking(&st, move |s| s.status(&n)).await?;
    let waiting: Vec<Value> = st
        .sessions
        .approvals()
        .await?
        .iter()
        .filter(|a| a.session == name)
        .map(approval_json)
        .collect();
    ok(json!({
        "session": record_json(&rec),
        "last_output": rec.last_response,
        "turn_text": dash.turn_text(&name),
        "approvals": waiting,
    }))
}

#[derive(serde::Deserialize)]
pub struct HistoryQuery {
    limit: Option<usize>,
}

pub async fn history(
    State(st): State<WebState>,
    Path(name): Path<String>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Answer {
    let limit = query(q, "?limit=N (a number of turns)")?
        .limit
        .unwrap_or(HISTORY_DEFAULT);
    let n = name.clone();
    let all = blocking(&st, move |s| s.history(&n)).await?;
    let from = all.len().saturating_sub(limit);
    ok(json!({ "session": name, "history": history_json(&all[from..]) }))
}

#[derive(serde::Deserialize)]
struct SendBody {
    message: String,
}

/// Accept a message and run its turn in the background: a person at a page does not
/// hold a request open for minutes; the page hears the turn on `/api/events`.
pub async fn send(
    State(st): State<WebState>,
    Extension(dash): Extension<Arc<Dash>>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Answer {
    let SendBody { message } = body(&bytes, r#"{"message": "..."}"#)?;
    if message.trim().is_empty() {
        return Err(bad(
            "the message is empty: write what the session should do",
        ));
    }
    dash.watch(&st.sessions);
    let n = name.clone();
    let rec = blocking(&st, move |s| s.status(&n)).await?;
    match rec.state {
        SessionState::Paused => {
            return Err(conflict(format!(
                "session '{name}' is paused: resume it first (`cms resume {name}`)"
            )))
        }
        s if s.is_busy() => {
            return Err(conflict(format!(
                "session '{name}' is running a turn ({s}): wait until it is idle, or interrupt it"
            )))
        }
        _ => {}
    }
    if !dash.start_sending(&name) {
        return Err(conflict(format!(
            "session '{name}' is still answering the last message sent from the dashboard: \
             wait for its answer, or interrupt it"
        )));
    }
    let sessions = st.sessions.clone();
    let n = name.clone();
    tokio::spawn(async move {
        let outcome = sessions.send(&n, &message, None).await;
        let interrupted = dash.done_sending(&n);
        let failed = match outcome {
            // Ended on purpose: the person knows.
            _ if interrupted => None,
            Ok(r) if r.is_error => Some(format!("the turn failed: {}", r.error_summary())),
            Ok(_) => None,
            Err(e) => Some(format!(
                "the message was not answered: {}",
                ApiError::from(e).1
            )),
        };
        if let Some(message) = failed {
            tracing::info!("dashboard send to '{n}': {message}");
            dash.send_failed(&n, &message);
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "session": name, "accepted": true })),
    )
        .into_response())
}

pub async fn interrupt(
    State(st): State<WebState>,
    Extension(dash): Extension<Arc<Dash>>,
    Path(name): Path<String>,
) -> Answer {
    let n = name.clone();
    let rec = blocking(&st, move |s| s.status(&n)).await?;
    if !rec.state.is_busy() {
        return Err(conflict(format!(
            "session '{name}' runs no turn ({}): there is nothing to interrupt",
            rec.state
        )));
    }
    dash.interrupting(&name);
    st.sessions.interrupt(&name).await?;
    ok(json!({ "session": name, "interrupted": true }))
}

pub async fn stop(
    State(st): State<WebState>,
    Extension(dash): Extension<Arc<Dash>>,
    Path(name): Path<String>,
) -> Answer {
    dash.interrupting(&name);
    let rec = st.sessions.stop(&name).await?;
    ok(json!({ "session": record_json(&rec) }))
}

pub async fn approvals(State(st): State<WebState>) -> Answer {
    let all = st.sessions.approvals().await?;
    ok(json!({ "approvals": all.iter().map(approval_json).collect::<Vec<_>>() }))
}

#[derive(serde::Deserialize)]
struct DecideBody {
    verdict: String,
    #[serde(default)]
    reason: Option<String>,
    /// Needed only if two sessions had a call with the same id.
    #[serde(default)]
    session: Option<String>,
    /// Approve the tool for the rest of the session's process.
    #[serde(default)]
    always: bool,
}

pub async fn decide(State(st): State<WebState>, Path(id): Path<String>, bytes: Bytes) -> Answer {
    const SHAPE: &str = r#"{"verdict": "allow" or "deny", "reason": "..."}"#;
    let b: DecideBody = body(&bytes, SHAPE)?;
    let allow = match b.verdict.as_str() {
        "allow" => true,
        "deny" => false,
        v => return Err(bad(format!("verdict {v:?}: write \"allow\" or \"deny\""))),
    };
    let waiting = st.sessions.approvals().await?;
    let matching: Vec<&Approval> = waiting
        .iter()
        .filter(|a| a.id == id && b.session.as_ref().is_none_or(|s| *s == a.session))
        .collect();
    let a = match matching.as_slice() {
        [a] => *a,
        [] => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "no tool call waits with id {id} (decided already, or its deadline denied it): \
                     GET /api/approvals lists those waiting"
                ),
            ))
        }
        _ => {
            return Err(bad(format!(
                "tool calls of several sessions wait with id {id}: name the session in the body \
                 (\"session\": \"...\")"
            )))
        }
    };
    let reason = b
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    let decided = st
        .sessions
        .decide(Verdict {
            session: a.session.clone(),
            id: Some(id),
            allow,
            reason,
            by: "dashboard".into(),
            always: b.always && allow,
        })
        .await?;
    ok(json!({
        "session": decided.session,
        "id": decided.id,
        "tool": decided.tool,
        "allowed": allow,
    }))
}

#[derive(serde::Deserialize)]
pub struct CostQuery {
    days: Option<u32>,
}

pub async fn costs(
    State(st): State<WebState>,
    q: Result<Query<CostQuery>, QueryRejection>,
) -> Answer {
    let days = query(q, "?days=N (1 to 366)")?.days.unwrap_or(DAYS_DEFAULT);
    if !(1..=DAYS_MAX).contains(&days) {
        return Err(bad(format!("days={days}: ask for 1 to {DAYS_MAX} days")));
    }
    let (per_day, (total, turns), sessions) = blocking(&st, move |s| {
        let store = s.store();
        Ok((store.cost_by_day(days)?, store.cost_total()?, store.list()?))
    })
    .await?;
    let mut sessions: Vec<_> = sessions
        .iter()
        .map(|r| (r.name.as_str(), r.total_cost_usd, r.interaction_count))
        .collect();
    sessions.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    ok(json!({
        "today": per_day.first().map(|d| d.day.clone()),
        "days": per_day.iter().map(|d| json!({
            "day": d.day, "cost_usd": money(d.cost_usd), "messages": d.messages,
        })).collect::<Vec<_>>(),
        "total_usd": money(total),
        "messages": turns,
        "sessions": sessions.iter().map(|(name, cost, turns)| json!({
            "name": name, "cost_usd": money(*cost), "messages": turns,
        })).collect::<Vec<_>>(),
    }))
}

pub async fn unknown(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!(
            "no such request: {method} {}; the dashboard's API has GET /api/sessions, \
             GET /api/sessions/NAME, GET /api/sessions/NAME/history, POST /api/sessions/NAME/send, \
             POST /api/sessions/NAME/interrupt, POST /api/sessions/NAME/stop, GET /api/approvals, \
             POST /api/approvals/ID, GET /api/costs, GET /api/events",
            uri.path()
        ),
    )
}

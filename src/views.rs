//! The one JSON shape of each engine value, the same on every face: `--json` in the
//! CLI, the results of the MCP tools, and the tables Lua scripts get. Names are
//! snake_case, amounts carry their unit (`cost_usd`), times are RFC 3339.
//!
//! - a session: [`RecordView`];
//! - a turn: [`TurnView`] (the engine's [`Response`] and a one-line `error`);
//! - a history entry: [`HistoryView`].
//!
//! The delegate result keeps the original tool's camelCase contract (see the README).
//!
//! Amounts of money are rounded to the nano-dollar ([`money`]): sums of floats print
//! as `0.0006`, not `0.0006000000000000001`. MCP results leave out a turn's raw token
//! `usage` (the calling model pays for every token it reads): [`turn_json_compact`].

use crate::engine::{Interaction, Response, SessionRecord, SessionState};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;

/// An amount in USD as JSON shows it: rounded to 1e-9.
pub fn money(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1e9).round() / 1e9
    } else {
        x
    }
}

/// [`money`] for serde (`#[serde(serialize_with = "crate::views::serialize_money")]`).
pub fn serialize_money<S: serde::Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(money(*x))
}

/// [`money`] for an optional amount.
pub fn serialize_money_opt<S: serde::Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match x {
        Some(x) => s.serialize_some(&money(*x)),
        None => s.serialize_none(),
    }
}

pub fn timestamp(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The record as `--json` shows it (snake_case, timestamps as RFC 3339).
#[derive(Serialize)]
pub struct RecordView<'a> {
    name: &'a str,
    state: SessionState,
    claude_session_id: Option<&'a str>,
    model: Option<&'a str>,
    work_dir: &'a Path,
    cwd: Option<&'a Path>,
    permission_mode: Option<&'a str>,
    allowed_tools: &'a [String],
    forked_from: Option<&'a str>,
    /// The host of `hosts.lua` the session runs on (absent: this machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    on: Option<&'a str>,
    created_at: String,
    updated_at: String,
    total_cost_usd: f64,
    total_turns: u32,
    interaction_count: u32,
    last_error: Option<&'a str>,
    pid: Option<u32>,
    /// The cms process holding the session live, and its kind (`cli`, `mcp`, ...).
    host_pid: Option<u32>,
    host_kind: Option<&'a str>,
    /// The API retry in progress while the CLI retries a failing call.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<&'a crate::engine::events::ApiRetryEvent>,
}

pub fn record_view(rec: &SessionRecord) -> RecordView<'_> {
    RecordView {
        name: &rec.name,
        state: rec.state,
        claude_session_id: rec.claude_session_id.as_deref(),
        model: rec.options.model.as_deref(),
        work_dir: &rec.work_dir,
        cwd: rec.cwd.as_deref(),
        permission_mode: rec.options.permission_mode.as_deref(),
        allowed_tools: &rec.options.allowed_tools,
        forked_from: rec.forked_from.as_deref(),
        on: rec.options.on.as_deref(),
        created_at: timestamp(rec.created_at),
        updated_at: timestamp(rec.updated_at),
        total_cost_usd: money(rec.total_cost_usd),
        total_turns: rec.total_turns,
        interaction_count: rec.interaction_count,
        last_error: rec.last_error.as_deref(),
        pid: rec.pid,
        host_pid: rec.pid.and(rec.host_pid),
        host_kind: rec.pid.and(rec.host_kind.as_deref()),
        retry: rec.retry.as_ref(),
    }
}

pub fn record_json(rec: &SessionRecord) -> Value {
    serde_json::to_value(record_view(rec)).unwrap_or_default()
}

/// A turn: every field of the engine's [`Response`] (amounts rounded, [`money`]),
/// and `error`, a one-line summary of why it failed (absent when it did not).
pub struct TurnView<'a> {
    pub response: &'a Response,
    pub error: Option<String>,
    /// Leave out the raw token `usage` (MCP results).
    pub compact: bool,
}

impl Serialize for TurnView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let mut v = serde_json::to_value(self.response).map_err(S::Error::custom)?;
        if let Value::Object(m) = &mut v {
            for key in ["cost_usd", "session_cost_usd"] {
                if let Some(x) = m.get(key).and_then(Value::as_f64) {
                    m.insert(key.into(), json!(money(x)));
                }
            }
            if self.compact {
                m.remove("usage");
            }
            if let Some(e) = &self.error {
                m.insert("error".into(), json!(e));
            }
        }
        v.serialize(s)
    }
}

pub fn turn_view(r: &Response) -> TurnView<'_> {
    TurnView {
        response: r,
        error: r.is_error.then(|| r.error_summary()),
        compact: false,
    }
}

/// A session and the turn just taken on it (when there was one).
pub fn turn_json(rec: &SessionRecord, r: Option<&Response>) -> Value {
    json!({ "session": record_json(rec), "response": r.map(turn_view) })
}

/// [`turn_json`] without the turn's raw token `usage`: what MCP tools answer.
pub fn turn_json_compact(rec: &SessionRecord, r: Option<&Response>) -> Value {
    json!({ "session": record_json(rec), "response": r.map(compact_turn) })
}

fn compact_turn(r: &Response) -> TurnView<'_> {
    TurnView {
        compact: true,
        ..turn_view(r)
    }
}

/// One entry of a session's history.
#[derive(Serialize)]
pub struct HistoryView<'a> {
    pub id: i64,
    pub session: &'a str,
    pub at: String,
    /// spawn, send, resume, fork, delegate, continue, retry, ...
    pub kind: &'a str,
    pub message: &'a str,
    pub response: Option<&'a str>,
    pub cost_usd: f64,
    pub num_turns: u32,
    pub duration_ms: u64,
    pub is_error: bool,
    pub subtype: Option<&'a str>,
    pub error: Option<&'a str>,
    pub tools_used: &'a [String],
    pub permission_denials: &'a Value,
    pub claude_session_id: Option<&'a str>,
}

pub fn history_view(i: &Interaction) -> HistoryView<'_> {
    HistoryView {
        id: i.id,
        session: &i.session,
        at: timestamp(i.at),
        kind: &i.kind,
        message: &i.message,
        response: i.response.as_deref(),
        cost_usd: money(i.cost_usd),
        num_turns: i.turns,
        duration_ms: i.duration_ms,
        is_error: i.is_error,
        subtype: i.subtype.as_deref(),
        error: i.error.as_deref(),
        tools_used: &i.tools_used,
        permission_denials: &i.permission_denials,
        claude_session_id: i.claude_session_id.as_deref(),
    }
}

pub fn history_json(items: &[Interaction]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|i| serde_json::to_value(history_view(i)).unwrap_or_default())
            .collect(),
    )
}

/// The entries of a batch: `{name, ok, response, error}`, each response a turn.
pub fn batch_json(outcomes: &[crate::engine::BatchOutcome]) -> Value {
    batch(outcomes, turn_view)
}

/// [`batch_json`] without the turns' raw token `usage`: what MCP tools answer.
pub fn batch_json_compact(outcomes: &[crate::engine::BatchOutcome]) -> Value {
    batch(outcomes, compact_turn)
}

fn batch(outcomes: &[crate::engine::BatchOutcome], view: fn(&Response) -> TurnView<'_>) -> Value {
    Value::Array(
        outcomes
            .iter()
            .map(|o| {
                json!({
                    "name": o.name,
                    "ok": o.ok,
                    "response": o.response.as_ref().map(view),
                    "error": o.error,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_rounded_to_the_nano_dollar() {
        assert_eq!(money(0.0001 + 0.0005), 0.0006);
        assert_eq!(json!(money(0.1 + 0.2)).to_string(), "0.3");
        assert_eq!(money(1234.5), 1234.5);
        let r = Response {
            cost_usd: 0.0001 + 0.0005,
            session_cost_usd: 0.1 + 0.2,
            usage: Some(json!({"input_tokens": 3})),
            ..Response::default()
        };
        let full = serde_json::to_string(&turn_view(&r)).unwrap();
        assert!(full.contains("\"cost_usd\":0.0006,"), "{full}");
        assert!(full.contains("\"session_cost_usd\":0.3,"), "{full}");
        assert!(full.contains("\"usage\""), "{full}");
        let compact = serde_json::to_value(compact_turn(&r)).unwrap();
        assert!(compact.get("usage").is_none(), "{compact}");
        assert_eq!(compact["cost_usd"], 0.0006);
    }
}

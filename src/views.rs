//! The JSON shapes of engine values that every frontend shows alike (`--json` in
//! the CLI, results of the MCP tools): snake_case, timestamps as RFC 3339.

use crate::engine::{Response, SessionRecord, SessionState};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;

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
        created_at: timestamp(rec.created_at),
        updated_at: timestamp(rec.updated_at),
        total_cost_usd: rec.total_cost_usd,
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

pub fn turn_json(rec: &SessionRecord, r: Option<&Response>) -> Value {
    json!({ "session": record_json(rec), "response": r })
}

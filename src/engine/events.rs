//! Events a session publishes while it runs; anyone can subscribe (see
//! [`crate::engine::Manager::subscribe`]).

use crate::engine::state::SessionState;
use crate::wire::message::ApiRetry;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionEvent {
    /// The cms session name.
    pub session: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// `system/init`: the CLI starts a turn.
    Init {
        session_id: String,
        model: Option<String>,
        cwd: Option<String>,
    },
    /// Assistant text (a whole block, or a delta with partial messages).
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        is_error: bool,
        content: Value,
    },
    /// The policy decided a `can_use_tool` request.
    Permission {
        tool: String,
        allowed: bool,
        reason: Option<String>,
    },
    Retry(ApiRetryEvent),
    /// This process waits for another cms process to finish with the session.
    Waiting {
        holder_pid: Option<u32>,
        holder_kind: Option<String>,
        /// 1: next in line.
        position: usize,
    },
    /// The request waits for a free slot of this manager (`max_live` children or
    /// `max_turns` turns at once). Sent on entering the queue and whenever the place
    /// changes.
    Queued {
        /// 1: next in line.
        position: usize,
    },
    /// A tool call waits for a person's decision (see [`crate::engine::Approval`]).
    Approval {
        id: String,
        tool: String,
        input: Value,
        reason: String,
        /// When it is denied if nobody decides (Unix ms).
        deadline_ms: i64,
    },
    /// A waiting tool call was decided: by whom (`cli`, `mcp`, `lua`, `deadline`, ...).
    Decided {
        id: String,
        tool: String,
        allowed: bool,
        by: String,
        reason: Option<String>,
    },
    /// A process's cost count starts from this figure (see [`crate::engine::cost`]).
    CostBaseline(crate::engine::cost::CostBaseline),
    /// The policy found a safety rule broken and acted (`denied`, `warned`,
    /// `stopped`, `killed`).
    Violation {
        rule: String,
        message: String,
        action: String,
        tool: Option<String>,
    },
    /// A turn ended (its summary; the whole response is returned by `send`).
    Result {
        cost_usd: f64,
        session_cost_usd: f64,
        num_turns: u32,
        is_error: bool,
        subtype: String,
    },
    State {
        state: SessionState,
    },
    /// Something went wrong that the caller should know about (garbage line, policy error, ...).
    Error {
        message: String,
    },
    /// The child process ended.
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ApiRetryEvent {
    pub attempt: u32,
    pub max_retries: u32,
    pub retry_delay_ms: f64,
    pub error_status: Option<u16>,
    pub error: Option<String>,
}

impl From<ApiRetry> for ApiRetryEvent {
    fn from(r: ApiRetry) -> Self {
        ApiRetryEvent {
            attempt: r.attempt,
            max_retries: r.max_retries,
            retry_delay_ms: r.retry_delay_ms,
            error_status: r.error_status,
            error: r.error,
        }
    }
}

impl EventKind {
    /// Every event's name, as [`EventKind::name`] gives it.
    pub const NAMES: &'static [&'static str] = &[
        "init",
        "text",
        "tool_use",
        "tool_result",
        "permission",
        "retry",
        "cost_baseline",
        "waiting",
        "queued",
        "approval",
        "decided",
        "violation",
        "result",
        "state",
        "error",
        "exit",
    ];

    /// The event's name as used by subscribers (`"tool_use"`, `"result"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Init { .. } => "init",
            EventKind::Text { .. } => "text",
            EventKind::ToolUse { .. } => "tool_use",
            EventKind::ToolResult { .. } => "tool_result",
            EventKind::Permission { .. } => "permission",
            EventKind::Retry(_) => "retry",
            EventKind::CostBaseline(_) => "cost_baseline",
            EventKind::Waiting { .. } => "waiting",
            EventKind::Queued { .. } => "queued",
            EventKind::Approval { .. } => "approval",
            EventKind::Decided { .. } => "decided",
            EventKind::Violation { .. } => "violation",
            EventKind::Result { .. } => "result",
            EventKind::State { .. } => "state",
            EventKind::Error { .. } => "error",
            EventKind::Exit { .. } => "exit",
        }
    }

    /// Events worth keeping in the store (the rest are transient). `init` and `state`
    /// are not kept as events, but the store takes the Claude session id and the end
    /// of API retries from them.
    pub fn worth_keeping(&self) -> bool {
        matches!(
            self,
            EventKind::Init { .. }
                | EventKind::State {
                    state: SessionState::Busy
                }
                | EventKind::ToolUse { .. }
                | EventKind::Permission { .. }
                | EventKind::Approval { .. }
                | EventKind::Decided { .. }
                | EventKind::Retry(_)
                | EventKind::CostBaseline(_)
                | EventKind::Violation { .. }
                | EventKind::Error { .. }
                | EventKind::Exit { .. }
        )
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_is_named_in_names_and_serialised_under_that_name() {
        let all = vec![
            EventKind::Init {
                session_id: "s".into(),
                model: None,
                cwd: None,
            },
            EventKind::Text { text: "t".into() },
            EventKind::ToolUse {
                id: "1".into(),
                name: "Read".into(),
                input: Value::Null,
            },
            EventKind::ToolResult {
                tool_use_id: "1".into(),
                is_error: false,
                content: Value::Null,
            },
            EventKind::Permission {
                tool: "Write".into(),
                allowed: false,
                reason: None,
            },
            EventKind::Retry(ApiRetryEvent {
                attempt: 1,
                max_retries: 10,
                retry_delay_ms: 1.0,
                error_status: Some(529),
                error: None,
            }),
            EventKind::CostBaseline(crate::engine::cost::CostBaseline::fresh()),
            EventKind::Waiting {
                holder_pid: None,
                holder_kind: None,
                position: 1,
            },
            EventKind::Queued { position: 2 },
            EventKind::Approval {
                id: "r1".into(),
                tool: "Write".into(),
                input: Value::Null,
                reason: "a write".into(),
                deadline_ms: 0,
            },
            EventKind::Decided {
                id: "r1".into(),
                tool: "Write".into(),
                allowed: true,
                by: "cli".into(),
                reason: None,
            },
            EventKind::Violation {
                rule: "r".into(),
                message: "m".into(),
                action: "denied".into(),
                tool: None,
            },
            EventKind::Result {
                cost_usd: 0.0,
                session_cost_usd: 0.0,
                num_turns: 1,
                is_error: false,
                subtype: "success".into(),
            },
            EventKind::State {
                state: SessionState::Idle,
            },
            EventKind::Error {
                message: "e".into(),
            },
            EventKind::Exit {
                code: Some(0),
                signal: None,
            },
        ];
        assert_eq!(all.len(), EventKind::NAMES.len());
        for (kind, name) in all.iter().zip(EventKind::NAMES) {
            assert_eq!(kind.name(), *name);
            assert_eq!(serde_json::to_value(kind).unwrap()["event"], *name);
        }
    }
}

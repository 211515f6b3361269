//! Human approvals: a tool call the policy answered with "ask" waits in its session
//! (the turn paused, nothing run) until a person approves or denies it, or its
//! deadline passes (then it is denied: fails closed). What waits is an [`Approval`];
//! what someone decides is a [`Verdict`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// Set to `1` in an MCP server's environment to let its client (a model) approve
/// tool calls; without it a model may only deny. Never passed on to sessions.
pub const MAY_APPROVE_ENV: &str = "CMS_MCP_MAY_APPROVE";

/// How long a tool call waits for a decision when the policy names no time.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(600);

/// A tool call waiting for a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// The cms session name.
    pub session: String,
    /// The CLI's request id: what a decision names.
    pub id: String,
    pub tool: String,
    pub input: Value,
    /// Why the policy asks.
    pub reason: String,
    /// Unix ms.
    pub asked_at_ms: i64,
    /// When it is denied if nobody decides (Unix ms).
    pub deadline_ms: i64,
}

/// A person's decision on a waiting tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub session: String,
    /// The approval decided (None: the oldest one waiting in the session).
    #[serde(default)]
    pub id: Option<String>,
    pub allow: bool,
    /// Shown to the model with a denial, and recorded.
    #[serde(default)]
    pub reason: Option<String>,
    /// Who decided: `cli`, `mcp`, `lua`, `top`, ... (recorded in the history).
    pub by: String,
    /// Approve this tool for the rest of the session's process without asking.
    #[serde(default)]
    pub always: bool,
}

impl Approval {
    /// The tool call in one line: the tool and what it acts on.
    pub fn summary(&self) -> String {
        match tool_target(&self.input) {
            Some(t) => format!("{} {t}", self.tool),
            None => self.tool.clone(),
        }
    }
}

/// What a tool call acts on, from its input: the command, file, path, URL or pattern.
pub fn tool_target(input: &Value) -> Option<&str> {
    [
        "command",
        "file_path",
        "notebook_path",
        "path",
        "url",
        "pattern",
    ]
    .iter()
    .find_map(|k| input.get(*k).and_then(Value::as_str))
}

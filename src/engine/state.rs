//! The states a session goes through.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a session is in its life.
///
/// Live states (a `claude` child exists): `Starting`, `Idle`, `Busy`, `Retrying`, and
/// `Paused` when the host keeps the child. Resting states: `Stopped` (resumable),
/// `Failed` (the child died or could not start; resumable when an id is known),
/// `Killed` (force-terminated; resumable when an id is known), `Parked` (stopped by the
/// manager to free a slot under its `max_live` cap; its next send resumes it). Waiting
/// state: `Queued` (no process yet; the request that starts one waits for a free slot).
///
/// The one list of states: the MCP `list_sessions` filter and the LuaLS alias
/// `cms.SessionState` take their values from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Starting,
    Idle,
    Busy,
    // Busy, but the CLI is retrying failing API calls (`system/api_retry`).
    Retrying,
    Paused,
    Stopped,
    // The seed's name for it, `error`, is read too.
    #[serde(alias = "error")]
    Failed,
    Killed,
    // Stopped by the manager to make room for another session (`max_live`).
    Parked,
    // Waiting for a free slot under the manager's `max_live` cap.
    Queued,
    // A tool call waits for a person's decision (the turn is paused; nothing ran).
    WaitingApproval,
}

impl SessionState {
    /// Every state, in the order of a session's life.
    pub const ALL: [SessionState; 11] = [
        SessionState::Starting,
        SessionState::Idle,
        SessionState::Busy,
        SessionState::Retrying,
        SessionState::Paused,
        SessionState::Stopped,
        SessionState::Failed,
        SessionState::Killed,
        SessionState::Parked,
        SessionState::Queued,
        SessionState::WaitingApproval,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::Idle => "idle",
            SessionState::Busy => "busy",
            SessionState::Retrying => "retrying",
            SessionState::Paused => "paused",
            SessionState::Stopped => "stopped",
            SessionState::Failed => "failed",
            SessionState::Killed => "killed",
            SessionState::Parked => "parked",
            SessionState::Queued => "queued",
            SessionState::WaitingApproval => "waiting_approval",
        }
    }

    pub fn parse(s: &str) -> Option<SessionState> {
        Some(match s {
            "starting" => SessionState::Starting,
            "idle" => SessionState::Idle,
            "busy" => SessionState::Busy,
            "retrying" => SessionState::Retrying,
            "paused" => SessionState::Paused,
            "stopped" => SessionState::Stopped,
            "failed" | "error" => SessionState::Failed,
            "killed" => SessionState::Killed,
            "parked" => SessionState::Parked,
            "queued" => SessionState::Queued,
            "waiting_approval" => SessionState::WaitingApproval,
            _ => return None,
        })
    }

    /// True when a `claude` process should exist for this state.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            SessionState::Starting
                | SessionState::Idle
                | SessionState::Busy
                | SessionState::Retrying
                | SessionState::WaitingApproval
        )
    }

    /// True while a turn runs.
    pub fn is_busy(self) -> bool {
        matches!(
            self,
            SessionState::Busy | SessionState::Retrying | SessionState::WaitingApproval
        )
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in SessionState::ALL {
            assert_eq!(SessionState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        let names: Vec<&str> = SessionState::ALL.iter().map(|s| s.as_str()).collect();
        let schema = serde_json::to_value(schemars::schema_for!(SessionState)).unwrap();
        assert_eq!(schema["enum"], serde_json::json!(names), "{schema}");
        let failed: SessionState = serde_json::from_value(serde_json::json!("error")).unwrap();
        assert_eq!(failed, SessionState::Failed);
        assert_eq!(SessionState::parse("error"), Some(SessionState::Failed));
        assert_eq!(SessionState::parse("nope"), None);
    }
}

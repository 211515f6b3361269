//! The response of one turn, and the collector that builds it from the turn's lines.

use crate::wire::message::{KnownBlock, PermissionDenial, ResultMessage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What `send` returns: one turn of one session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The final text (`result.result`, or the turn's assistant text when absent).
    pub text: String,
    /// This turn's own cost in USD (a difference of the process's cumulative total).
    pub cost_usd: f64,
    /// The session's total cost in USD across all its processes, this turn included.
    pub session_cost_usd: f64,
    /// Agent turns of this turn (`num_turns`).
    pub num_turns: u32,
    /// Tool names used in this turn, unique, in first-use order.
    pub tools_used: Vec<String>,
    pub permission_denials: Vec<PermissionDenial>,
    /// Wall time of this turn in milliseconds (`duration_ms`, else measured).
    pub duration_ms: u64,
    /// The Claude session id.
    pub session_id: String,
    pub subtype: String,
    /// True for every failed turn, API errors included (which come with `subtype: "success"`).
    pub is_error: bool,
    pub api_error_status: Option<i64>,
    /// `result.errors` (limits, unknown resume id, ...).
    pub errors: Vec<String>,
    pub terminal_reason: Option<String>,
    pub stop_reason: Option<String>,
    /// This turn's token usage, as the CLI reports it.
    pub usage: Option<Value>,
    /// How many times the CLI retried a failing API call in this turn.
    #[serde(default)]
    pub api_retries: u32,
    /// The HTTP status of the last retried API failure (None: none, or no status).
    #[serde(default)]
    pub last_retry_status: Option<u16>,
    pub structured_output: Option<Value>,
}

impl Response {
    /// A one-line summary of why a turn failed (empty when it did not), with the API
    /// retries that came before it.
    pub fn error_summary(&self) -> String {
        if !self.is_error {
            return String::new();
        }
        let what = if !self.errors.is_empty() {
            self.errors.join("; ")
        } else if let Some(status) = self.api_error_status {
            format!("API error {status}: {}", self.text)
        } else if self.text.is_empty() {
            self.subtype.clone()
        } else {
            self.text.clone()
        };
        format!(
            "{what}{}",
            retries_note(self.api_retries, self.last_retry_status)
        )
    }
}

/// ` (after N API retries, last status S)`, or nothing when there were none.
pub fn retries_note(retries: u32, last_status: Option<u16>) -> String {
    match (retries, last_status) {
        (0, _) => String::new(),
        (n, Some(s)) => format!(" (after {n} API retries, last status {s})"),
        (n, None) => format!(" (after {n} API retries, the API could not be reached)"),
    }
}

/// Collects the lines of one turn until its `result`.
#[derive(Debug, Default)]
pub struct TurnCollector {
    texts: Vec<String>,
    tools: Vec<String>,
}

impl TurnCollector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the content blocks of one `assistant` line.
    pub fn assistant_blocks(&mut self, blocks: &[KnownBlock]) {
        for b in blocks {
            match b {
                KnownBlock::Text { text } => self.texts.push(text.clone()),
                KnownBlock::ToolUse { name, .. } if !self.tools.iter().any(|t| t == name) => {
                    self.tools.push(name.clone());
                }
                _ => {}
            }
        }
    }

    /// The turn's text so far (for partial responses).
    pub fn text(&self) -> String {
        self.texts.join("\n")
    }

    /// Build the response. `previous_total` is the process's cumulative
    /// `total_cost_usd` before this turn; `cost_before` what the session had cost
    /// before this turn, over all its processes.
    pub fn finish(
        self,
        result: &ResultMessage,
        previous_total: f64,
        cost_before: f64,
        measured_ms: u64,
    ) -> Response {
        let total = result.total_cost_usd.unwrap_or(previous_total);
        // A process's total never decreases. It can end up below `previous_total` only when
        // the count started from the CLI's rounded figure (see `engine::cost`) and this turn
        // cost less than the rounding: then it cost nothing we can tell, never the history.
        let cost = (total - previous_total).max(0.0);
        let text = match &result.result {
            Some(t) if !t.is_empty() => t.clone(),
            _ => self.texts.join("\n"),
        };
        Response {
            text,
            cost_usd: cost,
            session_cost_usd: cost_before + cost,
            num_turns: result.num_turns.unwrap_or(0),
            tools_used: self.tools,
            permission_denials: result.permission_denials.clone(),
            duration_ms: result.duration_ms.unwrap_or(measured_ms),
            session_id: result.session_id.clone(),
            subtype: result.subtype.clone(),
            is_error: result.is_error,
            api_error_status: result.api_error_status,
            errors: result.errors.clone(),
            terminal_reason: result.terminal_reason.clone(),
            stop_reason: result.stop_reason.clone(),
            usage: result.usage.clone(),
            structured_output: result.structured_output.clone(),
            api_retries: 0,
            last_retry_status: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Message;

    fn result(total: f64, text: Option<&str>) -> ResultMessage {
        let mut v = serde_json::json!({"type":"result","subtype":"success","is_error":false,
            "session_id":"s","total_cost_usd": total, "num_turns": 1, "duration_ms": 5});
        if let Some(t) = text {
            v["result"] = t.into();
        }
        match Message::from_value(v) {
            Message::Result(r) => *r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn turn_cost_is_the_difference_of_the_cumulative_total() {
        // 0.10, 0.25, 0.45 cumulative in one process → 0.10, 0.15, 0.20.
        let mut prev = 0.0;
        let mut session = 1.0; // earlier processes of the same session cost 1.0
        let mut costs = Vec::new();
        for total in [0.10, 0.25, 0.45] {
            let r = TurnCollector::new().finish(&result(total, Some("x")), prev, session, 0);
            costs.push((r.cost_usd * 1000.0).round() / 1000.0);
            assert!((r.session_cost_usd - (1.0 + total)).abs() < 1e-9);
            prev = total;
            session = r.session_cost_usd;
        }
        assert_eq!(costs, vec![0.10, 0.15, 0.20]);
    }

    #[test]
    fn a_count_started_from_a_rounded_figure_never_charges_the_history() {
        // The CLI said $0.0013 for a conversation worth 0.00126; this turn cost 0.00002.
        let r = TurnCollector::new().finish(&result(0.00128, Some("x")), 0.0013, 5.0, 0);
        assert_eq!(r.cost_usd, 0.0);
        assert_eq!(r.session_cost_usd, 5.0);
    }

    #[test]
    fn text_falls_back_to_assistant_blocks_and_tools_are_unique() {
        let mut c = TurnCollector::new();
        c.assistant_blocks(&[
            KnownBlock::Text { text: "a".into() },
            KnownBlock::ToolUse {
                id: "1".into(),
                name: "Read".into(),
                input: Value::Null,
            },
        ]);
        c.assistant_blocks(&[
            KnownBlock::ToolUse {
                id: "2".into(),
                name: "Read".into(),
                input: Value::Null,
            },
            KnownBlock::ToolUse {
                id: "3".into(),
                name: "Write".into(),
                input: Value::Null,
            },
            KnownBlock::Text { text: "b".into() },
        ]);
        let r = c.finish(&result(0.0, None), 0.0, 0.0, 42);
        assert_eq!(r.text, "a\nb");
        assert_eq!(r.tools_used, vec!["Read", "Write"]);
        assert_eq!(r.duration_ms, 5);
    }
}

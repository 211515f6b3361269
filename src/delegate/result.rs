//! What a delegation comes to: the result (the original tool's camelCase contract),
//! its safety report, and the rule that picks its status.

use crate::engine::Sessions;
use serde::Serialize;

/// A delegation's outcome, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DelegateResult {
    /// `completed`, `needs_input`, `check_failed`, `failed`, `cost_exceeded`,
    /// `turns_exceeded`.
    pub status: String,
    pub response: String,
    /// The cost of this call (all its turns, retries and corrections).
    #[serde(serialize_with = "crate::views::serialize_money")]
    pub cost: f64,
    pub turns: u32,
    /// Wall time of this call in ms.
    pub duration: u64,
    pub session_id: Option<String>,
    pub name: String,
    pub can_continue: bool,
    pub tools_used: Vec<String>,
    /// None with `--no-safety`.
    pub safety: Option<SafetyReport>,
    pub error: Option<String>,
    /// Tool calls refused before they ran, with the reason the model was given.
    pub denied_before_execution: Vec<DeniedCall>,
    /// `permission_denials` of this call's turns (tool and input).
    pub permission_denials: Vec<serde_json::Value>,
    /// Follow-ups the strategy sent (`retry`, `correction`).
    pub retries: u32,
    /// The session's cost over its whole life.
    #[serde(serialize_with = "crate::views::serialize_money")]
    pub total_cost: f64,
    pub preset: String,
    pub strategy: String,
    pub checks: Vec<CheckRecord>,
    pub reviews: Vec<ReviewRecord>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SafetyReport {
    pub total_violations: usize,
    pub violations: Vec<ViolationView>,
    pub limits: LimitsView,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViolationView {
    #[serde(rename = "type")]
    pub rule: String,
    pub message: String,
    /// `denied`, `warned`, `stopped`, `killed`.
    pub action: String,
    pub tool: Option<String>,
    pub timestamp: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitsView {
    #[serde(serialize_with = "crate::views::serialize_money_opt")]
    pub max_cost_usd: Option<f64>,
    pub max_turns: Option<u32>,
    pub timeout_secs: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeniedCall {
    pub tool: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckRecord {
    pub passed: bool,
    pub output: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReviewRecord {
    pub session: String,
    pub response: String,
    #[serde(serialize_with = "crate::views::serialize_money")]
    pub cost: f64,
}

/// `finish` and `abort`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndResult {
    pub name: String,
    /// `finished` or `aborted`.
    pub status: String,
    #[serde(serialize_with = "crate::views::serialize_money")]
    pub total_cost: f64,
    pub total_turns: u32,
}

/// Whether a violation's action ended the session.
pub(super) fn ends_session(action: &str) -> bool {
    action == "killed" || action == "stopped"
}

/// What a delegation call came to, for its status.
pub(super) struct StatusInputs<'a> {
    pub(super) cost_exceeded: bool,
    pub(super) turns_exceeded: bool,
    /// The last turn's `result` subtype.
    pub(super) subtype: &'a str,
    pub(super) failed: bool,
    /// The last turn still had permission denials.
    pub(super) denials_left: bool,
    /// The last check the strategy ran did not pass.
    pub(super) check_failed: bool,
    /// A status the strategy returned (`needs_input`, `check_failed`, `failed`,
    /// `completed`).
    pub(super) strategy_says: Option<&'a str>,
}

/// The status, in this order: the safety net's or the CLI's limits, a failure, a
/// check that did not pass (a strategy cannot call that `completed`), something
/// the caller must answer, else completed.
pub(super) fn derive_status(o: &StatusInputs) -> &'static str {
    if o.cost_exceeded || o.subtype == "error_max_budget_usd" {
        "cost_exceeded"
    } else if o.turns_exceeded || o.subtype == "error_max_turns" {
        "turns_exceeded"
    } else if o.failed || o.strategy_says == Some("failed") {
        "failed"
    } else if o.check_failed || o.strategy_says == Some("check_failed") {
        "check_failed"
    } else if o.denials_left || o.strategy_says == Some("needs_input") {
        "needs_input"
    } else {
        "completed"
    }
}

/// The message of the violation that ended the session, if the net ended it.
pub(super) fn ending_violation(manager: &dyn Sessions, name: &str) -> Option<String> {
    let events = manager.store().events(name).ok()?;
    let last_violation = events.iter().rev().find(|e| e.kind == "violation")?;
    let action = last_violation.data["action"].as_str()?;
    let rule = last_violation.data["rule"].as_str().unwrap_or("");
    if ends_session(action) && rule != "policy_error" {
        last_violation.data["message"].as_str().map(String::from)
    } else {
        None
    }
}

/// The error of a `check_failed` delegation: how many checks ran, the last one's
/// first lines, and what to do.
pub(super) fn check_failed_message(name: &str, checks: &[CheckRecord]) -> String {
    let last = checks
        .last()
        .map(|c| c.output.trim())
        .filter(|o| !o.is_empty())
        .map(|o| {
            let head: Vec<&str> = o.lines().take(3).collect();
            format!(": {}", head.join(" | "))
        })
        .unwrap_or_default();
    format!(
        "the check did not pass after {} attempt(s){last}. Send a correction \
         (`cms continue --name {name} --message ...`, the continue_task tool, or d:continue in \
         Lua); the check runs again",
        checks.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> StatusInputs<'static> {
        StatusInputs {
            cost_exceeded: false,
            turns_exceeded: false,
            subtype: "success",
            failed: false,
            denials_left: false,
            check_failed: false,
            strategy_says: None,
        }
    }

    #[test]
    fn statuses_come_in_the_documented_order() {
        assert_eq!(derive_status(&inputs()), "completed");
        let limits_first = StatusInputs {
            cost_exceeded: true,
            turns_exceeded: true,
            failed: true,
            ..inputs()
        };
        assert_eq!(derive_status(&limits_first), "cost_exceeded");
        assert_eq!(
            derive_status(&StatusInputs {
                subtype: "error_max_budget_usd",
                ..inputs()
            }),
            "cost_exceeded"
        );
        assert_eq!(
            derive_status(&StatusInputs {
                turns_exceeded: true,
                failed: true,
                ..inputs()
            }),
            "turns_exceeded"
        );
        assert_eq!(
            derive_status(&StatusInputs {
                subtype: "error_max_turns",
                ..inputs()
            }),
            "turns_exceeded"
        );
        assert_eq!(
            derive_status(&StatusInputs {
                failed: true,
                denials_left: true,
                ..inputs()
            }),
            "failed"
        );
        assert_eq!(
            derive_status(&StatusInputs {
                strategy_says: Some("failed"),
                ..inputs()
            }),
            "failed"
        );
        assert_eq!(
            derive_status(&StatusInputs {
                denials_left: true,
                ..inputs()
            }),
            "needs_input"
        );
        assert_eq!(
            derive_status(&StatusInputs {
                strategy_says: Some("needs_input"),
                ..inputs()
            }),
            "needs_input"
        );
        assert_eq!(
            derive_status(&StatusInputs {
                strategy_says: Some("completed"),
                ..inputs()
            }),
            "completed"
        );
    }

    #[test]
    fn a_check_that_did_not_pass_is_check_failed_whatever_the_strategy_says() {
        let failed_check = StatusInputs {
            check_failed: true,
            ..inputs()
        };
        assert_eq!(derive_status(&failed_check), "check_failed");
        for says in ["completed", "needs_input"] {
            assert_eq!(
                derive_status(&StatusInputs {
                    strategy_says: Some(says),
                    ..failed_check
                }),
                "check_failed",
                "{says}"
            );
        }
        assert_eq!(
            derive_status(&StatusInputs {
                strategy_says: Some("check_failed"),
                ..inputs()
            }),
            "check_failed"
        );
        // Limits and failures come first; a refusal left over does not hide the check.
        assert_eq!(
            derive_status(&StatusInputs {
                failed: true,
                ..failed_check
            }),
            "failed"
        );
        assert_eq!(
            derive_status(&StatusInputs {
                cost_exceeded: true,
                ..failed_check
            }),
            "cost_exceeded"
        );
        assert_eq!(
            derive_status(&StatusInputs {
                denials_left: true,
                ..failed_check
            }),
            "check_failed"
        );
    }
}

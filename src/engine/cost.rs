//! Where a process's cost count starts.
//!
//! `result.total_cost_usd` is cumulative, but over what depends on the CLI: per
//! process in 2.1.197, per conversation from 2.1.332 on (a `--resume`d process starts
//! from the conversation's total so far, a `--fork-session` child from its
//! parent's). A turn's own cost is the difference to the previous figure of the same
//! process, so what matters is the figure the count starts from. cms asks the CLI
//! itself (`get_session_cost`, answered before the first turn) instead of trusting a
//! table of versions, and uses its own record of the conversation's last reported
//! total to make the CLI's rounded answer exact again. A CLI that does not answer is
//! counted per process, and says so.

use crate::wire::cost::ReportedCost;
use serde::Serialize;

/// What the CLI's cumulative figure covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostScope {
    /// Starts at 0 in every process (2.1.197).
    Process,
    /// Carries the conversation's history (2.1.332 on).
    Conversation,
    /// The CLI did not say; counted as per process.
    Unknown,
}

impl CostScope {
    pub fn as_str(self) -> &'static str {
        match self {
            CostScope::Process => "process",
            CostScope::Conversation => "conversation",
            CostScope::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<CostScope> {
        Some(match s {
            "process" => CostScope::Process,
            "conversation" => CostScope::Conversation,
            "unknown" => CostScope::Unknown,
            _ => return None,
        })
    }
}

/// The figure a process's `total_cost_usd` starts from, and how it was found.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CostBaseline {
    pub usd: f64,
    pub scope: CostScope,
    /// Set when the figure is not exact or not known, saying why.
    pub note: Option<String>,
}

impl CostBaseline {
    /// A new conversation: nothing to carry, nothing to ask (and nothing learnt about
    /// how the CLI counts).
    pub fn fresh() -> Self {
        CostBaseline {
            usd: 0.0,
            scope: CostScope::Unknown,
            note: None,
        }
    }
}

/// Decide the baseline of a process that resumes or forks a conversation.
///
/// `reported`: the CLI's answer to `get_session_cost` before the first turn (None when
/// it refused or did not answer). `recorded`: the last `total_cost_usd` cms saw the CLI
/// report for this conversation (for a fork, the parent's), if any, and how that CLI
/// counted it when cms last found out (`recorded_scope`).
pub fn decide_baseline(
    reported: Option<ReportedCost>,
    recorded: Option<f64>,
    recorded_scope: Option<CostScope>,
) -> CostBaseline {
    let Some(r) = reported else {
        if let (Some(k), Some(CostScope::Conversation)) = (recorded, recorded_scope) {
            // Most likely the same CLI as last time, only slow to answer.
            return CostBaseline {
                usd: k,
                scope: CostScope::Conversation,
                note: Some(format!(
                    "claude did not report the conversation's cost before the first turn; \
                 counting from cms's record (${k:.4}), per conversation as last time"
                )),
            };
        }
        return CostBaseline {
            usd: 0.0,
            scope: CostScope::Unknown,
            note: Some(
                "claude did not report the conversation's cost before the first turn; its \
                 costs are counted per process (if this CLI counts per conversation, the first \
                 turn after this resume includes the earlier turns)"
                    .into(),
            ),
        };
    };
    if r.matches(0.0) {
        // Nothing carried. Per process for sure when there was something to carry.
        let scope = match recorded {
            Some(k) if !r.matches(k) => CostScope::Process,
            _ => CostScope::Unknown,
        };
        return CostBaseline {
            usd: 0.0,
            scope,
            note: None,
        };
    }
    match recorded {
        Some(k) if r.matches(k) => CostBaseline {
            usd: k,
            scope: CostScope::Conversation,
            note: None,
        },
        _ => CostBaseline {
            usd: r.usd,
            scope: CostScope::Conversation,
            note: Some(format!(
                "claude counts ${:.4} for this conversation before this process, cms had \
                 recorded {}: the difference was spent where cms saw no result (a killed turn, \
                 or a run outside cms); turn costs are exact to ±${}",
                r.usd,
                recorded.map_or("nothing".to_string(), |k| format!("${k:.4}")),
                r.tolerance
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::cost::parse_session_cost;

    fn said(text: &str) -> Option<ReportedCost> {
        parse_session_cost(text)
    }

    #[test]
    fn a_per_process_cli_starts_from_zero_whatever_cms_recorded() {
        let b = decide_baseline(said("Total cost:            $0.0000"), Some(0.0006), None);
        assert_eq!((b.scope, b.usd, b.note), (CostScope::Process, 0.0, None));
        // Nothing recorded to carry: nothing learnt either.
        let b = decide_baseline(said("Total cost:            $0.0000"), None, None);
        assert_eq!(b, CostBaseline::fresh());
    }

    #[test]
    fn a_per_conversation_cli_starts_from_the_exact_recorded_total() {
        // The CLI prints 0.0012 for 0.0012000000000000001: the record is the exact figure.
        let b = decide_baseline(
            said("Estimated cost:        $0.0012"),
            Some(0.0012000000000000001),
            Some(CostScope::Conversation),
        );
        assert_eq!(b.scope, CostScope::Conversation);
        assert_eq!(b.usd, 0.0012000000000000001);
        assert!(b.note.is_none());
    }

    #[test]
    fn a_total_cms_did_not_see_is_taken_from_the_cli_and_flagged() {
        let b = decide_baseline(said("Estimated cost:        $0.0020"), Some(0.0012), None);
        assert_eq!(b.scope, CostScope::Conversation);
        assert_eq!(b.usd, 0.002);
        assert!(b.note.as_deref().unwrap().contains("saw no result"));
        let b = decide_baseline(said("Estimated cost:        $0.0020"), None, None);
        assert_eq!(b.usd, 0.002);
    }

    #[test]
    fn no_answer_is_counted_per_process_and_said() {
        let b = decide_baseline(None, Some(0.5), Some(CostScope::Process));
        assert_eq!(b.scope, CostScope::Unknown);
        assert_eq!(b.usd, 0.0);
        assert!(b.note.is_some());
        // A conversation that was counted per conversation last time still is.
        let b = decide_baseline(None, Some(0.5), Some(CostScope::Conversation));
        assert_eq!((b.scope, b.usd), (CostScope::Conversation, 0.5));
        assert!(b.note.unwrap().contains("as last time"));
    }
}

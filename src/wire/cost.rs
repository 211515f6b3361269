//! What the CLI says about money outside a turn's `result`: the answer to the
//! `get_session_cost` control request.
//!
//! Both supported generations answer it before the first turn of a process, with a
//! text meant for people (`Total cost:            $0.0004` in 2.1.197, `Estimated
//! cost:        $0.0008` from 2.1.332 on). Its figure is what the process's
//! cumulative `total_cost_usd` already counts: 0 on 2.1.197 (per process), the
//! conversation's history on 2.1.332 (per conversation, carried across `--resume`
//! and `--fork-session`). The text is rounded, so the figure comes with the
//! half-unit of its last printed digit.

/// A dollar figure read from a text, with the rounding it was printed with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportedCost {
    pub usd: f64,
    /// Half a unit of the last printed digit: the true value is within `usd ± tolerance`.
    pub tolerance: f64,
}

impl ReportedCost {
    /// True when `value` is what this rounded figure may stand for.
    pub fn matches(&self, value: f64) -> bool {
        (self.usd - value).abs() <= self.tolerance + 1e-12
    }
}

/// The request's subtype.
pub const GET_SESSION_COST: &str = "get_session_cost";

/// Read the total from a `get_session_cost` answer: the first `$` figure on the first
/// line that speaks of cost. `None` when there is none (an unknown format).
pub fn parse_session_cost(text: &str) -> Option<ReportedCost> {
    let line = text
        .lines()
        .find(|l| l.to_ascii_lowercase().contains("cost") && l.contains('$'))?;
    let figure: String = line[line.find('$')? + 1..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
        .filter(|c| *c != ',')
        .collect();
    let usd: f64 = figure.parse().ok()?;
    let decimals = figure.split_once('.').map_or(0, |(_, d)| d.len()) as i32;
    Some(ReportedCost {
        usd,
        tolerance: 0.5 * 10f64.powi(-decimals),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_generations_and_the_rounding() {
        // 2.1.197, as captured.
        let old = "Total cost:            $0.0006\nTotal duration (API):  0s\nUsage by model:\n     claude-sonnet-5:  100 input ($0.0006)";
        let r = parse_session_cost(old).unwrap();
        assert_eq!(r.usd, 0.0006);
        assert!((r.tolerance - 0.00005).abs() < 1e-15);
        // 2.1.332, as captured.
        let new = "Estimated cost:        $0.0008\nTotal duration (API):  0s";
        assert_eq!(parse_session_cost(new).unwrap().usd, 0.0008);
        // Large amounts are printed with two decimals and thousands separators.
        let big = "Total cost: $1,234.57\n";
        let r = parse_session_cost(big).unwrap();
        assert_eq!(r.usd, 1234.57);
        assert!(r.matches(1234.574) && !r.matches(1234.58));
        assert!(parse_session_cost("Usage: 0 input").is_none());
        assert!(parse_session_cost("").is_none());
    }
}

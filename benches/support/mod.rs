//! Helpers shared by the benchmarks.
#![allow(dead_code)]

pub mod host;

use cms::engine::{EngineConfig, Manager, SessionOptions, SpawnRequest};
use std::path::Path;
use std::sync::Arc;

/// A manager on the simulator, with its state and HOME under `dir`.
pub fn manager(sim: &Path, dir: &Path) -> Arc<Manager> {
    std::fs::create_dir_all(dir).unwrap();
    let mut cfg = EngineConfig::from_env();
    cfg.claude_bin = sim.to_path_buf();
    cfg.home = dir.join("cms");
    cfg.child_env = vec![("HOME".into(), dir.display().to_string())];
    Manager::new(cfg).unwrap()
}

/// Spawn `name` in `dir` with the prompt "hello".
pub fn request(name: &str, dir: &Path) -> SpawnRequest {
    SpawnRequest {
        name: name.into(),
        prompt: "hello".into(),
        options: SessionOptions {
            work_dir: Some(dir.to_path_buf()),
            ..SessionOptions::default()
        },
        ..SpawnRequest::default()
    }
}

/// The `p` quantile (0..=1) of the samples (sorted in place).
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

/// This process's resident memory in MB (Linux), children excluded.
pub fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// How a figure stands against its goal. A full run (`cargo bench`) judges it:
/// `(goal ≤ 5 ms: met)` or `MISSED`. The smoke run under `cargo test` (a debug build,
/// a few samples) only shows the benchmark works, and says its figure is not judged.
pub fn goal(full: bool, goal: &str, met: bool) -> String {
    match (full, met) {
        (true, true) => format!("(goal {goal}: met)"),
        (true, false) => format!("(goal {goal}: MISSED)"),
        (false, _) => format!("(goal {goal}; informational in a smoke run)"),
    }
}

/// The first line of a run: which mode, and what a smoke run's figures mean.
pub fn banner(what: &str, full: bool) {
    if full {
        println!("cms {what} benchmark (full mode)");
    } else {
        println!(
            "cms {what} benchmark (smoke mode: a short debug run showing the benchmark works; \
             its figures are informational, goals are judged by `cargo bench`)"
        );
    }
}

/// How a goal of an issue came out.
pub enum Verdict {
    Pass,
    Fail,
    /// Not measured here (say why in the figure).
    Skipped,
    NotAvailable,
}

impl Verdict {
    pub fn judged(ok: bool) -> Verdict {
        if ok {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    }
}

/// One line of a benchmark's table of goals.
pub struct Row {
    pub goal: &'static str,
    pub figure: String,
    pub verdict: Verdict,
}

/// The goals of `issue` with their figures; in a quick run a verdict is only
/// informational.
pub fn print_table(rows: &[Row], full: bool, issue: &str) {
    let heading = if full {
        format!("goal ({issue})")
    } else {
        format!("goal ({issue}; quick run: informational)")
    };
    let goal_w = rows
        .iter()
        .map(|r| r.goal.len())
        .chain([heading.len()])
        .max()
        .unwrap_or(0);
    let figure_w = rows
        .iter()
        .map(|r| r.figure.len())
        .max()
        .unwrap_or(0)
        .max(6);
    println!("\n{heading:<goal_w$} {:<figure_w$} result", "figure");
    println!("{}", "-".repeat(goal_w + figure_w + 26));
    for r in rows {
        let v = match &r.verdict {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skipped => "SKIPPED (no real CLI)",
            Verdict::NotAvailable => "not available yet",
        };
        let v = if full || !matches!(r.verdict, Verdict::Pass | Verdict::Fail) {
            v.to_string()
        } else {
            format!("{v} (informational)")
        };
        println!("{:<goal_w$} {:<figure_w$} {v}", r.goal, r.figure);
    }
    if full && rows.iter().any(|r| matches!(r.verdict, Verdict::Fail)) {
        println!("(at least one goal was missed)");
    }
}

/// The `p` percentile of `samples` (NaN when there are none).
pub fn pct(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    percentile(&mut samples.to_vec(), p)
}

pub fn micros(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

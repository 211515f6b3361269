//! Text renderings of engine values (the JSON shapes are in [`crate::views`]).

pub use crate::views::{record_json, record_view, timestamp, turn_json};

use super::style;
use crate::engine::{Interaction, Response, SessionRecord};

pub fn money(x: f64) -> String {
    format!("${x:.4}")
}

fn ago(ms: i64) -> String {
    let secs = ((crate::engine::events::now_ms() - ms).max(0) / 1000) as u64;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// The response text, a blank line, and a footer line.
pub fn response_block(rec: &SessionRecord, r: &Response) -> String {
    format!("{}\n\n{}", r.text.trim_end(), response_footer(rec, r))
}

/// A line for each tool call refused in the turn, with what would allow it (empty
/// when none was).
pub fn denials(rec: &SessionRecord, r: &Response) -> String {
    r.permission_denials
        .iter()
        .map(|d| {
            let tool = &d.tool_name;
            let on = crate::engine::approval::tool_target(&d.tool_input)
                .map(|t| format!(" {}", clip(t, 80)))
                .unwrap_or_default();
            let how = match &rec.options.guard {
                Some(g) => format!(
                    "refused by cms's safety policy (preset '{}'; `cms logs {}` says why)",
                    g.preset.as_deref().unwrap_or("-"),
                    rec.name
                ),
                None => format!(
                    "refused by Claude Code's permission mode; `--allowed-tools {tool}` (or \
                     `--permission-mode acceptEdits` for edits) at spawn would allow it"
                ),
            };
            format!("denied: {tool}{on}: {how}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The summary line of a turn: `[name] status=… cost=… total=… turns=… …`.
pub fn response_footer(rec: &SessionRecord, r: &Response) -> String {
    format!(
        "[{}] status={} cost={} total={} turns={} duration={:.1}s session={}",
        rec.name,
        rec.state,
        money(r.cost_usd),
        money(rec.total_cost_usd),
        r.num_turns,
        r.duration_ms as f64 / 1000.0,
        rec.claude_session_id.as_deref().unwrap_or("-"),
    )
}

pub fn status_text(rec: &SessionRecord, paint: bool) -> String {
    let o = &rec.options;
    let mut state = style::paint(rec.state.as_str(), style::state_style(rec.state), paint);
    if rec.pid.is_some() {
        state.push_str(&format!(", {}", live_in(rec)));
    }
    let mut lines = vec![
        ("name", rec.name.clone()),
        ("status", state),
        ("model", o.model.clone().unwrap_or_else(|| "-".into())),
        (
            "claudeSessionId",
            rec.claude_session_id.clone().unwrap_or_else(|| "-".into()),
        ),
        ("workDir", rec.work_dir.display().to_string()),
        (
            "permissionMode",
            o.permission_mode.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "allowedTools",
            if o.allowed_tools.is_empty() {
                "-".into()
            } else {
                o.allowed_tools.join(",")
            },
        ),
        (
            "forkedFrom",
            rec.forked_from.clone().unwrap_or_else(|| "-".into()),
        ),
        ("createdAt", timestamp(rec.created_at)),
        ("updatedAt", timestamp(rec.updated_at)),
        ("totalCostUsd", money(rec.total_cost_usd)),
        ("totalTurns", rec.total_turns.to_string()),
        ("interactionCount", rec.interaction_count.to_string()),
        (
            "lastError",
            rec.last_error.clone().unwrap_or_else(|| "-".into()),
        ),
    ];
    if let Some(pid) = rec.pid {
        lines.push(("pid", pid.to_string()));
        if let Some(host) = rec.host_pid {
            let kind = rec.host_kind.as_deref().unwrap_or("cli");
            lines.push(("heldBy", format!("cms {kind} (pid {host})")));
        }
    }
    if let Some(r) = &rec.retry {
        let status = r
            .error_status
            .map_or("unreachable".to_string(), |s| s.to_string());
        lines.push((
            "retrying",
            format!("API {status}, attempt {}/{}", r.attempt, r.max_retries),
        ));
    }
    lines
        .into_iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where a session with a process is live: "live in cms mcp (pid 123)".
fn live_in(rec: &SessionRecord) -> String {
    match rec.host_pid {
        Some(host) => format!(
            "live in cms {} (pid {host})",
            rec.host_kind.as_deref().unwrap_or("cli")
        ),
        None => "live".into(),
    }
}

/// The `cms list` table, plain.
pub fn list_table(recs: &[SessionRecord]) -> String {
    sessions_table(recs, false, false)
}

/// The `cms list` table; `wide` adds the working directory, the pid and the cms
/// process holding the session; `paint` colours the states.
pub fn sessions_table(recs: &[SessionRecord], wide: bool, paint: bool) -> String {
    if recs.is_empty() {
        return "No sessions.".into();
    }
    let mut header = vec!["NAME", "STATUS", "MODEL", "COST", "TURNS", "LAST ACTIVITY"];
    if wide {
        header.extend(["ON", "WORK DIR", "PID", "HELD BY"]);
    }
    let rows: Vec<Vec<String>> = recs
        .iter()
        .map(|r| {
            let mut row = vec![
                r.name.clone(),
                r.state.to_string(),
                r.options.model.clone().unwrap_or_else(|| "-".into()),
                money(r.total_cost_usd),
                r.total_turns.to_string(),
                ago(r.updated_at),
            ];
            if wide {
                row.push(r.options.on.clone().unwrap_or_else(|| "local".into()));
                row.push(r.cwd.as_ref().unwrap_or(&r.work_dir).display().to_string());
                row.push(r.pid.map_or("-".into(), |p| p.to_string()));
                row.push(match (r.pid, r.host_pid) {
                    (Some(_), Some(h)) => {
                        format!("{} {h}", r.host_kind.as_deref().unwrap_or("cli"))
                    }
                    _ => "-".into(),
                });
            }
            row
        })
        .collect();
    let states: Vec<_> = recs.iter().map(|r| style::state_style(r.state)).collect();
    table(&header, &rows, |row, col| {
        (paint && col == 1).then(|| states[row])
    })
}

/// Columns padded to their widest cell; `style(row, col)` colours a cell (after
/// padding, so the codes do not count as width).
fn table(
    header: &[&str],
    rows: &[Vec<String>],
    style: impl Fn(usize, usize) -> Option<style::Style>,
) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let fmt = |row: Option<usize>, cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = if i == last {
                    String::new()
                } else {
                    " ".repeat(widths[i].saturating_sub(c.chars().count()))
                };
                match row.and_then(|r| style(r, i)) {
                    Some(s) => format!("{}{pad}", style::paint(c, s, true)),
                    None => format!("{c}{pad}"),
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![fmt(None, header.to_vec())];
    for (i, r) in rows.iter().enumerate() {
        out.push(fmt(Some(i), r.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

fn clip(s: &str, n: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        format!("{}…", one_line.chars().take(n).collect::<String>())
    }
}

pub fn history_text(name: &str, items: &[Interaction]) -> String {
    if items.is_empty() {
        return format!("No interactions for '{name}' yet.");
    }
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        out.push(format!(
            "#{} {} {} cost={} turns={} duration={:.1}s{}",
            i + 1,
            timestamp(it.at),
            it.kind,
            money(it.cost_usd),
            it.turns,
            it.duration_ms as f64 / 1000.0,
            if it.is_error { " ERROR" } else { "" }
        ));
        out.push(format!("  > {}", clip(&it.message, 200)));
        if let Some(r) = &it.response {
            out.push(format!("  < {}", clip(r, 200)));
        }
        if let Some(e) = &it.error {
            out.push(format!("  ! {}", clip(e, 200)));
        }
    }
    out.join("\n")
}

/// `output` without `--full`: the first 2000 characters.
pub fn truncated(text: &str, full: bool) -> String {
    const MAX: usize = 2000;
    if full || text.chars().count() <= MAX {
        text.to_string()
    } else {
        format!(
            "{}\n… (truncated; use --full)",
            text.chars().take(MAX).collect::<String>()
        )
    }
}

/// An engine error with what to do about it, in commands.
pub fn engine_error(e: &crate::engine::EngineError) -> String {
    use crate::engine::Remedy;
    let how = match e.remedy() {
        None => return e.to_string(),
        Some(Remedy::ListSessions) => "see `cms list`".to_string(),
        Some(Remedy::DeleteOrRename(n)) => {
            format!("pick another name, or `cms delete --name {n}` first")
        }
        Some(Remedy::Resume(n)) => format!("resume it first: `cms resume --name {n}`"),
        Some(Remedy::SendWhereHeld(n)) => format!(
            "send to it there, or wait until that process ends it (`cms status --name {n}` shows who holds it)"
        ),
        Some(Remedy::TryAgainLater(_)) => {
            "try again when it is done, or leave out --no-wait to queue behind it".to_string()
        }
        Some(Remedy::ShowStatus(n)) => format!("`cms status --name {n}` shows its state"),
        Some(Remedy::UseHost(_)) => {
            "run the command without --no-host (and CMS_NO_HOST unset) to reach it there".to_string()
        }
        Some(Remedy::InstallClaude) => "install Claude Code (`npm install -g @anthropic-ai/claude-code`), \
             or point --claude-bin / CMS_CLAUDE_BIN at it; `cms demo` runs on the bundled simulator"
            .to_string(),
    };
    format!("{e}; {how}")
}

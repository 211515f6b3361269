//! Drawing `cms top` from its [`Model`]: a header (counts, costs), the table, the
//! selected session's detail pane, a status line and the help (or the prompt being
//! typed). Without colours (NO_COLOR, `--color never`) only bold and reverse are used.

use super::model::{Model, Row};
use crate::cli::progress::clip;
use crate::cli::render::money;
use crate::engine::SessionState;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row as TableRow, Table, TableState};
use ratatui::Frame;

/// What surrounds the table: the prompt being typed, the last action's outcome.
pub struct Chrome<'a> {
    /// The question and what is typed so far (`message to alpha`, `hi`).
    pub prompt: Option<(&'a str, &'a str)>,
    pub status: &'a str,
    /// Said in the header (`--no-host: the store's sessions, read-only`).
    pub note: &'a str,
    pub color: bool,
    pub now_ms: i64,
}

pub const HELP: &str = "↑↓ select  s sort  / filter  m message  i interrupt  p pause/resume  \
                        x stop  K kill  f fork  a approve  d deny  q quit";

fn state_color(s: SessionState) -> Style {
    let c = match s {
        SessionState::Failed | SessionState::Killed => Color::Red,
        SessionState::Busy | SessionState::Retrying => Color::Yellow,
        SessionState::Idle => Color::Green,
        SessionState::WaitingApproval => Color::Magenta,
        SessionState::Starting | SessionState::Queued => Color::Cyan,
        SessionState::Stopped | SessionState::Paused | SessionState::Parked => {
            return Style::default().add_modifier(Modifier::DIM)
        }
    };
    Style::default().fg(c)
}

/// `3s`, `4m`, `2h`, `5d`.
pub fn age(now_ms: i64, at_ms: i64) -> String {
    if at_ms <= 0 {
        return "-".into();
    }
    let s = ((now_ms - at_ms).max(0) / 1000) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Draw one frame.
pub fn draw(f: &mut Frame, m: &Model, c: &Chrome) {
    let area = f.area();
    let [header, table, detail, status, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Percentage(35),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let visible = m.visible();
    let selected = m.selected_index(&visible);
    draw_header(f, header, m, c, visible.len());
    draw_table(f, table, &visible, selected, c);
    draw_detail(f, detail, selected.map(|i| visible[i]));
    let status_style = if c.color {
        Style::default().fg(Color::Yellow)
    } else {
        Style::default()
    };
    f.render_widget(Paragraph::new(Span::styled(c.status, status_style)), status);
    let bottom = match c.prompt {
        Some((q, typed)) => Line::from(vec![
            Span::styled(
                format!("{q}: "),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(typed),
            Span::styled(" ", Style::default().add_modifier(Modifier::REVERSED)),
            Span::raw("   (Enter: ok, Esc: cancel)"),
        ]),
        None => Line::from(Span::styled(
            HELP,
            Style::default().add_modifier(Modifier::DIM),
        )),
    };
    f.render_widget(Paragraph::new(bottom), help);
}

fn draw_header(f: &mut Frame, area: Rect, m: &Model, c: &Chrome, shown: usize) {
    let (working, waiting, failed, live) = m.counts();
    let mut text = format!(
        "cms top — {} sessions ({live} live): {working} working, {waiting} waiting for you, \
         {failed} failed · cost {} · today {} · sort: {}",
        m.len(),
        money(m.total_usd()),
        money(m.today_usd),
        m.sort.as_str()
    );
    if !m.filter.is_empty() {
        text.push_str(&format!(" · filter '{}' ({shown} shown)", m.filter));
    }
    if !c.note.is_empty() {
        text.push_str(&format!(" · {}", c.note));
    }
    f.render_widget(
        Paragraph::new(Span::styled(
            text,
            Style::default().add_modifier(Modifier::BOLD),
        )),
        area,
    );
}

fn draw_table(f: &mut Frame, area: Rect, rows: &[&Row], selected: Option<usize>, c: &Chrome) {
    // Only the rows that fit are built (200 sessions, a 40-line screen).
    let height = area.height.saturating_sub(1) as usize;
    let sel = selected.unwrap_or(0);
    let first = if height == 0 || sel < height {
        0
    } else {
        sel + 1 - height
    };
    let shown = rows.iter().skip(first).take(height.max(1));
    let body: Vec<TableRow> = shown
        .map(|r| {
            let state = Cell::from(r.state_text()).style(if c.color {
                state_color(r.state)
            } else {
                Style::default()
            });
            TableRow::new(vec![
                Cell::from(r.name.clone()),
                state,
                Cell::from(r.model.clone().unwrap_or_else(|| "-".into())),
                Cell::from(r.host.clone().unwrap_or_else(|| "local".into())),
                Cell::from(r.tool.as_deref().map(|t| clip(t, 40)).unwrap_or_default()),
                Cell::from(r.turns.to_string()),
                Cell::from(money(r.cost_usd)),
                Cell::from(age(c.now_ms, r.last_at_ms)),
                Cell::from(clip(&r.last_text, 200)),
            ])
        })
        .collect();
    let header = TableRow::new([
        "NAME",
        "STATE",
        "MODEL",
        "HOST",
        "TOOL",
        "TURNS",
        "COST",
        "AGE",
        "LAST TEXT",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let widths = [
        Constraint::Length(18),
        Constraint::Length(16),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(24),
        Constraint::Length(5),
        Constraint::Length(9),
        Constraint::Length(4),
        Constraint::Fill(1),
    ];
    let table = Table::new(body, widths)
        .header(header)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(selected.map(|s| s - first));
    f.render_stateful_widget(table, area, &mut state);
}

fn draw_detail(f: &mut Frame, area: Rect, row: Option<&Row>) {
    let title = match row {
        Some(r) => format!(" {} ", r.name),
        None => " no session ".into(),
    };
    let block = Block::default().borders(Borders::TOP).title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(r) = row else { return };
    let h = inner.height as usize;
    let lines: Vec<Line> = r
        .log
        .iter()
        .skip(r.log.len().saturating_sub(h))
        .map(|l| Line::from(l.as_str()))
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}

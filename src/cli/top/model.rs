//! What `cms top` knows: a row per session (state, model, host, the tool in use,
//! turns, costs, the last line of text, a short log for the detail pane), the sort,
//! the filter and the selection. Fed by [`Model::sync`] (the sessions listed) and
//! [`Model::apply`] (each event); drawing is in [`super::view`].

use crate::cli::progress;
use crate::engine::{EventKind, SessionEvent, SessionRecord, SessionState};
use std::collections::{HashMap, VecDeque};

/// How many lines of text and tools a session keeps for the detail pane.
pub const DETAIL_LINES: usize = 300;

/// The order of the table (`s` cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// The most recently active first.
    #[default]
    Activity,
    /// The most expensive first.
    Cost,
    Name,
    /// Those that need a person first (waiting_approval, failed, ...), then busy.
    State,
}

impl Sort {
    pub fn next(self) -> Sort {
        match self {
            Sort::Activity => Sort::Cost,
            Sort::Cost => Sort::Name,
            Sort::Name => Sort::State,
            Sort::State => Sort::Activity,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Activity => "activity",
            Sort::Cost => "cost",
            Sort::Name => "name",
            Sort::State => "state",
        }
    }
}

/// One session's line in the table, and what its detail pane shows.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub state: SessionState,
    /// The API status of the retry in progress (`retrying 529`).
    pub retry_status: Option<u16>,
    /// The place in the queue while queued.
    pub queue_position: Option<usize>,
    pub model: Option<String>,
    /// The host it runs on (`on`), None: this machine.
    pub host: Option<String>,
    /// The tool in use and its target (`Bash ls`), until the turn ends.
    pub tool: Option<String>,
    pub turns: u32,
    pub cost_usd: f64,
    /// The last non-empty line of text it wrote.
    pub last_text: String,
    /// The last activity (ms since the epoch).
    pub last_at_ms: i64,
    /// Text and tool lines, oldest first, at most [`DETAIL_LINES`].
    pub log: VecDeque<String>,
    /// Made from an event before any record was read.
    placeholder: bool,
}

impl Row {
    fn from_record(rec: &SessionRecord) -> Row {
        let mut row = Row {
            name: rec.name.clone(),
            state: rec.state,
            retry_status: None,
            queue_position: None,
            model: None,
            host: None,
            tool: None,
            turns: 0,
            cost_usd: 0.0,
            last_text: String::new(),
            last_at_ms: 0,
            log: VecDeque::new(),
            placeholder: false,
        };
        row.update(rec);
        if let Some(text) = rec.last_response.as_deref() {
            row.last_text = last_line(text).to_string();
            for line in text
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                row.push(line.to_string());
            }
        }
        row
    }

    /// Take what the store says (the host keeps it up to date).
    fn update(&mut self, rec: &SessionRecord) {
        self.state = rec.state;
        self.retry_status = rec.retry.as_ref().and_then(|r| r.error_status);
        // A listed record is a summary (`Store::list`): it may lack both.
        if rec.options.model.is_some() {
            self.model = rec.options.model.clone();
        }
        if rec.options.on.is_some() {
            self.host = rec.options.on.clone();
        }
        // The store is right; events only keep the figures live between reads.
        self.turns = rec.total_turns;
        self.cost_usd = rec.total_cost_usd;
        self.last_at_ms = self.last_at_ms.max(rec.updated_at);
        if !rec.state.is_busy() {
            self.tool = None;
        }
    }

    fn push(&mut self, line: String) {
        if self.log.len() >= DETAIL_LINES {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    /// The state as the table shows it: `retrying 529`, `queued #2`.
    pub fn state_text(&self) -> String {
        match (self.state, self.retry_status, self.queue_position) {
            (SessionState::Retrying, Some(s), _) => format!("retrying {s}"),
            (SessionState::Queued, _, Some(p)) => format!("queued #{p}"),
            (s, _, _) => s.as_str().to_string(),
        }
    }

    /// Whether the filter text matches its name, state, model, host or last text.
    fn matches(&self, filter: &str) -> bool {
        if filter.is_empty() {
            return true;
        }
        let f = filter.to_lowercase();
        self.name.to_lowercase().contains(&f)
            || self.state.as_str().contains(&f)
            || self
                .model
                .as_deref()
                .is_some_and(|m| m.to_lowercase().contains(&f))
            || self
                .host
                .as_deref()
                .is_some_and(|h| h.to_lowercase().contains(&f))
    }
}

/// How urgent a state is for a person (lower first in the `state` sort).
fn urgency(s: SessionState) -> u8 {
    match s {
        SessionState::WaitingApproval => 0,
        SessionState::Failed | SessionState::Killed => 1,
        SessionState::Retrying => 2,
        SessionState::Busy | SessionState::Starting => 3,
        SessionState::Queued => 4,
        SessionState::Idle => 5,
        SessionState::Paused => 6,
        SessionState::Parked | SessionState::Stopped => 7,
    }
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// Every session `cms top` shows, and how.
#[derive(Debug, Default)]
pub struct Model {
    rows: HashMap<String, Row>,
    pub sort: Sort,
    /// Rows whose name, state, model or host contain it (case-insensitive).
    pub filter: String,
    /// The selected session (kept by name across sorts and refreshes).
    pub selected: Option<String>,
    /// USD of every turn since local midnight, across sessions.
    pub today_usd: f64,
    /// Something changed since the last frame.
    pub dirty: bool,
}

impl Model {
    pub fn new() -> Model {
        Model {
            dirty: true,
            ..Model::default()
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether the session's whole record (last response, host) is still to read:
    /// listed records are summaries.
    pub fn needs_record(&self, name: &str) -> bool {
        self.rows.get(name).is_none_or(|r| r.placeholder)
    }

    pub fn row(&self, name: &str) -> Option<&Row> {
        self.rows.get(name)
    }

    /// The sessions listed now: new ones added, gone ones (deleted) removed, the
    /// others brought up to date.
    pub fn sync(&mut self, records: &[SessionRecord]) {
        let names: std::collections::HashSet<&str> =
            records.iter().map(|r| r.name.as_str()).collect();
        self.rows.retain(|n, _| names.contains(n.as_str()));
        for rec in records {
            match self.rows.get_mut(&rec.name) {
                Some(row) if !row.placeholder => row.update(rec),
                Some(row) => {
                    let log = std::mem::take(&mut row.log);
                    let at = row.last_at_ms;
                    *row = Row::from_record(rec);
                    row.log.extend(log);
                    row.last_at_ms = row.last_at_ms.max(at);
                }
                None => {
                    self.rows.insert(rec.name.clone(), Row::from_record(rec));
                }
            }
        }
        self.dirty = true;
    }

    /// One event of a session. An unknown session gets a row (the next sync fills it).
    pub fn apply(&mut self, e: &SessionEvent) {
        let row = self.rows.entry(e.session.clone()).or_insert_with(|| Row {
            placeholder: true,
            ..Row::from_record(&placeholder(&e.session))
        });
        row.last_at_ms = row.last_at_ms.max(e.at_ms);
        match &e.kind {
            EventKind::Init { model, .. } => {
                if model.is_some() {
                    row.model = model.clone();
                }
            }
            EventKind::Text { text } => {
                let l = last_line(text);
                if !l.is_empty() {
                    row.last_text = l.to_string();
                }
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    row.push(line.to_string());
                }
            }
            EventKind::ToolUse { .. } => {
                if let Some(d) = progress::describe(e) {
                    row.tool = Some(d.trim_start_matches("→ ").to_string());
                    row.push(d);
                }
            }
            EventKind::Retry(r) => {
                row.state = SessionState::Retrying;
                row.retry_status = r.error_status;
                row.push(progress::describe(e).unwrap_or_default());
            }
            EventKind::Queued { position } => {
                row.state = SessionState::Queued;
                row.queue_position = Some(*position);
            }
            EventKind::Result {
                cost_usd,
                session_cost_usd,
                num_turns,
                ..
            } => {
                row.cost_usd = *session_cost_usd;
                row.turns += num_turns;
                row.tool = None;
                self.today_usd += cost_usd;
                if let Some(d) = progress::describe(e) {
                    row.push(d);
                }
            }
            EventKind::State { state } => {
                row.state = *state;
                if *state != SessionState::Queued {
                    row.queue_position = None;
                }
                if *state != SessionState::Retrying {
                    row.retry_status = None;
                }
                if !state.is_busy() {
                    row.tool = None;
                }
                if progress::notable_state(*state) {
                    row.push(format!("· {state}"));
                }
            }
            _ => {
                if let Some(d) = progress::describe(e) {
                    row.push(d);
                }
            }
        }
        self.dirty = true;
    }

    /// The rows shown, filtered and sorted (ties by name).
    pub fn visible(&self) -> Vec<&Row> {
        let mut rows: Vec<&Row> = self
            .rows
            .values()
            .filter(|r| r.matches(&self.filter))
            .collect();
        match self.sort {
            Sort::Activity => rows.sort_by(|a, b| {
                b.last_at_ms
                    .cmp(&a.last_at_ms)
                    .then_with(|| a.name.cmp(&b.name))
            }),
            Sort::Cost => rows.sort_by(|a, b| {
                b.cost_usd
                    .total_cmp(&a.cost_usd)
                    .then_with(|| a.name.cmp(&b.name))
            }),
            Sort::Name => rows.sort_by(|a, b| a.name.cmp(&b.name)),
            Sort::State => rows.sort_by(|a, b| {
                urgency(a.state)
                    .cmp(&urgency(b.state))
                    .then_with(|| a.name.cmp(&b.name))
            }),
        }
        rows
    }

    /// The selected row among the visible ones (the first when none is selected or
    /// the selected one is filtered out).
    pub fn selected_index(&self, visible: &[&Row]) -> Option<usize> {
        if visible.is_empty() {
            return None;
        }
        Some(
            self.selected
                .as_deref()
                .and_then(|s| visible.iter().position(|r| r.name == s))
                .unwrap_or(0),
        )
    }

    /// The selected session's name, as [`Model::selected_index`] picks it.
    pub fn selected_name(&self) -> Option<String> {
        let visible = self.visible();
        self.selected_index(&visible)
            .map(|i| visible[i].name.clone())
    }

    /// Move the selection `by` rows (negative: up), within the visible rows.
    pub fn move_selection(&mut self, by: isize) {
        let visible = self.visible();
        let Some(i) = self.selected_index(&visible) else {
            return;
        };
        let j = (i as isize + by).clamp(0, visible.len() as isize - 1) as usize;
        self.selected = Some(visible[j].name.clone());
        self.dirty = true;
    }

    /// How many sessions are in each group the header counts: working (busy,
    /// retrying, starting), waiting for a person, failed or killed, live in all.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for r in self.rows.values() {
            match r.state {
                SessionState::Busy | SessionState::Retrying | SessionState::Starting => c.0 += 1,
                SessionState::WaitingApproval => c.1 += 1,
                SessionState::Failed | SessionState::Killed => c.2 += 1,
                _ => {}
            }
            if r.state.is_live() {
                c.3 += 1;
            }
        }
        c
    }

    /// The sum of every session's cost.
    pub fn total_usd(&self) -> f64 {
        self.rows.values().map(|r| r.cost_usd).sum()
    }
}

fn placeholder(name: &str) -> SessionRecord {
    let mut rec = SessionRecord::new(name, Default::default(), Default::default());
    rec.updated_at = 0;
    rec
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(name: &str, state: SessionState, cost: f64, at: i64) -> SessionRecord {
        let mut r = SessionRecord::new(name, Default::default(), Default::default());
        r.state = state;
        r.total_cost_usd = cost;
        r.updated_at = at;
        r
    }

    fn ev(session: &str, at_ms: i64, kind: EventKind) -> SessionEvent {
        SessionEvent {
            session: session.into(),
            at_ms,
            kind,
        }
    }

    fn model() -> Model {
        let mut m = Model::new();
        m.sync(&[
            rec("alpha", SessionState::Idle, 0.5, 100),
            rec("beta", SessionState::Busy, 0.1, 300),
            rec("gamma", SessionState::WaitingApproval, 2.0, 200),
        ]);
        m
    }

    fn names(m: &Model) -> Vec<String> {
        m.visible().iter().map(|r| r.name.clone()).collect()
    }

    #[test]
    fn events_update_their_own_row() {
        let mut m = model();
        m.apply(&ev(
            "beta",
            400,
            EventKind::ToolUse {
                id: "t1".into(),
                name: "Bash".into(),
                input: json!({"command": "cargo test"}),
            },
        ));
        m.apply(&ev(
            "beta",
            401,
            EventKind::Text {
                text: "first\nsecond line\n".into(),
            },
        ));
        let beta = m.row("beta").unwrap();
        assert_eq!(beta.tool.as_deref(), Some("Bash cargo test"));
        assert_eq!(beta.last_text, "second line");
        assert_eq!(beta.last_at_ms, 401);
        assert!(
            beta.log.iter().any(|l| l == "→ Bash cargo test"),
            "{:?}",
            beta.log
        );
        assert_eq!(m.row("alpha").unwrap().last_text, "");
        assert_eq!(m.row("alpha").unwrap().tool, None);

        m.apply(&ev(
            "beta",
            402,
            EventKind::Retry(crate::engine::events::ApiRetryEvent {
                attempt: 1,
                max_retries: 10,
                retry_delay_ms: 500.0,
                error_status: Some(529),
                error: None,
            }),
        ));
        assert_eq!(m.row("beta").unwrap().state_text(), "retrying 529");
        m.apply(&ev(
            "beta",
            403,
            EventKind::Result {
                cost_usd: 0.25,
                session_cost_usd: 0.35,
                num_turns: 2,
                is_error: false,
                subtype: "success".into(),
            },
        ));
        m.apply(&ev(
            "beta",
            404,
            EventKind::State {
                state: SessionState::Idle,
            },
        ));
        let beta = m.row("beta").unwrap();
        assert_eq!(beta.state_text(), "idle");
        assert_eq!(beta.tool, None);
        assert_eq!(beta.turns, 2);
        assert!((beta.cost_usd - 0.35).abs() < 1e-9);

        m.apply(&ev("alpha", 405, EventKind::Queued { position: 2 }));
        assert_eq!(m.row("alpha").unwrap().state_text(), "queued #2");
        // A session the list did not have yet gets a row.
        m.apply(&ev("delta", 406, EventKind::Text { text: "hi".into() }));
        assert_eq!(m.len(), 4);
        assert!(m.needs_record("delta") && !m.needs_record("alpha"));
        // Its record, once read, fills it in and keeps what the events showed.
        let mut delta = rec("delta", SessionState::Busy, 0.2, 100);
        delta.options.on = Some("build-box".into());
        m.sync(&[delta]);
        let delta = m.row("delta").unwrap();
        assert_eq!(delta.host.as_deref(), Some("build-box"));
        assert_eq!(delta.last_at_ms, 406);
        assert_eq!(delta.log.back().map(String::as_str), Some("hi"));
        assert!(!m.needs_record("delta"));
    }

    #[test]
    fn the_filter_keeps_matching_rows_and_the_selection_follows() {
        let mut m = model();
        m.filter = "GAM".into();
        assert_eq!(names(&m), ["gamma"]);
        assert_eq!(m.selected_name().as_deref(), Some("gamma"));
        m.filter = "busy".into();
        assert_eq!(names(&m), ["beta"]);
        m.filter = "nothing".into();
        assert!(m.visible().is_empty());
        assert_eq!(m.selected_name(), None);
        m.filter.clear();
        assert_eq!(m.visible().len(), 3);
    }

    #[test]
    fn sorts_by_activity_cost_name_and_state() {
        let mut m = model();
        assert_eq!(names(&m), ["beta", "gamma", "alpha"]);
        m.sort = m.sort.next();
        assert_eq!(m.sort, Sort::Cost);
        assert_eq!(names(&m), ["gamma", "alpha", "beta"]);
        m.sort = m.sort.next();
        assert_eq!(names(&m), ["alpha", "beta", "gamma"]);
        m.sort = m.sort.next();
        assert_eq!(names(&m), ["gamma", "beta", "alpha"]);
        assert_eq!(m.sort.next(), Sort::Activity);
        // The selection is kept by name across sorts.
        m.selected = Some("alpha".into());
        m.move_selection(-1);
        assert_eq!(m.selected_name().as_deref(), Some("beta"));
        m.sort = Sort::Name;
        assert_eq!(m.selected_name().as_deref(), Some("beta"));
    }

    #[test]
    fn todays_cost_adds_each_turn_and_a_sync_keeps_rows_up_to_date() {
        let mut m = model();
        m.today_usd = 1.0;
        for (i, s) in ["alpha", "beta"].iter().enumerate() {
            m.apply(&ev(
                s,
                500 + i as i64,
                EventKind::Result {
                    cost_usd: 0.5,
                    session_cost_usd: 1.0,
                    num_turns: 1,
                    is_error: false,
                    subtype: "success".into(),
                },
            ));
        }
        assert!((m.today_usd - 2.0).abs() < 1e-9);
        assert!((m.total_usd() - 4.0).abs() < 1e-9);
        // A deleted session leaves; the others take the store's figures.
        let mut alpha = rec("alpha", SessionState::Idle, 1.5, 100);
        alpha.total_turns = 3;
        m.sync(&[alpha]);
        assert_eq!(m.len(), 1);
        assert_eq!(m.row("alpha").unwrap().turns, 3);
        assert!((m.row("alpha").unwrap().cost_usd - 1.5).abs() < 1e-9);
        assert_eq!(m.counts(), (0, 0, 0, 1));
    }
}

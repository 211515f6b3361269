//! The SQLite store: sessions, every interaction with its cost and timing, and the
//! events worth keeping.
//!
//! One database (`cms.db`, WAL mode) under `$CMS_HOME`, created 0700 / 0600. Several
//! cms processes (CLI commands, a REPL, an MCP server) use it at once: every write is a
//! short `BEGIN IMMEDIATE` transaction and connections wait on a busy timeout, so
//! concurrent writers queue instead of failing. The schema is versioned with
//! `PRAGMA user_version` and migrated forward on open.

use crate::engine::config::SessionOptions;
use crate::engine::error::{EngineError, Result};
use crate::engine::events::{now_ms, EventKind, SessionEvent};
use crate::engine::response::Response;
use crate::engine::state::SessionState;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The migrations, in order; `user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE sessions (
        name              TEXT PRIMARY KEY,
        claude_session_id TEXT,
        state             TEXT NOT NULL,
        options           TEXT NOT NULL,
        work_dir          TEXT NOT NULL,
        cwd               TEXT,
        forked_from       TEXT,
        fork_parent_id    TEXT,
        created_at        INTEGER NOT NULL,
        updated_at        INTEGER NOT NULL,
        total_cost_usd    REAL NOT NULL DEFAULT 0,
        total_turns       INTEGER NOT NULL DEFAULT 0,
        interaction_count INTEGER NOT NULL DEFAULT 0,
        last_response     TEXT,
        last_error        TEXT,
        pid               INTEGER,
        host_pid          INTEGER,
        meta              TEXT
    );
    CREATE INDEX sessions_updated ON sessions(updated_at);
    CREATE TABLE interactions (
        id                 INTEGER PRIMARY KEY AUTOINCREMENT,
        session            TEXT NOT NULL REFERENCES sessions(name) ON DELETE CASCADE,
        at                 INTEGER NOT NULL,
        kind               TEXT NOT NULL,
        message            TEXT NOT NULL,
        response           TEXT,
        cost_usd           REAL NOT NULL DEFAULT 0,
        turns              INTEGER NOT NULL DEFAULT 0,
        duration_ms        INTEGER NOT NULL DEFAULT 0,
        is_error           INTEGER NOT NULL DEFAULT 0,
        subtype            TEXT,
        error              TEXT,
        tools_used         TEXT NOT NULL DEFAULT '[]',
        permission_denials TEXT NOT NULL DEFAULT '[]',
        claude_session_id  TEXT
    );
    CREATE INDEX interactions_session ON interactions(session, id);
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        session TEXT NOT NULL REFERENCES sessions(name) ON DELETE CASCADE,
        at      INTEGER NOT NULL,
        kind    TEXT NOT NULL,
        data    TEXT NOT NULL
    );
    CREATE INDEX events_session ON events(session, id);
    "#,
    // 2: exact cost across CLI generations, who holds a live session, API retries,
    //    and the queue of commands waiting to drive a session.
    r#"
    ALTER TABLE sessions ADD COLUMN reported_cost_usd REAL;
    ALTER TABLE sessions ADD COLUMN cost_scope TEXT;
    ALTER TABLE sessions ADD COLUMN host_kind TEXT;
    ALTER TABLE sessions ADD COLUMN retry TEXT;
    CREATE TABLE waiters (
        ticket  INTEGER PRIMARY KEY AUTOINCREMENT,
        session TEXT NOT NULL,
        pid     INTEGER NOT NULL,
        at      INTEGER NOT NULL
    );
    CREATE INDEX waiters_session ON waiters(session, ticket);
    "#,
    // 3: the host a session is pinned to (`hosts.lua`; NULL: this machine).
    r#"
    ALTER TABLE sessions ADD COLUMN runs_on TEXT;
    "#,
];

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub name: String,
    pub claude_session_id: Option<String>,
    pub state: SessionState,
    pub options: SessionOptions,
    /// The directory the session was created in.
    pub work_dir: PathBuf,
    /// The directory Claude Code reported (differs with a worktree); resumes run here.
    pub cwd: Option<PathBuf>,
    pub forked_from: Option<String>,
    /// Set on a fork that has not run yet: the parent's Claude session id.
    pub fork_parent_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub total_cost_usd: f64,
    pub total_turns: u32,
    pub interaction_count: u32,
    pub last_response: Option<String>,
    pub last_error: Option<String>,
    /// The live child's pid, and the pid of the cms process that owns it.
    pub pid: Option<u32>,
    pub host_pid: Option<u32>,
    /// Free-form JSON for layers above the engine (delegation settings, ...).
    pub meta: Option<serde_json::Value>,
    /// The last cumulative `total_cost_usd` the CLI reported for this conversation:
    /// where a resumed (or forked) process's count starts on CLIs that count per
    /// conversation (see [`crate::engine::cost`]).
    pub reported_cost_usd: Option<f64>,
    /// How the CLI counted that figure (`process`, `conversation`), as last found out.
    pub cost_scope: Option<crate::engine::cost::CostScope>,
    /// What kind of cms process holds the session live (`cli`, `mcp`, `repl`, `script`...).
    pub host_kind: Option<String>,
    /// The API retry in progress, while the CLI is retrying a failing call.
    pub retry: Option<crate::engine::events::ApiRetryEvent>,
}

impl SessionRecord {
    /// A new record in state `starting`.
    pub fn new(name: &str, options: SessionOptions, work_dir: PathBuf) -> Self {
        let now = now_ms();
        SessionRecord {
            name: name.to_string(),
            claude_session_id: None,
            state: SessionState::Starting,
            options,
            work_dir,
            cwd: None,
            forked_from: None,
            fork_parent_id: None,
            created_at: now,
            updated_at: now,
            total_cost_usd: 0.0,
            total_turns: 0,
            interaction_count: 0,
            last_response: None,
            last_error: None,
            pid: None,
            host_pid: None,
            meta: None,
            reported_cost_usd: None,
            cost_scope: None,
            host_kind: None,
            retry: None,
        }
    }

    /// The directory a resume must run in.
    pub fn resume_dir(&self) -> &Path {
        self.cwd.as_deref().unwrap_or(&self.work_dir)
    }
}

/// One interaction (a send and its response) as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    pub id: i64,
    pub session: String,
    pub at: i64,
    /// spawn, send, resume, fork, delegate, continue, retry, ...
    pub kind: String,
    pub message: String,
    pub response: Option<String>,
    pub cost_usd: f64,
    pub turns: u32,
    pub duration_ms: u64,
    pub is_error: bool,
    pub subtype: Option<String>,
    pub error: Option<String>,
    pub tools_used: Vec<String>,
    pub permission_denials: serde_json::Value,
    pub claude_session_id: Option<String>,
}

/// What the turns of one day cost (see [`Store::cost_by_day`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayCost {
    /// The local date, `YYYY-MM-DD`.
    pub day: String,
    pub cost_usd: f64,
    /// Messages answered (turns recorded).
    pub messages: u64,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub at: i64,
    pub kind: String,
    pub data: serde_json::Value,
}

pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

const SESSION_COLUMNS: &str =
    "name, claude_session_id, state, options, work_dir, cwd, forked_from, \
     fork_parent_id, created_at, updated_at, total_cost_usd, total_turns, interaction_count, \
     last_response, last_error, pid, host_pid, meta, reported_cost_usd, host_kind, retry, cost_scope, runs_on";

impl Store {
    /// Open (creating it if needed) the store in `home`. A store that cannot be
    /// opened for writing (a read-only `CMS_HOME`) is opened read-only: reading
    /// commands work, writes fail with SQLite's "readonly database".
    pub fn open(home: &Path) -> Result<Store> {
        create_private_dir(home)?;
        let path = home.join("cms.db");
        match Store::open_writable(&path) {
            Err(e) if path.exists() => Store::open_read_only(&path).map_err(|_| e),
            r => r,
        }
    }

    /// Read-only: through SQLite's WAL files when they are there, else as an
    /// immutable file (no WAL file means every change is in the database file).
    fn open_read_only(path: &Path) -> Result<Store> {
        use rusqlite::OpenFlags;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        let uri = format!(
            "file:{}{}",
            path.display(),
            if wal.exists() { "" } else { "?immutable=1" }
        );
        let conn = Connection::open_with_flags(&uri, flags).map_err(|e| store_err(path, e))?;
        let store = Store {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        };
        store.schema_version()?;
        tracing::info!("{} is read-only: opened for reading only", path.display());
        Ok(store)
    }

    fn open_writable(path: &Path) -> Result<Store> {
        let path = path.to_path_buf();
        let fresh = !path.exists();
        let conn = Connection::open(&path).map_err(|e| store_err(&path, e))?;
        if fresh {
            set_mode(&path, 0o600);
        }
        let store = Store {
            path: path.clone(),
            conn: Mutex::new(conn),
        };
        store.configure()?;
        store.migrate()?;
        for suffix in ["-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", path.display()));
            if p.exists() {
                set_mode(&p, 0o600);
            }
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> EngineError {
        store_err(&self.path, e)
    }

    fn configure(&self) -> Result<()> {
        let conn = self.conn.lock().unwrap();
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(|e| self.err(e))?;
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(|e| self.err(e))?;
        // WAL is kept in the file: set it once. Switching needs the database to itself
        // and is not covered by the busy timeout, so a second command opening a new
        // store at the same moment tries again for a while.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mode = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
                .and_then(|m| {
                    if m.eq_ignore_ascii_case("wal") {
                        return Ok(m);
                    }
                    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
                });
            match mode {
                Ok(m) if m.eq_ignore_ascii_case("wal") => return Ok(()),
                Ok(m) => {
                    // SQLite kept another mode without an error (a read-only store, say):
                    // it works, only with less concurrency.
                    tracing::warn!("the store stays in journal mode {m}, not WAL");
                    return Ok(());
                }
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn.lock().unwrap();
        let version: usize = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if version >= MIGRATIONS.len() {
            return Ok(());
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        // Another process may have migrated while we waited for the lock.
        let version: usize = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql).map_err(|e| self.err(e))?;
            tx.pragma_update(None, "user_version", i + 1)
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The schema version in force.
    pub fn schema_version(&self) -> Result<usize> {
        let conn = self.conn.lock().unwrap();
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Insert a new session; fails with `AlreadyExists` when the name is taken.
    pub fn insert_session(&self, rec: &SessionRecord) -> Result<()> {
        let conn = self.conn.lock().unwrap();
        let r = conn.execute(
            &format!("INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23)"),
            params![
                rec.name,
                rec.claude_session_id,
                rec.state.as_str(),
                serde_json::to_string(&rec.options).unwrap_or_default(),
                rec.work_dir.display().to_string(),
                rec.cwd.as_ref().map(|p| p.display().to_string()),
                rec.forked_from,
                rec.fork_parent_id,
                rec.created_at,
                rec.updated_at,
                rec.total_cost_usd,
                rec.total_turns,
                rec.interaction_count,
                rec.last_response,
                rec.last_error,
                rec.pid,
                rec.host_pid,
                rec.meta.as_ref().map(|m| m.to_string()),
                rec.reported_cost_usd,
                rec.host_kind,
                retry_json(rec),
                rec.cost_scope.map(|s| s.as_str()),
                rec.options.on,
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(EngineError::AlreadyExists(rec.name.clone()))
            }
            Err(e) => Err(self.err(e)),
        }
    }

    pub fn get(&self, name: &str) -> Result<Option<SessionRecord>> {
        let conn = self.conn.lock().unwrap();
        conn.query_row(
            &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE name = ?1"),
            [name],
            record_from_row,
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    /// Like [`Store::get`], but a missing session is `NotFound`.
    pub fn require(&self, name: &str) -> Result<SessionRecord> {
        self.get(name)?
            .ok_or_else(|| EngineError::NotFound(name.to_string()))
    }

    /// Every session, most recently active first. To stay fast with thousands of
    /// sessions these records are summaries: no `last_response` and no `meta` (they
    /// are `None`), and of the options only `model`, `permission_mode` and
    /// `allowed_tools`. [`Store::get`] has everything.
    pub fn list(&self) -> Result<Vec<SessionRecord>> {
        let conn = self.conn.lock().unwrap();
        let columns = SESSION_COLUMNS
            .replace("last_response", "NULL")
            .replace(", meta", ", NULL");
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {columns} FROM sessions ORDER BY +updated_at DESC, name"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], summary_from_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Read-modify-write one session in a single immediate transaction.
    pub fn update<F>(&self, name: &str, f: F) -> Result<SessionRecord>
    where
        F: FnOnce(&mut SessionRecord),
    {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let mut rec = tx
            .query_row(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE name = ?1"),
                [name],
                record_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| EngineError::NotFound(name.to_string()))?;
        f(&mut rec);
        rec.updated_at = now_ms().max(rec.updated_at);
        write_record(&tx, &rec).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(rec)
    }

    /// Record a turn: the interaction row and the session's totals, in one transaction.
    pub fn record_turn(
        &self,
        name: &str,
        kind: &str,
        message: &str,
        outcome: &TurnOutcome<'_>,
        state: SessionState,
    ) -> Result<SessionRecord> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let mut rec = tx
            .query_row(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE name = ?1"),
                [name],
                record_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| EngineError::NotFound(name.to_string()))?;
        let r = outcome.response;
        let now = now_ms();
        tx.execute(
            "INSERT INTO interactions (session, at, kind, message, response, cost_usd, turns, \
             duration_ms, is_error, subtype, error, tools_used, permission_denials, claude_session_id) \
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)",
            params![
                name,
                now,
                kind,
                message,
                r.map(|r| r.text.as_str()),
                r.map_or(0.0, |r| r.cost_usd),
                r.map_or(0, |r| r.num_turns),
                r.map_or(outcome.duration_ms, |r| r.duration_ms) as i64,
                r.is_none_or(|r| r.is_error) || outcome.error.is_some(),
                r.map(|r| r.subtype.as_str()),
                outcome.error,
                serde_json::to_string(&r.map(|r| r.tools_used.clone()).unwrap_or_default()).unwrap_or_default(),
                serde_json::to_string(&r.map(|r| r.permission_denials.clone()).unwrap_or_default()).unwrap_or_default(),
                r.map(|r| r.session_id.as_str()).filter(|s| !s.is_empty()),
            ],
        )
        .map_err(|e| self.err(e))?;
        if let Some(r) = r {
            rec.total_cost_usd += r.cost_usd;
            rec.total_turns += r.num_turns;
            if !r.text.is_empty() || !r.is_error {
                rec.last_response = Some(r.text.clone());
            }
        }
        rec.interaction_count += 1;
        rec.last_error = outcome
            .error
            .map(str::to_string)
            .or_else(|| r.filter(|r| r.is_error).map(|r| r.error_summary()));
        rec.state = state;
        if let Some(id) = outcome.session_id {
            rec.claude_session_id = Some(id.to_string());
            rec.fork_parent_id = None;
        }
        if outcome.reported_cost_usd.is_some() {
            rec.reported_cost_usd = outcome.reported_cost_usd;
        }
        if let Some(scope) = outcome.cost_scope {
            rec.cost_scope = Some(scope);
        }
        // The session's running total as its live process counts it (a result that
        // arrived after its turn was answered is in it too).
        if let Some(total) = outcome.session_cost_usd {
            rec.total_cost_usd = rec.total_cost_usd.max(total);
        }
        rec.retry = None;
        if let Some(cwd) = outcome.cwd {
            rec.cwd = Some(PathBuf::from(cwd));
        }
        rec.updated_at = now.max(rec.updated_at);
        write_record(&tx, &rec).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(rec)
    }

    /// Set a session's last-activity time (imports, and tests of `cleanup`).
    pub fn set_updated_at(&self, name: &str, at_ms: i64) -> Result<()> {
        let conn = self.conn.lock().unwrap();
        conn.execute(
            "UPDATE sessions SET updated_at = ?2 WHERE name = ?1",
            params![name, at_ms],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The cost of every turn recorded since `at_ms` (ms since the epoch), across
    /// sessions (those deleted since are no longer counted).
    pub fn cost_since(&self, at_ms: i64) -> Result<f64> {
        let conn = self.conn.lock().unwrap();
        conn.query_row(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM interactions WHERE at >= ?1",
            [at_ms],
            |r| r.get(0),
        )
        .map_err(|e| self.err(e))
    }

    /// The cost of the turns of each of the last `days` days (local time, today
    /// first), days without a turn included; across sessions (those deleted are no
    /// longer counted).
    pub fn cost_by_day(&self, days: u32) -> Result<Vec<DayCost>> {
        let days = days.clamp(1, 3660);
        // A day more than asked, so a turn just before the first day's local midnight
        // (whatever the offset) is among the rows; the join keeps the asked days only.
        let since = crate::engine::capacity::local_midnight_ms() - i64::from(days) * 86_400_000;
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare_cached(
                "WITH RECURSIVE d(n, day) AS ( \
                   SELECT 0, date('now', 'localtime') \
                   UNION ALL SELECT n + 1, date('now', 'localtime', printf('-%d days', n + 1)) \
                   FROM d WHERE n + 1 < ?1), \
                 t(day, cost, turns) AS ( \
                   SELECT date(at / 1000, 'unixepoch', 'localtime'), SUM(cost_usd), COUNT(*) \
                   FROM interactions WHERE at >= ?2 GROUP BY 1) \
                 SELECT d.day, COALESCE(t.cost, 0), COALESCE(t.turns, 0) \
                 FROM d LEFT JOIN t ON t.day = d.day ORDER BY d.n",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![days, since], |r| {
                Ok(DayCost {
                    day: r.get(0)?,
                    cost_usd: r.get(1)?,
                    messages: r.get::<_, i64>(2)? as u64,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// The cost and number of every turn recorded, across sessions (those deleted
    /// are no longer counted).
    pub fn cost_total(&self) -> Result<(f64, u64)> {
        let conn = self.conn.lock().unwrap();
        conn.query_row(
            "SELECT COALESCE(SUM(cost_usd), 0), COUNT(*) FROM interactions",
            [],
            |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
        )
        .map_err(|e| self.err(e))
    }

    /// Mark a turn in flight, so `cms status` in another process sees it.
    pub fn set_state(&self, name: &str, state: SessionState) -> Result<()> {
        let conn = self.conn.lock().unwrap();
        conn.execute(
            "UPDATE sessions SET state = ?2, updated_at = max(updated_at, ?3) WHERE name = ?1",
            params![name, state.as_str(), now_ms()],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn delete(&self, name: &str) -> Result<bool> {
        let conn = self.conn.lock().unwrap();
        let n = conn
            .execute("DELETE FROM sessions WHERE name = ?1", [name])
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    pub fn history(&self, name: &str) -> Result<Vec<Interaction>> {
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, session, at, kind, message, response, cost_usd, turns, duration_ms, \
                 is_error, subtype, error, tools_used, permission_denials, claude_session_id \
                 FROM interactions WHERE session = ?1 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([name], |r| {
                Ok(Interaction {
                    id: r.get(0)?,
                    session: r.get(1)?,
                    at: r.get(2)?,
                    kind: r.get(3)?,
                    message: r.get(4)?,
                    response: r.get(5)?,
                    cost_usd: r.get(6)?,
                    turns: r.get(7)?,
                    duration_ms: r.get::<_, i64>(8)? as u64,
                    is_error: r.get(9)?,
                    subtype: r.get(10)?,
                    error: r.get(11)?,
                    tools_used: json_col(r.get::<_, String>(12)?),
                    permission_denials: json_col(r.get::<_, String>(13)?),
                    claude_session_id: r.get(14)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Keep events worth keeping (tool uses, permission decisions, retries, errors, exits).
    pub fn record_events(&self, events: &[SessionEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.lock().unwrap();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO events (session, at, kind, data) \
                     SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM sessions WHERE name = ?1)",
                )
                .map_err(|e| self.err(e))?;
            for e in events {
                match &e.kind {
                    // The id is known from the first line of the first turn: keep it at once,
                    // so a session killed (or whose cms died) mid-turn can be resumed.
                    EventKind::Init { session_id, .. } => {
                        tx.execute(
                            "UPDATE sessions SET claude_session_id = ?2 \
                             WHERE name = ?1 AND claude_session_id IS NULL AND ?2 != ''",
                            params![e.session, session_id],
                        )
                        .map_err(|e| self.err(e))?;
                        continue;
                    }
                    // The API answered again: the turn is busy, no longer retrying.
                    EventKind::State {
                        state: SessionState::Busy,
                    } => {
                        tx.execute(
                            "UPDATE sessions SET retry = NULL, state = 'busy' \
                             WHERE name = ?1 AND state IN ('retrying', 'waiting_approval')",
                            params![e.session],
                        )
                        .map_err(|e| self.err(e))?;
                        continue;
                    }
                    EventKind::State { .. } => continue,
                    // Another process's `cms list` sees who waits for a person, and when a
                    // decision lets the turn go on.
                    EventKind::Approval { .. } => {
                        tx.execute(
                            "UPDATE sessions SET state = 'waiting_approval' \
                             WHERE name = ?1 AND state IN ('busy', 'retrying')",
                            params![e.session],
                        )
                        .map_err(|e| self.err(e))?;
                    }
                    EventKind::Decided { .. } => {
                        tx.execute(
                            "UPDATE sessions SET state = 'busy' \
                             WHERE name = ?1 AND state = 'waiting_approval'",
                            params![e.session],
                        )
                        .map_err(|e| self.err(e))?;
                    }
                    // Another process's `cms status` sees the retries while they happen.
                    EventKind::Retry(r) => {
                        tx.execute(
                            "UPDATE sessions SET retry = ?2, state = 'retrying' \
                             WHERE name = ?1 AND state IN ('busy', 'retrying')",
                            params![e.session, serde_json::to_string(r).unwrap_or_default()],
                        )
                        .map_err(|e| self.err(e))?;
                    }
                    _ => {}
                }
                let data = serde_json::to_value(&e.kind).unwrap_or_default();
                stmt.execute(params![e.session, e.at_ms, e.kind.name(), data.to_string()])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Join the queue of processes waiting to drive a session; returns the ticket.
    pub fn take_ticket(&self, name: &str, pid: u32) -> Result<i64> {
        let conn = self.conn.lock().unwrap();
        conn.execute(
            "INSERT INTO waiters (session, pid, at) VALUES (?1, ?2, ?3)",
            params![name, pid, now_ms()],
        )
        .map_err(|e| self.err(e))?;
        Ok(conn.last_insert_rowid())
    }

    /// Leave the queue.
    pub fn drop_ticket(&self, ticket: i64) -> Result<()> {
        let conn = self.conn.lock().unwrap();
        conn.execute("DELETE FROM waiters WHERE ticket = ?1", [ticket])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// How many tickets of living processes wait before this one (0: its turn).
    /// Tickets of processes that died are removed on the way.
    pub fn tickets_before(&self, name: &str, ticket: i64) -> Result<usize> {
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare_cached("SELECT ticket, pid FROM waiters WHERE session = ?1 AND ticket < ?2")
            .map_err(|e| self.err(e))?;
        let rows: Vec<(i64, u32)> = stmt
            .query_map(params![name, ticket], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))?;
        let mut before = 0;
        for (t, pid) in rows {
            if crate::engine::process::pid_alive(pid) {
                before += 1;
            } else {
                conn.execute("DELETE FROM waiters WHERE ticket = ?1", [t])
                    .map_err(|e| self.err(e))?;
            }
        }
        Ok(before)
    }

    pub fn events(&self, name: &str) -> Result<Vec<StoredEvent>> {
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare_cached("SELECT at, kind, data FROM events WHERE session = ?1 ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([name], |r| {
                Ok(StoredEvent {
                    at: r.get(0)?,
                    kind: r.get(1)?,
                    data: json_col(r.get::<_, String>(2)?),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }
}

/// What a turn left behind, for [`Store::record_turn`].
#[derive(Debug, Default)]
pub struct TurnOutcome<'a> {
    pub response: Option<&'a Response>,
    pub error: Option<&'a str>,
    pub duration_ms: u64,
    /// The Claude session id to keep (None: leave the stored one).
    pub session_id: Option<&'a str>,
    pub cwd: Option<&'a str>,
    /// The CLI's last cumulative `total_cost_usd` (None: leave the stored one).
    pub reported_cost_usd: Option<f64>,
    /// How the CLI counts it, when found out (None: leave the stored one).
    pub cost_scope: Option<crate::engine::cost::CostScope>,
    /// The live process's running total of the session's cost.
    pub session_cost_usd: Option<f64>,
}

fn write_record(conn: &Connection, rec: &SessionRecord) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE sessions SET claude_session_id=?2, state=?3, options=?4, work_dir=?5, cwd=?6, \
         forked_from=?7, fork_parent_id=?8, updated_at=?9, total_cost_usd=?10, total_turns=?11, \
         interaction_count=?12, last_response=?13, last_error=?14, pid=?15, host_pid=?16, meta=?17, \
         reported_cost_usd=?18, host_kind=?19, retry=?20, cost_scope=?21, runs_on=?22 WHERE name=?1",
        params![
            rec.name,
            rec.claude_session_id,
            rec.state.as_str(),
            serde_json::to_string(&rec.options).unwrap_or_default(),
            rec.work_dir.display().to_string(),
            rec.cwd.as_ref().map(|p| p.display().to_string()),
            rec.forked_from,
            rec.fork_parent_id,
            rec.updated_at,
            rec.total_cost_usd,
            rec.total_turns,
            rec.interaction_count,
            rec.last_response,
            rec.last_error,
            rec.pid,
            rec.host_pid,
            rec.meta.as_ref().map(|m| m.to_string()),
            rec.reported_cost_usd,
            rec.host_kind,
            retry_json(rec),
            rec.cost_scope.map(|s| s.as_str()),
            rec.options.on,
        ],
    )
}

fn retry_json(rec: &SessionRecord) -> Option<String> {
    rec.retry
        .as_ref()
        .and_then(|r| serde_json::to_string(r).ok())
}

fn record_from_row(r: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    let options = serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default();
    let meta = r
        .get::<_, Option<String>>(17)?
        .and_then(|m| serde_json::from_str(&m).ok());
    record_with(r, options, meta)
}

/// The options a listing shows; the rest of the JSON is skipped, not built.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ListedOptions {
    model: Option<String>,
    permission_mode: Option<String>,
    allowed_tools: Vec<String>,
}

/// [`record_from_row`] for listings: options reduced to [`ListedOptions`], no meta.
fn summary_from_row(r: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    let listed: ListedOptions = r
        .get_ref(3)?
        .as_str()
        .ok()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let options = SessionOptions {
        model: listed.model,
        permission_mode: listed.permission_mode,
        allowed_tools: listed.allowed_tools,
        ..SessionOptions::default()
    };
    record_with(r, options, None)
}

/// A record from a row of [`SESSION_COLUMNS`], with options and meta already read.
fn record_with(
    r: &Row<'_>,
    mut options: SessionOptions,
    meta: Option<serde_json::Value>,
) -> rusqlite::Result<SessionRecord> {
    let state: String = r.get(2)?;
    // The column is where a session's host is kept (listings read no options JSON).
    options.on = r.get(22)?;
    Ok(SessionRecord {
        name: r.get(0)?,
        claude_session_id: r.get(1)?,
        state: SessionState::parse(&state).unwrap_or(SessionState::Stopped),
        options,
        work_dir: PathBuf::from(r.get::<_, String>(4)?),
        cwd: r.get::<_, Option<String>>(5)?.map(PathBuf::from),
        forked_from: r.get(6)?,
        fork_parent_id: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        total_cost_usd: r.get(10)?,
        total_turns: r.get(11)?,
        interaction_count: r.get(12)?,
        last_response: r.get(13)?,
        last_error: r.get(14)?,
        pid: r.get(15)?,
        host_pid: r.get(16)?,
        meta,
        reported_cost_usd: r.get(18)?,
        host_kind: r.get(19)?,
        retry: r
            .get::<_, Option<String>>(20)?
            .and_then(|t| serde_json::from_str(&t).ok()),
        cost_scope: r
            .get::<_, Option<String>>(21)?
            .and_then(|s| crate::engine::cost::CostScope::parse(&s)),
    })
}

fn json_col<T: serde::de::DeserializeOwned + Default>(s: String) -> T {
    serde_json::from_str(&s).unwrap_or_default()
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

fn store_err(path: &Path, source: rusqlite::Error) -> EngineError {
    EngineError::Store {
        path: path.to_path_buf(),
        source,
    }
}

/// Create `dir` 0700, or take group and other permissions off an existing one.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| EngineError::io(format!("cannot create {}", dir.display()), e))?;
        set_mode(dir, 0o700);
    } else if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            set_mode(dir, mode & !0o077);
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn response(cost: f64, turns: u32) -> Response {
        Response {
            text: "ok".into(),
            cost_usd: cost,
            num_turns: turns,
            session_id: "sid".into(),
            subtype: "success".into(),
            tools_used: vec!["Read".into()],
            ..Response::default()
        }
    }

    #[test]
    fn creates_private_files_and_migrates_once() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let store = Store::open(&home).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&home), 0o700);
        assert_eq!(mode(&home.join("cms.db")), 0o600);
        drop(store);
        // Re-opening keeps data and does not re-run migrations.
        let store = Store::open(&home).unwrap();
        store
            .insert_session(&SessionRecord::new(
                "a",
                SessionOptions::default(),
                "/tmp".into(),
            ))
            .unwrap();
        drop(store);
        let store = Store::open(&home).unwrap();
        assert!(store.get("a").unwrap().is_some());
        let mode: String = store
            .conn
            .lock()
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rec = SessionRecord::new("dup", SessionOptions::default(), "/tmp".into());
        store.insert_session(&rec).unwrap();
        let err = store.insert_session(&rec).unwrap_err();
        assert!(
            matches!(err, EngineError::AlreadyExists(ref n) if n == "dup"),
            "{err}"
        );
    }

    #[test]
    fn turns_accumulate_and_delete_cascades() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .insert_session(&SessionRecord::new(
                "s",
                SessionOptions::default(),
                "/tmp".into(),
            ))
            .unwrap();
        for cost in [0.10, 0.15, 0.20] {
            let r = response(cost, 2);
            let outcome = TurnOutcome {
                response: Some(&r),
                session_id: Some("sid"),
                ..TurnOutcome::default()
            };
            store
                .record_turn("s", "send", "hi", &outcome, SessionState::Idle)
                .unwrap();
        }
        let rec = store.require("s").unwrap();
        assert!((rec.total_cost_usd - 0.45).abs() < 1e-9);
        assert_eq!(rec.total_turns, 6);
        assert_eq!(rec.interaction_count, 3);
        assert_eq!(rec.claude_session_id.as_deref(), Some("sid"));
        let h = store.history("s").unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(h[1].tools_used, vec!["Read"]);
        assert!(store.delete("s").unwrap());
        assert!(store.history("s").unwrap().is_empty());
        assert!(matches!(store.require("s"), Err(EngineError::NotFound(_))));
    }

    #[test]
    fn costs_are_summed_per_local_day_with_empty_days_and_a_total() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .insert_session(&SessionRecord::new(
                "s",
                SessionOptions::default(),
                "/tmp".into(),
            ))
            .unwrap();
        let midnight = crate::engine::capacity::local_midnight_ms();
        let day = 86_400_000;
        // (when, cost): two today, one yesterday, one three days ago, one long ago.
        let turns = [
            (midnight + 1_000, 0.25),
            (now_ms(), 0.5),
            (midnight - 1_000, 0.125),
            (midnight - 3 * day + day / 2, 2.0),
            (midnight - 40 * day, 8.0),
        ];
        for (at, cost) in turns {
            store
                .conn
                .lock()
                .unwrap()
                .execute(
                    "INSERT INTO interactions (session, at, kind, message, cost_usd) \
                     VALUES ('s', ?1, 'send', 'hi', ?2)",
                    params![at, cost],
                )
                .unwrap();
        }
        let days = store.cost_by_day(7).unwrap();
        assert_eq!(days.len(), 7, "{days:?}");
        let costs: Vec<f64> = days.iter().map(|d| d.cost_usd).collect();
        assert_eq!(costs, [0.75, 0.125, 0.0, 2.0, 0.0, 0.0, 0.0], "{days:?}");
        assert_eq!(days[0].messages, 2);
        assert_eq!(days[2].messages, 0);
        // One row a day, each the day before the one above it.
        for w in days.windows(2) {
            assert!(w[0].day > w[1].day, "{days:?}");
            assert_eq!(w[0].day.len(), 10);
        }
        assert_eq!(store.cost_total().unwrap(), (10.875, 5));
        assert_eq!(store.cost_by_day(0).unwrap().len(), 1, "at least today");
    }

    #[test]
    fn thirty_two_concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_path_buf();
        {
            let store = Store::open(&home).unwrap();
            store
                .insert_session(&SessionRecord::new(
                    "shared",
                    SessionOptions::default(),
                    "/tmp".into(),
                ))
                .unwrap();
        }
        let writers: Vec<_> = (0..32)
            .map(|i| {
                let home = home.clone();
                std::thread::spawn(move || {
                    // Each writer has its own connection, as separate processes would.
                    let store = Store::open(&home).unwrap();
                    let name = format!("w{i}");
                    store
                        .insert_session(&SessionRecord::new(
                            &name,
                            SessionOptions::default(),
                            "/tmp".into(),
                        ))
                        .unwrap();
                    for _ in 0..10 {
                        let r = response(0.001, 1);
                        let o = TurnOutcome {
                            response: Some(&r),
                            ..TurnOutcome::default()
                        };
                        store
                            .record_turn(&name, "send", "m", &o, SessionState::Idle)
                            .unwrap();
                        store
                            .record_turn("shared", "send", "m", &o, SessionState::Idle)
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let store = Store::open(&home).unwrap();
        assert_eq!(store.list().unwrap().len(), 33);
        let shared = store.require("shared").unwrap();
        assert_eq!(shared.interaction_count, 320);
        assert_eq!(shared.total_turns, 320);
        assert_eq!(store.history("shared").unwrap().len(), 320);
        for i in 0..32 {
            assert_eq!(
                store.require(&format!("w{i}")).unwrap().interaction_count,
                10
            );
        }
    }
}

//! Engine errors: each names the problem in words that fit every frontend. What to do
//! about it is a [`Remedy`], which each frontend says in its own terms (a CLI command,
//! an MCP tool, a Lua call).

use crate::engine::response::Response;
use std::path::PathBuf;

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("session '{0}' not found")]
    NotFound(String),

    #[error("session '{0}' already exists")]
    AlreadyExists(String),

    #[error("invalid session name '{0}': use 1-64 characters from A-Z a-z 0-9 . _ - (but not `.` or `..`)")]
    InvalidName(String),

    #[error("session '{0}' is paused")]
    Paused(String),

    #[error("session '{0}' has no Claude session id yet, so it cannot be resumed or forked")]
    NoSessionId(String),

    #[error("session '{name}' has spent its budget (${spent:.4} of ${budget:.4}) and takes no more turns; start a new session with a budget of its own")]
    BudgetSpent {
        name: String,
        budget: f64,
        spent: f64,
    },

    /// A budget across sessions (`host.daily_usd`, `host.total_usd`) is spent.
    #[error("the budget {budget} across all sessions is spent (${spent:.4} {since}, of ${limit:.2}), so no turn starts; it is set by host.{budget} in safety.lua")]
    HostBudgetSpent {
        /// `daily_usd` or `total_usd`.
        budget: &'static str,
        /// `since midnight (local time)` or `since the host started`.
        since: &'static str,
        limit: f64,
        spent: f64,
    },

    #[error("claude executable not found: {path}")]
    BinaryNotFound { path: PathBuf },

    #[error("could not start {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("claude exited{status} before the turn finished{stderr}{hint}")]
    Exited {
        status: String,
        stderr: String,
        hint: String,
        partial: Option<Box<Response>>,
    },

    #[error("no answer within {secs}s{retrying}; the turn was {action}")]
    Timeout {
        secs: f64,
        action: &'static str,
        /// What the CLI was doing meanwhile, e.g. ` (after 4 API retries, last status 529)`.
        retrying: String,
        partial: Option<Box<Response>>,
    },

    #[error("claude printed a line over {limit_mib} MiB, which cms does not read: the turn's answer is lost; the session was stopped and can be resumed")]
    LineTooLong { limit_mib: usize },

    #[error("the session was stopped before the turn finished")]
    Stopped { partial: Option<Box<Response>> },

    #[error("the session was killed before the turn finished")]
    Killed { partial: Option<Box<Response>> },

    #[error("the policy stopped the session: {reason}")]
    PolicyStopped {
        reason: String,
        partial: Option<Box<Response>>,
    },

    #[error("session '{name}' is live in {holder}")]
    HeldElsewhere { name: String, holder: String },

    #[error("session '{name}' is busy: {holder} is driving it")]
    Busy { name: String, holder: String },

    #[error("session '{0}' has no running process (no cms process is driving it), so there is no turn to interrupt")]
    NotLive(String),

    /// Claude Code has no conversation file for the session's id where it looks: it
    /// keeps them per configuration folder (HOME) and working directory.
    #[error("No conversation found for session '{name}' (Claude Code session {id}): Claude Code looked for {}; \
             it keeps conversations per HOME (or CLAUDE_CONFIG_DIR) and working directory, so the \
             session resumes only with the HOME and from the directory it was created with ({})",
            .looked.display(), .dir.display())]
    ConversationMissing {
        name: String,
        id: String,
        /// Where Claude Code looked: `<config>/projects/<cwd slug>/<id>.jsonl`.
        looked: PathBuf,
        /// The working directory the session resumes in.
        dir: PathBuf,
        partial: Option<Box<Response>>,
    },

    #[error("CMS_HOME ({}) is a file, not a folder: cms keeps its sessions in a folder there; \
             move the file away or point CMS_HOME (or --home) elsewhere", .0.display())]
    HomeIsFile(PathBuf),

    /// A session pinned to a host could not be started there (unknown host, a runner
    /// script that failed, the host unreachable). The session stays pinned to it.
    #[error("host '{host}': {detail}; the session stays on '{host}' (fix the host or hosts.lua, then send again to resume it there)")]
    RunsOn { host: String, detail: String },

    #[error("write to claude's stdin failed: {0}")]
    Write(String),

    #[error("store ({path}): {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Invalid(String),

    /// An error the session host reported, in its words; `code` names its kind
    /// (`timeout`, `exited`, `store`, ...).
    #[error("{message}")]
    Remote {
        code: String,
        message: String,
        partial: Option<Box<Response>>,
    },

    /// The session host cannot be reached, started, or used by this process.
    #[error("{0}")]
    Host(String),
}

/// What a caller can do about an error; each frontend says how in its own terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy<'a> {
    /// See which sessions exist.
    ListSessions,
    /// Pick another name, or delete this session first.
    DeleteOrRename(&'a str),
    /// Resume the session first.
    Resume(&'a str),
    /// Send to it from the process that holds it, or wait until that process ends it;
    /// the session's status shows who holds it.
    SendWhereHeld(&'a str),
    /// Try again when the other command is done (or queue behind it).
    TryAgainLater(&'a str),
    /// Install Claude Code, or say where it is.
    InstallClaude,
    /// Look at the session's state (nothing is running to act on).
    ShowStatus(&'a str),
    /// The session is live in the session host, which this process does not use:
    /// go through the host.
    UseHost(&'a str),
}

impl EngineError {
    /// What to do about this error, if anything can be done.
    pub fn remedy(&self) -> Option<Remedy<'_>> {
        Some(match self {
            EngineError::NotFound(_) => Remedy::ListSessions,
            EngineError::AlreadyExists(n) => Remedy::DeleteOrRename(n),
            EngineError::Paused(n) => Remedy::Resume(n),
            EngineError::HeldElsewhere { name, holder } if holder.starts_with("cms host") => {
                Remedy::UseHost(name)
            }
            EngineError::HeldElsewhere { name, .. } => Remedy::SendWhereHeld(name),
            EngineError::Busy { name, .. } => Remedy::TryAgainLater(name),
            EngineError::BinaryNotFound { .. } => Remedy::InstallClaude,
            EngineError::NotLive(n) => Remedy::ShowStatus(n),
            _ => return None,
        })
    }

    /// The response of a turn that ended early, when the CLI still reported one
    /// (its cost counts, so callers record it).
    pub fn partial(&self) -> Option<&Response> {
        match self {
            EngineError::Exited { partial, .. }
            | EngineError::Timeout { partial, .. }
            | EngineError::Stopped { partial }
            | EngineError::Killed { partial }
            | EngineError::ConversationMissing { partial, .. }
            | EngineError::PolicyStopped { partial, .. }
            | EngineError::Remote { partial, .. } => partial.as_deref(),
            _ => None,
        }
    }

    /// A stable name for the kind of error (the host protocol carries it).
    pub fn code(&self) -> &str {
        match self {
            EngineError::NotFound(_) => "not_found",
            EngineError::AlreadyExists(_) => "already_exists",
            EngineError::InvalidName(_) => "invalid_name",
            EngineError::Paused(_) => "paused",
            EngineError::NoSessionId(_) => "no_session_id",
            EngineError::BudgetSpent { .. } => "budget_spent",
            EngineError::HostBudgetSpent { .. } => "host_budget_spent",
            EngineError::BinaryNotFound { .. } => "binary_not_found",
            EngineError::Spawn { .. } => "spawn",
            EngineError::Exited { .. } => "exited",
            EngineError::Timeout { .. } => "timeout",
            EngineError::LineTooLong { .. } => "line_too_long",
            EngineError::Stopped { .. } => "stopped",
            EngineError::Killed { .. } => "killed",
            EngineError::PolicyStopped { .. } => "policy_stopped",
            EngineError::HeldElsewhere { .. } => "held_elsewhere",
            EngineError::Busy { .. } => "busy",
            EngineError::NotLive(_) => "not_live",
            EngineError::ConversationMissing { .. } => "conversation_missing",
            EngineError::HomeIsFile(_) => "home_is_file",
            EngineError::RunsOn { .. } => "runs_on",
            EngineError::Write(_) => "write",
            EngineError::Store { .. } => "store",
            EngineError::Io { .. } => "io",
            EngineError::Invalid(_) => "invalid",
            EngineError::Remote { code, .. } => code,
            EngineError::Host(_) => "host",
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        EngineError::Io {
            context: context.into(),
            source,
        }
    }
}

//! What the parts of one live child share: how it is started ([`StartSpec`]), where
//! its events go ([`EventSink`]), what anyone may read about it ([`LiveInfo`]), the
//! commands its task takes, and how its end is told. [`crate::engine::session`] (the
//! handle), [`crate::engine::actor`] (the task) and [`crate::engine::reader`] (its output
//! streams) all stand on this module; none of them imports another's internals.

use crate::engine::error::{EngineError, Result};
use crate::engine::events::SessionEvent;
use crate::engine::response::Response;
use crate::engine::state::SessionState;
use crate::wire::ClaudeArgs;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// Everything needed to start a session process.
#[derive(Debug, Clone)]
pub struct StartSpec {
    pub name: String,
    pub claude_bin: PathBuf,
    /// The executable that runs `cms __supervise` (None: `claude` runs bare).
    pub supervisor: Option<PathBuf>,
    pub args: ClaudeArgs,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    /// What the session cost before this process (earlier processes).
    pub cost_before: f64,
    /// Agent turns before this process.
    pub turns_before: u32,
    /// For a process that resumes or forks a conversation: the last cumulative
    /// `total_cost_usd` cms saw the CLI report for it (a fork: its parent's), used to
    /// read the CLI's rounded starting figure exactly (see [`crate::engine::cost`]).
    pub recorded_conversation_cost: Option<f64>,
    /// How the CLI counted that figure when cms last found out.
    pub recorded_scope: Option<crate::engine::cost::CostScope>,
    /// The session's budget for its whole life, if it has one.
    pub budget_usd: Option<f64>,
    /// The session's lease ([`crate::engine::lease`]), held until the child ends.
    pub lease: Option<Arc<crate::engine::lease::Lease>>,
    pub turn_timeout: Duration,
    pub stop_grace: Duration,
    pub interrupt_grace: Duration,
    /// What a runner made of the above ([`crate::engine::runner`]): None runs
    /// `claude_bin` here, as always.
    pub launch: Option<crate::engine::runner::Launch>,
    /// The host of `hosts.lua` the session runs on (None: this machine).
    pub host: Option<String>,
}

/// Where events go: subscribers, and an optional recorder (the store).
#[derive(Clone)]
pub struct EventSink {
    pub tx: broadcast::Sender<SessionEvent>,
    pub recorder: Option<mpsc::UnboundedSender<SessionEvent>>,
}

impl EventSink {
    pub fn new(capacity: usize) -> Self {
        EventSink {
            tx: broadcast::channel(capacity).0,
            recorder: None,
        }
    }

    pub(crate) fn emit(&self, event: SessionEvent) {
        if let Some(r) = &self.recorder {
            if event.kind.worth_keeping() {
                let _ = r.send(event.clone());
            }
        }
        let _ = self.tx.send(event);
    }
}

/// How the child ended.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The last lines of the child's stderr.
    pub stderr: String,
}

impl ExitInfo {
    fn exit_text(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!(" with code {c}"),
            (None, Some(s)) => format!(" on signal {s}"),
            _ => String::new(),
        }
    }
}

/// What other parts of the engine may read about a live session at any time.
#[derive(Debug, Clone, Default)]
pub struct LiveInfo {
    pub session_id: Option<String>,
    pub cwd: Option<String>,
    pub model: Option<String>,
    pub session_cost: f64,
    pub turns: u32,
    pub exit: Option<ExitInfo>,
    /// The last cumulative `total_cost_usd` the CLI reported (kept for the next resume).
    pub reported_total: Option<f64>,
    /// What this process's cost count started from, once known.
    pub cost_baseline: Option<crate::engine::cost::CostBaseline>,
    /// The session's budget for its whole life, if it has one.
    pub budget_usd: Option<f64>,
    /// The API retry in progress in the current turn, if the CLI is retrying.
    pub retry: Option<crate::engine::events::ApiRetryEvent>,
    /// Tool calls waiting for a person's decision, oldest first.
    pub approvals: Vec<crate::engine::approval::Approval>,
    /// For a session on another host: the process group its remote side printed
    /// ([`crate::engine::runner::PGID_MARKER`]), once seen.
    pub remote_pgid: Option<u32>,
}

pub(crate) struct Shared {
    pub(crate) info: Mutex<LiveInfo>,
    pub(crate) stderr: Mutex<Vec<u8>>,
    pub(crate) paused: AtomicBool,
    pub(crate) state: watch::Sender<SessionState>,
}

impl Shared {
    pub(crate) fn stderr_tail(&self) -> String {
        let buf = self.stderr.lock().unwrap();
        String::from_utf8_lossy(&buf).trim().to_string()
    }
}

pub(crate) enum Cmd {
    Send {
        text: String,
        timeout: Duration,
        reply: oneshot::Sender<Result<Response>>,
    },
    Interrupt {
        reply: oneshot::Sender<Result<()>>,
    },
    Control {
        subtype: &'static str,
        fields: Value,
        reply: oneshot::Sender<Result<Value>>,
    },
    Stop {
        reply: oneshot::Sender<ExitInfo>,
    },
    Kill {
        reply: oneshot::Sender<ExitInfo>,
    },
    /// Decide a tool call waiting for approval.
    Decide {
        verdict: crate::engine::approval::Verdict,
        reply: oneshot::Sender<Result<crate::engine::approval::Approval>>,
    },
}

pub(crate) fn exited_error(exit: &ExitInfo, partial: Option<Box<Response>>) -> EngineError {
    let stderr = if exit.stderr.is_empty() {
        String::new()
    } else {
        format!(": {}", last_lines(&exit.stderr, 5))
    };
    let mut hint = String::new();
    if exit.stderr.contains("root/sudo") {
        hint = " (Claude Code refuses bypassPermissions as root: use the `full` preset or another \
                permission mode, or set IS_SANDBOX=1 inside a sandbox)"
            .into();
    } else if exit.stderr.contains("No conversation found") {
        hint = " (Claude Code keeps conversations per working directory and HOME: resume from the \
                directory the session was created in)"
            .into();
    }
    EngineError::Exited {
        status: exit.exit_text(),
        stderr,
        hint,
        partial,
    }
}

pub(crate) fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join(" | ")
}

//! The policy door: the engine asks it before a tool runs (`can_use_tool`) and after
//! every event. The shipped implementation (Lua, hot-reloaded) lives above the
//! engine; the engine only knows this trait.

pub use crate::engine::config::Guard;
use crate::engine::config::SessionOptions;
use crate::engine::events::SessionEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// A tool call the CLI asks permission for.
#[derive(Debug, Clone)]
pub struct ToolCall {
    /// The cms session name.
    pub session: String,
    pub tool_name: String,
    pub input: Value,
    pub tool_use_id: Option<String>,
    /// The session's working directory (paths in `input` are relative to it). For a
    /// session on another host, the folder there (the local one mapped).
    pub cwd: String,
    /// The host the session runs on (`hosts.lua`), None here. Paths in `input` are
    /// that host's: this machine's files (symlinks) say nothing about them.
    pub host: Option<String>,
    /// `blocked_path` from the request, when the CLI gives one.
    pub blocked_path: Option<String>,
    /// The session's cost and turns when the call was asked.
    pub progress: Progress,
}

impl ToolCall {
    /// A call of `tool` with `input` in session `session`, working in `cwd`, with
    /// nothing spent yet (tests, benchmarks, tools that ask the policy directly).
    pub fn new(session: &str, tool: &str, input: Value, cwd: &std::path::Path) -> ToolCall {
        ToolCall {
            session: session.into(),
            tool_name: tool.into(),
            input,
            tool_use_id: None,
            cwd: cwd.display().to_string(),
            host: None,
            blocked_path: None,
            progress: Progress::default(),
        }
    }
}

/// The answer to a [`ToolCall`].
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Run the tool with its input unchanged.
    Allow,
    /// Run the tool with a changed input.
    AllowWith(Value),
    /// Ask a person: the call waits (the turn paused, nothing run) until someone
    /// approves or denies it, or `timeout` passes (then it is denied: fails closed).
    Ask {
        reason: String,
        /// How long to wait for a decision (None: the engine's default).
        timeout: Option<Duration>,
    },
    /// Do not run it; the model sees `reason` as the tool's error. With a `rule`
    /// (`protected_path`, ...) the denial is also recorded as a safety violation.
    Deny {
        reason: String,
        interrupt: bool,
        rule: Option<String>,
    },
}

impl Decision {
    /// A plain denial (not a violation).
    pub fn deny(reason: impl Into<String>) -> Decision {
        Decision::Deny {
            reason: reason.into(),
            interrupt: false,
            rule: None,
        }
    }
}

/// A safety rule broken: what, and why in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// `cost_exceeded`, `turns_exceeded`, `protected_path`, `policy_error`, ...
    pub rule: String,
    pub message: String,
}

/// What the session has done so far, given to [`Policy::on_event`].
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Session cost in USD over all its processes.
    pub cost_usd: f64,
    /// Agent turns over the session's life.
    pub turns: u32,
    /// Time since the current turn started.
    pub turn_elapsed: Duration,
}

/// What happens after an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Continue,
    /// Record the violation; the session goes on.
    Warn(Violation),
    /// Record it, interrupt the turn and stop the session gracefully.
    Stop(Violation),
    /// Record it and kill the session now.
    Kill(Violation),
}

/// The engine's one door for safety decisions.
pub trait Policy: Send + Sync {
    /// Whether sessions should run with `--permission-prompt-tool stdio`, so that
    /// [`Policy::decide`] sees every tool call that needs permission.
    fn wants_tool_prompts(&self) -> bool {
        false
    }

    /// Decide a tool call before it runs. Must not block for long.
    fn decide(&self, call: &ToolCall) -> Decision;

    /// Look at an event and the session's progress.
    fn on_event(&self, _event: &SessionEvent, _progress: &Progress) -> Verdict {
        Verdict::Continue
    }

    /// Adjust how the session's `claude` child starts in `cwd` (extra flags,
    /// environment): e.g. so that Claude Code's own settings, hooks and MCP servers
    /// cannot decide for a guarded session, and its shell commands run in an OS
    /// sandbox. `home` is the engine's state folder (`$CMS_HOME`, or `--home`), where
    /// files it needs for that may go.
    fn launch(
        &self,
        _home: &std::path::Path,
        _cwd: &std::path::Path,
        _args: &mut crate::wire::ClaudeArgs,
        _env: &mut Vec<(String, String)>,
    ) {
    }

    /// The policy for one session, from its options (its [`Guard`]). None: this
    /// policy itself.
    fn session_policy(&self, _name: &str, _options: &SessionOptions) -> Option<Arc<dyn Policy>> {
        None
    }
}

/// The policy when none is configured: the CLI's own permission mode decides.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Policy for AllowAll {
    fn decide(&self, _call: &ToolCall) -> Decision {
        Decision::Allow
    }
}

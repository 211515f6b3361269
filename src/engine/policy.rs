//! The policy door: the engine asks it before a tool runs (`can_use_tool`) and after
//! every event. The shipped implementation (Lua, hot-reloaded) lives above the
//! engine; the engine only knows this trait.

use crate::engine::events::SessionEvent;
use serde_json::Value;
use std::time::Duration;

/// A tool call the CLI asks permission for.
#[derive(Debug, Clone)]
pub struct ToolCall {
    /// The cms session name.
    pub session: String,
    pub tool_name: String,
    pub input: Value,
    pub tool_use_id: Option<String>,
    /// The session's working directory (paths in `input` are relative to it).
    pub cwd: String,
    /// `blocked_path` from the request, when the CLI gives one.
    pub blocked_path: Option<String>,
}

/// The answer to a [`ToolCall`].
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Run the tool with its input unchanged.
    Allow,
    /// Run the tool with a changed input.
    AllowWith(Value),
    /// Do not run it; the model sees `reason` as the tool's error.
    Deny { reason: String, interrupt: bool },
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
    Warn(String),
    /// Interrupt the turn and stop the session gracefully.
    Stop(String),
    /// Kill the session now.
    Kill(String),
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
}

/// The policy when none is configured: the CLI's own permission mode decides.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Policy for AllowAll {
    fn decide(&self, _call: &ToolCall) -> Decision {
        Decision::Allow
    }
}

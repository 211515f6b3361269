//! The command line, as clap sees it.

use crate::engine::config::{DEFAULT_MODEL, DEFAULT_TURN_TIMEOUT_SECS};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "cms",
    version,
    about = "Orchestrate many Claude Code sessions: spawn, send, pause, resume, fork, stop, batch",
    long_about = "Orchestrate many Claude Code sessions from one place.\n\n\
                  Each session is one long-lived `claude` process speaking stream-json. A CLI \
                  command's session process ends with the command; the next `send` resumes the \
                  same conversation (`--resume`, same id, same working directory).\n\n\
                  A turn is interrupted after 60 minutes unless `--timeout` says otherwise; \
                  budgets (`--max-budget`, `cms delegate --max-cost`) bound what it spends.\n\n\
                  State lives in $CMS_HOME (default ~/.claude-multi-session)."
)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// The Claude Code executable: a name looked up on PATH, or a path.
    #[arg(
        long,
        global = true,
        env = "CMS_CLAUDE_BIN",
        value_name = "PATH",
        default_value = "claude"
    )]
    pub claude_bin: PathBuf,

    /// Where cms keeps its state [default: ~/.claude-multi-session].
    #[arg(long, global = true, env = "CMS_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// When another cms command is using the session, fail at once instead of waiting
    /// for it (waiting is the default; sends to one session never run side by side).
    #[arg(long, global = true)]
    pub no_wait: bool,

    /// More logging on stderr (-v info, -vv debug; default: warnings only); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a new session with a prompt.
    Spawn(SpawnArgs),
    /// Send a follow-up message (resumes a stopped session).
    Send(SendArgs),
    /// Restore a stopped or paused session, optionally with a message.
    Resume(ResumeArgs),
    /// Refuse new messages until resumed.
    Pause(NameArg),
    /// Branch off into a new session that keeps the parent's context.
    Fork(ForkArgs),
    /// Stop gracefully (resumable later).
    Stop(NameArg),
    /// Force kill a session's process.
    Kill(NameArg),
    /// Interrupt the running turn of a session live in another cms process.
    Interrupt(NameArg),
    /// Show detailed session info.
    Status(NameArg),
    /// Print the last response text.
    Output(OutputArgs),
    /// List all sessions.
    List,
    /// Show every interaction with its cost.
    History(NameArg),
    /// Remove a session for good.
    Delete(NameArg),
    /// Spawn many sessions in parallel from a JSON file.
    Batch(BatchArgs),
    /// Remove sessions idle for more than N days.
    Cleanup(CleanupArgs),
    /// A tour of cms on the bundled simulator (no Claude account needed).
    Demo(DemoArgs),
    /// Run a Lua plan: `cms script plan.lua [args...]` (`cms.args` holds the args).
    Script(ScriptArgs),
    /// An interactive Lua prompt with the same `cms` module.
    Repl(ReplArgs),
    /// Print the LuaLS annotations of the `cms` Lua API (for editor completion).
    LuaTypes,
    /// Hand a task to a guarded session (preset + safety net) driven by a strategy.
    Delegate(DelegateArgs),
    /// Send a follow-up or correction to a delegated session.
    Continue(ContinueArgs),
    /// Stop a delegated session gracefully (resumable with `continue`).
    Finish(NameArg),
    /// Kill a delegated session now.
    Abort(NameArg),
    /// Safety policies, presets and strategies: check a script, show what is in force.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Serve MCP on stdio, so Claude Code can spawn and steer sessions with native tools.
    Mcp,
    /// Register `cms mcp` with Claude Code (interactive without flags).
    Setup(SetupArgs),
    /// Plugins: list what is loaded, or check that every plugin loads.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Trust a project's own scripts and plugins (DIR/.cms, as they are now), or list trusted folders.
    Trust(TrustArgs),
    /// Forget the trust in a project's scripts and plugins (DIR/.cms).
    Untrust(UntrustArgs),
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    /// The project folder (default: the current one).
    pub dir: Option<PathBuf>,
    /// List the trusted folders and their files instead.
    #[arg(long)]
    pub list: bool,
}

#[derive(Debug, Args)]
pub struct UntrustArgs {
    /// The project folder (default: the current one).
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// For every project: ~/.claude.json (user scope).
    #[arg(long)]
    pub global: bool,
    /// For this project: ./.mcp.json (project scope).
    #[arg(long)]
    pub local: bool,
    /// Also add the delegation strategy guide to CLAUDE.md (replaced, never duplicated).
    #[arg(long)]
    pub guide: bool,
    /// Remove cms (and the guide) from both scopes.
    #[arg(long)]
    pub uninstall: bool,
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Every plugin found (shipped, ~/.config/cms/plugins, .cms/plugins) and what it adds.
    List,
    /// Load every plugin and report the ones that fail; exit 1 if any does.
    Check,
}

#[derive(Debug, Args)]
pub struct DelegateArgs {
    /// Session name (1-64 of A-Z a-z 0-9 . _ -).
    #[arg(long)]
    pub name: String,
    /// What to do (`-` reads it from stdin).
    #[arg(long)]
    pub task: String,
    /// Model: sonnet, opus, haiku, or a model id [default: sonnet].
    #[arg(long)]
    pub model: Option<String>,
    /// Permission preset: read-only, review, edit, full, plan [default: edit].
    #[arg(long)]
    pub preset: Option<String>,
    /// Cost limit in USD over the session's life [default: safety.lua's, 2.00].
    #[arg(long, value_parser = positive_f64)]
    pub max_cost: Option<f64>,
    /// Agent-turn limit over the session's life [default: safety.lua's, 50].
    #[arg(long)]
    pub max_turns: Option<u32>,
    /// Seconds one interaction (a turn, a check) may take [default: safety.lua's, 3600].
    #[arg(long, value_parser = positive_f64)]
    pub timeout: Option<f64>,
    /// No safety net: no limits and no protected paths (the preset still applies).
    #[arg(long)]
    pub no_safety: bool,
    /// Extra context put before the task [default: none].
    #[arg(long)]
    pub context: Option<String>,
    /// Working directory [default: the current directory].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Text appended to Claude Code's system prompt [default: none].
    #[arg(long)]
    pub system_prompt: Option<String>,
    /// Use a specific agent [default: none].
    #[arg(long)]
    pub agent: Option<String>,
    /// single, correction_loop, review, or a strategy of yours [default: single].
    #[arg(long)]
    pub strategy: Option<String>,
    /// For correction_loop: a shell command that must exit 0, e.g. "cargo test" [default: none].
    #[arg(long)]
    pub check: Option<String>,
    /// Attempts for correction_loop, review rounds for review [default: 3 and 2].
    #[arg(long)]
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ContinueArgs {
    /// The delegated session.
    #[arg(long)]
    pub name: String,
    /// The follow-up (`-` reads it from stdin).
    #[arg(long)]
    pub message: String,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a script (safety.lua, protected_paths.lua, presets.lua,
    /// strategies/NAME.lua) without running a session.
    Check {
        /// The Lua file.
        file: PathBuf,
    },
    /// Show the scripts in force (built-in or your overrides), presets and strategies.
    Show,
}

#[derive(Debug, Args)]
pub struct NameArg {
    /// Session name.
    #[arg(long)]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct SpawnArgs {
    /// Session name (1-64 of A-Z a-z 0-9 . _ -).
    #[arg(long)]
    pub name: String,
    /// Initial prompt (`-` reads it from stdin).
    #[arg(long)]
    pub prompt: String,
    /// Model: sonnet, opus, haiku, or a full model id.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Stop the session after the first response (one-shot).
    #[arg(long)]
    pub stop: bool,
    /// Working directory for claude [default: the current directory].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Permission mode: default, acceptEdits, plan, dontAsk, bypassPermissions
    /// [default: Claude Code's own setting].
    #[arg(long)]
    pub permission_mode: Option<String>,
    /// Tools allowed without asking, comma-separated, e.g. "Read,Grep,Bash(git *)"
    /// [default: none].
    #[arg(long)]
    pub allowed_tools: Option<String>,
    /// Tools removed from the session, comma-separated [default: none].
    #[arg(long)]
    pub disallowed_tools: Option<String>,
    /// Text appended to Claude Code's system prompt [default: none].
    #[arg(long)]
    pub system_prompt: Option<String>,
    /// Hard budget in USD for the session's whole life, across restarts (each claude process
    /// gets what is left as `--max-budget-usd`; a fork gets what its parent has left)
    /// [default: no cap].
    #[arg(long, value_parser = non_negative_f64)]
    pub max_budget: Option<f64>,
    /// Agent turns allowed per message, `--max-turns` [default: no limit].
    #[arg(long)]
    pub max_turns: Option<u32>,
    /// Use a specific agent [default: none].
    #[arg(long)]
    pub agent: Option<String>,
    /// Run in a git worktree of this name, `claude -w` [default: none].
    #[arg(long)]
    pub worktree: Option<String>,
    /// Seconds one turn may take before it is interrupted (then killed if claude
    /// does not stop); the session stays resumable.
    #[arg(long, value_parser = positive_f64, default_value_t = DEFAULT_TURN_TIMEOUT_SECS as f64)]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Session name.
    #[arg(long)]
    pub name: String,
    /// The message (`-` reads it from stdin).
    #[arg(long)]
    pub message: String,
    /// Stop the session after the response.
    #[arg(long)]
    pub stop: bool,
    /// Seconds the turn may take before it is interrupted.
    #[arg(long, value_parser = positive_f64, default_value_t = DEFAULT_TURN_TIMEOUT_SECS as f64)]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Session name.
    #[arg(long)]
    pub name: String,
    /// A message to send once resumed (`-` reads it from stdin) [default: none].
    #[arg(long)]
    pub message: Option<String>,
    /// Seconds the message's turn may take before it is interrupted.
    #[arg(long, value_parser = positive_f64, default_value_t = DEFAULT_TURN_TIMEOUT_SECS as f64)]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct ForkArgs {
    /// The session to fork.
    #[arg(long)]
    pub name: String,
    /// The new session's name.
    #[arg(long)]
    pub new_name: String,
    /// A first message for the fork [default: none: the fork runs on its first send].
    #[arg(long)]
    pub message: Option<String>,
    /// Another model for the fork [default: the parent's].
    #[arg(long)]
    pub model: Option<String>,
    /// Seconds the first message's turn may take before it is interrupted.
    #[arg(long, value_parser = positive_f64, default_value_t = DEFAULT_TURN_TIMEOUT_SECS as f64)]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Session name.
    #[arg(long)]
    pub name: String,
    /// The whole text (without it: the first 2000 characters).
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// A JSON array of sessions, [{"name": "a", "prompt": "..."}, ...]; --help lists every key.
    ///
    /// Each entry: `name` and `prompt` (required); `model`; `work_dir`; `permission_mode`;
    /// `allowed_tools` and `disallowed_tools` (a list, or "Read,Grep"); `system_prompt`
    /// (appended); `max_budget` (USD, the session's budget for its whole life); `max_turns`; `agent`;
    /// `worktree`; `stop` (default true: the session stops after its answer, resumable);
    /// `timeout` (seconds per turn, default 3600). The seed's camelCase names work too
    /// (workDir, permissionMode, allowedTools, disallowedTools, systemPrompt, maxBudget,
    /// maxTurns). An unknown key is an error, and nothing starts.
    #[arg(long)]
    pub file: PathBuf,
    /// Sessions started at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Remove sessions idle for more than this many days.
    #[arg(long, default_value_t = 7.0, value_parser = non_negative_f64)]
    pub days: f64,
}

/// Options of every Lua host (`cms script`, `cms repl`).
#[derive(Debug, Args)]
pub struct LuaArgs {
    /// Allow os.execute, io.popen, package.loadlib and the debug library.
    #[arg(long, env = "CMS_LUA_UNSAFE", value_parser = clap::builder::BoolishValueParser::new())]
    pub unsafe_lua: bool,
    /// Most memory the Lua state may use, in MB.
    #[arg(long, value_name = "MB", default_value_t = 256, env = "CMS_LUA_MEMORY_MB",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_limit: u64,
}

impl LuaArgs {
    pub fn host_options(&self, args: Vec<String>) -> crate::lua::HostOptions {
        crate::lua::HostOptions {
            allow_unsafe: self.unsafe_lua,
            memory_limit: (self.memory_limit as usize).saturating_mul(1024 * 1024),
            args,
            ..crate::lua::HostOptions::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct ScriptArgs {
    #[command(flatten)]
    pub lua: LuaArgs,
    /// The Lua file to run.
    pub file: PathBuf,
    /// Arguments for the script (`cms.args`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReplArgs {
    #[command(flatten)]
    pub lua: LuaArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's state directory instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

fn non_negative_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a number 0 or more, got '{s}'")),
    }
}

fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a number above 0, got '{s}'")),
    }
}

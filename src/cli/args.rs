//! The command line, as clap sees it.

use crate::engine::config::DEFAULT_TURN_TIMEOUT_SECS;
use crate::engine::spec::{non_negative_f64, positive_f64};
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
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(CompletionsArgs),
    /// Write the manual pages: cms.1 to stdout, or every page into a folder.
    Man(ManArgs),
    /// The session names, one a line (what shell completion calls).
    #[command(name = "__complete-names", hide = true)]
    CompleteNames,
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

/// `cms delegate`'s flags: the delegation options themselves (one definition for
/// the CLI, Lua, MCP and the LuaLS stubs).
pub type DelegateArgs = crate::delegate::DelegateOptions;

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

/// `cms spawn`'s flags: the spawn options themselves (one definition for the CLI,
/// Lua, MCP, batch files and the LuaLS stubs).
pub type SpawnArgs = crate::engine::SpawnSpec;

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
    #[arg(long, long_help = batch_file_help())]
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

/// `cms batch --file`'s long help: the keys of an entry are `cms spawn`'s options.
fn batch_file_help() -> String {
    use clap::Args as _;
    let keys: Vec<String> = crate::engine::SpawnSpec::augment_args(clap::Command::new("spawn"))
        .get_arguments()
        .map(|a| format!("`{}`", a.get_id()))
        .collect();
    format!(
        "A JSON array of sessions, [{{\"name\": \"a\", \"prompt\": \"...\"}}, ...].\n\n\
         Each entry takes the options of `cms spawn`, snake_case: {}. `name` and `prompt` \
         are required; `allowed_tools` and `disallowed_tools` are a list or \"Read,Grep\"; \
         `stop` defaults to true (the session stops after its answer, resumable); `timeout` \
         is seconds per turn, default 3600. The seed's camelCase names work too (workDir, \
         permissionMode, allowedTools, disallowedTools, systemPrompt, maxBudget, maxTurns). \
         An unknown key is an error, and nothing starts.",
        keys.join(", ")
    )
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write cms.1 and one page per command (cms-spawn.1, ...) into this folder
    /// [default: print cms.1 to stdout].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

//! The command line, as clap sees it.
//!
//! A session's name (and a command's main text) is a positional or a flag: `cms send p
//! hi` is `cms send --name p --message hi`. Clap reads both; [`Command::resolve`] fills
//! each value the flags left out from the positionals, in order, and says what is
//! missing.

use super::style::ColorWhen;
use crate::engine::config::DEFAULT_TURN_TIMEOUT_SECS;
use crate::engine::spec::{non_negative_f64, positive_f64};
use crate::engine::SessionState;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// The help heading of the options every command takes.
const GLOBAL: &str = "Global options";

/// The commands of `cms --help`, grouped; a command in no group is listed in the last.
pub const COMMAND_GROUPS: &[(&str, &[&str])] = &[
    (
        "Sessions",
        &[
            "spawn",
            "send",
            "resume",
            "pause",
            "fork",
            "stop",
            "kill",
            "interrupt",
            "approvals",
            "approve",
            "deny",
            "status",
            "output",
            "list",
            "history",
            "delete",
            "batch",
            "cleanup",
            "hosts",
        ],
    ),
    ("Delegation", &["delegate", "continue", "finish", "abort"]),
    (
        "The session host",
        &["serve", "host", "logs", "attach", "top"],
    ),
    ("Lua", &["script", "repl", "lua-types"]),
    (
        "Setup and tools",
        &[
            "setup", "mcp", "policy", "plugins", "trust", "untrust", "demo",
        ],
    ),
];

#[derive(Debug, Parser)]
#[command(
    name = "cms",
    version,
    about = "Orchestrate many Claude Code sessions: spawn, send, pause, resume, fork, stop, batch",
    long_about = "Orchestrate many Claude Code sessions from one place.\n\n\
                  Each session is one long-lived `claude` process speaking stream-json, owned \
                  by the session host (`cms serve`, started in the background by the first \
                  command that needs it), so a session stays live between commands and `send` \
                  reaches the same process. With --no-host a session's process ends with the \
                  command; the next `send` resumes the same conversation (`--resume`, same id, \
                  same working directory).\n\n\
                  A turn is interrupted after 60 minutes unless `--timeout` says otherwise; \
                  budgets (`--max-budget`, `cms delegate --max-cost`) bound what it spends.\n\n\
                  State lives in $CMS_HOME (default ~/.claude-multi-session).",
    after_help = TOP_EXAMPLES,
)]
pub struct Cli {
    /// Print machine-readable JSON instead of text (errors too, as {"error": ...}).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,

    /// The Claude Code executable: a name looked up on PATH, or a path [env: CMS_CLAUDE_BIN]
    /// [default: claude].
    #[arg(long, global = true, value_name = "PATH", help_heading = GLOBAL)]
    pub claude_bin: Option<PathBuf>,

    /// Where cms keeps its state [env: CMS_HOME] [default: ~/.claude-multi-session].
    #[arg(long, global = true, value_name = "DIR", help_heading = GLOBAL)]
    pub home: Option<PathBuf>,

    /// When another cms command is using the session, fail at once instead of waiting
    /// for it (waiting is the default; sends to one session never run side by side).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub no_wait: bool,

    /// Keep sessions in this process instead of the session host (`cms serve`): they
    /// end with the command (stopped, resumable) [env: CMS_NO_HOST=1].
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub no_host: bool,

    /// Colours: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_name = "WHEN", value_enum,
          default_value_t = ColorWhen::Auto, help_heading = GLOBAL)]
    pub color: ColorWhen,

    /// More logging on stderr (-v info, -vv debug; default: warnings, and cms.log lines of scripts); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Whether sessions stay in this process: `--no-host`, or `CMS_NO_HOST` set to
    /// anything but empty, `0` or `false`.
    pub fn no_host(&self) -> bool {
        self.no_host
            || std::env::var("CMS_NO_HOST")
                .is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "no"))
    }

    /// The Claude Code executable: `--claude-bin`, else `$CMS_CLAUDE_BIN`, else `claude`.
    /// (Read here rather than by clap, so an environment value never shows in a usage line.)
    pub fn claude_bin(&self) -> PathBuf {
        self.claude_bin
            .clone()
            .or_else(|| {
                std::env::var_os("CMS_CLAUDE_BIN")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from("claude"))
    }
}

/// The whole command line, with the commands of `cms --help` in groups (clap lists
/// subcommands under one heading only).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let styles = cmd.get_styles().clone();
    let (header, literal) = (styles.get_header(), styles.get_literal());
    let subs: Vec<(String, String)> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| {
            let about = s.get_about().map(|a| a.to_string()).unwrap_or_default();
            (s.get_name().to_string(), about)
        })
        .collect();
    let width = subs.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut groups = String::new();
    for (i, (heading, names)) in COMMAND_GROUPS.iter().enumerate() {
        let last = i + 1 == COMMAND_GROUPS.len();
        let listed = |n: &str| COMMAND_GROUPS.iter().any(|(_, ns)| ns.contains(&n));
        groups.push_str(&format!("{header}{heading}:{header:#}\n"));
        for (name, about) in &subs {
            if names.contains(&name.as_str()) || (last && !listed(name)) {
                groups.push_str(&format!("  {literal}{name:<width$}{literal:#}  {about}\n"));
            }
        }
        groups.push('\n');
    }
    cmd.help_template(format!(
        "{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{groups}\
         {header}{GLOBAL}:{header:#}\n{{options}}{{after-help}}"
    ))
}

/// `Examples:` and its lines, as clap styles a heading.
macro_rules! examples {
    ($($line:literal),+ $(,)?) => {
        concat!("\x1b[1m\x1b[4mExamples:\x1b[0m\n", $("  ", $line, "\n"),+)
    };
}

const TOP_EXAMPLES: &str = examples!(
    "cms spawn fix-auth \"Fix the login bug\"",
    "cms send fix-auth \"Now add a test\"",
    "cms list --state idle --sort cost",
    "cms delegate review \"Review src/\" --preset read-only",
    "cms help spawn",
);

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a new session with a prompt.
    #[command(
        override_usage = "cms spawn [OPTIONS] <NAME|--name <NAME>> <PROMPT|--prompt <PROMPT>>",
        after_help = examples!(
            "cms spawn fix-auth \"Fix the login bug\"",
            "cms spawn review \"Review src/\" --model opus --permission-mode plan",
            "cms spawn once \"Summarise README.md\" --stop --max-budget 0.50",
            "git diff | cms spawn --name explain --prompt -",
        )
    )]
    Spawn(SpawnCmd),
    /// Send a follow-up message (resumes a stopped session).
    #[command(
        override_usage = "cms send [OPTIONS] <NAME|--name <NAME>> <MESSAGE|--message <MESSAGE>>",
        after_help = examples!(
            "cms send fix-auth \"Now add a test\"",
            "cms send fix-auth \"Last one\" --stop --timeout 600",
            "cat notes.md | cms send fix-auth -",
            "cms send fix-auth \"Status?\" --json | jq -r .response.text",
        )
    )]
    Send(SendArgs),
    /// Restore a stopped or paused session, optionally with a message.
    #[command(
        override_usage = "cms resume [OPTIONS] <NAME|--name <NAME>> [MESSAGE|--message <MESSAGE>]"
    )]
    Resume(ResumeArgs),
    /// Refuse new messages until resumed.
    #[command(override_usage = "cms pause [OPTIONS] <NAME|--name <NAME>>")]
    Pause(NameArg),
    /// Branch off into a new session that keeps the parent's context.
    #[command(
        override_usage = "cms fork [OPTIONS] <NAME|--name <NAME>> <NEW_NAME|--new-name <NEW_NAME>>"
    )]
    Fork(ForkArgs),
    /// Stop gracefully (resumable later).
    #[command(override_usage = "cms stop [OPTIONS] <NAME|--name <NAME>>")]
    Stop(NameArg),
    /// Force kill a session's process.
    #[command(override_usage = "cms kill [OPTIONS] <NAME|--name <NAME>>")]
    Kill(NameArg),
    /// Interrupt the running turn of a session live in another cms process.
    #[command(override_usage = "cms interrupt [OPTIONS] <NAME|--name <NAME>>")]
    Interrupt(NameArg),
    /// Tool calls waiting for a person's decision (a safety policy answered "ask").
    #[command(after_help = examples!(
        "cms approvals",
        "cms approvals --json | jq -r '.[] | \"\\(.session) \\(.tool)\"'",
    ))]
    Approvals,
    /// Let a tool call waiting in a session run (the oldest, or --id).
    #[command(
        override_usage = "cms approve [OPTIONS] <NAME|--name <NAME>>",
        after_help = examples!(
            "cms approve fix-auth",
            "cms approve fix-auth --always-for-session   # and every later call of that tool",
        )
    )]
    Approve(ApproveArgs),
    /// Refuse a tool call waiting in a session; the model sees the reason.
    #[command(
        override_usage = "cms deny [OPTIONS] <NAME|--name <NAME>> --reason <REASON>",
        after_help = examples!("cms deny fix-auth --reason \"not on main; use a branch\"")
    )]
    Deny(DenyArgs),
    /// Show detailed session info.
    #[command(
        override_usage = "cms status [OPTIONS] <NAME|--name <NAME>>",
        after_help = examples!(
            "cms status fix-auth",
            "cms status fix-auth --json | jq .total_cost_usd",
        )
    )]
    Status(NameArg),
    /// Print the last response text.
    #[command(override_usage = "cms output [OPTIONS] <NAME|--name <NAME>>")]
    Output(OutputArgs),
    /// List sessions: filter by state, sort, watch.
    #[command(after_help = examples!(
        "cms list",
        "cms list --state busy --state retrying --wide",
        "cms list --live --sort cost",
        "cms list --watch 5",
        "cms list --json | jq -r '.[] | select(.state == \"failed\") | .name'",
    ))]
    List(ListArgs),
    /// Show every interaction with its cost.
    #[command(override_usage = "cms history [OPTIONS] <NAME|--name <NAME>>")]
    History(HistoryArgs),
    /// Remove a session for good.
    #[command(override_usage = "cms delete [OPTIONS] <NAME|--name <NAME>>")]
    Delete(NameArg),
    /// Spawn many sessions in parallel from a JSON file.
    #[command(after_help = examples!(
        "cms batch --file tasks.json",
        "cms batch --file tasks.json --concurrency 8 --json > results.json",
        "tasks.json: [{\"name\": \"a\", \"prompt\": \"Fix A\"}, {\"name\": \"b\", \"prompt\": \"Fix B\", \"model\": \"opus\"}]",
    ))]
    Batch(BatchArgs),
    /// Remove sessions idle for more than N days.
    Cleanup(CleanupArgs),
    /// A tour of cms on the bundled simulator (no Claude account needed; text only).
    Demo(DemoArgs),
    /// Run a Lua plan: `cms script plan.lua [args...]` (`cms.args` holds the args).
    #[command(after_help = examples!(
        "cms script plan.lua",
        "cms script fan-out.lua src/a.rs src/b.rs",
        "cms script --json plan.lua    # the return value as JSON (cms's flags go before FILE;",
        "                              # every word after it is the script's, in cms.args)",
        "plan.lua: local s = cms.spawn{ name = \"a\", prompt = \"hi\" }; return s.response.text",
    ))]
    Script(ScriptArgs),
    /// An interactive Lua prompt with the same `cms` module.
    Repl(ReplArgs),
    /// Print the LuaLS annotations of the `cms` Lua API (for editor completion).
    LuaTypes,
    /// Hand a task to a guarded session (preset + safety net) driven by a strategy.
    #[command(
        override_usage = "cms delegate [OPTIONS] <NAME|--name <NAME>> <TASK|--task <TASK>>",
        after_help = examples!(
            "cms delegate review \"Review src/auth\" --preset read-only",
            "cms delegate fix \"Make the tests pass\" --strategy correction_loop --check \"cargo test\"",
            "cms delegate fix \"...\" --max-cost 1 --max-turns 20 --json",
            "cms continue fix \"Also handle the empty case\"",
            "cms finish fix",
        )
    )]
    Delegate(DelegateCmd),
    /// Send a follow-up or correction to a delegated session.
    #[command(
        override_usage = "cms continue [OPTIONS] <NAME|--name <NAME>> <MESSAGE|--message <MESSAGE>>"
    )]
    Continue(ContinueArgs),
    /// Stop a delegated session gracefully (resumable with `continue`).
    #[command(override_usage = "cms finish [OPTIONS] <NAME|--name <NAME>>")]
    Finish(NameArg),
    /// Kill a delegated session now.
    #[command(override_usage = "cms abort [OPTIONS] <NAME|--name <NAME>>")]
    Abort(NameArg),
    /// Safety policies, presets and strategies: check a script, show one, copy them to edit (init).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The machines sessions can run on (hosts.lua and this one): runner, address,
    /// live and queued sessions, max_live, labels, and whether each answers now.
    #[command(after_help = examples!("cms hosts", "cms hosts --json | jq '.[] | select(.reachable != \"ok\")'"))]
    Hosts,
    /// Serve MCP on stdio, so Claude Code can spawn and steer sessions with native tools.
    Mcp,
    /// Run the session host in the foreground (logs on stderr): it owns every live
    /// session of this CMS_HOME; other commands start it in the background when needed.
    #[command(after_help = examples!(
        "cms serve                      # until Ctrl-C; sessions are then stopped, resumable",
        "cms serve --idle-exit never    # stay up with no session",
        "CMS_HOST_IDLE=1h cms spawn ... # the idle time of a host started in the background",
    ))]
    Serve(ServeArgs),
    /// The session host: status, stop, restart.
    #[command(subcommand)]
    Host(HostCommand),
    /// Show what a session did (messages, answers, tools, costs); -f follows it live.
    #[command(
        override_usage = "cms logs [OPTIONS] <NAME|--name <NAME>>",
        after_help = examples!(
            "cms logs fix-auth",
            "cms logs fix-auth -f              # then live, until Ctrl-C",
            "cms logs fix-auth -f --json | jq -r 'select(.event == \"text\") | .text'",
        )
    )]
    Logs(LogsArgs),
    /// A prompt on one session of the host: each line is sent, the answer streams in.
    #[command(
        override_usage = "cms attach [OPTIONS] <NAME|--name <NAME>>",
        after_help = examples!(
            "cms attach fix-auth               # Ctrl-C interrupts a turn, Ctrl-D detaches",
            "printf 'hi\\nthanks\\n' | cms attach fix-auth   # each line sent, answers printed",
        )
    )]
    Attach(NameArg),
    /// A full-screen dashboard of every session: state, tool, cost, last text; act on one.
    #[command(after_help = examples!(
        "cms top                 # s sorts, / filters, m sends, a/d approve or deny, q quits",
        "cms top --no-host       # the store's sessions, read-only",
        "NO_COLOR=1 cms top      # without colours (or --color never)",
    ))]
    Top,
    /// Register `cms mcp` with Claude Code (interactive without flags).
    Setup(SetupArgs),
    /// Plugins: list what is loaded, check that every plugin loads, or run a plugin tool.
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
    /// For this project: ./.mcp.json (project scope, a file teams commit; Claude Code
    /// asks each user to approve it once).
    #[arg(long)]
    pub local: bool,
    /// Also add the delegation strategy guide to CLAUDE.md (replaced, never duplicated).
    #[arg(long)]
    pub guide: bool,
    /// Copy CMS_HOME and CMS_CLAUDE_BIN from this shell into the entry without asking
    /// [default: ask on a terminal, else leave them out].
    #[arg(long)]
    pub env: bool,
    /// With --local: run this binary by its absolute path [default: `cms`, found on
    /// each user's PATH; --global always uses the absolute path].
    #[arg(long)]
    pub absolute: bool,
    /// Remove the cms entry (and the guide block) from both scopes, nothing else.
    #[arg(long)]
    pub uninstall: bool,
    /// Register the host's MCP over HTTP (`cms serve --http`) instead of `cms mcp`
    /// on stdio: its address, and the bearer token into ~/.claude.json (--global);
    /// ./.mcp.json (--local) gets `Bearer ${CMS_HTTP_TOKEN}`, which Claude Code fills
    /// in from its environment [default: off; the running host's address, else
    /// 127.0.0.1:7707, when given without one].
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "")]
    pub http: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Every plugin found (shipped, ~/.config/cms/plugins, .cms/plugins) and what it adds.
    List,
    /// Load every plugin and report the ones that fail; exit 1 if any does.
    Check,
    /// Call a plugin's tool from the shell, as `cms mcp` would, and print its result.
    Run {
        /// The plugin (its name in `cms plugins list`).
        plugin: String,
        /// The tool.
        tool: String,
        /// An argument, KEY=VALUE (repeatable); VALUE is read as the tool's schema
        /// types it (number, boolean, ...), else as a string [default: none].
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
        /// All arguments as one JSON object (--arg entries are added to it) [default: {}].
        #[arg(long, value_name = "JSON")]
        json_args: Option<String>,
    },
}

/// `cms delegate`'s flags: the delegation options themselves (one definition for
/// the CLI, Lua, MCP and the LuaLS stubs).
pub type DelegateArgs = crate::delegate::DelegateOptions;

/// `cms delegate`: the name and task as positionals or flags, and the delegation
/// options themselves.
#[derive(Debug, Args)]
#[command(
    mut_arg("name", |a| a.required(false).default_value("").hide_default_value(true)),
    mut_arg("task", |a| a.required(false).default_value("").hide_default_value(true))
)]
pub struct DelegateCmd {
    /// Session name (or --name).
    #[arg(value_name = "NAME")]
    pub name_pos: Option<String>,
    /// What to do (or --task; `-` reads it from stdin).
    #[arg(value_name = "TASK")]
    pub task_pos: Option<String>,
    #[command(flatten)]
    pub opts: DelegateArgs,
}

#[derive(Debug, Args)]
pub struct ContinueArgs {
    /// The delegated session (or --name).
    #[arg(value_name = "NAME")]
    pub name_pos: Option<String>,
    /// The follow-up (or --message; `-` reads it from stdin).
    #[arg(value_name = "MESSAGE")]
    pub message_pos: Option<String>,
    /// The delegated session.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub name: String,
    /// The follow-up (`-` reads it from stdin).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub message: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Exit after this long with no live session and no client (e.g. 90s, 15m, 2h;
    /// `never`) [env: CMS_HOST_IDLE] [default: 15m].
    #[arg(long, value_name = "DURATION")]
    pub idle_exit: Option<String>,
    /// Also serve MCP (streamable HTTP, at /mcp) and the web dashboard (at /) on this
    /// address, behind the token of `--print-token`. With --http the host does not exit
    /// when idle unless --idle-exit says so [default: off; 127.0.0.1:7707 when given
    /// without an address].
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = DEFAULT_HTTP)]
    pub http: Option<String>,
    /// Let --http listen on an address other than loopback (other machines can then
    /// reach it; the token is all that stands between them and your sessions).
    #[arg(long, requires = "http")]
    pub allow_remote: bool,
    /// Requests per second each client address may make over HTTP (a burst of twice
    /// that is allowed; 0: no limit) [default: 200].
    #[arg(long, value_name = "N", requires = "http")]
    pub http_rate: Option<u32>,
    /// Print the HTTP bearer token (made on first use, kept in CMS_HOME/http-token,
    /// mode 0600) and exit.
    #[arg(long, conflicts_with_all = ["http", "idle_exit"])]
    pub print_token: bool,
}

/// Where `cms serve --http` listens when no address is given.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7707";

/// A host's idle time: a humantime duration, or `never`.
pub fn idle_duration(s: &str) -> Result<Option<std::time::Duration>, String> {
    match s.trim() {
        "never" | "0" => Ok(None),
        t => humantime::parse_duration(t)
            .map(Some)
            .map_err(|e| format!("{e} (write e.g. 90s, 15m, 2h, or never)")),
    }
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Whether a host runs for this CMS_HOME: its pid, version, uptime, live sessions
    /// and clients (exit 1 when none runs).
    Status,
    /// Stop the host: its sessions are stopped (resumable); the next command that
    /// needs one starts a new host.
    Stop,
    /// Stop the host and start a new one in the background (after an upgrade).
    Restart,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a script (safety.lua, protected_paths.lua, presets.lua,
    /// strategies/NAME.lua): it loads, returns the right shape, and a policy answers
    /// sample tool calls without an error. No session runs.
    Check {
        /// The Lua file.
        file: PathBuf,
        /// What the file is [default: guessed from its name].
        #[arg(long = "as", value_name = "KIND",
              value_parser = clap::builder::PossibleValuesParser::new(crate::policy::ScriptKind::NAMES))]
        kind: Option<String>,
    },
    /// Without NAME: the scripts in force (built-in or your overrides), limits, presets
    /// and strategies. With NAME (safety, protected_paths, presets, strategies/single,
    /// ...): that script's text as it is in force.
    Show {
        /// A script: safety, protected_paths, presets, strategies/NAME [default: the summary].
        name: Option<String>,
        /// The built-in text even when an override is in force.
        #[arg(long, requires = "name")]
        builtin: bool,
    },
    /// Copy the built-in scripts into your config dir (~/.config/cms or
    /// $CMS_CONFIG_DIR) to edit.
    Init {
        /// Overwrite files that are already there.
        #[arg(long)]
        force: bool,
    },
}

/// A session's name, as a positional or `--name`.
#[derive(Debug, Args)]
pub struct NameArg {
    /// Session name (or --name).
    #[arg(value_name = "NAME")]
    pub name_pos: Option<String>,
    /// Session name.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub name: String,
}

/// `cms approve`: which call, and whether to approve its tool for the session.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub session: NameArg,
    /// The waiting call's id (`cms approvals` shows it) [default: the oldest].
    #[arg(long)]
    pub id: Option<String>,
    /// Also approve every later call of this tool in this session's process.
    #[arg(long)]
    pub always_for_session: bool,
}

/// `cms deny`: which call, and why.
#[derive(Debug, Args)]
pub struct DenyArgs {
    #[command(flatten)]
    pub session: NameArg,
    /// The waiting call's id (`cms approvals` shows it) [default: the oldest].
    #[arg(long)]
    pub id: Option<String>,
    /// Why: the model sees it with the denial, and it is recorded.
    #[arg(long)]
    pub reason: String,
}

/// `cms spawn`'s flags: the spawn options themselves (one definition for the CLI,
/// Lua, MCP, batch files and the LuaLS stubs).
pub type SpawnArgs = crate::engine::SpawnSpec;

/// `cms spawn`: the name and prompt as positionals or flags, and the spawn options.
#[derive(Debug, Args)]
#[command(
    mut_arg("name", |a| a.required(false).default_value("").hide_default_value(true)),
    mut_arg("prompt", |a| a.required(false).default_value("").hide_default_value(true))
)]
pub struct SpawnCmd {
    /// Session name (or --name).
    #[arg(value_name = "NAME")]
    pub name_pos: Option<String>,
    /// The first message (or --prompt; `-` reads it from stdin).
    #[arg(value_name = "PROMPT")]
    pub prompt_pos: Option<String>,
    #[command(flatten)]
    pub spec: SpawnArgs,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Session name (or --name).
    #[arg(value_name = "NAME")]
    pub name_pos: Option<String>,
    /// The message (or --message; `-` reads it from stdin).
    #[arg(value_name = "MESSAGE")]
    pub message_pos: Option<String>,
    /// Session name.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub name: String,
    /// The message (`-` reads it from stdin).
    #[arg(long, default_value = "", hide_default_value = true)]
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
    /// Session name (or --name).
    #[arg(value_name = "NAME")]
    pub name_pos: Option<String>,
    /// A message to send once resumed (or --message).
    #[arg(value_name = "MESSAGE")]
    pub message_pos: Option<String>,
    /// Session name.
    #[arg(long, default_value = "", hide_default_value = true)]
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
    /// The session to fork (or --name).
    #[arg(value_name = "NAME")]
    pub name_pos: Option<String>,
    /// The new session's name (or --new-name).
    #[arg(value_name = "NEW_NAME")]
    pub new_name_pos: Option<String>,
    /// The session to fork.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub name: String,
    /// The new session's name.
    #[arg(long, default_value = "", hide_default_value = true)]
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
    /// Session name (or --name).
    #[arg(value_name = "NAME")]
    pub name_pos: Option<String>,
    /// The session whose last response to print.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub name: String,
    /// The whole text (without it: the first 2000 characters).
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Session name (or --name).
    #[arg(value_name = "NAME")]
    pub name_pos: Option<String>,
    /// Session name.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub name: String,
    /// Then follow its live events from the session host until Ctrl-C (waiting for
    /// the session to become live when it is not).
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Session name (or --name).
    #[arg(value_name = "NAME")]
    pub name_pos: Option<String>,
    /// Session name.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub name: String,
    /// Only the last N interactions [default: all].
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
}

/// How `cms list` orders sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    Name,
    Cost,
    Turns,
    /// Most recent first.
    Activity,
    /// Newest first.
    Created,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only sessions in this state; repeat for several [default: every state].
    #[arg(long, value_name = "STATE", value_parser = state_parser())]
    pub state: Vec<SessionState>,
    /// Only sessions with a live process.
    #[arg(long)]
    pub live: bool,
    /// Order: by name (A-Z), cost or turns (highest first), activity or created (most
    /// recent first).
    #[arg(long, value_enum, default_value_t = SortKey::Activity)]
    pub sort: SortKey,
    /// Reverse the order.
    #[arg(long)]
    pub reverse: bool,
    /// More columns: working directory, pid, and the cms process holding the session.
    #[arg(long)]
    pub wide: bool,
    /// Redraw every SECS seconds until Ctrl-C, on a terminal [default: off; 2 when SECS
    /// is left out].
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2",
          value_parser = positive_f64)]
    pub watch: Option<f64>,
}

/// `--state`'s values: [`SessionState::ALL`].
fn state_parser() -> impl clap::builder::TypedValueParser<Value = SessionState> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(SessionState::ALL.map(SessionState::as_str))
        .map(|s| SessionState::parse(&s).unwrap_or(SessionState::Idle))
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
    /// Remove without asking (needed when not on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Only list what would be removed.
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,
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

/// One value a command needs, given by its flag or by a positional.
struct Slot<'a> {
    /// What it is, for the error: "a session name".
    what: &'static str,
    flag: &'static str,
    value: &'a mut String,
    required: bool,
}

/// Fill each value the flags left out (empty) from the positionals, in order; say
/// what is missing, or which positional has no place. `usage` is the positional form.
fn fill(usage: &str, positionals: Vec<Option<String>>, slots: &mut [Slot]) -> Result<(), String> {
    let mut given = positionals.into_iter().flatten();
    for slot in slots.iter_mut() {
        if slot.value.is_empty() {
            if let Some(v) = given.next() {
                *slot.value = v;
            }
        }
    }
    if let Some(extra) = given.next() {
        return Err(format!(
            "unexpected argument '{extra}': the flags already give every value of `{usage}`"
        ));
    }
    match slots.iter().find(|s| s.required && s.value.is_empty()) {
        Some(s) => Err(format!("{} is needed: `{usage}` or `{}`", s.what, s.flag)),
        None => Ok(()),
    }
}

fn slot<'a>(what: &'static str, flag: &'static str, value: &'a mut String) -> Slot<'a> {
    Slot {
        what,
        flag,
        value,
        required: true,
    }
}

const A_NAME: &str = "a session name";

impl Command {
    /// Put the positionals where their flags would have put them (`cms send p hi` is
    /// `cms send --name p --message hi`). An error is a usage error.
    pub fn resolve(&mut self) -> Result<(), String> {
        let verb = match self {
            Command::Pause(_) => "pause",
            Command::Stop(_) => "stop",
            Command::Kill(_) => "kill",
            Command::Interrupt(_) => "interrupt",
            Command::Status(_) => "status",
            Command::Delete(_) => "delete",
            Command::Attach(_) => "attach",
            Command::Finish(_) => "finish",
            Command::Abort(_) => "abort",
            Command::Approve(_) => "approve",
            Command::Deny(_) => "deny",
            _ => "",
        };
        match self {
            Command::Spawn(a) => fill(
                "cms spawn NAME PROMPT",
                vec![a.name_pos.take(), a.prompt_pos.take()],
                &mut [
                    slot(A_NAME, "--name", &mut a.spec.name),
                    slot("a prompt", "--prompt", &mut a.spec.prompt),
                ],
            ),
            Command::Send(a) => fill(
                "cms send NAME MESSAGE",
                vec![a.name_pos.take(), a.message_pos.take()],
                &mut [
                    slot(A_NAME, "--name", &mut a.name),
                    slot("a message", "--message", &mut a.message),
                ],
            ),
            Command::Resume(a) => {
                let mut message = a.message.take().unwrap_or_default();
                let r = fill(
                    "cms resume NAME [MESSAGE]",
                    vec![a.name_pos.take(), a.message_pos.take()],
                    &mut [
                        slot(A_NAME, "--name", &mut a.name),
                        Slot {
                            required: false,
                            ..slot("a message", "--message", &mut message)
                        },
                    ],
                );
                a.message = (!message.is_empty()).then_some(message);
                r
            }
            Command::Fork(a) => fill(
                "cms fork NAME NEW_NAME",
                vec![a.name_pos.take(), a.new_name_pos.take()],
                &mut [
                    slot(A_NAME, "--name", &mut a.name),
                    slot("the new session's name", "--new-name", &mut a.new_name),
                ],
            ),
            Command::Output(a) => fill(
                "cms output NAME",
                vec![a.name_pos.take()],
                &mut [slot(A_NAME, "--name", &mut a.name)],
            ),
            Command::Logs(a) => fill(
                "cms logs NAME",
                vec![a.name_pos.take()],
                &mut [slot(A_NAME, "--name", &mut a.name)],
            ),
            Command::History(a) => fill(
                "cms history NAME",
                vec![a.name_pos.take()],
                &mut [slot(A_NAME, "--name", &mut a.name)],
            ),
            Command::Delegate(a) => fill(
                "cms delegate NAME TASK",
                vec![a.name_pos.take(), a.task_pos.take()],
                &mut [
                    slot(A_NAME, "--name", &mut a.opts.name),
                    slot("a task", "--task", &mut a.opts.task),
                ],
            ),
            Command::Continue(a) => fill(
                "cms continue NAME MESSAGE",
                vec![a.name_pos.take(), a.message_pos.take()],
                &mut [
                    slot(A_NAME, "--name", &mut a.name),
                    slot("a message", "--message", &mut a.message),
                ],
            ),
            Command::Approve(ApproveArgs { session: a, .. })
            | Command::Deny(DenyArgs { session: a, .. }) => fill(
                &format!("cms {verb} NAME"),
                vec![a.name_pos.take()],
                &mut [slot(A_NAME, "--name", &mut a.name)],
            ),
            Command::Pause(a)
            | Command::Stop(a)
            | Command::Kill(a)
            | Command::Interrupt(a)
            | Command::Status(a)
            | Command::Delete(a)
            | Command::Attach(a)
            | Command::Finish(a)
            | Command::Abort(a) => fill(
                &format!("cms {verb} NAME"),
                vec![a.name_pos.take()],
                &mut [slot(A_NAME, "--name", &mut a.name)],
            ),
            _ => Ok(()),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(args: &[&str]) -> Result<Command, String> {
        let mut argv = vec!["cms"];
        argv.extend_from_slice(args);
        let mut cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        cli.command.resolve()?;
        Ok(cli.command)
    }

    #[test]
    fn a_name_is_a_positional_or_a_flag() {
        for args in [
            &["send", "p", "hello"][..],
            &["send", "--name", "p", "--message", "hello"],
            &["send", "--name", "p", "hello"],
            &["send", "p", "--message", "hello"],
        ] {
            match resolved(args).unwrap() {
                Command::Send(a) => {
                    assert_eq!(
                        (a.name.as_str(), a.message.as_str()),
                        ("p", "hello"),
                        "{args:?}"
                    )
                }
                other => panic!("{other:?}"),
            }
        }
        match resolved(&["spawn", "a", "do it", "--model", "opus"]).unwrap() {
            Command::Spawn(a) => {
                assert_eq!(
                    (a.spec.name.as_str(), a.spec.prompt.as_str()),
                    ("a", "do it")
                );
                assert_eq!(a.spec.model.as_deref(), Some("opus"));
            }
            other => panic!("{other:?}"),
        }
        match resolved(&["fork", "a", "b"]).unwrap() {
            Command::Fork(a) => assert_eq!((a.name.as_str(), a.new_name.as_str()), ("a", "b")),
            other => panic!("{other:?}"),
        }
        match resolved(&["resume", "a"]).unwrap() {
            Command::Resume(a) => assert_eq!((a.name.as_str(), a.message), ("a", None)),
            other => panic!("{other:?}"),
        }
        match resolved(&["delegate", "d", "review it", "--preset", "read-only"]).unwrap() {
            Command::Delegate(a) => {
                assert_eq!(
                    (a.opts.name.as_str(), a.opts.task.as_str()),
                    ("d", "review it")
                );
                assert!(a.opts.safety);
            }
            other => panic!("{other:?}"),
        }
        for cmd in [
            "status", "stop", "kill", "pause", "delete", "finish", "abort",
        ] {
            assert!(resolved(&[cmd, "p"]).is_ok(), "{cmd}");
            assert!(resolved(&[cmd, "--name", "p"]).is_ok(), "{cmd}");
        }
    }

    #[test]
    fn a_missing_or_extra_value_is_named() {
        let err = resolved(&["spawn"]).unwrap_err();
        assert_eq!(
            err,
            "a session name is needed: `cms spawn NAME PROMPT` or `--name`"
        );
        let err = resolved(&["spawn", "a"]).unwrap_err();
        assert!(err.starts_with("a prompt is needed"), "{err}");
        let err = resolved(&["status", "p", "--name", "q"]).unwrap_err();
        assert!(err.contains("unexpected argument 'p'"), "{err}");
        let err = resolved(&["continue", "d"]).unwrap_err();
        assert!(err.starts_with("a message is needed"), "{err}");
    }

    #[test]
    fn every_command_is_in_one_group() {
        use clap::CommandFactory;
        for sub in Cli::command().get_subcommands() {
            let n = COMMAND_GROUPS
                .iter()
                .filter(|(_, names)| names.contains(&sub.get_name()))
                .count();
            assert!(n <= 1, "{} is in {n} groups", sub.get_name());
        }
        let help = command().render_long_help().to_string();
        for (heading, _) in COMMAND_GROUPS {
            assert!(help.contains(&format!("{heading}:")), "{help}");
        }
        assert!(help.contains("Global options:") && !help.contains("\nCommands:"));
    }
}

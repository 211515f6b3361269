//! Configuration of the engine and of one session.

use crate::wire::ClaudeArgs;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The model of a session that names none.
pub const DEFAULT_MODEL: &str = "sonnet";

/// How long one turn may run before it is interrupted, unless the caller says
/// otherwise: 60 minutes. Real agent turns take 5–20 minutes and a cut turn is
/// wasted spend, so the default only catches a CLI that hangs; budgets
/// (`--max-budget`, a delegation's cost limit) are what bound spending.
pub const DEFAULT_TURN_TIMEOUT_SECS: u64 = 3600;

/// [`DEFAULT_TURN_TIMEOUT_SECS`] as a duration.
pub const DEFAULT_TURN_TIMEOUT: Duration = Duration::from_secs(DEFAULT_TURN_TIMEOUT_SECS);

/// How the engine runs `claude` and where it keeps state.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The `claude` executable (a name looked up on PATH, or a path).
    pub claude_bin: PathBuf,
    /// The executable that supervises each child (`cms`, run as `cms __supervise`), so a
    /// session's whole process tree ends with it. Default: `$CMS_SUPERVISOR`, else this
    /// program when it is `cms`; None (or `CMS_SUPERVISOR=none`) runs `claude` bare (its
    /// tools may then outlive it).
    pub supervisor: Option<PathBuf>,
    /// Where the store lives (`$CMS_HOME`, default `~/.claude-multi-session`).
    pub home: PathBuf,
    /// Extra environment for every child (tests point `HOME`, `ANTHROPIC_BASE_URL` here).
    pub child_env: Vec<(String, String)>,
    /// Model when a spawn names none.
    pub default_model: String,
    /// How long one turn may take before it is interrupted, when the call names no
    /// timeout ([`DEFAULT_TURN_TIMEOUT`]).
    pub turn_timeout: Duration,
    /// How long a stop waits for the child to exit before SIGTERM, then SIGKILL.
    pub stop_grace: Duration,
    /// How long a timed-out turn may take to honour the interrupt before the child is killed.
    pub interrupt_grace: Duration,
    /// Parallel spawns in a batch.
    pub batch_concurrency: usize,
    /// What kind of cms process this is (`cli`, `mcp`, `repl`, `script`, ...): recorded
    /// with the sessions it holds live, so others can say who holds them.
    pub host_kind: String,
    /// When another cms command is driving a session: wait for it (in arrival order)
    /// rather than refuse.
    pub wait_when_busy: bool,
}

impl EngineConfig {
    /// Defaults from the environment: `CMS_HOME`, `CMS_CLAUDE_BIN`.
    pub fn from_env() -> Self {
        let home = std::env::var_os("CMS_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join(".claude-multi-session")
            });
        let claude_bin = std::env::var_os("CMS_CLAUDE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("claude"));
        let supervisor = match std::env::var_os("CMS_SUPERVISOR") {
            Some(v) if v == "none" => None,
            Some(v) => Some(PathBuf::from(v)),
            None => std::env::current_exe()
                .ok()
                .filter(|p| p.file_name().is_some_and(|n| n == "cms")),
        }
        .filter(|_| cfg!(target_os = "linux"));
        EngineConfig {
            claude_bin,
            supervisor,
            home,
            child_env: Vec::new(),
            default_model: DEFAULT_MODEL.into(),
            turn_timeout: DEFAULT_TURN_TIMEOUT,
            stop_grace: Duration::from_secs(5),
            interrupt_grace: Duration::from_secs(5),
            batch_concurrency: 4,
            host_kind: "cli".into(),
            wait_when_busy: true,
        }
    }
}

/// The options a session is created with (kept in the store, reused on resume;
/// stored without the fields left unset, so listings parse little).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_tools: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disallowed_tools: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_budget_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_config: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add_dirs: Vec<String>,
    /// The host (in `hosts.lua`) the session runs on; None: this machine. A session
    /// stays on its host: sends, resumes and forks go there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,
    /// Labels a host must carry for placement to pick it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Preset and safety net (None: the CLI's own permission mode decides alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<Guard>,
}

impl SessionOptions {
    /// The argv options these settings give (resume/fork fields are set by the caller).
    pub fn claude_args(&self) -> ClaudeArgs {
        ClaudeArgs {
            model: self.model.clone(),
            permission_mode: self.permission_mode.clone(),
            allowed_tools: self.allowed_tools.clone(),
            disallowed_tools: self.disallowed_tools.clone(),
            append_system_prompt: self.system_prompt.clone(),
            max_turns: self.max_turns,
            max_budget_usd: self.max_budget_usd,
            agent: self.agent.clone(),
            mcp_config: self.mcp_config.clone(),
            worktree: self.worktree.clone(),
            add_dirs: self.add_dirs.clone(),
            ..ClaudeArgs::default()
        }
    }
}

/// How cms guards a session: its permission preset and safety net. Set by
/// `delegate` (and for its reviewer sessions), kept in the store, so a resumed
/// process is guarded exactly like the first one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Guard {
    /// `read-only`, `review`, `edit`, `full`, `plan` (see `scripts/presets.lua`).
    pub preset: Option<String>,
    /// Whether the safety net decides tool calls and watches the limits.
    pub safety: bool,
    /// Session cost limit in USD (over all its processes).
    pub max_cost_usd: Option<f64>,
    /// Agent-turn limit over the session's life.
    pub max_turns: Option<u32>,
    /// Seconds one interaction may take.
    pub timeout_secs: Option<f64>,
    /// Made by `delegate`: `continue`, `finish` and `abort` accept it.
    pub delegated: bool,
    /// The delegation strategy (`single`, `correction_loop`, `review`, ...).
    pub strategy: Option<String>,
}

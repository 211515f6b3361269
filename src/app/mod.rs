//! The application: one bootstrap that every frontend (the CLI, `cms script`, the
//! REPL, `cms mcp`) stands on, so none of them assembles the engine its own way.
//!
//! - [`Globals`] → [`engine_config`]: the configuration from the global flags;
//! - [`runtime`]: the async runtime, the signal that ends it, panic-free stderr;
//! - [`App`]: the runtime and the manager, with the safety policy and a Lua host
//!   started only for what needs them (a guarded session, a script);
//! - [`exit`]: errors printed and exit codes chosen in one place.

pub mod exit;
pub mod runtime;

mod bootstrap;

pub use bootstrap::{App, HostUse, LuaApp};

use crate::engine::EngineConfig;
use std::path::PathBuf;

/// The global options of every frontend.
#[derive(Debug, Clone)]
pub struct Globals {
    /// The Claude Code executable: a name looked up on PATH, or a path.
    pub claude_bin: PathBuf,
    /// `$CMS_HOME` given on the command line (else the environment's, else the default).
    pub home: Option<PathBuf>,
    /// Wait for another cms process to finish with a session (else fail at once).
    pub wait_when_busy: bool,
    /// Which frontend this process is (`cli`, `mcp`, `script`, `repl`, `demo`),
    /// recorded with the sessions it holds live.
    pub host_kind: &'static str,
}

/// The engine's configuration for these global options.
pub fn engine_config(g: &Globals) -> EngineConfig {
    let mut cfg = EngineConfig::from_env();
    cfg.claude_bin = g.claude_bin.clone();
    if let Some(home) = &g.home {
        cfg.home = home.clone();
        // Trust records live there too; the script layers read it from the environment.
        std::env::set_var("CMS_HOME", home);
    }
    cfg.wait_when_busy = g.wait_when_busy;
    cfg.host_kind = g.host_kind.into();
    cfg
}

/// Logs on stderr (stdout is for results, and the protocol in `cms mcp`): warnings,
/// or more with `-v`/`-vv`; `RUST_LOG` overrides. `ansi`: colours, for a terminal
/// only (a log file or a pipe gets plain text).
pub fn init_tracing(verbose: u8, ansi: bool) {
    let default = match verbose {
        0 => "warn,lua=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .try_init();
}

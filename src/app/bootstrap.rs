//! The bootstrap: the async runtime and the manager, and what only some commands
//! need on top: the safety policy (a guarded session, a script, the MCP server)
//! and a Lua host (a script, the REPL, a delegation).

use super::runtime::errln;
use super::runtime::{init_runtime, shutdown_signal};
use crate::engine::{EngineConfig, Manager, Sessions};
use crate::host::Started;
use crate::lua::{HostOptions, LuaHost};
use crate::policy::Attached;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

/// A running application: the runtime and the sessions every command uses.
pub struct App {
    rt: tokio::runtime::Runtime,
    sessions: Arc<dyn Sessions>,
    /// In-process mode: the manager itself (the safety policy is installed on it).
    local: Option<Arc<Manager>>,
}

/// Whether a command reaches its sessions through the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostUse {
    /// In this process (`--no-host`, `CMS_NO_HOST=1`, the demo).
    Never,
    /// Through the host when one runs (stop, kill, pause: no need to start one).
    IfRunning,
    /// Through the host, started when none runs (anything that runs a turn).
    Start,
    /// Through the host, started when none runs by the first request that needs it
    /// (`cms mcp`: Claude Code starts it to list tools, maybe never to use one).
    Lazy,
}

/// A Lua host with the safety policy it runs under (watched for edits while this
/// lives).
pub struct LuaApp {
    pub host: LuaHost,
    pub policy: Attached,
}

impl App {
    /// Start the runtime and open the store; sessions live in this process.
    pub fn start(cfg: EngineConfig) -> Result<App, String> {
        let rt = init_runtime()?;
        let manager = {
            let _inside = rt.enter();
            Manager::new(cfg).map_err(|e| e.to_string())?
        };
        // Sessions pinned to a host start through hosts.lua and runners/*.lua.
        manager.set_runner(Arc::new(crate::runners::LuaRunners));
        Ok(App {
            rt,
            sessions: manager.clone(),
            local: Some(manager),
        })
    }

    /// Start the runtime and reach the sessions as `want` says: through the home's
    /// host (started in the background when `Host::Start` finds none; the user is
    /// told once), or in this process.
    pub fn open(cfg: EngineConfig, want: HostUse) -> Result<App, String> {
        if want == HostUse::Never {
            return App::start(cfg);
        }
        let rt = init_runtime()?;
        let kind = cfg.host_kind.clone();
        if want == HostUse::Lazy {
            let client = rt
                .block_on(crate::host::connect_lazily(&cfg, &kind))
                .map_err(|e| e.to_string())?;
            return Ok(App {
                rt,
                sessions: client,
                local: None,
            });
        }
        let connected = rt
            .block_on(crate::host::connect(&cfg, &kind, want == HostUse::Start))
            .map_err(|e| e.to_string())?;
        let Some((client, started)) = connected else {
            drop(rt);
            return App::start(cfg);
        };
        match started {
            Started::Found => {}
            Started::Now(pid) => errln!(
                "cms: started the session host (pid {pid}) for {}: sessions stay live between \
                 commands (`cms host stop` ends it; --no-host runs without it)",
                cfg.home.display()
            ),
            Started::Replaced { old_version, pid } => errln!(
                "cms: replaced an idle session host of version {old_version} with this version's (pid {pid})"
            ),
        }
        Ok(App {
            rt,
            sessions: client,
            local: None,
        })
    }

    /// The manager, when sessions live in this process (the host itself, `--no-host`).
    pub fn local_manager(&self) -> Option<&Arc<Manager>> {
        self.local.as_ref()
    }

    /// The sessions: in this process, or in the host.
    pub fn sessions(&self) -> &Arc<dyn Sessions> {
        &self.sessions
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt.handle().clone()
    }

    /// Load the layered safety policy for work in `cwd` onto the manager, reloaded
    /// when its files change. Only guarded sessions consult it.
    pub fn guard(&self, cwd: &Path) -> Result<Attached, String> {
        let _inside = self.rt.enter();
        let attached = crate::policy::load(cwd);
        if let (Ok(a), Some(m)) = (&attached, &self.local) {
            crate::policy::install(m, a);
        }
        attached.map_err(|e| format!("cannot load the safety policy: {e}"))
    }

    /// The safety policy and a Lua host over the manager, for a script, the REPL or
    /// a delegation. Call it on the thread that runs the Lua ([`App::run_local`]).
    pub fn lua(&self, mut opts: HostOptions) -> Result<LuaApp, String> {
        let cwd = std::env::current_dir().unwrap_or_default();
        let policy = self.guard(&cwd)?;
        opts.policy = Some(policy.service.clone());
        let host = LuaHost::new(self.sessions.clone(), opts)
            .map_err(|e| format!("cannot start Lua: {e}"))?;
        Ok(LuaApp { host, policy })
    }

    /// Run `work` to its end on the runtime.
    pub fn block_on<F: Future>(&self, work: F) -> F::Output {
        self.rt.block_on(work)
    }

    /// Run `work` on this thread (where Lua lives: a `LocalSet`), to its end.
    pub fn run_local<F: Future>(&self, work: F) -> F::Output {
        let local = tokio::task::LocalSet::new();
        self.rt.block_on(local.run_until(work))
    }

    /// Run `work` until it ends (`Some`) or Ctrl-C/SIGTERM arrives (`None`). Either
    /// way the sessions this process holds end with it: stopped after a finished
    /// command (the next command resumes them), killed after a signal.
    pub fn run_until_signal<F: Future>(&self, work: F) -> Option<F::Output> {
        self.rt.block_on(async {
            let r = tokio::select! {
                r = work => Some(r),
                _ = shutdown_signal() => None,
            };
            match r {
                Some(_) => self.sessions.shutdown().await,
                None => self.sessions.kill_all().await,
            }
            r
        })
    }

    /// End the runtime without waiting for tasks blocked in a read (the MCP stdin).
    pub fn shutdown_background(self) {
        self.rt.shutdown_background();
    }
}

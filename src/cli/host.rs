//! `cms serve` (the session host in the foreground) and `cms host status|stop|restart`.

use super::args::{HostCommand, ServeArgs};
use super::out::{self, outln};
use crate::app::runtime::{errln, init_runtime, shutdown_signal};
use crate::app::{exit, App, HostUse};
use crate::engine::EngineConfig;
use crate::engine::Manager;
use crate::host::{HostInfo, ServeOptions};
use crate::policy::Attached;
use futures_util::future::BoxFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a host started without `--idle-exit` waits with nothing to do.
const DEFAULT_IDLE: Duration = Duration::from_secs(15 * 60);

/// What a face running in the host's process beside its socket (the HTTP listener
/// of `cms serve --http`) is given: the sessions, the policy of the folder the host
/// started in, and the runtime.
pub struct Beside<'a> {
    pub manager: &'a Arc<Manager>,
    pub attached: &'a Attached,
    pub handle: tokio::runtime::Handle,
    /// Set to now on each request the face serves: the host is not idle then.
    pub activity: Arc<Mutex<Instant>>,
}

/// Such a face: called once before the host serves, it returns what serves it (or
/// why it cannot, and the host does not start). It ends when the host ends.
pub type Face = Box<dyn FnOnce(Beside<'_>) -> Result<BoxFuture<'static, ()>, String>>;

/// Run the host until Ctrl-C, SIGTERM, `cms host stop`, or its idle time.
pub fn serve(cfg: EngineConfig, a: &ServeArgs) -> i32 {
    serve_with(cfg, a, None)
}

/// [`serve`] with a face beside the socket.
pub fn serve_with(cfg: EngineConfig, a: &ServeArgs, face: Option<Face>) -> i32 {
    let idle_exit = match &a.idle_exit {
        Some(d) => match super::args::idle_duration(d) {
            Ok(d) => d,
            Err(e) => return exit::fail(format!("--idle-exit {d}: {e}")),
        },
        // A host with an HTTP face waits for its clients there (the environment's
        // idle time is for hosts started in the background).
        None if a.http.is_some() => None,
        None => match std::env::var(crate::host::start::IDLE_ENV) {
            Ok(v) if !v.trim().is_empty() => match super::args::idle_duration(&v) {
                Ok(d) => d,
                Err(e) => return exit::fail(format!("{}={v}: {e}", crate::host::start::IDLE_ENV)),
            },
            _ => Some(DEFAULT_IDLE),
        },
    };
    let app = match App::start(cfg) {
        Ok(app) => app,
        Err(e) => return exit::fail(e),
    };
    let Some(manager) = app.local_manager().cloned() else {
        return exit::fail("the host keeps its sessions in process");
    };
    // Every guarded session answers to the scripts of the project it works in (this
    // folder's first, each other's when a session works there); edits reload them.
    let cwd = std::env::current_dir().unwrap_or_default();
    let attached = match app.block_on(async { crate::policy::load(&cwd) }) {
        Ok(a) => a,
        Err(e) => return exit::fail(format!("cannot load the safety policy: {e}")),
    };
    let activity = Arc::new(Mutex::new(Instant::now()));
    let face = match face {
        Some(f) => match f(Beside {
            manager: &manager,
            attached: &attached,
            handle: app.handle(),
            activity: activity.clone(),
        }) {
            Ok(serving) => Some(serving),
            Err(e) => return exit::fail(e),
        },
        None => None,
    };
    crate::policy::install_per_project(&manager, &cwd, attached);
    let opts = ServeOptions {
        idle_exit,
        http: a.http.clone(),
        activity: face.as_ref().map(|_| activity),
    };
    // Only the user's own notify.lua (or the built-in) decides whom to tell.
    let notify_layers = crate::sandbox::Layers::user_only();
    let served = app.block_on(async {
        crate::notify::start(manager.subscribe(), notify_layers);
        let host = crate::host::serve(manager, opts, shutdown_signal());
        match face {
            // The face ends with the host (it serves until then).
            Some(face) => tokio::select! {
                r = host => r,
                () = face => Ok(()),
            },
            None => host.await,
        }
    });
    match served {
        Ok(()) => exit::OK,
        Err(e) => exit::fail(e),
    }
}

pub fn run(cfg: EngineConfig, cmd: HostCommand, json: bool) -> i32 {
    let rt = match init_runtime() {
        Ok(rt) => rt,
        Err(e) => return out::fail(json, e),
    };
    let result = match cmd {
        HostCommand::Status => rt
            .block_on(crate::host::probe(&cfg))
            .map(|info| match info {
                Some(info) => show(&info, json),
                None => {
                    let _ = if json {
                        outln!("{}", serde_json::json!({ "running": false }))
                    } else {
                        outln!("no cms host runs for {}", cfg.home.display())
                    };
                    exit::FAILED
                }
            }),
        HostCommand::Stop => rt.block_on(crate::host::stop(&cfg)).map(|was| {
            said(json, was.as_ref(), "stopped", &cfg);
            exit::OK
        }),
        HostCommand::Restart => {
            let was = match rt.block_on(crate::host::stop(&cfg)) {
                Ok(w) => w,
                Err(e) => return out::fail(json, e),
            };
            drop(rt);
            // A host with an HTTP face ran in someone's foreground: it is started
            // again the way it was, by them.
            if let Some(http) = was.as_ref().and_then(|w| w.http.clone()) {
                return out::fail(
                    json,
                    format!(
                        "the cms host is stopped; it served HTTP on {http}: start it again with \
                         `cms serve --http {http}` (it runs in the foreground)"
                    ),
                );
            }
            return match App::open(cfg.clone(), HostUse::Start) {
                Ok(app) => {
                    let info = app.block_on(crate::host::probe(&cfg)).ok().flatten();
                    if let Some(info) = info {
                        if !json {
                            let before = was.map(|w| format!(" (was pid {})", w.pid));
                            errln!("cms host restarted{}", before.unwrap_or_default());
                        }
                        show(&info, json)
                    } else {
                        out::fail(json, "the new cms host did not answer")
                    }
                }
                Err(e) => out::fail(json, e),
            };
        }
    };
    result.unwrap_or_else(|e| out::fail(json, e))
}

/// Print what the host says about itself.
fn show(info: &HostInfo, json: bool) -> i32 {
    if json {
        let mut v = serde_json::to_value(info).unwrap_or_default();
        v["running"] = true.into();
        let _ = outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return exit::OK;
    }
    let up = (crate::engine::events::now_ms() - info.started_at).max(0) as u64 / 1000;
    let idle = match info.idle_exit_secs {
        Some(s) => format!(
            "after {} with nothing to do",
            humantime::format_duration(Duration::from_secs(s as u64))
        ),
        None => "never on its own".into(),
    };
    let live = if info.live.is_empty() {
        "none".to_string()
    } else {
        format!("{} ({})", info.live.len(), info.live.join(", "))
    };
    let _ = outln!("cms host      pid {}, version {}", info.pid, info.version);
    let _ = outln!("home          {}", info.home.display());
    let _ = outln!("socket        {}", info.socket.display());
    if let Some(http) = &info.http {
        let _ = outln!("http          http://{http}/mcp (MCP), http://{http}/ (dashboard)");
    }
    let _ = outln!(
        "up            {}",
        humantime::format_duration(Duration::from_secs(up))
    );
    let _ = outln!("live          {live}");
    let _ = outln!("clients       {} (this one included)", info.clients);
    let cap = &info.capacity;
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "no limit".into());
    let _ = outln!(
        "caps          max_live {}, max_turns {}, {} waiting",
        or_none(cap.max_live.map(|n| n.to_string())),
        or_none(cap.max_turns.map(|n| n.to_string())),
        info.waiting
    );
    if cap.daily_usd.is_some() || cap.total_usd.is_some() {
        let _ = outln!(
            "budgets       daily {}, total {}",
            or_none(cap.daily_usd.map(|u| format!("${u:.2}"))),
            or_none(cap.total_usd.map(|u| format!("${u:.2}")))
        );
    }
    let _ = outln!("claude        {}", info.claude_bin.display());
    let _ = outln!("exits         {idle}");
    exit::OK
}

fn said(json: bool, was: Option<&HostInfo>, verb: &str, cfg: &EngineConfig) {
    let _ = match (json, was) {
        (true, Some(w)) => outln!("{}", serde_json::json!({ verb: true, "pid": w.pid })),
        (true, None) => outln!("{}", serde_json::json!({ verb: false, "running": false })),
        (false, Some(w)) => outln!(
            "cms host (pid {}) {verb}; its sessions are stopped and resume on their next message",
            w.pid
        ),
        (false, None) => outln!("no cms host runs for {}", cfg.home.display()),
    };
}

//! `cms script FILE.lua [args...]`: run a Lua plan with the `cms` module. Under
//! `--json`, stdout holds the script's return value, or `{"error": ...}`.

use super::args::ScriptArgs;
use super::out::{self, outln};
use crate::app::runtime::shutdown_signal;
use crate::app::{exit, App, HostUse, LuaApp};
use crate::engine::{EngineConfig, Sessions};
use crate::lua::events::stop_started;
use crate::lua::{pretty::pretty, LuaHost, ScriptError};
use crate::sandbox::limits::{self, is_interrupted};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a script stopped by a signal may take to unwind before the process
/// stops its sessions and exits anyway (a script stuck inside one C function).
const UNWIND_GRACE: Duration = Duration::from_millis(700);

/// On Ctrl-C or SIGTERM, stop the script's Lua code wherever it is (a busy loop
/// included: the instruction hook sees the flag) and resolve the returned
/// receiver, which wakes a script that was waiting. Runs on the runtime's worker
/// threads, so a script spinning on this thread does not delay it.
fn on_signal_interrupt(host: &LuaHost, manager: &Arc<dyn Sessions>) -> oneshot::Receiver<()> {
    let started = host.started();
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = oneshot::channel();
    let flag = limits::interrupter(host.lua());
    let manager = manager.clone();
    // Registered now, before the script runs, so no early signal is missed.
    let signals =
        signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
    tokio::spawn(async move {
        match signals {
            Ok((mut int, mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => shutdown_signal().await,
        }
        if let Some(flag) = &flag {
            flag.store(true, Ordering::Relaxed);
        }
        let _ = tx.send(());
        tokio::time::sleep(UNWIND_GRACE).await;
        manager.kill_all().await;
        stop_started(manager.as_ref(), &started).await;
        std::process::exit(exit::interrupted("the script"));
    });
    rx
}

/// Run the script; returns the exit code (0, 1 on error, the code of `os.exit`, 130
/// on Ctrl-C or SIGTERM).
pub fn run(cfg: EngineConfig, args: ScriptArgs, json: bool, want: HostUse) -> i32 {
    let app = match App::open(cfg, want) {
        Ok(app) => app,
        Err(e) => return out::fail(json, e),
    };
    let manager = app.sessions().clone();
    app.run_local(async {
        let LuaApp {
            host,
            policy: _policy,
        } = match app.lua(args.lua.host_options(args.args.clone())) {
            Ok(h) => h,
            Err(e) => return out::fail(json, e),
        };
        if json {
            if let Err(e) = host.print_to_stderr() {
                return out::fail(json, format!("cannot set up Lua: {e}"));
            }
        }
        let interrupted = on_signal_interrupt(&host, &manager);
        let outcome = tokio::select! {
            r = host.run_file(&args.file) => (!is_interrupted(host.lua())).then_some(r),
            _ = interrupted => None,
        };
        let code = match outcome {
            None => {
                manager.kill_all().await;
                host.stop_started().await;
                if json {
                    let _ = outln!(
                        "{}",
                        serde_json::json!({ "error": exit::interrupted_text("the script") })
                    );
                }
                return exit::interrupted("the script");
            }
            Some(Ok(value)) => {
                if json {
                    match serde_json::to_string_pretty(&value) {
                        Ok(text) => {
                            let _ = outln!("{text}");
                        }
                        Err(e) => {
                            host.stop_started().await;
                            manager.shutdown().await;
                            return out::fail(
                                json,
                                format!("the script's return value is not JSON: {e}"),
                            );
                        }
                    }
                } else if !value.is_nil() {
                    let _ = outln!("{}", pretty(&value));
                }
                exit::OK
            }
            Some(Err(ScriptError::Exit(code))) => code,
            Some(Err(e)) => out::fail(json, e),
        };
        // Sessions the script started end with it, unless it said `keep = true`.
        host.stop_started().await;
        manager.shutdown().await;
        code
    })
}

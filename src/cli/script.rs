//! `cms script FILE.lua [args...]`: run a Lua plan with the `cms` module.

use super::args::ScriptArgs;
use super::commands::shutdown_signal;
use super::out::{errln, outln};
use crate::engine::{EngineConfig, Manager};
use crate::lua::{pretty::pretty, LuaHost, ScriptError};
use crate::sandbox::limits::{self, is_interrupted};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Load the safety policy (watched for edits) onto `manager` and start a Lua host
/// with it: how every Lua frontend begins. Keep the returned `Attached` alive.
pub(super) fn start_host(
    manager: &std::sync::Arc<Manager>,
    mut opts: crate::lua::HostOptions,
) -> Result<(LuaHost, crate::policy::Attached), String> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let attached = crate::policy::attach(manager, &cwd)
        .map_err(|e| format!("cannot load the safety policy: {e}"))?;
    opts.policy = Some(attached.service.clone());
    let host = LuaHost::new(manager.clone(), opts).map_err(|e| format!("cannot start Lua: {e}"))?;
    Ok((host, attached))
}

const INTERRUPTED: &str = "interrupted: every session the script started was stopped";

/// How long a script stopped by a signal may take to unwind before the process
/// stops its sessions and exits anyway (a script stuck inside one C function).
const UNWIND_GRACE: Duration = Duration::from_millis(700);

/// On Ctrl-C or SIGTERM, stop the script's Lua code wherever it is (a busy loop
/// included: the instruction hook sees the flag) and resolve the returned
/// receiver, which wakes a script that was waiting. Runs on the runtime's worker
/// threads, so a script spinning on this thread does not delay it.
fn on_signal_interrupt(host: &LuaHost, manager: &Arc<Manager>) -> oneshot::Receiver<()> {
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
        errln!("Error: {INTERRUPTED}");
        std::process::exit(130);
    });
    rx
}

/// Run the script; returns the exit code (0, 1 on error, the code of `os.exit`, 130
/// on Ctrl-C or SIGTERM).
pub fn run(cfg: EngineConfig, args: ScriptArgs, json: bool) -> i32 {
    let rt = match super::commands::init_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("Error: {e}");
            return 1;
        }
    };
    let local = tokio::task::LocalSet::new();
    rt.block_on(local.run_until(async move {
        let manager = match Manager::new(cfg) {
            Ok(m) => m,
            Err(e) => {
                errln!("Error: {e}");
                return 1;
            }
        };
        let (host, _attached) = match start_host(&manager, args.lua.host_options(args.args.clone()))
        {
            Ok(h) => h,
            Err(e) => {
                errln!("Error: {e}");
                return 1;
            }
        };
        if json {
            if let Err(e) = host.print_to_stderr() {
                errln!("Error: cannot set up Lua: {e}");
                return 1;
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
                errln!("Error: {INTERRUPTED}");
                return 130;
            }
            Some(Ok(value)) => {
                if json {
                    match serde_json::to_string_pretty(&value) {
                        Ok(text) => {
                            let _ = outln!("{text}");
                        }
                        Err(e) => {
                            errln!("Error: the script's return value is not JSON: {e}");
                            manager.shutdown().await;
                            return 1;
                        }
                    }
                } else if !value.is_nil() {
                    let _ = outln!("{}", pretty(&value));
                }
                0
            }
            Some(Err(ScriptError::Exit(code))) => code,
            Some(Err(e)) => {
                errln!("Error: {e}");
                1
            }
        };
        manager.shutdown().await;
        code
    }))
}

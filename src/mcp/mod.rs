//! `cms mcp`: an MCP server over stdio, so Claude Code (or any MCP client) can
//! spawn and steer sessions through native tools. Built on rmcp, the official Rust
//! SDK. stdout carries only the protocol; logs go to stderr.
//!
//! - [`server`]: the handler: routes the seed's 17 tools and plugin tools;
//! - `session_tools`, `task_tools`: the tools themselves; `gates`: what a caller may
//!   start and steer;
//! - [`tools`]: their schemas and argument types;
//! - [`stdio`]: the line filter that answers malformed input with JSON-RPC errors;
//! - [`http`]: the same server over streamable HTTP (rmcp's tower service), for the
//!   host's HTTP face.

mod gates;
pub mod http;
mod logging;
mod resources;
pub mod server;
mod session_tools;
pub mod stdio;
mod task_tools;
pub mod tools;

use crate::app::runtime::{errln, shutdown_signal};
use crate::app::{exit, App, HostUse};
use crate::engine::EngineConfig;
use crate::engine::Sessions;
use crate::lua::worker::LuaWorker;
use crate::policy::Attached;
use rmcp::ServiceExt;
use std::io::IsTerminal;
use std::sync::Arc;

/// The MCP server over `manager`, its calls checked by `attached`'s policy, its
/// plugin tools loaded (a plugin that fails is logged and left out) and reloaded
/// when their files change, clients told. Call it inside the runtime of `handle`.
pub fn build(
    handle: tokio::runtime::Handle,
    manager: Arc<dyn Sessions>,
    attached: &Attached,
) -> Result<server::CmsServer, String> {
    let service = attached.service.clone();
    let (lua, plugin_tools, errors) =
        LuaWorker::start(handle.clone(), manager.clone(), service.clone())
            .map_err(|e| e.to_string())?;
    for e in errors {
        tracing::error!("plugin disabled: {e}");
    }
    let server = server::CmsServer::new(manager, lua, plugin_tools, Some(service));
    // Plugin edits: plugin tools reload and clients hear about it.
    let notify = server.clone();
    attached.on_reload(move |_| {
        let s = notify.clone();
        handle.spawn(async move { s.plugins_changed().await });
    });
    Ok(server)
}

/// Serve MCP on stdin/stdout until the client goes away or a signal arrives; every
/// session the server started is then stopped (resumable). Returns the exit code:
/// 0 when the client went away, 130 on Ctrl-C or SIGTERM.
pub fn run(cfg: EngineConfig, want: HostUse) -> i32 {
    if std::io::stdin().is_terminal() {
        // A person typed `cms mcp`: say what it is and how it is meant to be used.
        errln!(
            "cms mcp speaks MCP (JSON-RPC) on stdin/stdout for Claude Code or another MCP client; \
             register it with `cms setup` (Ctrl-D or Ctrl-C ends it)"
        );
    }
    let app = match App::open(cfg, want) {
        Ok(app) => app,
        Err(e) => return exit::fail(e),
    };
    let handle = app.handle();
    let manager = app.sessions().clone();
    let cwd = std::env::current_dir().unwrap_or_default();
    // Every session the server starts is checked against the policy (the MCP
    // ceiling; guarded sessions through it); script edits reload it.
    let attached = match app.guard(&cwd) {
        Ok(a) => a,
        Err(e) => return exit::fail(e),
    };
    let code = app.block_on(async {
        let server = match build(handle, manager.clone(), &attached) {
            Ok(s) => s,
            Err(e) => return exit::fail(e),
        };
        let transport = stdio::filtered();
        let running = match server.serve(transport).await {
            Ok(r) => r,
            Err(e) => {
                manager.shutdown().await;
                return exit::fail(format!("MCP start failed: {e}"));
            }
        };
        let code = tokio::select! {
            r = running.waiting() => {
                if let Err(e) = r {
                    tracing::warn!("MCP session ended: {e}");
                }
                exit::OK
            }
            _ = shutdown_signal() => exit::INTERRUPTED,
        };
        manager.shutdown().await;
        code
    });
    // The stdin reader may be blocked in a read that never returns (the client
    // keeps the pipe open): do not wait for it.
    app.shutdown_background();
    code
}

//! `cms mcp`: an MCP server over stdio, so Claude Code (or any MCP client) can
//! spawn and steer sessions through native tools. Built on rmcp, the official Rust
//! SDK. stdout carries only the protocol; logs go to stderr.
//!
//! - [`server`]: the handler: the seed's 17 tools and plugin tools;
//! - [`tools`]: their schemas and argument types;

//! - [`stdio`]: the line filter that answers malformed input with JSON-RPC errors.

pub mod server;
pub mod stdio;
pub mod tools;

use crate::engine::{EngineConfig, Manager};
use rmcp::ServiceExt;

/// Serve MCP on stdin/stdout until the client goes away or a signal arrives; every
/// session the server started is then stopped (resumable). Returns the exit code:
/// 0 when the client went away, 130 on Ctrl-C or SIGTERM.
pub fn run(cfg: EngineConfig) -> i32 {
    let rt = match crate::app::runtime::init_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            crate::app::runtime::errln!("Error: {e}");
            return 1;
        }
    };
    let handle = rt.handle().clone();
    let code = rt.block_on(async move {
        let manager = match Manager::new(cfg) {
            Ok(m) => m,
            Err(e) => {
                crate::app::runtime::errln!("Error: {e}");
                return 1;
            }
        };
        let cwd = std::env::current_dir().unwrap_or_default();
        let (service, _) = match crate::policy::PolicyService::start(
            crate::policy::Layers::standard(&cwd),
            crate::policy::DECISION_LIMIT,
        ) {
            Ok(s) => s,
            Err(e) => {
                crate::app::runtime::errln!("Error: cannot load the safety policy: {e}");
                return 1;
            }
        };
        manager.set_policy(std::sync::Arc::new(crate::policy::LuaPolicy(
            service.clone(),
        )));
        let (lua, plugin_tools, errors) = match crate::lua::worker::LuaWorker::start(
            handle.clone(),
            manager.clone(),
            service.clone(),
        ) {
            Ok(w) => w,
            Err(e) => {
                crate::app::runtime::errln!("Error: {e}");
                return 1;
            }
        };
        for e in errors {
            tracing::error!("plugin disabled: {e}");
        }
        let server =
            server::CmsServer::new(manager.clone(), lua, plugin_tools, Some(service.clone()));
        // Script and plugin edits: the policy reloads; plugin tools reload and
        // clients hear about it.
        let notify = server.clone();
        let _watch = crate::policy::watch::watch(service.clone(), move |_| {
            let s = notify.clone();
            handle.spawn(async move { s.plugins_changed().await });
        })
        .map_err(|e| tracing::warn!("script changes will not be picked up: {e}"))
        .ok();
        let transport = stdio::filtered();
        let running = match server.serve(transport).await {
            Ok(r) => r,
            Err(e) => {
                crate::app::runtime::errln!("Error: MCP start failed: {e}");
                manager.shutdown().await;
                return 1;
            }
        };
        let code = tokio::select! {
            r = running.waiting() => {
                if let Err(e) = r {
                    tracing::warn!("MCP session ended: {e}");
                }
                0
            }
            _ = crate::app::runtime::shutdown_signal() => 130,
        };
        manager.shutdown().await;
        code
    });
    // The stdin reader may be blocked in a read that never returns (the client
    // keeps the pipe open): do not wait for it.
    rt.shutdown_background();
    code
}

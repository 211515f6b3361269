//! The MCP server's Lua threads. Lua states are single-threaded while the MCP
//! handler runs on the runtime's worker threads, so everything that needs Lua is
//! sent here as a job and answered on a oneshot channel.
//!
//! - Delegations (`delegate_task`, `continue_task`) and plugin (re)loads run on one
//!   Lua thread, concurrently as local tasks: one long `delegate_task` does not hold
//!   up another, and each slice of Lua between two waits is limited
//!   ([`crate::delegate::STRATEGY_SLICE`]), so a strategy that spins is stopped.
//! - Each plugin tool call runs on a thread of its own, in a fresh Lua state with
//!   only its plugin loaded: a tool that spins until its limit
//!   ([`tool_limit`], default 60 s) holds up nothing else. At most
//!   [`MAX_TOOL_THREADS`] run at once; more calls wait for a free slot.

use crate::delegate::strategy_sliced;
use crate::delegate::{self, DelegateOptions, DelegateResult};
use crate::engine::Sessions;
use crate::lua::{HostOptions, LuaHost};
use crate::plugins::{self, PluginSet};
use crate::policy::PolicyService;
use crate::sandbox::scripts::Source;
use mlua::{Lua, LuaSerdeExt};
use serde::Serialize;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A plugin tool as the MCP server lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolInfo {
    pub plugin: String,
    pub name: String,
    pub description: String,
    pub input_schema: serde_json::Value,
}

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Job {
    Delegate(Box<DelegateOptions>, Reply<DelegateResult>),
    Continue(String, String, Reply<DelegateResult>),
    Tool(String, serde_json::Value, Reply<serde_json::Value>),
    Reload(oneshot::Sender<(Vec<ToolInfo>, Vec<String>)>),
}

#[derive(Clone)]
pub struct LuaWorker {
    tx: mpsc::UnboundedSender<Job>,
}

/// Most plugin tool calls running at once (more wait for a free slot).
const MAX_TOOL_THREADS: usize = 16;

/// Longest a plugin tool may run: `CMS_PLUGIN_TOOL_TIMEOUT` seconds, default 60.
pub fn tool_limit() -> Duration {
    std::env::var("CMS_PLUGIN_TOOL_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(60))
}

impl LuaWorker {
    /// Start the thread; returns the worker, the plugin tools, and plugin errors.
    pub fn start(
        handle: tokio::runtime::Handle,
        manager: Arc<dyn Sessions>,
        policy: Arc<PolicyService>,
    ) -> Result<(LuaWorker, Vec<ToolInfo>, Vec<String>), String> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let tool_handle = handle.clone();
        let tool_slots = Arc::new(tokio::sync::Semaphore::new(MAX_TOOL_THREADS));
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("cms-mcp-lua".into())
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                let handle = tool_handle;
                handle.clone().block_on(local.run_until(async move {
                    let opts = HostOptions {
                        policy: Some(policy.clone()),
                        may_approve: mcp_may_approve(),
                        ..HostOptions::default()
                    };
                    let host = match LuaHost::new(manager.clone(), opts) {
                        Ok(h) => h,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("cannot start Lua: {e}")));
                            return;
                        }
                    };
                    let lua = host.lua().clone();
                    // The host loaded the plugins (for their strategies); serve the same set.
                    let loaded = lua.app_data_ref::<PluginSet>().map(|s| s.clone());
                    let set = Rc::new(RefCell::new(match loaded {
                        Some(set) => Loaded {
                            sources: plugins::discover(policy.layers()),
                            set,
                        },
                        None => load_plugins(&lua, &policy),
                    }));
                    let _ = ready_tx.send(Ok(tool_list(&set.borrow().set)));
                    while let Some(job) = rx.recv().await {
                        let (lua, manager, policy, set) =
                            (lua.clone(), manager.clone(), policy.clone(), set.clone());
                        match job {
                            Job::Delegate(opts, reply) => {
                                tokio::task::spawn_local(async move {
                                    let run = async {
                                        delegate::delegate(&lua, &manager, &policy, *opts, None)
                                            .await
                                            .map_err(|e| e.to_string())
                                    };
                                    let _ = reply.send(strategy_sliced(&lua, run).await);
                                });
                            }
                            Job::Continue(name, message, reply) => {
                                tokio::task::spawn_local(async move {
                                    let run = async {
                                        delegate::continue_task(
                                            &lua, &manager, &policy, &name, &message, None,
                                        )
                                        .await
                                        .map_err(|e| e.to_string())
                                    };
                                    let _ = reply.send(strategy_sliced(&lua, run).await);
                                });
                            }
                            Job::Tool(name, args, reply) => {
                                let source = set.borrow().source_of(&name);
                                let Some(source) = source else {
                                    let _ = reply.send(Err(format!("unknown tool: {name}")));
                                    continue;
                                };
                                let (handle, slots) = (handle.clone(), tool_slots.clone());
                                tokio::task::spawn_local(async move {
                                    let Ok(slot) = slots.acquire_owned().await else {
                                        return;
                                    };
                                    spawn_tool(
                                        handle, manager, policy, source, name, args, reply, slot,
                                    );
                                });
                            }
                            Job::Reload(reply) => {
                                let fresh = load_plugins(&lua, &policy);
                                let info = tool_list(&fresh.set);
                                *set.borrow_mut() = fresh;
                                let _ = reply.send(info);
                            }
                        }
                    }
                    drop(host);
                }));
            })
            .map_err(|e| format!("cannot start the Lua thread: {e}"))?;
        let (tools, errors) = ready_rx
            .recv()
            .map_err(|_| "the Lua thread ended".to_string())??;
        Ok((LuaWorker { tx }, tools, errors))
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Job) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| "the Lua thread has stopped".to_string())?;
        rx.await
            .map_err(|_| "the Lua thread dropped the call".to_string())?
    }

    pub async fn delegate(&self, opts: DelegateOptions) -> Result<DelegateResult, String> {
        self.ask(|tx| Job::Delegate(Box::new(opts), tx)).await
    }

    pub async fn continue_task(
        &self,
        name: String,
        message: String,
    ) -> Result<DelegateResult, String> {
        self.ask(|tx| Job::Continue(name, message, tx)).await
    }

    pub async fn call_tool(
        &self,
        name: String,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        self.ask(|tx| Job::Tool(name, args, tx)).await
    }

    /// Load the plugins again (a file changed); returns the tools and errors.
    pub async fn reload(&self) -> Result<(Vec<ToolInfo>, Vec<String>), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Job::Reload(tx))
            .map_err(|_| "the Lua thread has stopped".to_string())?;
        rx.await
            .map_err(|_| "the Lua thread dropped the call".to_string())
    }
}

fn load_plugins(lua: &Lua, policy: &PolicyService) -> Loaded {
    let sources = plugins::discover(policy.layers());
    let set = plugins::load(lua, &sources);
    lua.set_app_data(set.clone());
    Loaded { sources, set }
}

fn tool_list(set: &PluginSet) -> (Vec<ToolInfo>, Vec<String>) {
    let tools = set
        .tools
        .iter()
        .map(|t| ToolInfo {
            plugin: t.plugin.clone(),
            name: t.name.clone(),
            description: t.description.clone(),
            input_schema: t.input_schema.clone(),
        })
        .collect();
    (tools, set.errors.clone())
}

/// The plugins served, and the sources they were loaded from.
struct Loaded {
    sources: Vec<(String, Source)>,
    set: PluginSet,
}

impl Loaded {
    /// The plugin (folder and source) that defines tool `name`.
    fn source_of(&self, name: &str) -> Option<(String, Source)> {
        let plugin = self
            .set
            .plugins
            .iter()
            .find(|p| p.tools.iter().any(|t| t == name))?;
        self.sources
            .iter()
            .find(|(_, src)| src.origin == plugin.origin)
            .cloned()
    }
}

/// Run one plugin tool call on a thread of its own, in a fresh Lua state with only
/// its plugin loaded, and answer on `reply`. The thread holds `slot` while it runs.
#[allow(clippy::too_many_arguments)]
fn spawn_tool(
    handle: tokio::runtime::Handle,
    manager: Arc<dyn Sessions>,
    policy: Arc<PolicyService>,
    source: (String, Source),
    name: String,
    args: serde_json::Value,
    reply: Reply<serde_json::Value>,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let spawned = std::thread::Builder::new()
        .name("cms-mcp-tool".into())
        .spawn(move || {
            let _slot = slot;
            let local = tokio::task::LocalSet::new();
            let r = handle.block_on(local.run_until(async move {
                let opts = HostOptions {
                    policy: Some(policy),
                    plugins: false,
                    may_approve: mcp_may_approve(),
                    ..HostOptions::default()
                };
                let host =
                    LuaHost::new(manager, opts).map_err(|e| format!("cannot start Lua: {e}"))?;
                let set = plugins::load(host.lua(), std::slice::from_ref(&source));
                if let Some(e) = set.errors.first() {
                    return Err(e.clone());
                }
                host.lua().set_app_data(set.clone());
                call_tool(host.lua(), &set, &name, args).await
            }));
            let _ = reply.send(r);
        });
    if let Err(e) = spawned {
        // The reply went with the closure: the caller hears that the call was dropped.
        tracing::error!("cannot start a thread for a plugin tool: {e}");
    }
}

async fn call_tool(
    lua: &Lua,
    set: &PluginSet,
    name: &str,
    args: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let tool = set
        .tools
        .iter()
        .find(|t| t.name == name)
        .cloned()
        .ok_or_else(|| format!("unknown tool: {name}"))?;
    let args = crate::sandbox::convert::to_lua(lua, &args).map_err(|e| e.to_string())?;
    let limit = tool_limit();
    // Each slice of the handler's Lua code runs under the deadline (a handler
    // spinning without yielding is stopped, coroutines included); the timeout
    // catches one that waits too long.
    let thread = lua
        .create_thread(tool.handler.clone())
        .map_err(|e| e.to_string())?;
    let call = crate::sandbox::limits::limited(
        lua,
        limit,
        format!(
            "the tool ran past its time limit of {}s (an endless loop?)",
            limit.as_secs_f64()
        ),
        thread.into_async::<mlua::Value>(args),
    );
    let value = match tokio::time::timeout(limit, call).await {
        Err(_) => {
            return Err(format!(
                "plugin {} tool {name} took longer than {}s",
                tool.plugin,
                limit.as_secs_f64()
            ))
        }
        Ok(Err(e)) => {
            return Err(format!(
                "plugin {} tool {name} failed: {}",
                tool.plugin,
                crate::sandbox::error_text(&e)
            ))
        }
        Ok(Ok(v)) => v,
    };
    lua.from_value::<serde_json::Value>(value).map_err(|e| {
        format!(
            "plugin {} tool {name} returned something that is not JSON: {e}",
            tool.plugin
        )
    })
}

/// Whether the user let this MCP server's client approve tool calls: the Lua it runs
/// (plugin tools, delegations) for that client may then too, and not otherwise.
fn mcp_may_approve() -> bool {
    std::env::var(crate::engine::approval::MAY_APPROVE_ENV).as_deref() == Ok("1")
        && crate::policy::isolation::inherited().is_none()
}

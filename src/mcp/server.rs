//! The MCP server (rmcp): the seed's 17 tools over the engine, plus plugin tools.
//! Tool failures come back as tool results with `isError` and a message that says
//! what to do; only unroutable requests are JSON-RPC errors.

use super::tools::{self, parse};
use crate::delegate::DelegateOptions;
use crate::engine::Guard;
use crate::engine::{EventKind, Manager, SessionOptions, SpawnRequest, SpawnSpec};
use crate::lua::worker::{LuaWorker, ToolInfo};
use crate::policy::spawn_gate::{self, Caller, SpawnAsk};
use crate::policy::PolicyService;
use crate::views::{record_json, turn_json};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ProgressToken, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{Peer, RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

#[derive(Clone)]
pub struct CmsServer {
    inner: Arc<Inner>,
}

struct Inner {
    manager: Arc<Manager>,
    lua: LuaWorker,
    plugin_tools: RwLock<Vec<ToolInfo>>,
    builtin: Vec<Tool>,
    peers: Mutex<Vec<Peer<RoleServer>>>,
    /// Results of work started with `background: true`, by session name.
    background: Mutex<HashMap<String, Value>>,
    /// The safety policy, asked (`on_spawn`) what a caller may start.
    policy: Option<Arc<PolicyService>>,
    /// The guard of the guarded session this server runs inside, if any: what it
    /// starts is at least as guarded.
    parent: Option<Guard>,
}

fn tool(name: &str, description: &str, schema: Value) -> Tool {
    let schema = match schema {
        Value::Object(m) => m,
        _ => Default::default(),
    };
    Tool::new(name.to_string(), description.to_string(), Arc::new(schema))
}

impl CmsServer {
    pub fn new(
        manager: Arc<Manager>,
        lua: LuaWorker,
        plugin_tools: Vec<ToolInfo>,
        policy: Option<Arc<PolicyService>>,
    ) -> CmsServer {
        let builtin = tools::builtin()
            .into_iter()
            .map(|(n, d, s)| tool(n, d, s))
            .collect();
        CmsServer {
            inner: Arc::new(Inner {
                manager,
                lua,
                plugin_tools: RwLock::new(plugin_tools),
                builtin,
                peers: Mutex::new(Vec::new()),
                background: Mutex::new(HashMap::new()),
                policy,
                parent: crate::policy::isolation::inherited(),
            }),
        }
    }

    /// Plugins changed on disk: load them again and, if the tool list changed, tell
    /// every client (`notifications/tools/list_changed`).
    pub async fn plugins_changed(&self) {
        let (tools, errors) = match self.inner.lua.reload().await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("cannot reload plugins: {e}");
                return;
            }
        };
        for e in &errors {
            tracing::error!("plugin disabled: {e}");
        }
        let changed = {
            let mut current = self
                .inner
                .plugin_tools
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let changed = *current != tools;
            *current = tools;
            changed
        };
        if changed {
            let peers: Vec<_> = self
                .inner
                .peers
                .lock()
                .map(|p| p.clone())
                .unwrap_or_default();
            for peer in peers {
                if let Err(e) = peer.notify_tool_list_changed().await {
                    tracing::debug!("could not send tools/list_changed: {e}");
                }
            }
            tracing::info!("plugin tools changed; clients notified");
        }
    }

    fn all_tools(&self) -> Vec<Tool> {
        let mut all = self.inner.builtin.clone();
        if let Ok(plugins) = self.inner.plugin_tools.read() {
            all.extend(
                plugins
                    .iter()
                    .map(|t| tool(&t.name, &t.description, t.input_schema.clone())),
            );
        }
        all
    }

    async fn dispatch(
        &self,
        name: &str,
        args: Value,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Value, String> {
        let m = &self.inner.manager;
        let err = |e: crate::engine::EngineError| engine_error(&e);
        match name {
            "spawn_session" => {
                let spec: SpawnSpec = parse(name, &args)?;
                let req = self.gate_session(spec.into_request(false).map_err(err)?)?;
                let (rec, r) = m.spawn(req).await.map_err(err)?;
                Ok(turn_json(&rec, Some(&r)))
            }
            "send_message" => {
                let a: tools::SendArgs = parse(name, &args)?;
                self.gate_steer(&a.name)?;
                let r = m
                    .send(
                        &a.name,
                        &a.message,
                        crate::engine::seconds(a.timeout).map_err(err)?,
                    )
                    .await
                    .map_err(err)?;
                Ok(turn_json(&m.status(&a.name).map_err(err)?, Some(&r)))
            }
            "resume_session" => {
                let a: tools::ResumeArgs = parse(name, &args)?;
                self.gate_steer(&a.name)?;
                let (rec, r) = m
                    .resume(&a.name, a.message.as_deref(), None)
                    .await
                    .map_err(err)?;
                Ok(turn_json(&rec, r.as_ref()))
            }
            "pause_session" => {
                let a: tools::NameArgs = parse(name, &args)?;
                Ok(record_json(&m.pause(&a.name).await.map_err(err)?))
            }
            "fork_session" => {
                let a: tools::ForkArgs = parse(name, &args)?;
                self.gate_steer(&a.name)?;
                let overrides = SessionOptions {
                    model: a.model,
                    ..SessionOptions::default()
                };
                let (rec, r) = m
                    .fork(&a.name, &a.new_name, a.message.as_deref(), overrides, None)
                    .await
                    .map_err(err)?;
                Ok(turn_json(&rec, r.as_ref()))
            }
            "stop_session" => {
                let a: tools::NameArgs = parse(name, &args)?;
                Ok(record_json(&m.stop(&a.name).await.map_err(err)?))
            }
            "kill_session" => {
                let a: tools::NameArgs = parse(name, &args)?;
                Ok(record_json(&m.kill(&a.name).await.map_err(err)?))
            }
            "get_session_status" => {
                let a: tools::NameArgs = parse(name, &args)?;
                let task = self
                    .inner
                    .background
                    .lock()
                    .ok()
                    .and_then(|b| b.get(&a.name).cloned());
                let mut v = match (m.status(&a.name), &task) {
                    (Ok(rec), _) => record_json(&rec),
                    // Background work that has not created its session yet.
                    (Err(crate::engine::EngineError::NotFound(_)), Some(_)) => {
                        json!({ "name": a.name, "state": "starting" })
                    }
                    (Err(e), _) => return Err(err(e)),
                };
                if let Some(task) = task {
                    v["background"] = task;
                }
                Ok(v)
            }
            "get_last_output" => {
                let a: tools::NameArgs = parse(name, &args)?;
                Ok(json!({ "name": a.name, "output": m.output(&a.name).map_err(err)? }))
            }
            "list_sessions" => {
                let a: tools::ListArgs = parse(name, &args)?;
                let recs = m.list().map_err(err)?;
                let list: Vec<Value> = recs
                    .iter()
                    .filter(|r| a.status.is_none_or(|s| r.state == s))
                    .map(record_json)
                    .collect();
                Ok(json!({ "server_version": env!("CARGO_PKG_VERSION"), "sessions": list }))
            }
            "get_history" => {
                let a: tools::HistoryArgs = parse(name, &args)?;
                let mut h = m.history(&a.name).map_err(err)?;
                if let Some(n) = a.limit {
                    let skip = h.len().saturating_sub(n);
                    h.drain(..skip);
                }
                Ok(json!({ "name": a.name, "history": crate::views::history_json(&h) }))
            }
            "delete_session" => {
                let a: tools::NameArgs = parse(name, &args)?;
                m.delete(&a.name).await.map_err(err)?;
                Ok(json!({ "name": a.name, "deleted": true }))
            }
            "delegate_task" => {
                let mut args = args;
                let background = take_bool(&mut args, "background");
                let opts = self.gate_delegate(parse(name, &args)?)?;
                let session = opts.name.clone();
                let lua = self.inner.lua.clone();
                self.run_long(&session, background, ctx, async move {
                    lua.delegate(opts).await.map(|r| json!(r))
                })
                .await
            }
            "continue_task" => {
                let a: tools::ContinueArgs = parse(name, &args)?;
                self.gate_steer(&a.name)?;
                let lua = self.inner.lua.clone();
                let (n, msg) = (a.name.clone(), a.message);
                self.run_long(&a.name, a.background, ctx, async move {
                    lua.continue_task(n, msg).await.map(|r| json!(r))
                })
                .await
            }
            "finish_task" => {
                let a: tools::NameArgs = parse(name, &args)?;
                crate::delegate::finish(m, &a.name)
                    .await
                    .map(|r| json!(r))
                    .map_err(|e| e.to_string())
            }
            "abort_task" => {
                let a: tools::NameArgs = parse(name, &args)?;
                crate::delegate::abort(m, &a.name)
                    .await
                    .map(|r| json!(r))
                    .map_err(|e| e.to_string())
            }
            "batch_spawn" => {
                let a: tools::BatchArgs = parse(name, &args)?;
                crate::engine::manager::check_batch(&a.sessions).map_err(err)?;
                let reqs = a
                    .sessions
                    .into_iter()
                    .map(|s| s.into_request(true))
                    .collect::<Result<Vec<SpawnRequest>, _>>()
                    .map_err(err)?
                    .into_iter()
                    .map(|r| self.gate_session(r))
                    .collect::<Result<Vec<SpawnRequest>, _>>()?;
                let names: Vec<String> = reqs.iter().map(|r| r.name.clone()).collect();
                let (manager, token, peer) = (m.clone(), progress_token(ctx), ctx.peer.clone());
                let concurrency = m.config().batch_concurrency;
                let work = async move {
                    let total = reqs.len();
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
                    let notifier = token.map(|token| {
                        tokio::spawn(async move {
                            while let Some((done, name)) = rx.recv().await {
                                let p = ProgressNotificationParam::new(token.clone(), done as f64)
                                    .with_total(total as f64)
                                    .with_message(format!("{name} done"));
                                let _ = peer.notify_progress(p).await;
                            }
                        })
                    });
                    let outcomes = manager
                        .batch(reqs, concurrency, |p| {
                            let _ = tx.send((p.done, p.outcome.name.to_string()));
                        })
                        .await;
                    drop(tx);
                    if let Some(n) = notifier {
                        let _ = n.await;
                    }
                    Ok(json!(outcomes
                        .iter()
                        .map(|o| json!({ "name": o.name, "ok": o.ok, "response": o.response, "error": o.error }))
                        .collect::<Vec<_>>()))
                };
                if a.background {
                    for n in &names {
                        self.remember(n, json!({ "status": "running", "tool": "batch_spawn" }));
                    }
                    let me = self.clone();
                    tokio::spawn(async move {
                        let result: Result<Value, String> = work.await;
                        if let Ok(Value::Array(items)) = &result {
                            for item in items {
                                if let Some(n) = item["name"].as_str() {
                                    me.remember(n, json!({ "status": "done", "tool": "batch_spawn", "result": item }));
                                }
                            }
                        }
                    });
                    Ok(
                        json!({ "status": "started", "background": true, "sessions": names, "poll": "get_session_status" }),
                    )
                } else {
                    work.await
                }
            }
            other => {
                let known = self
                    .inner
                    .plugin_tools
                    .read()
                    .map(|t| t.iter().any(|t| t.name == other))
                    .unwrap_or(false);
                if known {
                    self.inner.lua.call_tool(other.to_string(), args).await
                } else {
                    Err(format!("Unknown tool: {other} (see tools/list)"))
                }
            }
        }
    }

    fn caller(&self) -> Caller {
        if self.inner.parent.is_some() {
            Caller::Session
        } else {
            Caller::Mcp
        }
    }

    /// A session asked for over MCP: guarded (or refused) as the spawn gate says.
    fn gate_session(&self, mut req: SpawnRequest) -> Result<SpawnRequest, String> {
        let ask = SpawnAsk {
            name: req.name.clone(),
            kind: "session".into(),
            permission_mode: req.options.permission_mode.clone(),
            allowed_tools: req.options.allowed_tools.clone(),
            preset: None,
            safety: true,
            mcp_config: req.options.mcp_config.clone(),
            add_dirs: req.options.add_dirs.clone(),
        };
        let refused = |e: String| format!("cms refused to start '{}': {e}", req.name);
        let ask = spawn_gate::decide(
            self.inner.policy.as_deref(),
            ask,
            self.caller(),
            self.inner.parent.as_ref(),
        )
        .map_err(refused)?;
        let o = &mut req.options;
        o.permission_mode = ask.permission_mode.clone();
        o.allowed_tools = ask.allowed_tools.clone();
        o.mcp_config = ask.mcp_config.clone();
        o.add_dirs = ask.add_dirs.clone();
        if let Some(preset_name) = &ask.preset {
            let preset = match &self.inner.policy {
                Some(p) => p.preset(preset_name).map_err(|e| refused(e.to_string()))?,
                None => return Err(refused("no safety policy is loaded".into())),
            };
            if o.permission_mode.as_deref() != Some("plan") {
                o.permission_mode = Some(preset.permission_mode.clone());
            }
            for t in preset.allowed_tools {
                if !o.allowed_tools.contains(&t) {
                    o.allowed_tools.push(t);
                }
            }
            o.disallowed_tools.extend(preset.disallowed_tools);
            o.guard = Some(Guard {
                preset: Some(preset_name.clone()),
                safety: ask.safety,
                max_cost_usd: o.max_budget_usd,
                max_turns: o.max_turns,
                ..Guard::default()
            });
        }
        Ok(req)
    }

    /// Inside a guarded session, only sessions at least as guarded may be steered.
    fn gate_steer(&self, target: &str) -> Result<(), String> {
        let Some(parent) = self.inner.parent.as_ref() else {
            return Ok(());
        };
        let rec = self
            .inner
            .manager
            .status(target)
            .map_err(|e| e.to_string())?;
        match spawn_gate::may_steer(rec.options.guard.as_ref(), parent) {
            None => Ok(()),
            Some(why) => Err(format!("cms refused to steer '{target}': {why}")),
        }
    }

    /// A delegation asked for over MCP: within the ceiling and the parent's floor.
    fn gate_delegate(&self, mut opts: DelegateOptions) -> Result<DelegateOptions, String> {
        let ask = SpawnAsk {
            name: opts.name.clone(),
            kind: "delegate".into(),
            permission_mode: None,
            allowed_tools: Vec::new(),
            preset: Some(opts.preset.clone().unwrap_or_else(|| "edit".into())),
            safety: opts.safety,
            ..SpawnAsk::default()
        };
        let ask = spawn_gate::decide(
            self.inner.policy.as_deref(),
            ask,
            self.caller(),
            self.inner.parent.as_ref(),
        )
        .map_err(|e| format!("cms refused to delegate '{}': {e}", opts.name))?;
        opts.preset = ask.preset;
        opts.safety = ask.safety;
        Ok(opts)
    }

    fn remember(&self, name: &str, v: Value) {
        if let Ok(mut b) = self.inner.background.lock() {
            b.insert(name.to_string(), v);
        }
    }

    /// Run long work (delegate, continue): in the background when asked (answer at
    /// once; the result appears in `get_session_status`), else now, with progress
    /// notifications for the session's tool uses and turns if the client asked.
    async fn run_long(
        &self,
        session: &str,
        background: bool,
        ctx: &RequestContext<RoleServer>,
        work: impl std::future::Future<Output = Result<Value, String>> + Send + 'static,
    ) -> Result<Value, String> {
        if background {
            self.remember(session, json!({ "status": "running" }));
            let (me, name) = (self.clone(), session.to_string());
            tokio::spawn(async move {
                let v = match work.await {
                    Ok(v) => json!({ "status": "done", "result": v }),
                    Err(e) => json!({ "status": "error", "error": e }),
                };
                me.remember(&name, v);
            });
            return Ok(
                json!({ "name": session, "status": "started", "background": true, "poll": "get_session_status" }),
            );
        }
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
        let progress = progress_token(ctx).map(|token| {
            let mut events = self.inner.manager.subscribe();
            let (peer, name) = (ctx.peer.clone(), session.to_string());
            tokio::spawn(async move {
                let mut n = 0.0;
                let mut finishing = false;
                loop {
                    let event = if finishing {
                        // The work is done: send what is already queued, then stop.
                        match events.try_recv() {
                            Ok(e) => e,
                            Err(_) => break,
                        }
                    } else {
                        tokio::select! {
                            e = events.recv() => match e {
                                Ok(e) => e,
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                                Err(_) => break,
                            },
                            _ = &mut done_rx => {
                                finishing = true;
                                continue;
                            }
                        }
                    };
                    if event.session != name {
                        continue;
                    }
                    let message = match &event.kind {
                        EventKind::ToolUse { name, .. } => format!("using {name}"),
                        EventKind::Result { cost_usd, .. } => format!("turn done (${cost_usd:.4})"),
                        EventKind::Violation { message, .. } => format!("safety: {message}"),
                        _ => continue,
                    };
                    n += 1.0;
                    let p = ProgressNotificationParam::new(token.clone(), n).with_message(message);
                    let _ = peer.notify_progress(p).await;
                }
            })
        });
        let result = work.await;
        let _ = done_tx.send(());
        if let Some(p) = progress {
            // Progress goes out before the result (clients drop late progress).
            let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
        }
        result
    }
}

fn progress_token(ctx: &RequestContext<RoleServer>) -> Option<ProgressToken> {
    ctx.meta.get_progress_token()
}

fn take_bool(args: &mut Value, key: &str) -> bool {
    args.as_object_mut()
        .and_then(|m| m.remove(key))
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

impl ServerHandler for CmsServer {
    fn get_info(&self) -> ServerConfig {
        let caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        let mut info = InitializeResult::new(caps);
        info.server_info = Implementation::new("cms", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "cms runs Claude Code sessions for you: spawn_session / send_message for direct work, \
             delegate_task for guarded work with cost, turn and path limits (then continue_task, \
             finish_task). Sessions persist; list_sessions shows them with their cost."
                .into(),
        );
        info
    }

    async fn on_initialized(&self, context: rmcp::service::NotificationContext<RoleServer>) {
        if let Ok(mut peers) = self.inner.peers.lock() {
            peers.push(context.peer);
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.all_tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = Value::Object(request.arguments.clone().unwrap_or_default());
        let result = match self.dispatch(&request.name, args, &context).await {
            Ok(v) => {
                let text = serde_json::to_string_pretty(&v).unwrap_or_default();
                let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
                if v.is_object() {
                    r.structured_content = Some(v);
                }
                r
            }
            Err(e) => CallToolResult::error(vec![ContentBlock::text(format!("Error: {e}"))]),
        };
        Ok(result.into())
    }
}

/// An engine error with what to do about it, in this server's tools.
fn engine_error(e: &crate::engine::EngineError) -> String {
    use crate::engine::Remedy;
    let how = match e.remedy() {
        None => return e.to_string(),
        Some(Remedy::ListSessions) => "list_sessions shows the sessions there are".to_string(),
        Some(Remedy::DeleteOrRename(n)) => {
            format!("pick another name, or delete_session '{n}' first")
        }
        Some(Remedy::Resume(n)) => format!("resume it first with resume_session '{n}'"),
        Some(Remedy::SendWhereHeld(n)) => format!(
            "send to it from there, or wait until that process ends it (get_session_status '{n}' shows who holds it)"
        ),
        Some(Remedy::TryAgainLater(_)) => "try again when it is done".to_string(),
        Some(Remedy::InstallClaude) => "install Claude Code (`npm install -g @anthropic-ai/claude-code`) \
             where the cms MCP server runs, or set CMS_CLAUDE_BIN in the server's environment"
            .to_string(),
    };
    format!("{e}; {how}")
}

//! The MCP server (rmcp): the seed's 17 tools over the engine, plus plugin tools.
//! Tool failures come back as tool results with `isError` and a message that says
//! what to do; only unroutable requests (an unknown method or tool) are JSON-RPC errors.

use super::logging;
use super::tools::{self};
use crate::engine::Guard;
use crate::engine::Sessions;
use crate::lua::worker::{LuaWorker, ToolInfo};
use crate::policy::PolicyService;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
    Tool,
};
use rmcp::model::{ServerNotification, SubscriptionFilter};
use rmcp::service::{Peer, RequestContext, RoleServer, SubscriptionContext, SubscriptionSink};
use rmcp::{ErrorData as McpError, ServerHandler};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

#[derive(Clone)]
pub struct CmsServer {
    pub(super) inner: Arc<Inner>,
    /// The guard of the guarded session the caller runs inside, if any: what it
    /// starts is at least as guarded, and it may not approve. Over stdio, the
    /// session this server runs inside; over HTTP, asked per call ([`Asker`]).
    pub(super) parent: Option<Guard>,
    /// The log level this client asked for (`logging/setLevel`, 2025-11-25).
    pub(super) log_level: logging::Wanted,
}

/// Over HTTP: who asks, found when a call needs it (the face puts it in the
/// request's extensions). Ok(None): no guarded session; Err: cannot tell, and the
/// call is refused.
#[derive(Clone)]
pub struct Asker(pub Arc<dyn Fn() -> Result<Option<Guard>, String> + Send + Sync>);

pub(super) struct Inner {
    pub(super) manager: Arc<dyn Sessions>,
    pub(super) lua: LuaWorker,
    pub(super) plugin_tools: RwLock<Vec<ToolInfo>>,
    pub(super) builtin: Vec<Tool>,
    pub(super) peers: Mutex<Vec<(Peer<RoleServer>, logging::Wanted)>>,
    /// Open `subscriptions/listen` streams (2026-07-28 clients) that asked for
    /// `tools/list_changed`.
    pub(super) listeners: Mutex<Vec<(u64, SubscriptionSink)>>,
    /// Results of work started with `background: true`, by session name.
    pub(super) background: Mutex<HashMap<String, Value>>,
    /// The safety policy, asked (`on_spawn`) what a caller may start.
    pub(super) policy: Option<Arc<PolicyService>>,
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
        manager: Arc<dyn Sessions>,
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
                listeners: Mutex::new(Vec::new()),
                background: Mutex::new(HashMap::new()),
                policy,
            }),
            parent: crate::policy::isolation::inherited(),
            log_level: Default::default(),
        }
    }

    /// The server for one more client (an HTTP session): the same tools and
    /// sessions, its own log level.
    pub fn for_new_client(&self) -> CmsServer {
        CmsServer {
            log_level: Default::default(),
            ..self.clone()
        }
    }

    /// Plugins changed on disk: load them again and, if the tool list changed, tell
    /// every client (`notifications/tools/list_changed`).
    #[allow(deprecated)] // MCP logging (see `logging`)
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
            self.log(logging::Level::Error, &format!("plugin disabled: {e}"))
                .await;
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
            self.log(logging::Level::Info, "plugin tools changed").await;
            self.tell_tools_changed().await;
            tracing::info!("plugin tools changed; clients notified");
        }
    }

    /// `notifications/tools/list_changed` to every client: those with a session
    /// (stdio, 2025-11-25 over HTTP) and those listening (2026-07-28). Clients gone
    /// are forgotten.
    async fn tell_tools_changed(&self) {
        for (peer, _) in self.peers() {
            if let Err(e) = peer.notify_tool_list_changed().await {
                tracing::debug!("could not send tools/list_changed: {e}");
            }
        }
        let listeners: Vec<_> = self
            .inner
            .listeners
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        for (_, sink) in listeners {
            let note = ServerNotification::ToolListChangedNotification(Default::default());
            if let Err(e) = sink.send(note).await {
                tracing::debug!("could not send tools/list_changed to a listener: {e}");
            }
        }
    }

    /// This server as the caller of `tool` sees it: over HTTP, a caller inside a
    /// guarded session is held to that session's guard (tools that only read skip
    /// the look-up).
    async fn asked_by(
        &self,
        tool: &str,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CmsServer, String> {
        const READ_ONLY: &[&str] = &[
            "list_sessions",
            "get_session_status",
            "get_last_output",
            "get_history",
            "list_pending_approvals",
        ];
        let asker = ctx
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Asker>());
        let Some(asker) = asker.cloned() else {
            return Ok(self.clone());
        };
        if READ_ONLY.contains(&tool) || self.parent.is_some() {
            return Ok(self.clone());
        }
        // It reads /proc: off the async workers.
        let found = tokio::task::spawn_blocking(move || (asker.0)())
            .await
            .map_err(|e| e.to_string())??;
        if let Some(guard) = &found {
            let builtin = self.inner.builtin.iter().any(|t| t.name == tool);
            if !builtin {
                // A plugin's tool runs in the host with the host's own powers: it
                // cannot be held to a caller's guard, so such a caller may not call it.
                return Err(format!(
                    "cms refused: plugin tool '{tool}' runs with the host's powers, and this \
                     client runs inside a guarded session (preset {})",
                    guard.preset.as_deref().unwrap_or("read-only")
                ));
            }
        }
        let mut caller = self.clone();
        caller.parent = found;
        Ok(caller)
    }

    /// Whether `name` is one of this server's tools (a built-in or a plugin's).
    fn has_tool(&self, name: &str) -> bool {
        self.inner.builtin.iter().any(|t| t.name == name)
            || self
                .inner
                .plugin_tools
                .read()
                .map(|t| t.iter().any(|t| t.name == name))
                .unwrap_or(false)
    }

    /// The clients with a session (stdio, 2025-11-25 over HTTP); those gone are forgotten.
    fn peers(&self) -> Vec<(Peer<RoleServer>, logging::Wanted)> {
        match self.inner.peers.lock() {
            Ok(mut p) => {
                p.retain(|(peer, _)| !peer.is_transport_closed());
                p.clone()
            }
            Err(_) => Vec::new(),
        }
    }

    /// A log message to every client that asked for its level.
    #[allow(deprecated)] // MCP logging (see `logging`)
    async fn log(&self, level: logging::Level, text: &str) {
        for (peer, wanted) in self.peers() {
            logging::send(&peer, &wanted, level, text).await;
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
        match name {
            "spawn_session" => self.spawn_session(args).await,
            "send_message" => self.send_message(args).await,
            "resume_session" => self.resume_session(args).await,
            "pause_session" => self.pause_session(args).await,
            "fork_session" => self.fork_session(args).await,
            "stop_session" => self.stop_session(args).await,
            "kill_session" => self.kill_session(args).await,
            "get_session_status" => self.get_session_status(args).await,
            "get_last_output" => self.get_last_output(args).await,
            "list_sessions" => self.list_sessions(args).await,
            "get_history" => self.get_history(args).await,
            "delete_session" => self.delete_session(args).await,
            "delegate_task" => self.delegate_task(args, ctx).await,
            "continue_task" => self.continue_task(args, ctx).await,
            "finish_task" | "abort_task" => self.end_task(name, args).await,
            "batch_spawn" => self.batch_spawn(args, ctx).await,
            "list_pending_approvals" => self.list_pending_approvals().await,
            "decide_approval" => self.decide_approval(args).await,
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
}

impl ServerHandler for CmsServer {
    #[allow(deprecated)] // MCP logging (see `logging`)
    fn get_info(&self) -> ServerConfig {
        let caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_logging()
            .enable_resources()
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
            peers.retain(|(peer, _)| !peer.is_transport_closed());
            peers.push((context.peer, self.log_level.clone()));
        }
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        logging::set(&self.log_level, request.level);
        Ok(())
    }

    /// 2026-07-28: a client may listen for `tools/list_changed` (plugin tools come
    /// and go with their files); nothing else changes here.
    fn accepted_subscription_filter(
        &self,
        _requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::new();
        accepted.tools_list_changed = Some(true);
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        if context.accepted().tools_list_changed != Some(true) {
            context.cancelled().await;
            return Ok(());
        }
        // Request ids repeat across clients: each stream gets its own number.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut l) = self.inner.listeners.lock() {
            l.push((n, context.sink().clone()));
        }
        context.cancelled().await;
        if let Ok(mut l) = self.inner.listeners.lock() {
            l.retain(|(m, _)| *m != n);
        }
        Ok(())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourcesResult, McpError> {
        self.session_resources()
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourceTemplatesResult, McpError> {
        Ok(self.session_resource_templates())
    }

    async fn read_resource(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, McpError> {
        self.read_session_resource(&request.uri).map(Into::into)
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
        // An unknown tool is a protocol error (-32602), as the spec has it, not a
        // failed call: the client asked for something this server does not have.
        if !self.has_tool(&request.name) {
            return Err(McpError::invalid_params(
                format!("Unknown tool: {} (see tools/list)", request.name),
                None,
            ));
        }
        let args = Value::Object(request.arguments.clone().unwrap_or_default());
        let caller = match self.asked_by(&request.name, &context).await {
            Ok(c) => c,
            Err(e) => {
                let text = if e.starts_with("cms refused") {
                    format!("Error: {e}")
                } else {
                    format!("Error: {e}; cms refuses calls that could widen a guard when it cannot tell who asks")
                };
                return Ok(CallToolResult::error(vec![ContentBlock::text(text)]).into());
            }
        };
        let result = match caller.dispatch(&request.name, args, &context).await {
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

/// An engine error as a tool's error text (for `.map_err(err)`).
pub(super) fn err(e: crate::engine::EngineError) -> String {
    engine_error(&e)
}

/// An engine error with what to do about it, in the terms of an MCP client.
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
        Some(Remedy::ShowStatus(n)) => format!("get_session_status '{n}' shows its state"),
        Some(Remedy::UseHost(_)) => {
            "this MCP server runs with --no-host (or CMS_NO_HOST): register it without, to reach the session host"
                .to_string()
        }
        Some(Remedy::InstallClaude) => "install Claude Code (`npm install -g @anthropic-ai/claude-code`) \
             where the cms MCP server runs, or set CMS_CLAUDE_BIN in the server's environment"
            .to_string(),
    };
    format!("{e}; {how}")
}

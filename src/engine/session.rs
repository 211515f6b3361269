//! One live session: the handle to a long-lived `claude -p --input-format
//! stream-json` child. Starting it spawns the child, its output readers
//! ([`crate::engine::reader`]) and the task that owns it ([`crate::engine::actor`]);
//! the handle sends that task commands.
//!
//! Sends are queued FIFO because the CLI merges messages written during a running
//! turn into that turn. Each `send` gets its own [`Response`], with this turn's own
//! cost (`total_cost_usd` is cumulative, per process or per conversation depending on
//! the CLI: see [`crate::engine::cost`]).

use crate::engine::actor::{Actor, Channels};
use crate::engine::child::{exited_error, Cmd, Shared};
pub use crate::engine::child::{EventSink, ExitInfo, LiveInfo, StartSpec};
use crate::engine::error::{EngineError, Result};
use crate::engine::policy::Policy;
use crate::engine::process::{self, Spawned};
use crate::engine::reader::{read_stderr, read_stdout};
use crate::engine::response::Response;
use crate::engine::state::SessionState;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// A handle to a live session. Share it with `Arc`; when the last handle is dropped
/// the session's task sees its command channel close and kills the child.
/// A message in a session's queue, waiting for its response.
pub struct Queued(oneshot::Receiver<Result<Response>>);

pub struct LiveSession {
    name: String,
    pid: u32,
    cmd_tx: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    default_timeout: Duration,
    host: Option<String>,
}

impl LiveSession {
    /// Start the child. It prints nothing until the first user turn, so this returns
    /// as soon as the process runs.
    pub fn start(spec: StartSpec, policy: Arc<dyn Policy>, sink: EventSink) -> Result<LiveSession> {
        let (bin, argv, cwd, env) = match &spec.launch {
            Some(l) => (&l.program, l.args.clone(), &l.cwd, &l.env),
            None => (&spec.claude_bin, spec.args.to_argv(), &spec.cwd, &spec.env),
        };
        tracing::debug!(session = %spec.name, bin = %bin.display(), ?argv, "starting claude");
        let Spawned {
            child,
            pid,
            stdin,
            stdout,
            stderr,
        } = process::spawn(bin, &argv, cwd, env, spec.supervisor.as_deref())?;
        let known_id = if spec.args.fork_session {
            spec.args.session_id.clone()
        } else {
            spec.args
                .resume
                .clone()
                .or_else(|| spec.args.session_id.clone())
        };
        let (state_tx, _) = watch::channel(SessionState::Starting);
        let shared = Arc::new(Shared {
            info: Mutex::new(LiveInfo {
                session_id: known_id,
                // For a remote session too the local folder: resumes start from it
                // (the runner maps it again).
                cwd: Some(spec.cwd.display().to_string()),
                model: spec.args.model.clone(),
                session_cost: spec.cost_before,
                turns: spec.turns_before,
                budget_usd: spec.budget_usd,
                ..LiveInfo::default()
            }),
            stderr: Mutex::new(Vec::new()),
            paused: AtomicBool::new(false),
            state: state_tx,
        });
        let (line_tx, line_rx) = mpsc::channel(256);
        tokio::spawn(read_stdout(stdout, line_tx));
        tokio::spawn(read_stderr(stderr, shared.clone(), spec.name.clone()));
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let actor = Actor::new(
            &spec,
            Channels {
                child,
                stdin,
                pid,
                lines: line_rx,
                cmds: cmd_rx,
            },
            shared.clone(),
            policy,
            sink,
        );
        tokio::spawn(actor.run(spec.args.resume.is_some()));
        Ok(LiveSession {
            name: spec.name,
            pid,
            cmd_tx,
            shared,
            default_timeout: spec.turn_timeout,
            host: spec.host,
        })
    }

    /// The host it runs on (None: this machine).
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn state(&self) -> SessionState {
        let s = *self.shared.state.borrow();
        if self.is_paused() && matches!(s, SessionState::Idle | SessionState::Starting) {
            SessionState::Paused
        } else {
            s
        }
    }

    /// A receiver that sees every state change.
    pub fn watch_state(&self) -> watch::Receiver<SessionState> {
        self.shared.state.subscribe()
    }

    pub fn info(&self) -> LiveInfo {
        self.shared.info.lock().unwrap().clone()
    }

    pub fn session_id(&self) -> Option<String> {
        self.info().session_id
    }

    pub fn stderr_tail(&self) -> String {
        self.shared.stderr_tail()
    }

    /// True until the child has exited.
    pub fn is_alive(&self) -> bool {
        self.shared.state.borrow().is_live()
    }

    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    pub fn unpause(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    pub fn is_paused(&self) -> bool {
        self.shared.paused.load(Ordering::SeqCst)
    }

    /// Send a user turn and wait for its response. Sends to one session run one
    /// after the other, in call order.
    pub async fn send(&self, text: &str, timeout: Option<Duration>) -> Result<Response> {
        let queued = self.enqueue(text, timeout)?;
        self.answer(queued).await
    }

    /// Put a message in the session's queue now (turns run in the order they were
    /// queued); [`LiveSession::answer`] waits for its response.
    pub fn enqueue(&self, text: &str, timeout: Option<Duration>) -> Result<Queued> {
        if self.is_paused() {
            return Err(EngineError::Paused(self.name.clone()));
        }
        let (reply, rx) = oneshot::channel();
        self.command(Cmd::Send {
            text: text.to_string(),
            timeout: timeout.unwrap_or(self.default_timeout),
            reply,
        })?;
        Ok(Queued(rx))
    }

    /// The response to a queued message.
    pub async fn answer(&self, queued: Queued) -> Result<Response> {
        queued.0.await.unwrap_or_else(|_| Err(self.gone()))
    }

    /// Interrupt the running turn (its `send` returns an `error_during_execution`
    /// response); the process stays alive for the next turn.
    pub async fn interrupt(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.command(Cmd::Interrupt { reply })?;
        rx.await.unwrap_or_else(|_| Err(self.gone()))
    }

    /// Decide a tool call waiting for approval; the call decided.
    pub async fn decide(
        &self,
        verdict: crate::engine::approval::Verdict,
    ) -> Result<crate::engine::approval::Approval> {
        let (reply, rx) = oneshot::channel();
        self.command(Cmd::Decide { verdict, reply })?;
        rx.await.unwrap_or_else(|_| Err(self.gone()))
    }

    /// The tool calls waiting for approval, oldest first.
    pub fn approvals(&self) -> Vec<crate::engine::approval::Approval> {
        self.info().approvals
    }

    /// `set_permission_mode` control request.
    pub async fn set_permission_mode(&self, mode: &str) -> Result<Value> {
        self.control("set_permission_mode", serde_json::json!({ "mode": mode }))
            .await
    }

    /// `set_model` control request.
    pub async fn set_model(&self, model: &str) -> Result<Value> {
        self.control("set_model", serde_json::json!({ "model": model }))
            .await
    }

    async fn control(&self, subtype: &'static str, fields: Value) -> Result<Value> {
        let (reply, rx) = oneshot::channel();
        self.command(Cmd::Control {
            subtype,
            fields,
            reply,
        })?;
        rx.await.unwrap_or_else(|_| Err(self.gone()))
    }

    /// Stop gracefully: interrupt a running turn, close stdin, wait, then SIGTERM and
    /// SIGKILL. Queued sends fail with `Stopped`.
    pub async fn stop(&self) -> ExitInfo {
        let (reply, rx) = oneshot::channel();
        if self.command(Cmd::Stop { reply }).is_err() {
            return self.info().exit.unwrap_or_default();
        }
        rx.await
            .unwrap_or_else(|_| self.info().exit.unwrap_or_default())
    }

    /// Kill the child's process group now.
    pub async fn kill(&self) -> ExitInfo {
        let (reply, rx) = oneshot::channel();
        if self.command(Cmd::Kill { reply }).is_err() {
            return self.info().exit.unwrap_or_default();
        }
        rx.await
            .unwrap_or_else(|_| self.info().exit.unwrap_or_default())
    }

    fn command(&self, cmd: Cmd) -> Result<()> {
        self.cmd_tx.send(cmd).map_err(|_| self.gone())
    }

    fn gone(&self) -> EngineError {
        let exit = self.info().exit.unwrap_or_default();
        exited_error(&exit, None)
    }
}

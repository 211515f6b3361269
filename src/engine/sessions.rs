//! [`Sessions`]: the one interface every frontend drives sessions through.
//!
//! Two implementations: the [`crate::engine::Manager`] (sessions live in this
//! process) and the client of the long-lived host (`cms serve`, in `src/host/`),
//! where sessions outlive the command that started them. The CLI, Lua (scripts, the
//! REPL, delegation) and the MCP server hold an `Arc<dyn Sessions>` and cannot tell
//! which one they have.
//!
//! Reading (status, list, history, output) goes to the store on both: SQLite is
//! shared between processes and the host keeps it up to date.

use crate::engine::config::{EngineConfig, SessionOptions};
use crate::engine::error::Result;
use crate::engine::events::SessionEvent;
use crate::engine::response::Response;
use crate::engine::spec::SpawnRequest;
use crate::engine::store::{Interaction, SessionRecord, Store};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::time::Duration;
use tokio::sync::{broadcast, Semaphore};

/// The outcome of one batch entry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BatchOutcome {
    pub name: String,
    pub ok: bool,
    pub response: Option<Response>,
    pub error: Option<String>,
}

/// Progress of a batch, reported after each entry completes.
#[derive(Debug, Clone)]
pub struct BatchProgress<'a> {
    pub done: usize,
    pub total: usize,
    pub outcome: &'a BatchOutcome,
}

/// Where sessions live for a caller: in this process, or in the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    /// In this process: they end with it (stopped after a command, resumable).
    InProcess,
    /// In the long-lived host (`cms serve`): they outlive this process.
    Host,
}

/// Spawn, talk to and end named sessions; read what they did.
#[async_trait::async_trait]
pub trait Sessions: Send + Sync {
    /// Where this implementation keeps sessions live.
    fn location(&self) -> Where;

    fn config(&self) -> &EngineConfig;

    /// The store (shared by every cms process of this home).
    fn store(&self) -> &Store;

    /// Every event of every session this implementation can see: its own sessions
    /// in process, every session of the host through the host.
    fn subscribe(&self) -> broadcast::Receiver<SessionEvent>;

    // ----- reading ---------------------------------------------------------------

    /// A record with its state as it really is now.
    fn status(&self, name: &str) -> Result<SessionRecord>;

    /// Every session, most recently active first.
    fn list(&self) -> Result<Vec<SessionRecord>>;

    /// The last response text.
    fn output(&self, name: &str) -> Result<Option<String>> {
        Ok(self.store().require(name)?.last_response)
    }

    fn history(&self, name: &str) -> Result<Vec<Interaction>> {
        self.store().require(name)?;
        self.store().history(name)
    }

    /// Whether the session has a running process (anywhere).
    fn has_process(&self, name: &str) -> Result<bool>;

    // ----- spawning and talking --------------------------------------------------

    /// Start a new named session and send its first prompt.
    async fn spawn(&self, req: SpawnRequest) -> Result<(SessionRecord, Response)>;

    /// Send a follow-up with the history kind to record (`send`, `continue`, ...); a
    /// session with no live process is resumed first.
    async fn send_as(
        &self,
        name: &str,
        message: &str,
        timeout: Option<Duration>,
        kind: &str,
    ) -> Result<Response>;

    /// Send a follow-up (recorded as `send`).
    async fn send(&self, name: &str, message: &str, timeout: Option<Duration>) -> Result<Response> {
        self.send_as(name, message, timeout, "send").await
    }

    // ----- lifecycle ---------------------------------------------------------------

    /// Refuse new sends until resumed; the live process is kept.
    async fn pause(&self, name: &str) -> Result<SessionRecord>;

    /// Clear a pause; with a message, send it.
    async fn resume(
        &self,
        name: &str,
        message: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(SessionRecord, Option<Response>)>;

    /// A new session holding the parent's conversation.
    async fn fork(
        &self,
        name: &str,
        new_name: &str,
        message: Option<&str>,
        overrides: SessionOptions,
        timeout: Option<Duration>,
    ) -> Result<(SessionRecord, Option<Response>)>;

    /// Tool calls waiting for a person's decision, oldest first.
    async fn approvals(&self) -> Result<Vec<crate::engine::approval::Approval>>;

    /// Approve or deny a tool call waiting for a decision; the call decided.
    async fn decide(
        &self,
        verdict: crate::engine::approval::Verdict,
    ) -> Result<crate::engine::approval::Approval>;

    /// Interrupt the running turn (the session stays live).
    async fn interrupt(&self, name: &str) -> Result<()>;

    /// Stop gracefully (resumable).
    async fn stop(&self, name: &str) -> Result<SessionRecord>;

    /// Kill the process tree now (resumable when an id is known).
    async fn kill(&self, name: &str) -> Result<SessionRecord>;

    /// Remove a session for good.
    async fn delete(&self, name: &str) -> Result<()>;

    /// Delete a session to start it anew, refused while another process drives it.
    async fn delete_to_replace(&self, name: &str) -> Result<()>;

    /// Spawn every request, at most `concurrency` at a time. One failure does not
    /// stop the others; outcomes come back in input order, `progress` hears each.
    async fn batch(
        &self,
        specs: Vec<SpawnRequest>,
        concurrency: usize,
        progress: &mut (dyn for<'p> FnMut(BatchProgress<'p>) + Send),
    ) -> Vec<BatchOutcome> {
        let total = specs.len();
        let sem = Semaphore::new(concurrency.max(1));
        let mut running: FuturesUnordered<_> = specs
            .into_iter()
            .enumerate()
            .map(|(i, req)| {
                let sem = &sem;
                async move {
                    let _permit = sem.acquire().await;
                    let name = req.name.clone();
                    let outcome = match self.spawn(req).await {
                        Ok((_, r)) => BatchOutcome {
                            name,
                            ok: !r.is_error,
                            error: r.is_error.then(|| r.error_summary()),
                            response: Some(r),
                        },
                        Err(e) => BatchOutcome {
                            name,
                            ok: false,
                            response: e.partial().cloned(),
                            error: Some(e.to_string()),
                        },
                    };
                    (i, outcome)
                }
            })
            .collect();
        let mut out: Vec<Option<BatchOutcome>> = vec![None; total];
        let mut done = 0;
        while let Some((i, outcome)) = running.next().await {
            done += 1;
            progress(BatchProgress {
                done,
                total,
                outcome: &outcome,
            });
            out[i] = Some(outcome);
        }
        out.into_iter().flatten().collect()
    }

    /// Delete sessions idle for more than `days` days; the names removed.
    fn cleanup(&self, days: f64) -> Result<Vec<String>> {
        let names: Vec<String> = self.idle(days)?.into_iter().map(|r| r.name).collect();
        self.remove_idle(&names, days)
    }

    /// The sessions [`Sessions::cleanup`] would remove now.
    fn idle(&self, days: f64) -> Result<Vec<SessionRecord>>;

    /// Remove those of `names` still idle for more than `days` days.
    fn remove_idle(&self, names: &[String], days: f64) -> Result<Vec<String>>;

    // ----- the end of a command ------------------------------------------------------

    /// The command is done. In process: stop every session it holds (resumable).
    /// Through the host: nothing; they live on there.
    async fn shutdown(&self);

    /// The command was interrupted (Ctrl-C, SIGTERM). In process: kill every session.
    /// Through the host: interrupt the turns this process asked for.
    async fn kill_all(&self);

    /// Interrupt every turn in flight that this process can reach (the REPL's Ctrl-C).
    async fn interrupt_all(&self) {
        for rec in self.list().unwrap_or_default() {
            if rec.state.is_busy() {
                let _ = self.interrupt(&rec.name).await;
            }
        }
    }
}

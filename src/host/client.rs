//! [`HostClient`]: the [`Sessions`] of the host, for a frontend in another process.
//!
//! Session requests go over the socket (one connection, requests multiplexed by
//! id); reading goes to the shared store, as in process. Events of every host
//! session reach [`Sessions::subscribe`] once something subscribes. When the host
//! goes away, the next request starts or finds a new one (see `start.rs`).

use super::connection::{next_id, Connection};
use super::protocol::{HostInfo, Op, Turned};
use super::start::{self, Started};
use crate::engine::{
    Approval, ApprovalVerdict, EngineConfig, EngineError, Manager, Response, Result, SessionEvent,
    SessionOptions, SessionRecord, Sessions, SpawnRequest, Store, Where,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// Sessions that live in the host.
pub struct HostClient {
    /// Reads the shared store (status, list, history) without asking the host.
    reader: Arc<Manager>,
    client: String,
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
    events: broadcast::Sender<SessionEvent>,
    wants_events: AtomicBool,
    /// Session of each request in flight, so Ctrl-C interrupts what this process asked.
    in_flight: Mutex<HashMap<u64, String>>,
}

/// Connect to the home's host; when none runs, start one if `autostart` (else None).
pub async fn connect(
    cfg: &EngineConfig,
    client: &str,
    autostart: bool,
) -> Result<Option<(Arc<HostClient>, Started)>> {
    if cfg.home.is_file() {
        return Err(EngineError::HomeIsFile(cfg.home.clone()));
    }
    let events = broadcast::channel(4096).0;
    let (conn, started) = match start::open(cfg, client, autostart, events.clone()).await {
        Ok(o) => o,
        Err(start::OpenError::NotRunning) if !autostart => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // The host runs every session on the claude it was started with: a command that
    // asks for another must not be served by it silently.
    if autostart && conn.info.claude_bin != cfg.claude_bin {
        return Err(EngineError::Host(format!(
            "the running cms host (pid {}) runs Claude Code as {} and this command asks for {}; \
             run it with --no-host, or `cms host restart` with the claude you want once its \
             sessions are done",
            conn.info.pid,
            conn.info.claude_bin.display(),
            cfg.claude_bin.display()
        )));
    }
    let reader = Manager::new(cfg.clone())?;
    let client = HostClient::new(reader, client, Some(conn), events);
    Ok(Some((Arc::new(client), started)))
}

/// A client of the home's host that connects (starting a host if none runs) only
/// when it first asks the host something: `cms mcp`, which Claude Code starts to list
/// its tools (`claude mcp list` too) whether or not any session is ever used.
pub async fn connect_lazily(cfg: &EngineConfig, client: &str) -> Result<Arc<HostClient>> {
    match connect(cfg, client, false).await? {
        Some((c, _)) => Ok(c),
        None => {
            let events = broadcast::channel(4096).0;
            let reader = Manager::new(cfg.clone())?;
            Ok(Arc::new(HostClient::new(reader, client, None, events)))
        }
    }
}

impl HostClient {
    /// A client over `conn`, whose events go to `events`.
    pub(super) fn new(
        reader: Arc<Manager>,
        client: &str,
        conn: Option<Connection>,
        events: broadcast::Sender<SessionEvent>,
    ) -> HostClient {
        HostClient {
            reader,
            client: client.to_string(),
            conn: tokio::sync::Mutex::new(conn.map(Arc::new)),
            events,
            wants_events: AtomicBool::new(false),
            in_flight: Mutex::default(),
        }
    }

    /// The host as it said hello.
    pub async fn info(&self) -> Option<HostInfo> {
        self.conn.lock().await.as_ref().map(|c| c.info.clone())
    }

    /// The connection, opened again (starting a host if none runs) when lost.
    async fn connection(&self) -> Result<Arc<Connection>> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.is_alive()) {
            if self.wants_events.load(Ordering::SeqCst) {
                c.subscribe_all();
            }
            return Ok(c.clone());
        }
        let (conn, _) = start::open(
            self.reader.config(),
            &self.client,
            true,
            self.events.clone(),
        )
        .await?;
        let conn = Arc::new(conn);
        if self.wants_events.load(Ordering::SeqCst) {
            conn.subscribe_all();
        }
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Ask the host (for session `name`, remembered while in flight).
    async fn ask<T: DeserializeOwned>(&self, name: &str, op: Op) -> Result<T> {
        let conn = self.connection().await?;
        let id = next_id();
        self.in_flight.lock().unwrap().insert(id, name.to_string());
        let result = conn.call(id, op).await;
        self.in_flight.lock().unwrap().remove(&id);
        serde_json::from_value(result?).map_err(|e| {
            EngineError::Host(format!(
                "the cms host answered with something unexpected: {e}"
            ))
        })
    }

    /// Ask the host something that is not about a session.
    pub async fn request(&self, op: Op) -> Result<Value> {
        let conn = self.connection().await?;
        conn.call(0, op).await
    }
}

/// A relative work dir means the client's current directory, not the host's.
fn absolute_paths(options: &mut SessionOptions) {
    let cwd = std::env::current_dir().unwrap_or_default();
    let dir = options.work_dir.take().unwrap_or_else(|| cwd.clone());
    options.work_dir = Some(if dir.is_absolute() {
        dir
    } else {
        cwd.join(dir)
    });
    for d in &mut options.add_dirs {
        if !std::path::Path::new(d.as_str()).is_absolute() {
            *d = cwd.join(&*d).display().to_string();
        }
    }
    if let Some(c) = &mut options.mcp_config {
        let path = cwd.join(&*c);
        if !c.trim_start().starts_with('{') && path.exists() {
            *c = path.display().to_string();
        }
    }
}

#[async_trait::async_trait]
impl Sessions for HostClient {
    fn location(&self) -> Where {
        Where::Host
    }

    fn config(&self) -> &EngineConfig {
        self.reader.config()
    }

    fn store(&self) -> &Store {
        self.reader.store()
    }

    fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        let rx = self.events.subscribe();
        self.wants_events.store(true, Ordering::SeqCst);
        // Written now, before any later request, so none of its events is missed (when
        // the connection is busy being replaced, the next request subscribes first).
        if let Ok(slot) = self.conn.try_lock() {
            if let Some(c) = slot.as_ref() {
                c.subscribe_all();
            }
        }
        rx
    }

    fn status(&self, name: &str) -> Result<SessionRecord> {
        self.reader.status(name)
    }

    fn list(&self) -> Result<Vec<SessionRecord>> {
        self.reader.list()
    }

    fn has_process(&self, name: &str) -> Result<bool> {
        self.reader.has_process(name)
    }

    async fn spawn(&self, mut request: SpawnRequest) -> Result<(SessionRecord, Response)> {
        absolute_paths(&mut request.options);
        let name = request.name.clone();
        let t: Turned = self.ask(&name, Op::Spawn { request }).await?;
        let response = t
            .response
            .ok_or_else(|| EngineError::Host("the cms host sent no response".into()))?;
        Ok((t.record, response))
    }

    async fn send_as(
        &self,
        name: &str,
        message: &str,
        timeout: Option<Duration>,
        kind: &str,
    ) -> Result<Response> {
        // `--no-wait`: the host queues sends in arrival order, so a session in a turn
        // is refused here, as a lease held elsewhere is in process.
        if !self.config().wait_when_busy {
            let rec = self.reader.status(name)?;
            if rec.state.is_busy() {
                let pid = rec.host_pid.map(|p| p.to_string()).unwrap_or_default();
                return Err(EngineError::Busy {
                    name: name.into(),
                    holder: format!("a turn in the cms host (pid {pid})"),
                });
            }
        }
        let op = Op::Send {
            name: name.into(),
            message: message.into(),
            timeout_secs: timeout,
            kind: kind.into(),
        };
        self.ask(name, op).await
    }

    async fn pause(&self, name: &str) -> Result<SessionRecord> {
        self.ask(name, Op::Pause { name: name.into() }).await
    }

    async fn resume(
        &self,
        name: &str,
        message: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(SessionRecord, Option<Response>)> {
        let op = Op::Resume {
            name: name.into(),
            message: message.map(str::to_string),
            timeout_secs: timeout,
        };
        let t: Turned = self.ask(name, op).await?;
        Ok((t.record, t.response))
    }

    async fn fork(
        &self,
        name: &str,
        new_name: &str,
        message: Option<&str>,
        overrides: SessionOptions,
        timeout: Option<Duration>,
    ) -> Result<(SessionRecord, Option<Response>)> {
        let op = Op::Fork {
            name: name.into(),
            new_name: new_name.into(),
            message: message.map(str::to_string),
            overrides,
            timeout_secs: timeout,
        };
        let t: Turned = self.ask(new_name, op).await?;
        Ok((t.record, t.response))
    }

    async fn approvals(&self) -> Result<Vec<Approval>> {
        self.ask("", Op::Approvals).await
    }

    async fn decide(&self, verdict: ApprovalVerdict) -> Result<Approval> {
        let name = verdict.session.clone();
        self.ask(&name, Op::Decide { verdict }).await
    }

    async fn interrupt(&self, name: &str) -> Result<()> {
        let _: Value = self.ask(name, Op::Interrupt { name: name.into() }).await?;
        Ok(())
    }

    async fn stop(&self, name: &str) -> Result<SessionRecord> {
        self.ask(name, Op::Stop { name: name.into() }).await
    }

    async fn kill(&self, name: &str) -> Result<SessionRecord> {
        self.ask(name, Op::Kill { name: name.into() }).await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let _: Value = self.ask(name, Op::Delete { name: name.into() }).await?;
        Ok(())
    }

    async fn delete_to_replace(&self, name: &str) -> Result<()> {
        let op = Op::DeleteToReplace { name: name.into() };
        let _: Value = self.ask(name, op).await?;
        Ok(())
    }

    fn idle(&self, days: f64) -> Result<Vec<SessionRecord>> {
        self.reader.idle(days)
    }

    fn remove_idle(&self, names: &[String], days: f64) -> Result<Vec<String>> {
        self.reader.remove_idle(names, days)
    }

    /// The sessions live on in the host.
    async fn shutdown(&self) {}

    /// Interrupt the turns this process asked for; the sessions live on.
    async fn kill_all(&self) {
        let names: Vec<String> = self
            .in_flight
            .lock()
            .unwrap()
            .values()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect();
        for name in names {
            let _ = self.interrupt(&name).await;
        }
    }

    async fn interrupt_all(&self) {
        self.kill_all().await
    }
}

//! The host (`cms serve`): one long-lived process that owns every live session of a
//! home and serves the host protocol on its Unix socket.
//!
//! Each connection is read line by line; each request runs in its own task, so a
//! long turn never holds up another client (or another request of the same client).
//! A client that goes away mid-turn does not stop the turn: it finishes and is
//! recorded in the history. The socket is mode 0600 and a peer of another uid is
//! refused. The host exits on `shutdown`, on SIGTERM/SIGINT, or after an idle time
//! with no live session and no client; its sessions are stopped, resumable.

use super::endpoint::{Endpoint, HostFile};
use super::protocol::{Body, ErrorBody, HostInfo, Op, Reply, Request, Turned, MAX_LINE, PROTOCOL};
use crate::engine::events::now_ms;
use crate::engine::{lease, EngineError, Manager, Sessions};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

/// Events queued for one connection before the next ones are dropped.
const EVENT_QUEUE: usize = 4096;

/// How a host runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Exit after this long with no live session, no client and no request (None:
    /// never).
    pub idle_exit: Option<Duration>,
    /// The address of the HTTP face beside it (`cms serve --http`), as clients are
    /// told in `hello` and `status`.
    pub http: Option<String>,
    /// When a face beside the host (its HTTP clients) last had a request: that
    /// counts as activity too.
    pub activity: Option<Arc<Mutex<Instant>>>,
}

/// What the host shares between its connections.
struct Host {
    manager: Arc<Manager>,
    http: Option<String>,
    activity: Option<Arc<Mutex<Instant>>>,
    endpoint: Endpoint,
    started_at: i64,
    idle_exit: Option<Duration>,
    clients: AtomicUsize,
    in_flight: AtomicUsize,
    /// When the host last had a client, a request or a live session.
    last_busy: Mutex<Instant>,
    stop: Notify,
}

impl Host {
    fn info(&self) -> HostInfo {
        let mut live = self.manager.live_names();
        live.sort();
        HostInfo {
            protocol: PROTOCOL,
            version: super::version(),
            pid: std::process::id(),
            home: self.endpoint.home.clone(),
            socket: self.endpoint.socket.clone(),
            started_at: self.started_at,
            claude_bin: self.manager.config().claude_bin.clone(),
            live,
            clients: self.clients.load(Ordering::SeqCst),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            waiting: self.manager.waiting(),
            capacity: self.manager.capacity(),
            idle_exit_secs: self.idle_exit.map(|d| d.as_secs_f64()),
            http: self.http.clone(),
        }
    }

    fn touch(&self) {
        *self.last_busy.lock().unwrap() = Instant::now();
    }

    /// True when the host has had nothing to do for its idle time.
    fn idle_long_enough(&self) -> bool {
        let Some(limit) = self.idle_exit else {
            return false;
        };
        let busy = self.clients.load(Ordering::SeqCst) > 0
            || self.in_flight.load(Ordering::SeqCst) > 0
            || !self.manager.live_names().is_empty();
        if busy {
            self.touch();
            return false;
        }
        let beside = self
            .activity
            .as_ref()
            .is_some_and(|a| a.lock().unwrap_or_else(|p| p.into_inner()).elapsed() < limit);
        !beside && self.last_busy.lock().unwrap().elapsed() >= limit
    }
}

/// The error [`serve`] ends with.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("a cms host already runs for {home}{pid}; `cms host status` shows it, `cms host stop` ends it")]
    AlreadyRunning { home: String, pid: String },
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Serve the host protocol for `manager`'s home until shut down (a `shutdown`
/// request, `stop` resolving, or the idle time). Every session is stopped on the way
/// out, resumable.
pub async fn serve(
    manager: Arc<Manager>,
    opts: ServeOptions,
    stop: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let endpoint = Endpoint::for_home(&manager.config().home);
    std::fs::create_dir_all(&endpoint.home)
        .map_err(|e| EngineError::io(format!("cannot create {}", endpoint.home.display()), e))?;
    let _lock =
        lease::try_lock(&endpoint.lock, "host")?.ok_or_else(|| ServeError::AlreadyRunning {
            home: endpoint.home.display().to_string(),
            pid: endpoint
                .read_info()
                .map(|i| format!(" (pid {})", i.pid))
                .unwrap_or_default(),
        })?;
    let listener = bind(&endpoint)?;
    let host = Arc::new(Host {
        manager,
        endpoint: endpoint.clone(),
        started_at: now_ms(),
        idle_exit: opts.idle_exit,
        http: opts.http,
        activity: opts.activity,
        clients: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        last_busy: Mutex::new(Instant::now()),
        stop: Notify::new(),
    });
    let file = HostFile {
        pid: std::process::id(),
        version: super::version(),
        protocol: PROTOCOL,
        socket: endpoint.socket.clone(),
        started_at: host.started_at,
    };
    let _ = std::fs::write(
        &endpoint.info,
        serde_json::to_string_pretty(&file).unwrap_or_default(),
    );
    tracing::info!(
        "cms host (pid {}) serving {} on {}",
        file.pid,
        endpoint.home.display(),
        endpoint.socket.display()
    );
    tokio::pin!(stop);
    let mut idle_tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let host = host.clone();
                    tokio::spawn(async move { connection(host, stream).await });
                }
                Err(e) => tracing::warn!("accept failed: {e}"),
            },
            _ = &mut stop => break,
            _ = host.stop.notified() => break,
            _ = idle_tick.tick() => {
                if host.idle_long_enough() {
                    tracing::info!("idle for {:?}: exiting", host.idle_exit.unwrap_or_default());
                    break;
                }
            }
        }
    }
    // New clients find no socket (and start a new host) from here on.
    let _ = std::fs::remove_file(&endpoint.socket);
    host.manager.shutdown().await;
    if endpoint
        .read_info()
        .is_some_and(|i| i.pid == std::process::id())
    {
        let _ = std::fs::remove_file(&endpoint.info);
    }
    tracing::info!("cms host stopped; its sessions are stopped and resumable");
    Ok(())
}

/// Listen on the socket, readable and writable by this user only. The socket is made
/// under a temporary name and renamed into place once it listens, so a client never
/// finds a socket that refuses it (or one with looser permissions).
fn bind(endpoint: &Endpoint) -> Result<UnixListener, ServeError> {
    let path = &endpoint.socket;
    if let Err(why) = endpoint.check_private() {
        return Err(ServeError::Bind {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, why),
        });
    }
    let bind_err = |source| ServeError::Bind {
        path: path.display().to_string(),
        source,
    };
    let fresh = path.with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&fresh);
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(&fresh);
    unsafe { libc::umask(old) };
    let listener = listener.map_err(bind_err)?;
    use std::os::unix::fs::PermissionsExt;
    let ready = std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o600))
        // Held the host lock: whatever socket is at `path` is a dead host's.
        .and_then(|()| std::fs::rename(&fresh, path));
    if let Err(e) = ready {
        let _ = std::fs::remove_file(&fresh);
        return Err(bind_err(e));
    }
    Ok(listener)
}

/// Serve one client until it hangs up.
async fn connection(host: Arc<Host>, stream: UnixStream) {
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let (read, mut write) = stream.into_split();
    let cred = write.as_ref().peer_cred();
    // The peer's pid, in this host's pid namespace: who it runs under decides what it
    // may ask (see `peer`).
    let peer_pid = cred
        .as_ref()
        .ok()
        .and_then(|c| c.pid())
        .and_then(|p| u32::try_from(p).ok());
    let peer = cred.map(|c| c.uid());
    if peer.as_ref().ok() != Some(&me) {
        let who = match peer {
            Ok(uid) => format!("uid {uid}"),
            Err(e) => format!("a peer whose uid cannot be read ({e})"),
        };
        tracing::warn!("refused a connection from {who}: this host serves uid {me} only");
        let refusal = Reply {
            id: 0,
            body: Body::Error(Box::new(ErrorBody::plain(
                "refused",
                format!("this cms host serves uid {me} only; {who} was refused"),
            ))),
        };
        let line = serde_json::to_string(&refusal).unwrap_or_default() + "\n";
        let _ = write.write_all(line.as_bytes()).await;
        return;
    }
    host.clients.fetch_add(1, Ordering::SeqCst);
    host.touch();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    // Event lines queued and not yet written: past EVENT_QUEUE a subscriber that does
    // not read loses events (the log says so) rather than growing the host's memory
    // without end. Answers are always kept: there is one per request written.
    let queued = Arc::new(AtomicUsize::new(0));
    let written = queued.clone();
    let writer = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            let line = match line.strip_prefix(EVENT_MARK) {
                Some(event) => {
                    written.fetch_sub(1, Ordering::SeqCst);
                    event
                }
                None => line.as_str(),
            };
            if write.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let mut subscriptions: HashMap<u64, JoinHandle<()>> = HashMap::new();
    // Each subscription's flush: a request's answer is written only after every event
    // sent before it (a script's `cms.on` handlers see a turn's events before its end).
    let flushes: Flushes = Arc::default();
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if n > MAX_LINE {
            send(
                &tx,
                0,
                Err(ErrorBody::plain(
                    "too_long",
                    format!("a request line is limited to {} MiB", MAX_LINE >> 20),
                )),
            );
            break;
        }
        let text = String::from_utf8_lossy(&buf);
        if text.trim().is_empty() {
            continue;
        }
        let req: Request = match serde_json::from_str(&text) {
            Ok(r) => r,
            Err(e) => {
                let id = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["id"].as_u64())
                    .unwrap_or(0);
                send(
                    &tx,
                    id,
                    Err(ErrorBody::plain(
                        "bad_request",
                        format!("cannot read the request: {e}"),
                    )),
                );
                continue;
            }
        };
        let id = req.id;
        match req.op {
            Op::Hello { protocol, .. } if protocol != PROTOCOL => {
                let msg = format!("this host speaks protocol {PROTOCOL}, the client {protocol}");
                send(&tx, id, Err(ErrorBody::plain("protocol", msg)));
            }
            Op::Hello { .. } | Op::Status => send(&tx, id, Ok(json(&host.info()))),
            // Registered here, before the next line is read: a request written after
            // `subscribe` has every one of its events seen.
            Op::Subscribe { sessions } => {
                let events = host.manager.subscribe();
                send(&tx, id, Ok(Value::Null));
                let (flush_tx, flush_rx) = mpsc::unbounded_channel();
                flushes.lock().unwrap().insert(id, flush_tx);
                let forwarder = Forwarder {
                    id,
                    sessions,
                    tx: tx.clone(),
                    queued: queued.clone(),
                };
                subscriptions.insert(id, tokio::spawn(forwarder.run(events, flush_rx)));
            }
            Op::Unsubscribe { subscription } => {
                if let Some(s) = subscriptions.remove(&subscription) {
                    s.abort();
                }
                flushes.lock().unwrap().remove(&subscription);
                send(&tx, id, Ok(Value::Null));
            }
            Op::Shutdown => {
                send(&tx, id, Ok(Value::Null));
                host.stop.notify_one();
            }
            op => {
                let (host, tx, flushes) = (host.clone(), tx.clone(), flushes.clone());
                host.in_flight.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let result = match admit(&host.manager, &op, peer_pid) {
                        Ok(()) => run(&host.manager, op).await,
                        Err(e) => Err(e),
                    };
                    host.in_flight.fetch_sub(1, Ordering::SeqCst);
                    host.touch();
                    flush(&flushes).await;
                    send(&tx, id, result.map_err(|e| ErrorBody::from_error(&e)));
                });
            }
        }
    }
    for (_, s) in subscriptions {
        s.abort();
    }
    flushes.lock().unwrap().clear();
    drop(tx);
    let _ = writer.await;
    host.clients.fetch_sub(1, Ordering::SeqCst);
    host.touch();
}

/// Marks an event line on its way to the writer (which counts and strips it).
const EVENT_MARK: char = '\u{1}';

type Flushes = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<oneshot::Sender<()>>>>>;

/// Wait until every subscription of the connection has passed on the events sent so
/// far (at most a second: a stuck forwarder delays no answer for long).
async fn flush(flushes: &Flushes) {
    let waits: Vec<_> = flushes
        .lock()
        .unwrap()
        .values()
        .filter_map(|f| {
            let (done, wait) = oneshot::channel();
            f.send(done).ok().map(|_| wait)
        })
        .collect();
    for wait in waits {
        let _ = tokio::time::timeout(Duration::from_secs(1), wait).await;
    }
}

/// One subscription: the manager's events of its sessions, as `event` lines.
struct Forwarder {
    id: u64,
    sessions: Option<Vec<String>>,
    tx: mpsc::UnboundedSender<String>,
    queued: Arc<AtomicUsize>,
}

impl Forwarder {
    async fn run(
        self,
        mut events: broadcast::Receiver<crate::engine::SessionEvent>,
        mut flushes: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    ) {
        use broadcast::error::{RecvError, TryRecvError};
        loop {
            tokio::select! {
                biased;
                Some(done) = flushes.recv() => {
                    // Everything sent before the flush was asked for is in the channel.
                    loop {
                        match events.try_recv() {
                            Ok(e) => self.forward(e),
                            Err(TryRecvError::Lagged(n)) => self.lagged(n),
                            Err(_) => break,
                        }
                    }
                    let _ = done.send(());
                }
                r = events.recv() => match r {
                    Ok(e) => self.forward(e),
                    Err(RecvError::Lagged(n)) => self.lagged(n),
                    Err(RecvError::Closed) => break,
                },
            }
        }
    }

    fn forward(&self, e: crate::engine::SessionEvent) {
        if self
            .sessions
            .as_ref()
            .is_some_and(|s| !s.contains(&e.session))
        {
            return;
        }
        if self.queued.load(Ordering::SeqCst) >= EVENT_QUEUE {
            tracing::warn!(
                "a subscriber does not read: an event of {} was dropped",
                e.session
            );
            return;
        }
        let reply = Reply {
            id: self.id,
            body: Body::Event(e),
        };
        let line = format!(
            "{EVENT_MARK}{}\n",
            serde_json::to_string(&reply).unwrap_or_default()
        );
        self.queued.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(line).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn lagged(&self, n: u64) {
        tracing::warn!("a subscriber fell behind: {n} events skipped");
    }
}

/// Whether the peer may ask for `op`: one inside a guarded session's tree is held to
/// that session's guard.
fn admit(m: &Manager, op: &Op, peer_pid: Option<u32>) -> Result<(), EngineError> {
    // Only these can widen what a guarded session may do.
    let gated = matches!(
        op,
        Op::Decide { .. }
            | Op::Spawn { .. }
            | Op::Send { .. }
            | Op::Resume { .. }
            | Op::Fork { .. }
    );
    if !gated {
        return Ok(());
    }
    match peer_pid {
        Some(pid) => match super::peer::guarded_ancestor(m, pid) {
            Some(parent) => super::peer::check(m, op, &parent),
            None => Ok(()),
        },
        None if matches!(op, Op::Decide { verdict } if verdict.allow) => Err(EngineError::Invalid(
            "cms refused: the host cannot tell which process asks to approve a tool call".into(),
        )),
        None => Ok(()),
    }
}

/// Serve one session request on the manager.
async fn run(m: &Manager, op: Op) -> Result<Value, EngineError> {
    Ok(match op {
        Op::Spawn { request } => {
            let (record, response) = Sessions::spawn(m, request).await?;
            json(&Turned {
                record,
                response: Some(response),
            })
        }
        Op::Send {
            name,
            message,
            timeout_secs,
            kind,
        } => json(&m.send_as(&name, &message, timeout_secs, &kind).await?),
        Op::Pause { name } => json(&m.pause(&name).await?),
        Op::Resume {
            name,
            message,
            timeout_secs,
        } => {
            let (record, response) = m.resume(&name, message.as_deref(), timeout_secs).await?;
            json(&Turned { record, response })
        }
        Op::Fork {
            name,
            new_name,
            message,
            overrides,
            timeout_secs,
        } => {
            let (record, response) = m
                .fork(
                    &name,
                    &new_name,
                    message.as_deref(),
                    overrides,
                    timeout_secs,
                )
                .await?;
            json(&Turned { record, response })
        }
        Op::Approvals => json(&m.approvals()),
        Op::Decide { verdict } => json(&m.decide(verdict).await?),
        Op::Interrupt { name } => {
            m.interrupt(&name).await?;
            Value::Null
        }
        Op::Stop { name } => json(&m.stop(&name).await?),
        Op::Kill { name } => json(&m.kill(&name).await?),
        Op::Delete { name } => {
            m.delete(&name).await?;
            Value::Null
        }
        Op::DeleteToReplace { name } => {
            m.delete_to_replace(&name).await?;
            Value::Null
        }
        Op::Hello { .. }
        | Op::Status
        | Op::Subscribe { .. }
        | Op::Unsubscribe { .. }
        | Op::Shutdown => return Err(EngineError::Invalid("not a session request".into())),
    })
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn send(tx: &mpsc::UnboundedSender<String>, id: u64, result: Result<Value, ErrorBody>) {
    let body = match result {
        Ok(v) => Body::Ok(v),
        Err(e) => Body::Error(Box::new(e)),
    };
    let line = serde_json::to_string(&Reply { id, body }).unwrap_or_default() + "\n";
    let _ = tx.send(line);
}

//! One open connection to the host: requests written as lines, answers matched to
//! them by id, events passed on to the client's channel.

use super::protocol::{Body, ErrorBody, HostInfo, Op, Reply, Request, PROTOCOL};
use crate::engine::{EngineError, Result, SessionEvent};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc, oneshot};

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Body>>>>;

/// The longest line a client reads from the host: an answer carries a turn's text,
/// which the engine reads from claude up to 64 MiB; JSON escaping may double it.
const REPLY_LIMIT: usize = 160 << 20;

/// How long a host may take to answer hello.
const HELLO_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Fail every request waiting on this connection with `why`.
fn fail_all(pending: &Pending, why: &str) {
    let waiting: Vec<_> = pending.lock().unwrap().drain().collect();
    for (_, w) in waiting {
        let _ = w.send(Body::Error(Box::new(ErrorBody::plain("host", why))));
    }
}

/// One open connection to the host.
pub struct Connection {
    tx: mpsc::UnboundedSender<String>,
    pending: Pending,
    alive: Arc<AtomicBool>,
    /// Whether this connection carries the client's subscription to every event.
    subscribed: AtomicBool,
    /// The host's refusal (id 0), kept for a request written after it came.
    refused: Arc<Mutex<Option<Body>>>,
    pub(super) info: HostInfo,
}

impl Connection {
    /// Open a connection and say hello (None: nothing listens there).
    pub(super) async fn open(
        stream: UnixStream,
        client: &str,
        events: broadcast::Sender<SessionEvent>,
    ) -> Result<Connection> {
        let (read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let pending: Pending = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if write.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        let refused: Arc<Mutex<Option<Body>>> = Arc::default();
        let (p, a, r) = (pending.clone(), alive.clone(), refused.clone());
        tokio::spawn(async move {
            let mut reader = BufReader::new(read);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match (&mut reader)
                    .take(REPLY_LIMIT as u64 + 1)
                    .read_until(b'\n', &mut buf)
                    .await
                {
                    Ok(0) | Err(_) => break,
                    Ok(n) if n > REPLY_LIMIT => {
                        // The rest of the line cannot be told from the next: give up on
                        // this connection, and say why to everyone waiting on it.
                        fail_all(
                            &p,
                            &format!(
                                "the cms host sent a line over {} MiB, which this client does not \
                             read; the answer is in `cms history`",
                                REPLY_LIMIT >> 20
                            ),
                        );
                        break;
                    }
                    Ok(_) => {}
                }
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let reply: Reply = match serde_json::from_slice(&buf) {
                    Ok(r) => r,
                    Err(e) => {
                        // Its request (if its id can be read) must not wait forever.
                        let id = serde_json::from_slice::<serde_json::Value>(&buf)
                            .ok()
                            .and_then(|v| v["id"].as_u64());
                        let why = format!("the cms host's answer could not be read: {e}");
                        tracing::warn!("{why}");
                        if let Some(w) = id.and_then(|id| p.lock().unwrap().remove(&id)) {
                            let _ = w.send(Body::Error(Box::new(ErrorBody::plain("host", why))));
                        }
                        continue;
                    }
                };
                match reply.body {
                    Body::Event(e) => {
                        let _ = events.send(e);
                    }
                    body => {
                        let waiter = p.lock().unwrap().remove(&reply.id);
                        match waiter {
                            Some(w) => {
                                let _ = w.send(body);
                            }
                            // A refusal comes before any request: fail them all.
                            None if reply.id == 0 => {
                                *r.lock().unwrap() = Some(body.clone());
                                let refused = p.lock().unwrap().drain().collect::<Vec<_>>();
                                for (_, w) in refused {
                                    let _ = w.send(body.clone());
                                }
                            }
                            None => {}
                        }
                    }
                }
            }
            a.store(false, Ordering::SeqCst);
            // Dropping the senders tells every waiter the host went away.
            p.lock().unwrap().clear();
        });
        let mut conn = Connection {
            tx,
            pending,
            alive,
            subscribed: AtomicBool::new(false),
            refused,
            info: HostInfo::default(),
        };
        let hello = Op::Hello {
            protocol: PROTOCOL,
            version: super::version(),
            client: client.to_string(),
            pid: std::process::id(),
        };
        // A host that is stopped (SIGSTOP) or wedged accepts but never answers.
        let answer = tokio::time::timeout(HELLO_LIMIT, conn.call(0, hello))
            .await
            .map_err(|_| {
                EngineError::Host(format!(
                    "the cms host does not answer (no hello within {}s): if it was stopped, \
                     continue it (`kill -CONT PID`), else end it (`kill PID`; the pid is in \
                     host.json in CMS_HOME) and the next command starts a new one",
                    HELLO_LIMIT.as_secs()
                ))
            })??;
        conn.info = serde_json::from_value(answer).map_err(|e| {
            EngineError::Host(format!(
                "the cms host answered hello with something else: {e}"
            ))
        })?;
        Ok(conn)
    }

    pub(super) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Send request `op` with a fresh id and wait for its answer.
    pub(super) async fn call(&self, id: u64, op: Op) -> Result<Value> {
        let id = if id == 0 { next_id() } else { id };
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let line = serde_json::to_string(&Request { id, op })
            .map_err(|e| EngineError::Invalid(format!("cannot write the request: {e}")))?;
        // Alive is read after the waiter is in place and before the line goes out:
        // the reader clears the waiters after it marks the connection dead, so a
        // connection that dies later drops our waiter, and an answer that comes
        // before we look again (the host may answer and close at once) is kept.
        if !self.is_alive() || self.tx.send(line + "\n").is_err() {
            self.pending.lock().unwrap().remove(&id);
            return Err(self.gone());
        }
        match rx.await {
            Ok(Body::Ok(v)) => Ok(v),
            Ok(Body::Error(e)) => Err((*e).into_error()),
            Ok(Body::Event(_)) | Err(_) => Err(self.gone()),
        }
    }

    /// Subscribe this connection to every event, once.
    pub(super) fn subscribe_all(&self) {
        if !self.subscribed.swap(true, Ordering::SeqCst) {
            self.post(next_id(), Op::Subscribe { sessions: None });
        }
    }

    /// Send a request whose answer nobody waits for (a subscription's events come
    /// with its id).
    pub(super) fn post(&self, id: u64, op: Op) {
        if let Ok(line) = serde_json::to_string(&Request { id, op }) {
            let _ = self.tx.send(line + "\n");
        }
    }

    fn gone(&self) -> EngineError {
        if let Some(Body::Error(e)) = self.refused.lock().unwrap().clone() {
            return (*e).into_error();
        }
        EngineError::Host(format!(
            "the cms host (pid {}) went away before it answered; the session's state is in \
             `cms status`, and the next command starts a new host",
            self.info.pid
        ))
    }
}

pub(super) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

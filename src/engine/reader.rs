//! The child's output streams: stdout read one JSON line at a time (parsed off the
//! session's task, with a size cap), and stderr kept as a bounded tail for error
//! messages.

use crate::engine::child::Shared;
use crate::wire::message::Message;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

/// Longest stdout line kept; a longer one is dropped and reported.
pub(crate) const MAX_LINE: usize = 64 * 1024 * 1024;
/// How much of the child's stderr is kept.
pub(crate) const STDERR_TAIL: usize = 64 * 1024;

pub(crate) enum Line {
    Msg(Box<Message>),
    Garbage(String),
    /// A line longer than [`MAX_LINE`] was dropped (it may have been the turn's answer).
    Oversized,
}

/// Read stdout, one JSON line at a time, parsing off the actor's task.
pub(crate) async fn read_stdout(stdout: tokio::process::ChildStdout, tx: mpsc::Sender<Line>) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut buf: Vec<u8> = Vec::new();
    let mut dropping = false;
    while let Ok(chunk) = reader.fill_buf().await {
        if chunk.is_empty() {
            break;
        }
        let (take, complete) = match memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !dropping {
            if buf.len() + take > MAX_LINE {
                dropping = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        reader.consume(take);
        if complete {
            let item = if dropping {
                dropping = false;
                Some(Line::Oversized)
            } else {
                parse_line(&buf)
            };
            buf.clear();
            if let Some(item) = item {
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        }
    }
    if !buf.is_empty() && !dropping {
        if let Some(item) = parse_line(&buf) {
            let _ = tx.send(item).await;
        }
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

fn parse_line(buf: &[u8]) -> Option<Line> {
    let text = String::from_utf8_lossy(buf);
    let line = text.trim();
    if line.is_empty() {
        return None;
    }
    Some(match Message::parse(line) {
        Ok(m) => Line::Msg(Box::new(m)),
        Err(e) => Line::Garbage(e.to_string()),
    })
}

pub(crate) async fn read_stderr(
    mut stderr: tokio::process::ChildStderr,
    shared: Arc<Shared>,
    name: String,
) {
    let mut chunk = vec![0u8; 8192];
    loop {
        match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tracing::debug!(session = %name, stderr = %String::from_utf8_lossy(&chunk[..n]).trim_end());
                let text = String::from_utf8_lossy(&chunk[..n]);
                // A remote runner's first line names the remote process group.
                if let Some(pgid) = text.lines().find_map(crate::engine::runner::parse_pgid) {
                    shared.info.lock().unwrap().remote_pgid = Some(pgid);
                }
                let mut buf = shared.stderr.lock().unwrap();
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > STDERR_TAIL {
                    let cut = buf.len() - STDERR_TAIL;
                    buf.drain(..cut);
                }
            }
        }
    }
}

//! What a command says on stderr while it waits: a session busy in another cms
//! command (and its place in line), and the CLI's API retries as they happen.
//!
//! Only for a person: shown when stderr is a terminal, or when `CMS_PROGRESS=1` asks
//! for it (logs of unattended runs). The final error of a turn names its retries
//! either way.

use crate::engine::lease::Holder;
use crate::engine::{EventKind, SessionEvent, Sessions};
use std::io::IsTerminal;
use tokio::task::JoinHandle;

/// Whether progress lines go to stderr.
pub fn wanted() -> bool {
    match std::env::var("CMS_PROGRESS").as_deref() {
        Ok("1") | Ok("always") => true,
        Ok("0") | Ok("never") => false,
        _ => std::io::stderr().is_terminal(),
    }
}

/// Prints progress lines while it lives: dropping it stops them.
pub struct Watching(JoinHandle<()>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Print progress lines for every session of this process until the manager's event
/// stream ends or the returned guard is dropped. None when nobody would see them.
pub fn watch(manager: &dyn Sessions) -> Option<Watching> {
    if !wanted() {
        return None;
    }
    let mut events = manager.subscribe();
    Some(Watching(tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(line) = line(&e) {
                        crate::app::runtime::errln!("{line}");
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            }
        }
    })))
}

/// The line an event deserves, if any.
pub fn line(e: &SessionEvent) -> Option<String> {
    match &e.kind {
        EventKind::Waiting {
            holder_pid,
            holder_kind,
            position,
        } => {
            let who = Holder {
                pid: *holder_pid,
                kind: holder_kind.clone(),
            }
            .who();
            let place = match position {
                1 => "next in line".to_string(),
                n => format!("{n} in line"),
            };
            Some(format!(
                "cms: session '{}' is busy in {who}; waiting ({place}; --no-wait refuses instead)",
                e.session
            ))
        }
        EventKind::Queued { position } => {
            let place = match position {
                1 => "next in line".to_string(),
                n => format!("{n} in line"),
            };
            Some(format!(
                "cms: session '{}' waits for a free slot ({place}; host.max_live and host.max_turns in safety.lua set how many)",
                e.session
            ))
        }
        EventKind::Retry(r) => {
            let status = match r.error_status {
                Some(s) => format!("API error {s}"),
                None => "API unreachable".to_string(),
            };
            let why = r
                .error
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            Some(format!(
                "cms: session '{}': {status}{why}; retry {}/{} in {:.1}s",
                e.session,
                r.attempt,
                r.max_retries,
                r.retry_delay_ms / 1000.0
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::events::ApiRetryEvent;

    fn event(kind: EventKind) -> SessionEvent {
        SessionEvent {
            session: "s".into(),
            at_ms: 0,
            kind,
        }
    }

    #[test]
    fn retries_and_waits_read_as_sentences() {
        let retry = event(EventKind::Retry(ApiRetryEvent {
            attempt: 2,
            max_retries: 10,
            retry_delay_ms: 1200.0,
            error_status: Some(529),
            error: Some("overloaded".into()),
        }));
        assert_eq!(
            line(&retry).unwrap(),
            "cms: session 's': API error 529 (overloaded); retry 2/10 in 1.2s"
        );
        let wait = event(EventKind::Waiting {
            holder_pid: Some(12),
            holder_kind: Some("cli".into()),
            position: 2,
        });
        let text = line(&wait).unwrap();
        assert!(text.contains("another cms command (pid 12)") && text.contains("2 in line"));
        assert!(line(&event(EventKind::Text { text: "x".into() })).is_none());
    }
}

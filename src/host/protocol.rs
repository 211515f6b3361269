//! The host protocol: JSON lines on the host's Unix socket (`docs/HOST-PROTOCOL.md`).
//!
//! A client writes [`Request`]s, one JSON object per line, each with an `id` it
//! chooses; the host answers each with one [`Reply`] line carrying the same `id`
//! (`ok` or `error`), in any order, and streams `event` lines for the subscriptions a
//! client opened. The first request on a connection is `hello`.

use crate::engine::spec::opt_secs;
use crate::engine::{EngineError, Response, SessionEvent, SessionOptions, SpawnRequest};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// The protocol's version. A client and host that differ cannot talk; the host's
/// cms version is checked too (see `start.rs`).
pub const PROTOCOL: u32 = 1;

/// The longest line either side accepts (a spawn carries a prompt; 16 MiB is plenty).
pub const MAX_LINE: usize = 16 << 20;

/// One line from a client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub op: Op,
}

/// What a client asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The first request: who is asking. Answered with [`HostInfo`].
    Hello {
        protocol: u32,
        version: String,
        /// `cli`, `script`, `repl`, `mcp`, ...
        client: String,
        pid: u32,
    },
    /// Start a session and send its first prompt: answered with [`Turned`].
    Spawn { request: SpawnRequest },
    /// A follow-up (resuming a stopped or parked session): answered with a [`Response`].
    Send {
        name: String,
        message: String,
        #[serde(default, with = "opt_secs", skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<Duration>,
        /// The history kind (`send`, `continue`, `retry`, ...).
        #[serde(default = "send_kind")]
        kind: String,
    },
    /// Answered with the session record.
    Pause { name: String },
    /// Answered with [`Turned`] (no response without a message).
    Resume {
        name: String,
        #[serde(default)]
        message: Option<String>,
        #[serde(default, with = "opt_secs", skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<Duration>,
    },
    /// Answered with [`Turned`] for the new session.
    Fork {
        name: String,
        new_name: String,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        overrides: SessionOptions,
        #[serde(default, with = "opt_secs", skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<Duration>,
    },
    /// Tool calls waiting for a person's decision, oldest first: answered with a list
    /// of approvals.
    Approvals,
    /// Approve or deny a waiting tool call: answered with the approval decided.
    Decide {
        verdict: crate::engine::ApprovalVerdict,
    },
    /// Answered with `null`.
    Interrupt { name: String },
    /// Answered with the session record.
    Stop { name: String },
    /// Answered with the session record.
    Kill { name: String },
    /// Answered with `null`.
    Delete { name: String },
    /// Delete to start anew, refused while another process drives it: `null`.
    DeleteToReplace { name: String },
    /// Stream the events of these sessions (all when absent) as `event` lines with
    /// this request's id, until `unsubscribe` or the connection ends. Answered with
    /// `null` first.
    Subscribe {
        #[serde(default)]
        sessions: Option<Vec<String>>,
    },
    /// End the subscription opened by request `subscription`: answered with `null`.
    Unsubscribe { subscription: u64 },
    /// The host's state: answered with [`HostInfo`].
    Status,
    /// Stop every session (resumable) and exit: answered with `null` first.
    Shutdown,
}

fn send_kind() -> String {
    "send".into()
}

/// One line from the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// The request this answers (0: none, e.g. a refusal before any request).
    pub id: u64,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    Ok(Value),
    Error(Box<ErrorBody>),
    Event(SessionEvent),
}

/// A session record with the response of the turn that came with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Turned {
    pub record: crate::engine::SessionRecord,
    pub response: Option<Response>,
}

/// What the host says about itself (`hello`, `status`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostInfo {
    pub protocol: u32,
    /// The host's cms version.
    pub version: String,
    pub pid: u32,
    pub home: PathBuf,
    pub socket: PathBuf,
    /// Unix milliseconds.
    pub started_at: i64,
    pub claude_bin: PathBuf,
    /// Sessions with a live `claude` child.
    pub live: Vec<String>,
    /// Connected clients, this one included.
    pub clients: usize,
    /// Requests being served now.
    pub in_flight: usize,
    /// Requests waiting for a live child or a turn (`max_live`, `max_turns`).
    #[serde(default)]
    pub waiting: usize,
    /// The caps and budgets in force (`M.host` of `safety.lua`).
    #[serde(default)]
    pub capacity: crate::engine::capacity::Capacity,
    /// The host exits after this long with no live session and no client (None: never).
    pub idle_exit_secs: Option<f64>,
    /// Where the host serves MCP over HTTP and the dashboard (`cms serve --http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

/// An engine error on the wire: its kind, its words, and what is needed to rebuild
/// it on the client side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// [`EngineError::code`]: `not_found`, `busy`, `timeout`, ...
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Who holds the session (`busy`, `held_elsewhere`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The response of a turn that ended early, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<Response>,
}

impl ErrorBody {
    /// An error that is not the engine's (a bad request line, a refusal).
    pub fn plain(code: &str, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code: code.into(),
            message: message.into(),
            session: None,
            holder: None,
            path: None,
            partial: None,
        }
    }

    pub fn from_error(e: &EngineError) -> ErrorBody {
        let mut body = ErrorBody::plain(e.code(), e.to_string());
        body.partial = e.partial().cloned();
        match e {
            EngineError::NotFound(n)
            | EngineError::AlreadyExists(n)
            | EngineError::InvalidName(n)
            | EngineError::Paused(n)
            | EngineError::NoSessionId(n)
            | EngineError::NotLive(n) => body.session = Some(n.clone()),
            EngineError::Busy { name, holder } | EngineError::HeldElsewhere { name, holder } => {
                body.session = Some(name.clone());
                body.holder = Some(holder.clone());
            }
            EngineError::BinaryNotFound { path } => body.path = Some(path.clone()),
            _ => {}
        }
        body
    }

    /// The engine error again, as close to the host's as the wire allows: the kinds
    /// a frontend gives advice for come back exactly; the rest keep their words.
    pub fn into_error(self) -> EngineError {
        let session = self.session.clone().unwrap_or_default();
        let holder = self.holder.clone().unwrap_or_default();
        let partial = self.partial.map(Box::new);
        match (self.code.as_str(), self.session.is_some()) {
            ("not_found", true) => EngineError::NotFound(session),
            ("already_exists", true) => EngineError::AlreadyExists(session),
            ("invalid_name", true) => EngineError::InvalidName(session),
            ("paused", true) => EngineError::Paused(session),
            ("no_session_id", true) => EngineError::NoSessionId(session),
            ("not_live", true) => EngineError::NotLive(session),
            ("busy", true) => EngineError::Busy {
                name: session,
                holder,
            },
            ("held_elsewhere", true) => EngineError::HeldElsewhere {
                name: session,
                holder,
            },
            ("binary_not_found", _) if self.path.is_some() => EngineError::BinaryNotFound {
                path: self.path.unwrap_or_default(),
            },
            ("stopped", _) => EngineError::Stopped { partial },
            ("killed", _) => EngineError::Killed { partial },
            ("invalid", _) => EngineError::Invalid(self.message),
            ("host", _) => EngineError::Host(self.message),
            _ => EngineError::Remote {
                code: self.code,
                message: self.message,
                partial,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_documented() {
        let r: Request = serde_json::from_str(
            r#"{"id":7,"op":"send","name":"a","message":"hi","timeout_secs":2.5}"#,
        )
        .unwrap();
        assert_eq!(r.id, 7);
        match r.op {
            Op::Send {
                name,
                message,
                timeout_secs,
                kind,
            } => {
                assert_eq!((name.as_str(), message.as_str()), ("a", "hi"));
                assert_eq!(timeout_secs, Some(Duration::from_millis(2500)));
                assert_eq!(kind, "send");
            }
            other => panic!("read as {other:?}"),
        }
        let bad = serde_json::from_str::<Request>(r#"{"id":1,"op":"send","name":"a"}"#);
        assert!(bad.unwrap_err().to_string().contains("message"));
        let neg = serde_json::from_str::<Request>(
            r#"{"id":1,"op":"send","name":"a","message":"m","timeout_secs":-1}"#,
        );
        assert!(neg.unwrap_err().to_string().contains("timeout"));
    }

    #[test]
    fn the_examples_of_the_protocol_page_read() {
        let page = include_str!("../../docs/HOST-PROTOCOL.md");
        let mut requests = 0;
        let mut replies = 0;
        for line in page
            .lines()
            .filter(|l| l.starts_with("{\"id\"") && !l.contains("..."))
        {
            if line.contains("\"op\"") {
                serde_json::from_str::<Request>(line).unwrap_or_else(|e| panic!("{line}: {e}"));
                requests += 1;
            } else {
                serde_json::from_str::<Reply>(line).unwrap_or_else(|e| panic!("{line}: {e}"));
                replies += 1;
            }
        }
        assert!(
            requests >= 4 && replies >= 3,
            "{requests} requests, {replies} replies"
        );
        let spawn = r#"{"id":9,"op":"spawn","request":{"name":"a","prompt":"hi","options":{"model":"sonnet","work_dir":"/w"},"timeout_secs":30}}"#;
        match serde_json::from_str::<Request>(spawn).unwrap().op {
            Op::Spawn { request } => {
                assert_eq!(request.timeout, Some(Duration::from_secs(30)));
                assert_eq!(request.options.model.as_deref(), Some("sonnet"));
            }
            other => panic!("read as {other:?}"),
        }
    }

    #[test]
    fn replies_are_one_object_with_the_id_beside_the_body() {
        let line = serde_json::to_string(&Reply {
            id: 3,
            body: Body::Ok(serde_json::json!({"x": 1})),
        })
        .unwrap();
        assert_eq!(line, r#"{"id":3,"ok":{"x":1}}"#);
        let back: Reply = serde_json::from_str(r#"{"id":4,"error":{"code":"busy","message":"m","session":"s","holder":"cms mcp (pid 9)"}}"#).unwrap();
        assert_eq!(back.id, 4);
        let Body::Error(e) = back.body else {
            panic!("not an error")
        };
        let e = (*e).into_error();
        assert!(
            matches!(&e, EngineError::Busy { name, holder } if name == "s" && holder.contains("mcp"))
        );
        assert!(e.remedy().is_some(), "advice survives the wire");
    }

    #[test]
    fn errors_keep_their_kind_words_and_partial_response() {
        let partial = Response {
            text: "half".into(),
            cost_usd: 0.25,
            ..Response::default()
        };
        let e = EngineError::Timeout {
            secs: 3.0,
            action: "interrupted",
            retrying: String::new(),
            partial: Some(Box::new(partial.clone())),
        };
        let wire = serde_json::to_string(&ErrorBody::from_error(&e)).unwrap();
        let back: ErrorBody = serde_json::from_str(&wire).unwrap();
        let again = back.into_error();
        assert_eq!(again.code(), "timeout");
        assert_eq!(again.to_string(), e.to_string());
        assert_eq!(again.partial(), Some(&partial));
        let nf = ErrorBody::from_error(&EngineError::NotFound("x".into())).into_error();
        assert!(matches!(nf, EngineError::NotFound(n) if n == "x"));
    }
}

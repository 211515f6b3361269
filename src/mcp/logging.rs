//! MCP logging for clients of the 2025-11-25 revision: a client asks for messages
//! from a level up (`logging/setLevel`), and cms sends what concerns its tools: a
//! plugin that failed to load on a reload (error) and the tool list changing (info).
//! The 2026-07-28 revision drops MCP logging (SEP-2577); rmcp marks it deprecated,
//! hence the `allow` here and nowhere else.
#![allow(deprecated)]

use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam};
use rmcp::service::{Peer, RoleServer};
use serde_json::Value;
use std::sync::{Arc, Mutex};

pub use rmcp::model::LoggingLevel as Level;

/// The level one client asked for (None: it asked for none, so it gets none).
pub type Wanted = Arc<Mutex<Option<LoggingLevel>>>;

fn rank(l: LoggingLevel) -> u8 {
    match l {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// Remember the level a client asked for.
pub fn set(wanted: &Wanted, level: LoggingLevel) {
    *wanted.lock().unwrap_or_else(|p| p.into_inner()) = Some(level);
}

/// Send `text` at `level` to `peer` if it asked for that level or a lower one.
pub async fn send(peer: &Peer<RoleServer>, wanted: &Wanted, level: LoggingLevel, text: &str) {
    let asked = *wanted.lock().unwrap_or_else(|p| p.into_inner());
    if asked.is_some_and(|a| rank(level) >= rank(a)) {
        let note = LoggingMessageNotificationParam::new(level, Value::String(text.to_string()))
            .with_logger("cms");
        if let Err(e) = peer.notify_logging_message(note).await {
            tracing::debug!("could not send a log message: {e}");
        }
    }
}

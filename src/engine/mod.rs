//! The engine: sessions (one long-lived `claude` child each), the manager of named
//! sessions, the SQLite store and the policy door. Host-agnostic and async; it never
//! prints and never reads a terminal.

mod actor;
pub mod config;
pub mod error;
pub mod events;
pub mod manager;
pub mod os_sandbox;
pub mod policy;
pub mod process;
mod reader;
pub mod response;
pub mod session;
pub mod state;
pub mod store;

pub use config::{EngineConfig, SessionOptions};
pub use error::{EngineError, Result};
pub use events::{EventKind, SessionEvent};
pub use manager::{seconds, BatchOutcome, BatchSpec, Manager, SpawnRequest, SpawnSpec};
pub use policy::{AllowAll, Decision, Guard, Policy, Progress, ToolCall, Verdict, Violation};
pub use response::Response;
pub use session::LiveSession;
pub use state::SessionState;
pub use store::{Interaction, SessionRecord, Store};

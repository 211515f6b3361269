//! The engine: sessions (one long-lived `claude` child each), the manager of named
//! sessions, the SQLite store and the policy door. Host-agnostic and async; it never
//! prints and never reads a terminal.

mod actor;
pub mod approval;
pub mod capacity;
mod child;
pub mod config;
pub mod cost;
pub mod error;
pub mod events;
mod in_process;
pub mod lease;
pub mod manager;
pub mod mode;
pub mod os_sandbox;
pub mod policy;
pub mod process;
mod reader;
pub mod response;
pub mod runner;
pub mod session;
pub mod sessions;
pub mod spec;
pub mod state;
pub mod store;
pub mod supervisor;

pub use approval::{Approval, Verdict as ApprovalVerdict};
pub use capacity::Capacity;
pub use config::{EngineConfig, SessionOptions};
pub use error::{EngineError, Remedy, Result};
pub use events::{EventKind, SessionEvent};
pub use manager::{seconds, BatchOutcome, BatchSpec, Manager, SpawnRequest, SpawnSpec};
pub use mode::PermissionMode;
pub use policy::{AllowAll, Decision, Guard, Policy, Progress, ToolCall, Verdict, Violation};
pub use response::Response;
pub use runner::{Launch, LocalRunner, RemoteEnd, RunRequest, Runner};
pub use session::LiveSession;
pub use sessions::{Sessions, Where};
pub use state::SessionState;
pub use store::{Interaction, SessionRecord, Store};

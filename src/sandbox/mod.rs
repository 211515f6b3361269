//! The floor under every Lua state cms runs: scripts, the REPL, policies, plugins
//! and delegation strategies all stand on it, and it imports nothing above the
//! engine.
//!
//! - [`state`]: the restricted state, built in one place;
//! - [`limits`]: time limits that follow coroutines, interruption by signals, and
//!   memory checks for Rust-side work;
//! - [`error_text`]: Lua errors as people read them;
//! - [`convert`]: values between Rust and Lua;
//! - [`base_module`]: the part of the `cms` module every state has (`cms.json`,
//!   `cms.log`, `cms.path`, `cms.shell`, `cms.version`);
//! - [`paths`] and [`shell`]: the pure path and Bash readers behind `cms.path` and
//!   `cms.shell` (and the policy's Rust-side checks);
//! - [`scripts`] and [`trust`]: where scripts are found, in layers, and which of a
//!   project's own count.

pub mod base_module;
pub mod convert;
pub mod error_text;
pub mod limits;
pub mod paths;
pub mod scripts;
pub mod shell;
pub mod state;
pub mod trust;

pub use error_text::error_text;
pub use scripts::{Layers, Source};
pub use state::{new_state, StateOptions};

//! The scripting layer: the `cms` Lua module over the engine.
//!
//! - [`host`]: one Lua state with the sandbox, the memory limit and the time limit
//!   for callbacks, and the `cms` module installed;
//! - [`limits`]: the instruction hook every state gets: time limits that follow
//!   coroutines, interruption by signals, and memory checks for Rust-side work;
//! - [`api`]: the `cms.*` functions (spawn, get, list, parallel, on, sleep, log, json, args);
//! - [`session`]: the session object scripts hold (`s:send`, `s:fork`, ...);
//! - [`convert`]: engine values as Lua tables and back;
//! - [`delegate`]: delegation with strategies (`cms.delegate`, and the CLI's and MCP's);
//! - [`helpers`]: `cms.path` and `cms.shell`, for safety rules and scripts;
//! - [`pretty`]: values printed for people (the REPL);
//! - [`stubs`]: the LuaLS `---@meta` description of the API.
//!
//! Engine calls are async in Rust and plain calls in Lua: each yields its coroutine,
//! so `cms.parallel` runs many sessions at once from straight-line code.

pub mod api;
pub mod convert;
pub mod host;
pub mod pretty;
pub mod session;
pub mod stubs;
pub mod worker;

pub use host::{HostOptions, LuaHost, ScriptError};

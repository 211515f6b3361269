//! The `cms` Lua module over the engine, for scripts and the REPL.
//!
//! - [`host`]: a script's Lua state (built by [`crate::sandbox::state`]) with the
//!   `cms` module installed, `cms.on` handlers, and plugins' strategies;
//! - [`api`]: the `cms.*` functions (spawn, get, list, parallel, on, off, sleep,
//!   delegate, args; the rest of the module comes from [`crate::sandbox::base_module`]);
//! - [`session`]: the session object scripts hold (`s:send`, `s:fork`, ...);
//! - [`events`]: `cms.on` handlers and event delivery;
//! - [`convert`]: sessions, turns and history as Lua tables ([`crate::views`]'s shape),
//!   and the option tables of session methods;
//! - [`worker`]: Lua on its own threads for frontends that are not Lua (the MCP
//!   server's delegations and plugin tools);
//! - [`pretty`]: values printed for people (the REPL);
//! - [`stubs`]: the LuaLS `---@meta` description of the API.
//!
//! Engine calls are async in Rust and plain calls in Lua: each yields its coroutine,
//! so `cms.parallel` runs many sessions at once from straight-line code.

pub mod api;
pub mod convert;
pub mod events;
pub mod host;
pub mod pretty;
pub mod session;
pub mod stubs;
pub mod worker;

pub use host::{HostOptions, LuaHost, ScriptError};

//! cms: orchestrate many Claude Code CLI sessions from one place.
//!
//! Floors, lowest first; a module imports only from floors below its own
//! (`tests/it/layers.rs` checks it, `docs/ARCHITECTURE.md` draws it):
//!
//! [`wire`] (the Claude CLI protocol) → [`engine`] (sessions, manager, store, the
//! policy door; never prints) → [`views`] (the one JSON shape of sessions, turns and
//! history) → [`sandbox`] (the restricted Lua state, limits, path and shell readers,
//! where scripts are found) → [`plugins`] and [`runners`] (hosts and how `claude` runs on them, in Lua) → [`policy`] (safety in Lua) → [`host`] (the long-lived session host and its client) →
//! [`delegate`] (tasks driven by strategies) → [`lua`] (the `cms` module) → [`app`]
//! (one bootstrap) → the frontends [`cli`] and [`mcp`], which never import each
//! other. [`sim`] is the simulator, apart.

pub mod app;
pub mod cli;
pub mod delegate;
pub mod engine;
pub mod host;
pub mod lua;
pub mod mcp;
pub mod notify;
pub mod plugins;
pub mod policy;
pub mod runners;
pub mod sandbox;
pub mod sim;
pub mod views;
pub mod web;
pub mod wire;

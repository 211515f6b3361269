//! cms: orchestrate many Claude Code CLI sessions from one place.
//!
//! Layers (data flows down, events flow up): [`wire`] (the Claude CLI protocol) →
//! [`engine`] (sessions, manager, store, policy door) → [`lua`] (the `cms` module) and
//! [`policy`] (safety policies, presets, strategies in Lua) → frontends ([`cli`]). The engine never
//! prints; frontends never own session logic.

pub mod app;
pub mod cli;
pub mod delegate;
pub mod engine;
pub mod lua;
pub mod mcp;
pub mod plugins;
pub mod policy;
pub mod sandbox;
pub mod sim;
pub mod views;
pub mod wire;

//! The integration tests, in one test binary (one link of the crate, one process):
//! each file is a module, named as its tests are (`cargo test --test it -- lua::`).
//! Helpers used by more than one module live in `support`.
//!
//! The tests run as threads of this one process: none changes the process's
//! environment, working directory, umask or signal handlers; each child gets its
//! environment and directory on its `Command`, each test its own temporary folder.

mod support;

mod approvals;
mod capacity;
mod cli;
mod cli_shape;
mod completions;
mod delegate;
mod e2e_claude;
mod e2e_host;
mod e2e_http;
mod e2e_safety;
mod host;
mod host_cli;
mod layers;
mod lists;
mod lua;
mod mcp;
mod mcp_http;
mod notify;
mod plugins;
mod policy;
mod policy_tools;
mod runners;
mod safety_net;
mod setup;
mod sim_engine;
mod top;
mod web_api;
mod web_browser;
mod web_guard;

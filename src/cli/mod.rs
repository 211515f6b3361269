//! The command-line frontend: parse (clap), call the engine, render. It owns no
//! session logic.

pub mod args;
mod attach;
mod commands;
mod completions;
mod delegate;
mod demo;
pub mod host;
mod hosts;
mod logs;
mod man;
pub(crate) mod out;
mod outcome;
mod plugins;
mod policy;
mod progress;
mod render;
mod repl;
mod script;
mod sessions;
mod setup;
mod style;
pub mod top;
mod trust;

pub use args::{command, Cli, Command};
pub use commands::{config, host_use, run};

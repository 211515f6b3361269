//! The command-line frontend: parse (clap), call the engine, render. It owns no
//! session logic.

mod args;
mod commands;
mod delegate;
mod demo;
mod render;
mod repl;
mod script;

pub use args::{Cli, Command};
pub use commands::run;

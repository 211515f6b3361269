//! What a CLI command ends with (text and JSON to print, or an error), and how a
//! text argument is read (`-` reads stdin).

use super::render;
use crate::engine::{EngineError, SessionRecord};
use serde_json::Value;
use std::io::Read;

/// What a command ends with.
pub enum Outcome {
    /// Print this (text or JSON) and exit 0.
    Done(Printed),
    /// Print this, then fail with the message (a turn that ended in an error).
    Failed(Printed, String),
}

pub struct Printed {
    pub text: String,
    pub json: Json,
}

/// JSON to print: a value, or a list of records serialised straight to stdout
/// (`list --json` with thousands of sessions stays fast).
pub enum Json {
    Value(Value),
    Records(Vec<SessionRecord>),
}

impl From<Value> for Json {
    fn from(v: Value) -> Self {
        Json::Value(v)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{}", render::engine_error(.0))]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Input(String),
    /// The command line asks for something it cannot do (exit 2, as clap's errors).
    #[error("{0}")]
    Usage(String),
    /// What the signal left behind, in words for the command interrupted.
    #[error("interrupted: {0}")]
    Interrupted(String),
}

/// `-` means: read the text from stdin.
pub fn text_arg(s: &str) -> Result<String, CliError> {
    if s != "-" {
        return Ok(s.to_string());
    }
    let mut buf = String::new();
    std::io::stdin()
        .read_to_string(&mut buf)
        .map_err(|e| CliError::Input(format!("cannot read stdin: {e}")))?;
    Ok(buf)
}

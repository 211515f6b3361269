//! How a command ends: the one place that prints a failure and picks the exit code.
//!
//! - 0: done;
//! - 1: failed (the message says what and what to do);
//! - 2: the command line was wrong (clap's own code);
//! - 130: interrupted by Ctrl-C or SIGTERM (every session the command started was
//!   stopped);
//! - a script's own `os.exit(code)`.

use super::runtime::errln;

pub const OK: i32 = 0;
pub const FAILED: i32 = 1;
pub const USAGE: i32 = 2;
pub const INTERRUPTED: i32 = 130;

/// Say why the command failed, on stderr, and return [`FAILED`].
pub fn fail(message: impl std::fmt::Display) -> i32 {
    errln!("Error: {message}");
    FAILED
}

/// Why a command ended on a signal: `what` is "the script", "this command", ...
pub fn interrupted_text(what: &str) -> String {
    format!("interrupted: every session {what} started was stopped")
}

/// Say that a signal stopped the command and its sessions, and return [`INTERRUPTED`].
pub fn interrupted(what: &str) -> i32 {
    errln!("Error: {}", interrupted_text(what));
    INTERRUPTED
}

//! Standard output of the CLI. `println!` panics when the reader has gone
//! (`cms list | head -1`); these functions never do. A closed pipe is the reader
//! saying "enough", not an error: the first write that finds it closed marks stdout
//! closed, later writes are skipped, and the command ends quietly with its usual
//! cleanup (sessions stopped as on any exit) and its usual exit code. Any other
//! write error is reported once on stderr and makes the exit code 1. Messages for
//! stderr go through [`errln!`], which never panics either (`cms ... 2>&1 | head`).

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU8, Ordering};

const OPEN: u8 = 0;
const CLOSED: u8 = 1;
const FAILED: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(OPEN);

/// Stdout cannot take more output (the reader went away, or writing failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("standard output is closed")]
pub struct Closed;

/// Write through a buffered, locked stdout and flush. Skipped once stdout is closed.
pub fn with(write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<(), Closed> {
    if STATE.load(Ordering::Relaxed) != OPEN {
        return Err(Closed);
    }
    let mut buf = io::BufWriter::new(io::stdout().lock());
    let result = write(&mut buf).and_then(|_| buf.flush());
    // A failed flush leaves the buffer full; do not let its drop write it again.
    let _ = buf.into_parts();
    result.map_err(|e| {
        if e.kind() == io::ErrorKind::BrokenPipe {
            STATE.store(CLOSED, Ordering::Relaxed);
        } else if STATE.swap(FAILED, Ordering::Relaxed) != FAILED {
            error_line(format_args!("Error: cannot write to standard output: {e}"));
        }
        Closed
    })
}

/// Print `text` as it is.
pub fn text(text: &str) -> Result<(), Closed> {
    with(|w| w.write_all(text.as_bytes()))
}

/// Print one line.
pub fn line(args: fmt::Arguments) -> Result<(), Closed> {
    with(|w| {
        w.write_fmt(args)?;
        w.write_all(b"\n")
    })
}

pub use crate::app::runtime::error_line;

/// Whether stdout was found closed or broken.
pub fn is_closed() -> bool {
    STATE.load(Ordering::Relaxed) != OPEN
}

/// The exit code once output is done: a write error other than a closed pipe turns
/// success into 1.
pub fn exit_code(code: i32) -> i32 {
    if code == 0 && STATE.load(Ordering::Relaxed) == FAILED {
        1
    } else {
        code
    }
}

/// `println!` for the CLI: `outln!("{x}")` returns `Result<(), Closed>`.
macro_rules! outln {
    () => {
        $crate::cli::out::text("\n")
    };
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

pub(crate) use crate::app::runtime::errln;

/// Fail the command with `message`: on stderr, and also as `{"error": message}` on
/// stdout under `--json`, so a script reading stdout sees it. Returns the exit code.
pub fn fail(json: bool, message: impl std::fmt::Display) -> i32 {
    if json {
        let _ = line(format_args!(
            "{}",
            serde_json::json!({ "error": message.to_string() })
        ));
    }
    crate::app::exit::fail(message)
}

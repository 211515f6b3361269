//! One driver per session across cms processes.
//!
//! The CLI merges messages written during a running turn into that turn, and two
//! processes resuming one conversation at once fork it (the next turn sees only one
//! of them). So the cms process that runs a session's `claude` child holds the
//! session's lease: an exclusive `flock` on `$CMS_HOME/locks/NAME.lock`, held for as
//! long as that child lives and dropped by the kernel if the process dies, so it is
//! never stale. The holder writes its pid and kind into the file, so others can say
//! who holds it. Commands that want the session meanwhile wait their turn in arrival
//! order (a ticket each in the store's `waiters` table; the oldest ticket of a living
//! process goes first), or are refused at once when asked not to wait.

use crate::engine::error::{EngineError, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The right to run a session's child; released when dropped.
#[derive(Debug)]
pub struct Lease {
    _file: File,
}

/// Who holds a session when another process wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    pub pid: Option<u32>,
    /// `cli`, `mcp`, `repl`, `script`, ... (None when not recorded yet).
    pub kind: Option<String>,
}

impl Holder {
    /// A process that keeps sessions live for a long time (an MCP server, a REPL, a
    /// script): waiting for it to let go could last forever.
    pub fn is_long_lived(&self) -> bool {
        self.kind.as_deref().is_some_and(|k| k != "cli")
    }

    /// `cms mcp (pid 123)`, for messages.
    pub fn who(&self) -> String {
        let what = match self.kind.as_deref() {
            Some("cli") | None => "another cms command".to_string(),
            Some(kind) => format!("cms {kind}"),
        };
        match self.pid {
            Some(pid) => format!("{what} (pid {pid})"),
            None => what,
        }
    }
}

/// The lock file of a session.
pub fn lock_path(home: &Path, name: &str) -> PathBuf {
    home.join("locks").join(format!("{name}.lock"))
}

/// Who holds the lease, as its holder wrote it (unknown while it is being taken).
pub fn holder(home: &Path, name: &str) -> Holder {
    let text = std::fs::read_to_string(lock_path(home, name)).unwrap_or_default();
    let mut words = text.split_whitespace();
    let pid = words
        .next()
        .and_then(|p| p.parse().ok())
        .filter(|p| crate::engine::process::pid_alive(*p));
    Holder {
        pid,
        kind: pid.and(words.next().map(str::to_string)),
    }
}

/// Take the lease if it is free right now (None: another process holds it), saying
/// in the file that this process (of `kind`: `cli`, `mcp`, ...) holds it.
pub fn try_take(home: &Path, name: &str, kind: &str) -> Result<Option<Lease>> {
    try_lock(&lock_path(home, name), kind)
}

/// Take an exclusive lock on the file at `path` if it is free right now (None:
/// another process holds it), writing this process's pid and `kind` into it. The
/// kernel drops it when the process dies.
pub fn try_lock(path: &Path, kind: &str) -> Result<Option<Lease>> {
    let dir = path.parent().expect("lock files live in a folder");
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| EngineError::io(format!("cannot create {}", dir.display()), e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| EngineError::io(format!("cannot open {}", path.display()), e))?;
    // SAFETY: flock(2) on a descriptor we own.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        use std::io::Write;
        let mut file = file;
        let _ = file.set_len(0);
        let _ = write!(file, "{} {kind}", std::process::id());
        return Ok(Some(Lease { _file: file }));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(EngineError::io(
            format!("cannot lock {}", path.display()),
            err,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lease_at_a_time_and_it_comes_back_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = try_take(dir.path(), "s", "mcp")
            .unwrap()
            .expect("free at first");
        let holder = holder(dir.path(), "s");
        assert_eq!(holder.pid, Some(std::process::id()));
        assert_eq!(holder.kind.as_deref(), Some("mcp"));
        // flock is per open file: a second open, even in this process, must wait.
        assert!(try_take(dir.path(), "s", "cli").unwrap().is_none());
        assert!(try_take(dir.path(), "other", "cli").unwrap().is_some());
        drop(first);
        assert!(try_take(dir.path(), "s", "cli").unwrap().is_some());
    }

    #[test]
    fn holders_are_described_for_people() {
        let mcp = Holder {
            pid: Some(42),
            kind: Some("mcp".into()),
        };
        assert!(mcp.is_long_lived());
        assert_eq!(mcp.who(), "cms mcp (pid 42)");
        let cli = Holder {
            pid: Some(7),
            kind: Some("cli".into()),
        };
        assert!(!cli.is_long_lived());
        assert_eq!(cli.who(), "another cms command (pid 7)");
    }
}

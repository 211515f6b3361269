//! The supervisor: a tiny process between cms and each `claude` child, so that a
//! session's whole process tree ends with it.
//!
//! Claude Code runs each Bash tool in a process group of its own, so signalling the
//! child's group misses the tools, and a `claude` that dies leaves them to init. The
//! supervisor (`cms __supervise CLAUDE ARGS...`, the same executable as cms) is a
//! *subreaper* (`PR_SET_CHILD_SUBREAPER`): every process below it that loses its parent
//! is re-parented to it instead of init, so it can always find them. It starts
//! `claude` with the stdio it was given, then waits:
//!
//! - `claude` exits (stdin closed, crash, killed): every remaining descendant is
//!   killed, and the supervisor exits the way `claude` did (same code, same signal);
//! - SIGTERM (a stop): passed to `claude`, which gets [`GRACE`] to finish (save its
//!   transcript, run its hooks); then the whole tree is killed;
//! - [`KILL_TREE`] (a kill, or cms itself died: `PR_SET_PDEATHSIG`): the whole tree is
//!   killed at once;
//! - SIGINT: passed to `claude` (Claude Code treats it as an interrupt).
//!
//! Linux only; elsewhere cms runs `claude` directly.

#[cfg(target_os = "linux")]
pub use linux::run;

/// The argument that selects the supervisor in the `cms` executable.
pub const ARG: &str = "__supervise";

/// The signal that tells a supervisor to kill its whole tree at once.
pub const KILL_TREE: i32 = libc::SIGUSR1;

/// How long `claude` may take to exit after a SIGTERM before its tree is killed.
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(2);

#[cfg(not(target_os = "linux"))]
pub fn run(_argv: Vec<String>) -> i32 {
    eprintln!("cms: the supervisor runs on Linux only");
    1
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{GRACE, KILL_TREE};
    use std::collections::{HashMap, HashSet};
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};

    /// Run `argv[0] argv[1..]` under supervision; returns the exit code.
    pub fn run(argv: Vec<String>) -> i32 {
        let Some((bin, args)) = argv.split_first() else {
            eprintln!("cms supervisor: nothing to run");
            return 2;
        };
        let parent = unsafe { libc::getppid() };
        // SAFETY: plain prctl(2) and sigprocmask(2) calls on this process.
        let signals = unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            // cms may die without a word: then take everything down.
            libc::prctl(libc::PR_SET_PDEATHSIG, KILL_TREE, 0, 0, 0);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [
                libc::SIGCHLD,
                libc::SIGTERM,
                libc::SIGINT,
                libc::SIGHUP,
                KILL_TREE,
            ] {
                libc::sigaddset(&mut set, s);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            set
        };
        if unsafe { libc::getppid() } != parent {
            return 1;
        }
        let mut cmd = std::process::Command::new(bin);
        cmd.args(args);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                // The mask is inherited across exec: `claude` must get SIGTERM and SIGINT
                // itself. And a broken pipe is its own business (Rust ignores SIGPIPE).
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                Ok(())
            });
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cms supervisor: cannot start {bin}: {e}");
                return 127;
            }
        };
        let claude = child.id() as libc::pid_t;
        // Let go of the pipes: only `claude` holds them, so cms sees them close when it exits.
        release_stdio();
        // Set by a SIGTERM: when `claude`'s grace ends.
        let mut grace_until: Option<Instant> = None;
        loop {
            let sig = wait_signal(&signals, grace_until);
            match sig {
                Some(libc::SIGCHLD) => {
                    if let Some(status) = reap(claude) {
                        kill_descendants(claude);
                        return exit_like(status);
                    }
                }
                Some(libc::SIGINT) => unsafe {
                    libc::kill(claude, libc::SIGINT);
                },
                Some(libc::SIGTERM) if grace_until.is_none() => {
                    // SAFETY: passing the signal on to our child.
                    unsafe { libc::kill(claude, libc::SIGTERM) };
                    grace_until = Some(Instant::now() + GRACE);
                }
                // The grace is over, a kill was asked for, or cms died.
                None | Some(libc::SIGHUP) | Some(KILL_TREE) => {
                    let status = kill_descendants(claude).or_else(|| wait_for(claude));
                    return exit_like(status.unwrap_or(libc::SIGKILL));
                }
                _ => {}
            }
        }
    }

    /// The next signal of the set, or None once `until` has passed.
    fn wait_signal(set: &libc::sigset_t, until: Option<Instant>) -> Option<i32> {
        loop {
            let sig = match until {
                None => {
                    // SAFETY: waiting for a signal of the blocked set.
                    unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) }
                }
                Some(t) => {
                    let left = t.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    let ts = libc::timespec {
                        tv_sec: left.as_secs() as libc::time_t,
                        tv_nsec: left.subsec_nanos() as libc::c_long,
                    };
                    // SAFETY: waiting for a signal of the blocked set, with a timeout.
                    unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) }
                }
            };
            if sig > 0 {
                return Some(sig);
            }
            // EINTR or EAGAIN (the timeout): look at the clock again.
        }
    }

    /// Point stdin and stdout at /dev/null.
    fn release_stdio() {
        // SAFETY: open/dup2/close on descriptors this process owns.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                libc::dup2(null, 0);
                libc::dup2(null, 1);
                if null > 2 {
                    libc::close(null);
                }
            }
        }
    }

    /// Reap every child that has ended; the wait status of `claude` once it has.
    fn reap(claude: libc::pid_t) -> Option<i32> {
        let mut claude_status = None;
        loop {
            let mut status = 0;
            // SAFETY: waitpid(2) on our own children.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return claude_status;
            }
            if pid == claude {
                claude_status = Some(status);
            }
        }
    }

    /// Wait (up to 2 s) for `claude` to be reaped, if it has not been; its wait status.
    fn wait_for(claude: libc::pid_t) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let mut status = 0;
            // SAFETY: waitpid(2) on our own child.
            let pid = unsafe { libc::waitpid(claude, &mut status, libc::WNOHANG) };
            if pid == claude {
                return Some(status);
            }
            if pid < 0 || Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Leave the way `claude` left: its exit code, or its signal.
    fn exit_like(status: i32) -> i32 {
        if libc::WIFEXITED(status) {
            return libc::WEXITSTATUS(status);
        }
        let sig = if libc::WIFSIGNALED(status) {
            libc::WTERMSIG(status)
        } else {
            status
        };
        // SAFETY: restore the default action and deliver the same signal to ourselves.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
        128 + sig
    }

    /// SIGKILL every process below this one until none is left (re-parented orphans
    /// included), reaping as they go. Gives up after 2 s. Returns `claude`'s wait
    /// status if it was reaped here.
    fn kill_descendants(claude: libc::pid_t) -> Option<i32> {
        let me = std::process::id() as i32;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut claude_status = None;
        loop {
            let below = descendants(me);
            if below.is_empty() || Instant::now() > deadline {
                return claude_status;
            }
            for pid in below {
                // SAFETY: kill(2) on a process of our own tree.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
            // Reap what was ours (anything else is reaped by its own parent, or is
            // re-parented to us and reaped on the next round).
            if let Some(status) = reap(claude) {
                claude_status = Some(status);
            }
        }
    }

    /// Every living process whose chain of parents reaches `root`.
    fn descendants(root: i32) -> Vec<i32> {
        let mut parent_of: HashMap<i32, i32> = HashMap::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some((ppid, state)) = stat(pid) {
                if state != 'Z' {
                    parent_of.insert(pid, ppid);
                }
            }
        }
        let mut below = HashSet::new();
        for &pid in parent_of.keys() {
            let mut at = pid;
            let mut hops = 0;
            while let Some(&p) = parent_of.get(&at) {
                if p == root {
                    below.insert(pid);
                    break;
                }
                at = p;
                hops += 1;
                if p <= 1 || hops > 4096 {
                    break;
                }
            }
        }
        below.into_iter().collect()
    }

    /// A process's parent and state letter, from `/proc/PID/stat`.
    fn stat(pid: i32) -> Option<(i32, char)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name is in parentheses and may hold anything: read after the last ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let ppid = fields.next()?.parse().ok()?;
        Some((ppid, state))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn reads_parents_and_finds_descendants() {
            let me = std::process::id() as i32;
            let (ppid, state) = stat(me).unwrap();
            assert!(ppid > 0 && state != 'Z');
            let mut child = std::process::Command::new("sleep")
                .arg("5")
                .spawn()
                .unwrap();
            let below = descendants(me);
            assert!(below.contains(&(child.id() as i32)), "{below:?}");
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

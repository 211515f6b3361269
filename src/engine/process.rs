//! Starting the `claude` child and signalling it.
//!
//! Every child is the leader of its own process group, is killed when its handle is
//! dropped, and on Linux is signalled if cms dies (`PR_SET_PDEATHSIG`). With a
//! supervisor ([`crate::engine::supervisor`]) the child is the supervisor, which runs
//! `claude` and takes its whole process tree down with it (Claude Code's Bash tools run
//! in process groups of their own, out of reach of a group signal). Children never
//! outlive cms.
//!
//! A child does not inherit the variables by which a parent Claude Code session marks
//! its own children (`CLAUDECODE`, `CLAUDE_CODE_SESSION_ID`, its messaging socket, ...):
//! `cms mcp` runs inside a Claude Code session, and the sessions it starts are new
//! sessions, not that one. The user's own configuration (`ANTHROPIC_*`,
//! `CLAUDE_CONFIG_DIR`, `CLAUDE_CODE_MAX_RETRIES`, proxies) passes through.

use crate::engine::error::{EngineError, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

/// A started child and its pipes.
pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// Find an executable: a path is checked as is, a bare name is looked up on PATH.
pub fn resolve_binary(bin: &Path) -> Result<PathBuf> {
    let not_found = || EngineError::BinaryNotFound {
        path: bin.to_path_buf(),
    };
    if bin.components().count() > 1 || bin.is_absolute() {
        return if is_executable(bin) {
            Ok(bin.to_path_buf())
        } else {
            Err(not_found())
        };
    }
    let path = std::env::var_os("PATH").ok_or_else(not_found)?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(bin))
        .find(|p| is_executable(p))
        .ok_or_else(not_found)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Variables a running Claude Code session puts into the environment of what it starts
/// (seen on 2.1.197 and 2.1.332: the MCP servers it runs get them), by exact name.
const PARENT_SESSION_VARS: &[&str] = &[
    "CLAUDECODE",
    "CLAUDE_CODE_ENTRYPOINT",
    "CLAUDE_CODE_SSE_PORT",
    "CLAUDE_PROJECT_DIR",
    "AI_AGENT",
    "ENABLE_IDE_INTEGRATION",
];

/// ... and by prefix.
const PARENT_SESSION_PREFIXES: &[&str] = &[
    "CLAUDE_CODE_SESSION_",
    "CLAUDE_CODE_MESSAGING_",
    "CLAUDE_CODE_CHILD_",
    "CLAUDE_CODE_LAUNCHED_BY_",
    "CLAUDE_CODE_IDE_",
];

/// True for a variable that belongs to a parent Claude Code session, not to the user.
pub fn is_parent_session_var(name: &str) -> bool {
    // The user let one MCP server's client approve tool calls: no session inherits that.
    name == crate::engine::approval::MAY_APPROVE_ENV
        || PARENT_SESSION_VARS.contains(&name)
        || PARENT_SESSION_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Start `bin args...` in `cwd` with extra environment (applied after the parent
/// session's variables are removed), under `supervisor` when one is given.
pub fn spawn(
    bin: &Path,
    args: &[String],
    cwd: &Path,
    env: &[(String, String)],
    supervisor: Option<&Path>,
) -> Result<Spawned> {
    let bin = resolve_binary(bin)?;
    if !cwd.is_dir() {
        return Err(EngineError::Invalid(format!(
            "working directory {} does not exist",
            cwd.display()
        )));
    }
    let mut cmd = match supervisor {
        Some(sup) => {
            let mut c = Command::new(sup);
            c.arg(crate::engine::supervisor::ARG).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    // The supervisor cleans up when cms dies; a bare child is simply killed.
    let death_signal = if supervisor.is_some() {
        crate::engine::supervisor::KILL_TREE
    } else {
        libc::SIGKILL
    };
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A supervisor SIGKILLed could not clean up: its owner ends it with `TreeGuard`.
        .kill_on_drop(supervisor.is_none())
        .process_group(0);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_parent_session_var) {
            cmd.env_remove(&name);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, death_signal);
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|source| EngineError::Spawn {
        path: bin.clone(),
        source,
    })?;
    let pid = child.id().unwrap_or(0);
    let stdin = child.stdin.take().expect("stdin piped");
    let stdout = child.stdout.take().expect("stdout piped");
    let stderr = child.stderr.take().expect("stderr piped");
    Ok(Spawned {
        child,
        pid,
        stdin,
        stdout,
        stderr,
    })
}

/// Send a signal to a child's whole process group.
pub fn signal_group(pid: u32, signal: i32) {
    if pid > 0 {
        // SAFETY: kill(2) with a negative pid targets the process group.
        unsafe {
            libc::kill(-(pid as libc::pid_t), signal);
        }
    }
}

/// Kills a supervised child's whole tree when dropped, unless disarmed (once the child
/// has been reaped, its pid may belong to someone else).
pub struct TreeGuard {
    pub pid: u32,
    pub armed: bool,
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_pid(self.pid, crate::engine::supervisor::KILL_TREE);
        }
    }
}

/// End a session's process tree from outside its cms process: the supervisor's
/// kill-the-tree signal, then SIGKILL to its group if it is still there after a second
/// (a bare `claude`, or a supervisor that did not answer). Blocks up to that second.
pub fn end_tree(pid: u32) {
    signal_pid(pid, crate::engine::supervisor::KILL_TREE);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while pid_alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if pid_alive(pid) {
        signal_group(pid, libc::SIGKILL);
    }
}

/// Send a signal to one process.
pub fn signal_pid(pid: u32, signal: i32) {
    if pid > 0 {
        // SAFETY: plain kill(2).
        unsafe {
            libc::kill(pid as libc::pid_t, signal);
        }
    }
}

/// Whether a process runs: it exists and has not exited (a zombie, ended but not yet
/// reaped by its parent, does not run). The same as [`pid_alive`].
pub fn pid_running(pid: u32) -> bool {
    pid_alive(pid)
}

/// Wait (blocking) until a process no longer runs (gone, or a zombie its parent has
/// not reaped yet), up to `limit`; whether it has stopped running.
pub fn wait_gone(pid: u32, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while pid_running(pid) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    true
}

/// Whether a process exists and has not exited (it may belong to another user). A
/// zombie (ended, not yet reaped: a killed host whose parent is slow to reap it) is
/// not alive: it holds nothing.
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last `)` (comm may hold one).
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_shell_command_and_what_it_left_running_end_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let marker = format!("cms-run-shell-{}", std::process::id());
        // A background job (a copy of this shell, so its command line holds the
        // marker) that would hold the pipes open for a minute.
        let cmd = format!("(sleep 60; echo {marker}) & echo started {marker}; exit 3");
        let t = std::time::Instant::now();
        let run = run_shell(&cmd, dir.path(), std::time::Duration::from_secs(20), 8192).await;
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "{run:?}");
        match run {
            ShellRun::Exited { code, tail } => {
                assert_eq!(code, Some(3));
                assert!(tail.contains(&marker), "{tail}");
            }
            other => panic!("{other:?}"),
        }
        let left = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                String::from_utf8_lossy(&cmdline).contains(&marker)
            })
            .count();
        assert_eq!(left, 0, "the background job was killed with the group");
    }

    #[tokio::test]
    async fn a_shell_command_past_its_limit_is_killed_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let t = std::time::Instant::now();
        let run = run_shell(
            "sleep 30 & sleep 30",
            dir.path(),
            std::time::Duration::from_millis(300),
            64,
        )
        .await;
        assert!(matches!(run, ShellRun::TimedOut), "{run:?}");
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
    }

    #[tokio::test]
    async fn only_the_tail_of_a_long_output_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_shell(
            "seq 1 100000; echo last-line",
            dir.path(),
            std::time::Duration::from_secs(20),
            100,
        )
        .await;
        let ShellRun::Exited { code, tail } = run else {
            panic!("{run:?}")
        };
        assert_eq!(code, Some(0));
        assert!(tail.starts_with("...") && tail.len() <= 103, "{tail}");
        assert!(tail.trim_end().ends_with("last-line"), "{tail}");
    }

    use super::*;

    #[test]
    fn resolves_on_path_and_reports_missing_binaries() {
        assert!(resolve_binary(Path::new("sh")).is_ok());
        let err = resolve_binary(Path::new("definitely-not-a-claude-binary")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("definitely-not-a-claude-binary"), "{msg}");
        assert!(
            matches!(err.remedy(), Some(crate::engine::Remedy::InstallClaude)),
            "{msg}"
        );
        assert!(resolve_binary(Path::new("/nonexistent/claude")).is_err());
    }

    #[test]
    fn parent_session_variables_are_told_from_user_configuration() {
        for parent in [
            "CLAUDECODE",
            "CLAUDE_CODE_SESSION_ID",
            "CLAUDE_CODE_ENTRYPOINT",
            "CLAUDE_CODE_MESSAGING_SOCKET",
            "CLAUDE_CODE_MESSAGING_TOKEN",
            "CLAUDE_CODE_CHILD_NOTES_DIR",
            "CLAUDE_CODE_LAUNCHED_BY_SESSION_IDS",
            "CLAUDE_CODE_SSE_PORT",
            "CLAUDE_PROJECT_DIR",
            "AI_AGENT",
        ] {
            assert!(is_parent_session_var(parent), "{parent}");
        }
        for user in [
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            "CLAUDE_CONFIG_DIR",
            "CLAUDE_CODE_MAX_RETRIES",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
            "CLAUDE_CODE_USE_BEDROCK",
            "HTTPS_PROXY",
            "HOME",
        ] {
            assert!(!is_parent_session_var(user), "{user}");
        }
    }

    #[test]
    fn own_pid_is_alive() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
    }
}

/// How a shell command run by [`run_shell`] ended.
#[derive(Debug)]
pub enum ShellRun {
    /// It exited (or was killed by a signal: `code` is None); `tail` is the last
    /// `keep` bytes of its stdout then stderr.
    Exited { code: Option<i32>, tail: String },
    /// It ran past its time limit; its whole process group was killed.
    TimedOut,
    /// It could not start.
    Failed(std::io::Error),
}

/// Run `sh -c cmd` in `dir`, with no stdin, in a process group of its own. When
/// it exits, or runs past `limit`, whatever is left of its group is killed (a check
/// that starts a server does not leave it running, nor hold its pipes open). The
/// group is signalled while `sh` is still unreaped, so its id cannot belong to
/// anyone else yet. Keeps the last `keep` bytes of stdout, then of stderr.
pub async fn run_shell(cmd: &str, dir: &Path, limit: std::time::Duration, keep: usize) -> ShellRun {
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return ShellRun::Failed(e),
    };
    let pid = child.id().unwrap_or(0);
    // One byte over `keep`, so that a cut below shows.
    let stdout = child.stdout.take().map(|o| tokio::spawn(tail(o, keep + 1)));
    let stderr = child.stderr.take().map(|e| tokio::spawn(tail(e, keep + 1)));
    // Wait for `sh` to exit without reaping it (WNOWAIT): until it is reaped, its pid
    // (the group's id) is not reused.
    let exited = tokio::task::spawn_blocking(move || exited_unreaped(pid));
    let timed_out = tokio::time::timeout(limit, exited).await.is_err();
    signal_group(pid, libc::SIGKILL);
    let status = child.wait().await;
    let mut text = String::new();
    for reader in [stdout, stderr].into_iter().flatten() {
        text.push_str(&String::from_utf8_lossy(&reader.await.unwrap_or_default()));
    }
    if text.len() > keep {
        let cut = text.len() - keep;
        let cut = (cut..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(cut);
        text = format!("...{}", &text[cut..]);
    }
    match status {
        _ if timed_out => ShellRun::TimedOut,
        Err(e) => ShellRun::Failed(e),
        Ok(status) => ShellRun::Exited {
            code: status.code(),
            tail: text,
        },
    }
}

/// Block until process `pid` (our child) has exited, leaving it unreaped.
fn exited_unreaped(pid: u32) {
    loop {
        // SAFETY: waitid with WNOWAIT only reads our own child's state.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// The last `keep` bytes a reader gives until it ends.
async fn tail(mut reader: impl tokio::io::AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * keep.max(1) {
            kept.drain(..kept.len() - keep);
        }
    }
    if kept.len() > keep {
        kept.drain(..kept.len() - keep);
    }
    kept
}

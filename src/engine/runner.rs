//! The runner seam: how a session's `claude` is actually executed. A runner turns
//! "run this claude argv in this working directory with this environment, on this
//! host" into the local command that carries stream-json on its stdin/stdout (the
//! `claude` itself, or `ssh -T HOST …`, `docker exec -i …`, `kubectl exec -i …`),
//! and says how to end what runs on the far side.
//!
//! The engine only knows this trait; the runners people write are Lua
//! (`scripts/runners/NAME.lua`, with the hosts of `hosts.lua`), evaluated above the
//! engine by `crate::runners`. [`LocalRunner`], the default, is what cms always did.
//!
//! A remote runner's command prints `cms-remote-pgid N` on stderr before it starts
//! `claude` (see [`PGID_MARKER`]): N is the remote process group (and session) the
//! far-side `claude` leads. When a session is killed, stopped by force or timed out,
//! the engine runs the launch's [`RemoteEnd::argv`] with `{pgid}` replaced, so the
//! remote tree ends too, not only the local client.

use crate::engine::error::Result;
use std::path::PathBuf;

/// What a runner is asked to start.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The session's name.
    pub session: String,
    /// The host the session is pinned to (None: this machine, no runner involved).
    pub host: Option<String>,
    /// The `claude` executable cms would run locally.
    pub claude_bin: PathBuf,
    /// `claude`'s arguments.
    pub argv: Vec<String>,
    /// The session's (local) working directory.
    pub cwd: PathBuf,
    /// The environment cms gives the child on top of its own (tests, the policy).
    pub env: Vec<(String, String)>,
}

/// What to execute locally for a [`RunRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// The local executable (a name on PATH, or a path): `claude`, `ssh`, ...
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The local working directory of `program`.
    pub cwd: PathBuf,
    /// Extra environment of the local process.
    pub env: Vec<(String, String)>,
    /// Set when `claude` runs elsewhere.
    pub remote: Option<RemoteEnd>,
}

/// Where a remote `claude` runs and how to end it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteEnd {
    /// The host's name in `hosts.lua`.
    pub host: String,
    /// The working directory on the host (the local one mapped); tool paths are
    /// relative to it, so the policy judges them against it.
    pub cwd: String,
    /// Run locally to end the remote process group; `{pgid}` is replaced by the pgid
    /// the remote side printed (e.g. `ssh HOST pkill -KILL -s {pgid}`). Empty: nothing
    /// to run.
    pub argv: Vec<String>,
}

/// The line a remote command prints first on stderr: `cms-remote-pgid 12345`.
pub const PGID_MARKER: &str = "cms-remote-pgid ";

/// How busy one place is: this machine or a host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Load {
    /// Live children there.
    pub live: usize,
    /// Requests waiting for a live slot there.
    pub queued: usize,
}

/// Where to start a spawn that names no host: what placement is asked.
#[derive(Debug, Clone)]
pub struct PlaceRequest {
    pub session: String,
    /// The session's options (its `on` is None).
    pub options: crate::engine::config::SessionOptions,
    /// The session's (local) folder.
    pub cwd: PathBuf,
    /// This machine's load and its `max_live`.
    pub local: Load,
    pub local_max_live: Option<usize>,
    /// The load of each host this manager has sessions on (others: none).
    pub hosts: std::collections::BTreeMap<String, Load>,
}

/// Turns a session's spec into what is executed.
pub trait Runner: Send + Sync {
    /// The command to run for `req`; an error (an unknown host, a broken runner
    /// script) means the session does not start.
    fn launch(&self, req: &RunRequest) -> Result<Launch>;

    /// The host a spawn that names none goes to (None: this machine). An error
    /// refuses the spawn.
    fn place(&self, _req: &PlaceRequest) -> Result<Option<String>> {
        Ok(None)
    }

    /// The most live sessions on `host` (its `max_live`), None: no cap.
    fn max_live(&self, _host: &str, _cwd: &std::path::Path) -> Option<usize> {
        None
    }
}

/// Today's behaviour: `claude` itself, here. A session pinned to a host needs a
/// runner that knows hosts ([`Runner`] installed by the app), so this one refuses it.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalRunner;

impl Runner for LocalRunner {
    fn launch(&self, req: &RunRequest) -> Result<Launch> {
        if let Some(host) = &req.host {
            return Err(crate::engine::error::EngineError::RunsOn {
                host: host.clone(),
                detail: "this cms process has no runners loaded (hosts.lua is read by `cms`, \
                         the session host and `--no-host` commands)"
                    .into(),
            });
        }
        Ok(Launch::local(req))
    }
}

impl Launch {
    /// `claude` run here, as cms always did.
    pub fn local(req: &RunRequest) -> Launch {
        Launch {
            program: req.claude_bin.clone(),
            args: req.argv.clone(),
            cwd: req.cwd.clone(),
            env: req.env.clone(),
            remote: None,
        }
    }
}

impl RemoteEnd {
    /// The end command for a remote group `pgid`.
    pub fn command(&self, pgid: u32) -> Vec<String> {
        self.argv
            .iter()
            .map(|a| a.replace("{pgid}", &pgid.to_string()))
            .collect()
    }
}

/// The pgid in a stderr line `cms-remote-pgid N`.
pub fn parse_pgid(line: &str) -> Option<u32> {
    line.trim()
        .strip_prefix(PGID_MARKER)
        .and_then(|n| n.trim().parse().ok())
        .filter(|n| *n > 1)
}

/// Run a remote end command (blocking up to `limit`); whether it ran and exited 0.
pub async fn end_remote(argv: &[String], limit: std::time::Duration) -> bool {
    let Some((program, args)) = argv.split_first() else {
        return false;
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    match child {
        Ok(mut c) => matches!(
            tokio::time::timeout(limit, c.wait()).await,
            Ok(Ok(s)) if s.success()
        ),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pgid_marker_is_read_and_the_end_command_filled_in() {
        assert_eq!(parse_pgid("cms-remote-pgid 4242\n"), Some(4242));
        assert_eq!(parse_pgid("cms-remote-pgid 1"), None);
        assert_eq!(parse_pgid("something else"), None);
        let end = RemoteEnd {
            host: "b".into(),
            cwd: "/srv".into(),
            argv: vec!["ssh".into(), "b".into(), "pkill -KILL -s {pgid}".into()],
        };
        assert_eq!(end.command(77)[2], "pkill -KILL -s 77");
    }

    #[test]
    fn the_local_runner_runs_claude_here_and_refuses_a_host() {
        let mut req = RunRequest {
            session: "s".into(),
            host: None,
            claude_bin: "claude".into(),
            argv: vec!["-p".into()],
            cwd: "/tmp".into(),
            env: vec![],
        };
        let l = LocalRunner.launch(&req).unwrap();
        assert_eq!(l.program, PathBuf::from("claude"));
        assert_eq!(l.args, vec!["-p".to_string()]);
        req.host = Some("gpu".into());
        let e = LocalRunner.launch(&req).unwrap_err().to_string();
        assert!(e.contains("gpu"), "{e}");
    }
}

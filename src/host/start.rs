//! Finding the host, or starting one in the background (as tmux and ssh-agent do).
//!
//! A client connects to the home's socket and says hello. When nothing listens, it
//! starts `cms serve` detached (its own session, stdin and stdout closed, stderr to
//! `$CMS_HOME/host.log`) under a start lock, so two clients starting at once get one
//! host. A host of another cms version is replaced when it is idle; otherwise the
//! client gets a clear error.

use super::connection::Connection;
use super::endpoint::Endpoint;
use super::protocol::Op;
use crate::engine::{lease, process, EngineConfig, EngineError, Result, SessionEvent};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tokio::sync::broadcast;

/// How long a new host may take to listen.
const START_LIMIT: Duration = Duration::from_secs(15);

/// Environment variables of a host started in the background: its idle time
/// (humantime, e.g. `10m`; `never`), and the cms executable to run (default: this one).
pub const IDLE_ENV: &str = "CMS_HOST_IDLE";
pub const EXE_ENV: &str = "CMS_EXE";

/// How the connection came about.
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    /// A host was already running.
    Found,
    /// This client started it (pid).
    Now(u32),
    /// A host of another version was idle; this client replaced it.
    Replaced { old_version: String, pid: u32 },
}

/// Why [`open`] failed.
pub enum OpenError {
    NotRunning,
    Engine(EngineError),
}
use OpenError::NotRunning;

impl From<OpenError> for EngineError {
    fn from(e: OpenError) -> EngineError {
        match e {
            NotRunning => EngineError::Host("no cms host is running".into()),
            OpenError::Engine(e) => e,
        }
    }
}

impl From<EngineError> for OpenError {
    fn from(e: EngineError) -> OpenError {
        OpenError::Engine(e)
    }
}

/// Open a connection to the host (starting one if `autostart`), of this version.
pub async fn open(
    cfg: &EngineConfig,
    client: &str,
    autostart: bool,
    events: broadcast::Sender<SessionEvent>,
) -> std::result::Result<(Connection, Started), OpenError> {
    let ep = Endpoint::for_home(&cfg.home);
    if let Some(conn) = try_connect(&ep, client, &events).await? {
        return same_version(cfg, &ep, client, conn, autostart, events).await;
    }
    if !autostart {
        return Err(NotRunning);
    }
    let (conn, pid) = start(cfg, &ep, client, &events).await?;
    Ok((conn, pid.map(Started::Now).unwrap_or(Started::Found)))
}

/// A connection to a host of this cms version: an idle host of another is replaced.
async fn same_version(
    cfg: &EngineConfig,
    ep: &Endpoint,
    client: &str,
    conn: Connection,
    autostart: bool,
    events: broadcast::Sender<SessionEvent>,
) -> std::result::Result<(Connection, Started), OpenError> {
    let ours = super::version();
    if conn.info.version == ours {
        return Ok((conn, Started::Found));
    }
    let info = conn.info.clone();
    // A host serving HTTP was started by hand for its clients there: never replaced
    // behind their back by one without.
    let idle =
        info.live.is_empty() && info.in_flight == 0 && info.clients <= 1 && info.http.is_none();
    if !idle || !autostart {
        let mut live = match info.live.len() {
            0 => "no live session".to_string(),
            n => format!("{n} live session(s): {}", info.live.join(", ")),
        };
        if let Some(http) = &info.http {
            live.push_str(&format!(", serves HTTP on {http}"));
        }
        return Err(EngineError::Host(format!(
            "the running cms host (pid {}) is version {} and this cms is {ours}; it has {live} \
             and {} client(s). Run `cms host restart` when they are done (its sessions stop, \
             resumable), or run this command with --no-host",
            info.pid, info.version, info.clients
        ))
        .into());
    }
    let _ = conn.call(0, Op::Shutdown).await;
    drop(conn);
    let pid = info.pid;
    let gone = tokio::task::spawn_blocking(move || process::wait_gone(pid, START_LIMIT))
        .await
        .unwrap_or(false);
    if !gone {
        return Err(EngineError::Host(format!(
            "the cms host (pid {pid}, version {}) did not exit when asked; stop it with `kill {pid}`",
            info.version
        ))
        .into());
    }
    let (conn, new_pid) = start(cfg, ep, client, &events).await?;
    let pid = new_pid.unwrap_or(conn.info.pid);
    let old_version = info.version;
    Ok((conn, Started::Replaced { old_version, pid }))
}

/// The running host as it says hello (None: none runs), whatever its version.
pub async fn probe(cfg: &EngineConfig) -> Result<Option<super::protocol::HostInfo>> {
    let ep = Endpoint::for_home(&cfg.home);
    let events = broadcast::channel(16).0;
    Ok(try_connect(&ep, "cli", &events)
        .await?
        .map(|c| c.info.clone()))
}

/// Ask the running host to stop (its sessions are stopped, resumable) and wait until
/// it has exited. The host as it was (None: none ran).
pub async fn stop(cfg: &EngineConfig) -> Result<Option<super::protocol::HostInfo>> {
    let ep = Endpoint::for_home(&cfg.home);
    let events = broadcast::channel(16).0;
    let Some(conn) = try_connect(&ep, "cli", &events).await? else {
        return Ok(None);
    };
    let info = conn.info.clone();
    conn.call(0, Op::Shutdown).await?;
    drop(conn);
    let pid = info.pid;
    // Its sessions stop gracefully first: a turn in flight may take a while.
    let gone =
        tokio::task::spawn_blocking(move || process::wait_gone(pid, Duration::from_secs(60)))
            .await
            .unwrap_or(false);
    if !gone {
        return Err(EngineError::Host(format!(
            "the cms host (pid {pid}) did not exit within 60s of being asked to stop; `kill {pid}` ends it"
        )));
    }
    Ok(Some(info))
}

/// Connect and say hello (None: nothing listens).
async fn try_connect(
    ep: &Endpoint,
    client: &str,
    events: &broadcast::Sender<SessionEvent>,
) -> Result<Option<Connection>> {
    ep.check_private().map_err(EngineError::Host)?;
    match UnixStream::connect(&ep.socket).await {
        Ok(stream) => Connection::open(stream, client, events.clone())
            .await
            .map(Some),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(EngineError::Host(format!(
            "cannot connect to the cms host at {}: {e}",
            ep.socket.display()
        ))),
    }
}

/// Start a host in the background and connect to it; the pid when this client
/// started it (None: another client did meanwhile).
async fn start(
    cfg: &EngineConfig,
    ep: &Endpoint,
    client: &str,
    events: &broadcast::Sender<SessionEvent>,
) -> Result<(Connection, Option<u32>)> {
    std::fs::create_dir_all(&ep.home)
        .map_err(|e| EngineError::io(format!("cannot create {}", ep.home.display()), e))?;
    let deadline = Instant::now() + START_LIMIT;
    // One starter at a time; the others find its host.
    let _starting = loop {
        if let Some(l) = lease::try_lock(&ep.start_lock, client)? {
            break l;
        }
        if Instant::now() > deadline {
            return Err(EngineError::Host(format!(
                "another cms command has been starting the host for {}s; see {}",
                START_LIMIT.as_secs(),
                ep.log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if let Some(conn) = try_connect(ep, client, events).await? {
        return Ok((conn, None));
    }
    let mut child = spawn_host(cfg, ep)?;
    let pid = child.id();
    loop {
        if let Some(conn) = try_connect(ep, client, events).await? {
            // Reaped by whoever outlives it; this client does not wait for it.
            std::mem::forget(child);
            return Ok((conn, Some(pid)));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(EngineError::Host(format!(
                "the cms host exited at start ({status}): {}",
                log_tail(ep)
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(EngineError::Host(format!(
                "the cms host did not listen on {} within {}s: {}",
                ep.socket.display(),
                START_LIMIT.as_secs(),
                log_tail(ep)
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `cms serve` in its own session, detached from this terminal and this process.
fn spawn_host(cfg: &EngineConfig, ep: &Endpoint) -> Result<std::process::Child> {
    let exe = match std::env::var_os(EXE_ENV) {
        Some(p) => std::path::PathBuf::from(p),
        None => std::env::current_exe()
            .map_err(|e| EngineError::io("cannot find the cms executable", e))?,
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&ep.log)
        .map_err(|e| EngineError::io(format!("cannot open {}", ep.log.display()), e))?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg("serve")
        .env("CMS_HOME", &cfg.home)
        .env("CMS_CLAUDE_BIN", &cfg.claude_bin)
        .env_remove("CMS_NO_HOST")
        .env_remove(crate::engine::approval::MAY_APPROVE_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe; it makes the host its own session leader,
    // out of this terminal's job control and signals.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| EngineError::io(format!("cannot start {} serve", exe.display()), e))
}

/// The end of the host's log, for an error message.
fn log_tail(ep: &Endpoint) -> String {
    let text = std::fs::read_to_string(&ep.log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    if lines.is_empty() {
        format!("nothing in {}", ep.log.display())
    } else {
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        format!("{} (from {})", tail.join(" | "), ep.log.display())
    }
}

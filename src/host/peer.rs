//! Who is asking: a client that runs inside a guarded session's process tree (its
//! Bash ran `cms ...`, or wrote to the socket itself) is held to that session's
//! guard, whatever it claims. The host knows the supervisor pid of every session it
//! runs, and the kernel tells it the peer's pid (`SO_PEERCRED`), so it walks the
//! peer's parents: no environment variable the peer could drop decides this.
//!
//! Such a peer may not approve a tool call, start a session less guarded than its
//! own, or send to, resume or fork one (the rules of [`crate::policy::spawn_gate`],
//! as over MCP). A peer whose pid the kernel does not give may not approve either.

use super::protocol::Op;
use crate::engine::{EngineError, Guard, Manager};
use crate::policy::spawn_gate::may_steer;
use std::collections::HashMap;

/// The guarded session whose process tree holds `pid`, and its guard. Walks the
/// peer's parents against the live sessions' pids; the store is read only for the
/// session found (a peer outside every session costs a few `/proc` reads).
pub fn guarded_ancestor(m: &Manager, pid: u32) -> Option<(String, Guard)> {
    let live: HashMap<u32, String> = m
        .live_names()
        .into_iter()
        .filter_map(|name| Some((m.live(&name)?.pid(), name)))
        .collect();
    if live.is_empty() {
        return None;
    }
    let mut at = pid;
    for _ in 0..128 {
        // An unguarded session inside a guarded one's tree does not hide it: go on up.
        if let Some(guard) = live
            .get(&at)
            .and_then(|name| Some((name, m.status(name).ok()?.options.guard?)))
        {
            return Some((guard.0.clone(), guard.1));
        }
        match parent_of(at) {
            Some(p) if p > 1 && p != at => at = p,
            _ => return None,
        }
    }
    None
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Refuse what a peer inside guarded session `parent` may not ask for.
pub fn check(m: &Manager, op: &Op, parent: &(String, Guard)) -> Result<(), EngineError> {
    let (inside, guard) = parent;
    let refuse = |what: String| {
        Err(EngineError::Invalid(format!(
            "cms refused: {what} from inside guarded session '{inside}'"
        )))
    };
    let steer = |name: &str| -> Result<(), EngineError> {
        let rec = m.status(name)?;
        match may_steer(rec.options.guard.as_ref(), guard) {
            None => Ok(()),
            Some(why) => refuse(format!("steering '{name}' ({why})")),
        }
    };
    match op {
        Op::Decide { verdict } if verdict.allow => {
            refuse("approving a tool call (a person decides that)".into())
        }
        Op::Spawn { request } => match may_steer(request.options.guard.as_ref(), guard) {
            None => Ok(()),
            Some(why) => refuse(format!("starting '{}' ({why})", request.name)),
        },
        Op::Send { name, .. } | Op::Resume { name, .. } | Op::Fork { name, .. } => steer(name),
        _ => Ok(()),
    }
}

/// The guarded session whose process tree holds the local TCP client at `client`
/// of the host's HTTP face listening on port `server_port`: the kernel's socket
/// table (`/proc/net/tcp`, `tcp6`) names the client socket's inode, and the process
/// holding it is looked for among the live sessions' descendants only, then its
/// parents walked as for a socket client. A client on another machine is in no
/// session. Err: with sessions live, the client could not be found (fail closed).
pub fn guarded_tcp_client(
    m: &Manager,
    client: std::net::SocketAddr,
    server_port: u16,
) -> Result<Option<(String, Guard)>, String> {
    if !client.ip().is_loopback() {
        return Ok(None);
    }
    let roots: Vec<u32> = m
        .live_names()
        .into_iter()
        .filter_map(|name| Some(m.live(&name)?.pid()))
        .collect();
    if roots.is_empty() {
        return Ok(None);
    }
    let cannot = |why: &str| format!("cms cannot tell which process on this machine asks ({why})");
    let inode = tcp_inode(client, server_port)
        .ok_or_else(|| cannot("its socket is not in /proc/net/tcp"))?;
    let wanted = format!("socket:[{inode}]");
    for pid in descendants(&roots) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str())
        });
        if holds {
            return Ok(guarded_ancestor(m, pid));
        }
    }
    Ok(None)
}

/// The inode of the TCP socket whose local end is `client` and remote port `server_port`.
fn tcp_inode(client: std::net::SocketAddr, server_port: u16) -> Option<u64> {
    let (table, local) = match client {
        std::net::SocketAddr::V4(a) => (
            "/proc/net/tcp",
            format!(
                "{:08X}:{:04X}",
                u32::from_ne_bytes(a.ip().octets()),
                a.port()
            ),
        ),
        std::net::SocketAddr::V6(a) => {
            let o = a.ip().octets();
            let words: String = o
                .chunks(4)
                .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
                .collect();
            ("/proc/net/tcp6", format!("{words}:{:04X}", a.port()))
        }
    };
    let remote_port = format!(":{server_port:04X}");
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == local && f[2].ends_with(&remote_port))
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// `roots` and every process under them (read from each process's `stat`).
fn descendants(roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(parent) = parent_of(pid) {
                children.entry(parent).or_default().push(pid);
            }
        }
    }
    let mut out: Vec<u32> = roots.to_vec();
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c.iter().filter(|p| !roots.contains(p)));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_client_socket_is_found_in_the_kernel_table() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let inode = tcp_inode(client.local_addr().unwrap(), port).expect("the client's socket");
        let wanted = format!("socket:[{inode}]");
        let ours = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str())
            });
        assert!(ours, "inode {inode} is held by this process");
        assert_eq!(
            tcp_inode(client.local_addr().unwrap(), port.wrapping_add(1)),
            None
        );
    }

    #[test]
    fn descendants_include_a_child_of_a_root() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = std::process::id();
        assert!(descendants(&[me]).contains(&child.id()));
        let _ = child.kill();
        let _ = child.wait();
    }
}

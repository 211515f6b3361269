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

/// The guarded session whose process tree holds the TCP client at `client` of the
/// host's HTTP face listening on port `server_port`, asked only while sessions are
/// live. The kernel's socket tables (`/proc/net/tcp`, `tcp6`) name the client
/// socket's inode when the client is on this machine; every process holding it is
/// found (`/proc/*/fd`) and its parents walked as for a socket client.
///
/// It fails closed (Err) when the client is on this machine but cannot be placed:
/// no process holds the socket (it was parked in flight over a Unix socket), or a
/// process of a live session hides its open files (not dumpable, another uid). A
/// client whose address no socket here has is on another machine: in no session.
pub fn guarded_tcp_client(
    m: &Manager,
    client: std::net::SocketAddr,
    server_port: u16,
) -> Result<Option<(String, Guard)>, String> {
    let roots: Vec<u32> = m
        .live_names()
        .into_iter()
        .filter_map(|name| Some(m.live(&name)?.pid()))
        .collect();
    if roots.is_empty() {
        return Ok(None);
    }
    // `::ffff:127.0.0.1` (a dual-stack listener) is 127.0.0.1.
    let client = std::net::SocketAddr::new(client.ip().to_canonical(), client.port());
    let cannot = |why: &str| format!("cms cannot tell which process on this machine asks ({why})");
    let Some(inode) = tcp_inode(client, server_port) else {
        if client.ip().is_loopback() {
            return Err(cannot("its socket is not in /proc/net/tcp"));
        }
        return Ok(None);
    };
    let wanted = format!("socket:[{inode}]");
    let inside: std::collections::HashSet<u32> = descendants(&roots).into_iter().collect();
    let mut holders = Vec::new();
    let mut hidden = false;
    for pid in all_pids() {
        match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(fds) => {
                let holds = fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str())
                });
                if holds {
                    holders.push(pid);
                }
            }
            // Gone since listed: not a holder. Unreadable inside a session: hidden.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound && inside.contains(&pid) => {
                hidden = true
            }
            Err(_) => {}
        }
    }
    if let Some(found) = holders.iter().find_map(|pid| guarded_ancestor(m, *pid)) {
        return Ok(Some(found));
    }
    if hidden {
        return Err(cannot("a process of a live session hides its open files"));
    }
    if holders.is_empty() {
        return Err(cannot("no process holds its socket"));
    }
    Ok(None)
}

/// The inode of the TCP socket whose local end is `client` and remote port
/// `server_port` (an IPv4 address is looked for as itself and as IPv4-mapped IPv6).
fn tcp_inode(client: std::net::SocketAddr, server_port: u16) -> Option<u64> {
    let v6_words = |o: [u8; 16]| -> String {
        o.chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect()
    };
    let port = client.port();
    let forms: Vec<(&str, String)> = match client.ip() {
        std::net::IpAddr::V4(ip) => vec![
            (
                "/proc/net/tcp",
                format!("{:08X}:{port:04X}", u32::from_ne_bytes(ip.octets())),
            ),
            (
                "/proc/net/tcp6",
                format!("{}:{port:04X}", v6_words(ip.to_ipv6_mapped().octets())),
            ),
        ],
        std::net::IpAddr::V6(ip) => vec![(
            "/proc/net/tcp6",
            format!("{}:{port:04X}", v6_words(ip.octets())),
        )],
    };
    let remote_port = format!(":{server_port:04X}");
    forms.iter().find_map(|(table, local)| {
        let text = std::fs::read_to_string(table).ok()?;
        text.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 9 && f[1] == local && f[2].ends_with(&remote_port))
                .then(|| f[9].parse::<u64>().ok().filter(|i| *i != 0))
                .flatten()
        })
    })
}

/// Every process's pid.
fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// `roots` and every process under them (read from each process's `stat`).
fn descendants(roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for pid in all_pids() {
        if let Some(parent) = parent_of(pid) {
            children.entry(parent).or_default().push(pid);
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

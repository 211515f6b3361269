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

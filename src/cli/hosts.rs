//! `cms hosts`: the machines sessions can run on (`hosts.lua`, and this one), with
//! their runner, address, live and queued sessions (from the store), `max_live`,
//! labels, and whether each ssh host answers now (`ssh -o ConnectTimeout=3 HOST
//! true`, all at once).

use super::out::{self, outln};
use crate::engine::{SessionState, Store};
use crate::policy::Layers;
use crate::runners::{self, Host};
use serde::Serialize;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long a reachability probe may wait for the connection.
const PROBE_SECS: u32 = 3;

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    runner: String,
    address: Option<String>,
    live: usize,
    queued: usize,
    max_live: Option<usize>,
    labels: Vec<String>,
    /// "ok", "local", "not probed (RUNNER)" or "unreachable: <ssh's words>".
    reachable: String,
}

/// Run `cms hosts`; returns the exit code.
pub fn run(home: &std::path::Path, json: bool) -> i32 {
    let cwd = std::env::current_dir().unwrap_or_default();
    let layers = Layers::standard(&cwd);
    let all = match runners::hosts(&layers) {
        Ok(h) => h,
        Err(e) => return out::fail(json, e),
    };
    let recs = Store::open(home).and_then(|s| s.list()).unwrap_or_default();
    let count = |host: Option<&str>, queued: bool| {
        recs.iter()
            .filter(|r| r.options.on.as_deref() == host)
            .filter(|r| {
                if queued {
                    r.state == SessionState::Queued
                } else {
                    r.state.is_live() && r.state != SessionState::Queued
                }
            })
            .count()
    };
    let local_cap =
        crate::policy::PolicyService::start(layers.clone(), crate::policy::DECISION_LIMIT)
            .ok()
            .and_then(|(s, _)| s.capacity().max_live);
    let mut rows = vec![Row {
        name: "local".into(),
        runner: "local".into(),
        address: None,
        live: count(None, false),
        queued: count(None, true),
        max_live: local_cap,
        labels: Vec::new(),
        reachable: "local".into(),
    }];
    let probes: Vec<_> = all
        .iter()
        .map(|(name, h)| {
            let (name, h) = (name.clone(), h.clone());
            std::thread::spawn(move || probe(&name, &h))
        })
        .collect();
    for ((name, h), p) in all.iter().zip(probes) {
        rows.push(Row {
            name: name.clone(),
            runner: h.runner.clone().unwrap_or_else(|| "ssh".into()),
            address: h.address.clone(),
            live: count(Some(name), false),
            queued: count(Some(name), true),
            max_live: h.max_live.map(|n| n as usize),
            labels: h.labels.clone(),
            reachable: p.join().unwrap_or_else(|_| "unknown".into()),
        });
    }
    if json {
        let _ = outln!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        let _ = out::text(&table(&rows));
    }
    0
}

/// Whether an ssh host answers now; other runners are not probed.
fn probe(name: &str, h: &Host) -> String {
    let runner = h.runner.as_deref().unwrap_or("ssh");
    if runner == "local" {
        return "local".into();
    }
    if runner != "ssh" {
        return format!("not probed ({runner})");
    }
    let address = h.address.clone().unwrap_or_else(|| name.to_string());
    let child = Command::new("ssh")
        .args(["-o", "BatchMode=yes"])
        .args(["-o", &format!("ConnectTimeout={PROBE_SECS}")])
        .args(&h.ssh_options)
        .args([&address, "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => return format!("unreachable: no ssh client: {e}"),
    };
    // ConnectTimeout bounds the connection; a server that accepts and then hangs is
    // bounded here.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(PROBE_SECS as u64 + 5)) {
        Ok(Ok(o)) if o.status.success() => "ok".into(),
        Ok(Ok(o)) => {
            let words = String::from_utf8_lossy(&o.stderr);
            let words = words
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .unwrap_or("ssh failed with no message")
                .to_string();
            format!("unreachable: {words}")
        }
        Ok(Err(e)) => format!("unreachable: {e}"),
        Err(_) => format!("unreachable: no answer in {}s", PROBE_SECS + 5),
    }
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let header = [
        "HOST",
        "RUNNER",
        "ADDRESS",
        "LIVE",
        "QUEUED",
        "MAX",
        "LABELS",
        "REACHABLE",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.runner.clone(),
                r.address.clone().unwrap_or_else(|| "-".into()),
                r.live.to_string(),
                r.queued.to_string(),
                r.max_live.map_or("-".into(), |n| n.to_string()),
                if r.labels.is_empty() {
                    "-".into()
                } else {
                    r.labels.join(",")
                },
                r.reachable.clone(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: Vec<String>| {
        let n = row.len();
        let mut s = String::new();
        for (i, (c, w)) in row.into_iter().zip(&widths).enumerate() {
            if i + 1 == n {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    out.push_str(&line(header.iter().map(|h| h.to_string()).collect()));
    for row in cells {
        out.push_str(&line(row));
    }
    out
}

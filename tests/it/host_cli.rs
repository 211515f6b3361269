//! The CLI over the session host: `cms logs` (a session's history, then its live
//! events with `-f`), `cms attach` (a prompt on one session, piped here), and the
//! answer of `cms send` streamed on a terminal.

use super::support::{cms_bin, Cms};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The lines a child writes on stdout, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Read lines until one satisfies `ok` (15 s at most); every line read.
fn until(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    what: &str,
    ok: impl Fn(&str) -> bool,
) {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = ok(&line);
                seen.push(line);
                if hit {
                    return;
                }
            }
            Err(_) => panic!("waited for {what}; read:\n{}", seen.join("\n")),
        }
    }
}

/// Wait for a child to end (10 s at most).
fn wait_end(child: &mut Child) -> std::process::ExitStatus {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the child did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigint(child: &Child) {
    // SAFETY: a signal to a child of this test.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

fn state(cms: &Cms, name: &str) -> Value {
    cms.json(&["status", name])
}

#[test]
fn logs_of_a_finished_session_read_in_order_and_start_no_host() {
    let cms = Cms::new();
    cms.ok(&["spawn", "a", "hello"]);
    cms.ok(&["send", "a", r#"USE_TOOL Read {"file_path": "notes.txt"}"#]);
    cms.ok(&["send", "a", "LINES 2 10 two"]);
    cms.ok(&["host", "stop"]);
    assert!(!cms.dir.path().join("cms/host.json").exists());

    let text = cms.ok(&["logs", "a"]);
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
    };
    assert!(at("> hello  (spawn)") < at("< echo: hello"), "{text}");
    assert!(at("< echo: hello") < at("> USE_TOOL Read"), "{text}");
    assert!(at("> USE_TOOL Read") < at("→ Read notes.txt"), "{text}");
    assert!(
        at("→ Read notes.txt") < at("< done: 1 tool results"),
        "{text}"
    );
    assert!(at("< two 2") > at("> LINES 2 10 two"), "{text}");
    assert!(text.contains("= $0.0010 · 1 turn"), "{text}");

    let json = cms.ok(&["logs", "a", "--json"]);
    let events: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let interactions: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "interaction")
        .collect();
    assert_eq!(interactions.len(), 3, "{json}");
    assert_eq!(interactions[0]["message"], "hello");
    assert_eq!(interactions[0]["response"], "echo: hello");
    assert!(events
        .iter()
        .any(|e| e["event"] == "tool_use" && e["name"] == "Read" && e["session"] == "a"));

    // Reading started no host.
    assert!(!cms.dir.path().join("cms/host.json").exists());

    let err = cms.fails(&["logs", "nope"]);
    assert!(err.contains("session 'nope' not found"), "{err}");
    let other = Cms::new();
    let err = other.fails(&["logs", "a"]);
    assert!(err.contains("no sessions yet"), "{err}");
}

#[test]
fn logs_follow_json_sees_a_send_from_another_process_and_ends_on_ctrl_c() {
    let cms = Cms::new();
    cms.ok(&["spawn", "a", "hello"]);
    let mut follow = cms.spawn_piped(&["logs", "a", "-f", "--json"]);
    let rx = lines_of(&mut follow);
    let mut seen = Vec::new();
    // The history first: following has begun.
    until(&rx, &mut seen, "the spawn in the history", |l| {
        l.contains(r#""event":"interaction""#)
    });
    cms.ok(&["send", "a", "LINES 2 50 live"]);
    until(&rx, &mut seen, "the result of the send", |l| {
        l.contains(r#""event":"result""#)
    });
    let events: Vec<Value> = seen
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let texts: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "text")
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert_eq!(texts, ["live 1", "live 2"], "{seen:?}");
    assert!(events.iter().all(|e| e["session"] == "a"), "{seen:?}");
    sigint(&follow);
    let status = wait_end(&mut follow);
    assert!(status.success(), "{status:?}");
}

#[test]
fn attach_with_piped_lines_sends_each_and_leaves_the_session_live() {
    let cms = Cms::new();
    cms.ok(&["spawn", "a", "hello"]);
    let out = cms.run_with_input(&["attach", "a"], b"first\nLINES 2 10 second\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("echo: first"), "{stdout}");
    assert!(
        stdout.contains("second 1\nsecond 2\n"),
        "each text block once, in order: {stdout}"
    );
    assert_eq!(stdout.matches("echo: first").count(), 1, "{stdout}");
    assert!(stderr.contains("Detached from 'a'"), "{stderr}");
    let st = state(&cms, "a");
    assert_eq!(st["state"], "idle", "{st}");
    assert!(st["pid"].as_u64().is_some(), "still live: {st}");

    let err = cms.fails(&["attach", "nope"]);
    assert!(err.contains("session 'nope' not found"), "{err}");
}

#[test]
fn ctrl_c_in_an_attached_turn_interrupts_it_and_the_next_line_is_answered() {
    let cms = Cms::new();
    cms.ok(&["spawn", "a", "hello"]);
    let mut attach = cms.spawn_all_piped(&["attach", "a"]);
    let mut stdin = attach.stdin.take().unwrap();
    stdin.write_all(b"SLOW 5000 never\n").unwrap();
    stdin.flush().unwrap();
    cms.busy_pid("a");
    let started = Instant::now();
    sigint(&attach);
    // The turn ends well before its 5 s.
    loop {
        if state(&cms, "a")["state"] == "idle" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the turn was not interrupted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stdin.write_all(b"after\n").unwrap();
    drop(stdin);
    let status = wait_end(&mut attach);
    let mut stdout = String::new();
    attach
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    attach
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status:?}\n{stdout}\n{stderr}");
    assert!(stdout.contains("echo: after"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("echo: never"), "{stdout}");
    assert!(stderr.contains("interrupt"), "{stderr}");
    let st = state(&cms, "a");
    assert!(st["pid"].as_u64().is_some(), "still live: {st}");
}

#[test]
fn send_on_a_terminal_streams_the_answer_before_the_turn_ends() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping: `script` (util-linux) is not installed");
        return;
    }
    let cms = Cms::new();
    cms.ok(&["spawn", "a", "hello"]);
    // `script` gives the command a terminal; its output comes to this pipe.
    let line = format!("{} send a 'LINES 3 700 part'", cms_bin().display());
    let mut child = on_a_terminal(&cms, &line)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut child);
    let mut seen = Vec::new();
    until(&rx, &mut seen, "the first part", |l| l.contains("part 1"));
    // Shown while the turn still runs.
    assert_eq!(state(&cms, "a")["state"], "busy", "{seen:?}");
    until(&rx, &mut seen, "the summary line", |l| {
        l.contains("[a] status=")
    });
    let status = wait_end(&mut child);
    assert!(status.success(), "{status:?}: {seen:?}");
    let all = seen.join("\n");
    assert_eq!(all.matches("part 1").count(), 1, "not twice: {all}");
    assert!(all.find("part 3").unwrap() < all.find("[a] status=").unwrap());
    // Meanwhile a status line (spinner, session, state, time) was drawn and cleared.
    assert!(all.contains("a · busy"), "a status line: {all:?}");
    assert!(
        all.contains("\x1b[K"),
        "cleared before other lines: {all:?}"
    );
}

/// A tool call the CLI refused is named, with what would allow it.
#[test]
fn a_refused_tool_call_is_named_with_what_would_allow_it() {
    let cms = Cms::new();
    let out = cms.ok(&[
        "spawn",
        "r",
        r#"USE_TOOL Write {"file_path": "a.txt", "content": "x"}"#,
    ]);
    assert!(
        out.contains("denied: Write a.txt: refused by Claude Code's permission mode; `--allowed-tools Write`"),
        "{out}"
    );
}

/// `script -qec LINE /dev/null`, in the environment and folder of a `cms` command:
/// LINE runs on a terminal of its own, its output comes to this test's pipe.
fn on_a_terminal(cms: &Cms, line: &str) -> std::process::Command {
    let base = cms.cmd(&[]);
    let mut c = std::process::Command::new("script");
    c.args(["-qec", line, "/dev/null"]);
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(dir) = base.get_current_dir() {
        c.current_dir(dir);
    }
    c.stdin(Stdio::null());
    c
}

//! Integration: the `cms` binary on the simulator, as a shell user runs it.

use crate::support;

use support::Cms;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn spawn_send_and_read_back() {
    let cms = Cms::new();
    let out = cms.ok(&["spawn", "--name", "a", "--prompt", "hello there"]);
    let after = cms.after_command();
    assert!(
        out.starts_with(&format!(
            "echo: hello there\n\n[a] status={after} cost=$0.0010"
        )),
        "{out}"
    );
    let spawned_pid = cms.json(&["status", "--name", "a"])["pid"].clone();
    let v = cms.json(&["send", "--name", "a", "--message", "RECALL"]);
    assert_eq!(v["response"]["text"], "recall: hello there");
    assert_eq!(v["session"]["interaction_count"], 2);
    // In process a CLI command's process ends with it; in the host the session stays
    // live and the send reaches the same process.
    assert_eq!(v["session"]["state"], after, "{v}");
    if cms.host_mode() {
        assert!(spawned_pid.is_i64(), "live after the spawn: {spawned_pid}");
        assert_eq!(v["session"]["pid"], spawned_pid, "the same claude process");
    } else {
        assert!(spawned_pid.is_null(), "{spawned_pid}");
    }
    let id = v["session"]["claude_session_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        v["response"]["session_id"],
        id.as_str(),
        "the send resumed the same conversation"
    );

    let status = cms.ok(&["status", "--name", "a"]);
    assert!(
        status.contains("name: a") && status.contains("totalCostUsd: $0.0020"),
        "{status}"
    );
    assert!(status.contains(&format!("claudeSessionId: {id}")));
    assert_eq!(
        cms.ok(&["output", "--name", "a"]).trim(),
        "recall: hello there"
    );
    let history = cms.json(&["history", "--name", "a"]);
    assert_eq!(history.as_array().unwrap().len(), 2);
    assert_eq!(history[0]["kind"], "spawn");
    let list = cms.ok(&["list"]);
    assert!(list.starts_with("NAME") && list.contains("\na "), "{list}");
    let list = cms.json(&["list"]);
    assert_eq!(list[0]["name"], "a");
}

#[test]
fn every_command_speaks_json() {
    let cms = Cms::new();
    cms.json(&["spawn", "--name", "j", "--prompt", "x"]);
    for args in [
        vec!["send", "--name", "j", "--message", "y"],
        vec!["pause", "--name", "j"],
        vec!["resume", "--name", "j"],
        vec!["fork", "--name", "j", "--new-name", "j2"],
        vec!["stop", "--name", "j"],
        vec!["kill", "--name", "j"],
        vec!["status", "--name", "j"],
        vec!["output", "--name", "j"],
        vec!["list"],
        vec!["history", "--name", "j"],
        vec!["cleanup", "--days", "30"],
        vec!["delete", "--name", "j2"],
    ] {
        let v = cms.json(&args);
        assert!(v.is_object() || v.is_array(), "{args:?}: {v}");
    }
}

#[test]
fn output_is_truncated_unless_full() {
    let cms = Cms::new();
    cms.ok(&["spawn", "--name", "big", "--prompt", "HUGE 5000"]);
    let short = cms.ok(&["output", "--name", "big"]);
    assert!(short.contains("(truncated; use --full)"));
    assert_eq!(short.matches('x').count(), 2000);
    let full = cms.ok(&["output", "--name", "big", "--full"]);
    assert_eq!(full.trim().len(), 5000);
}

#[test]
fn bad_input_is_named_and_exits_non_zero() {
    // In process (--no-host): --claude-bin per command: a running host keeps its own (host mode refuses a different one: host::a_different_claude_bin_than_the_hosts_is_refused).
    let cms = Cms::in_process();
    let err = cms.fails(&["send", "--name", "ghost", "--message", "x"]);
    assert!(
        err.contains("session 'ghost' not found; see `cms list`"),
        "{err}"
    );
    assert!(cms
        .fails(&["status", "--name", "ghost"])
        .contains("not found"));
    cms.ok(&["spawn", "--name", "dup", "--prompt", "first"]);
    assert!(cms
        .fails(&["spawn", "--name", "dup", "--prompt", "second"])
        .contains("already exists"));
    assert_eq!(
        cms.ok(&["output", "--name", "dup"]).trim(),
        "echo: first",
        "nothing lost"
    );
    assert!(cms
        .fails(&["spawn", "--name", "bad name", "--prompt", "x"])
        .contains("invalid session name"));

    let err = String::from_utf8(
        cms.cmd(&["spawn", "--name", "nobin", "--prompt", "x"])
            .env("CMS_CLAUDE_BIN", "/nowhere/claude")
            .output()
            .unwrap()
            .stderr,
    )
    .unwrap();
    assert!(
        err.contains("claude executable not found: /nowhere/claude")
            && err.contains("--claude-bin / CMS_CLAUDE_BIN")
            && err.contains("npm install -g @anthropic-ai/claude-code"),
        "the CLI says how to fix it: {err}"
    );
    assert!(cms
        .fails(&["status", "--name", "nobin"])
        .contains("not found"));

    // A child that dies mid-turn.
    let err = cms.fails(&["send", "--name", "dup", "--message", "CRASH 7"]);
    assert!(err.contains("code 7") && err.contains("boom"), "{err}");
    assert!(cms
        .ok(&["status", "--name", "dup"])
        .contains("status: failed"));

    // Usage errors come from clap with exit code 2.
    let out = cms.run(&["spawn", "--name", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--prompt"));
    let out = cms.run(&[
        "spawn",
        "--name",
        "x",
        "--prompt",
        "p",
        "--max-budget",
        "abc",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn pause_refuses_sends_until_resumed_and_send_stop_works() {
    let cms = Cms::new();
    cms.ok(&["spawn", "--name", "p", "--prompt", "x"]);
    assert!(cms
        .ok(&["pause", "--name", "p"])
        .contains("Session 'p' paused"));
    assert!(cms
        .fails(&["send", "--name", "p", "--message", "y"])
        .contains("is paused"));
    let out = cms.ok(&["resume", "--name", "p", "--message", "back"]);
    assert!(out.starts_with("echo: back"), "{out}");
    let v = cms.json(&["send", "--name", "p", "--message", "z", "--stop"]);
    assert_eq!(v["session"]["state"], "stopped");
}

#[test]
fn fork_from_the_command_line() {
    let cms = Cms::new();
    cms.ok(&["spawn", "--name", "base", "--prompt", "base words"]);
    let out = cms.ok(&[
        "fork",
        "--name",
        "base",
        "--new-name",
        "branch",
        "--message",
        "RECALL",
    ]);
    assert!(out.starts_with("recall: base words"), "{out}");
    let out = cms.ok(&["fork", "--name", "base", "--new-name", "later"]);
    assert!(out.contains("Forked 'base' → 'later'"));
    let v = cms.json(&["status", "--name", "later"]);
    assert_eq!(v["forked_from"], "base");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn batch_files_run_in_parallel_and_bad_files_start_nothing() {
    let cms = Cms::new();
    let file = cms.dir.path().join("tasks.json");
    write(
        &file,
        r#"[{"name":"t1","prompt":"one","model":"sonnet"},
            {"name":"t2","prompt":"CRASH 5"},
            {"name":"t3","prompt":"three","allowedTools":"Read,Grep"}]"#,
    );
    let out = cms.run(&["batch", "--file", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "one entry failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("[t1] ok") && stdout.contains("[t3] ok"),
        "{stdout}"
    );
    assert!(stdout.contains("[t2] FAILED"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 3 batch sessions failed"));
    assert_eq!(cms.json(&["list"]).as_array().unwrap().len(), 3);

    for bad in [
        "not json",
        "{\"name\":\"x\"}",
        "[{\"name\":\"y\"}]",
        "[]",
        "[{\"name\":\"z\",\"prompt\":\"p\",\"modle\":\"typo\"}]",
    ] {
        write(&file, bad);
        let err = cms.fails(&["batch", "--file", file.to_str().unwrap()]);
        assert!(err.contains("batch file"), "{bad}: {err}");
    }
    assert_eq!(
        cms.json(&["list"]).as_array().unwrap().len(),
        3,
        "nothing started"
    );
    assert!(cms
        .fails(&["batch", "--file", "/nonexistent.json"])
        .contains("cannot read batch file"));
}

#[test]
fn cleanup_days() {
    // In process (--no-host): A live session (in the host) is not idle: cleanup leaves it.
    let cms = Cms::in_process();
    cms.ok(&["spawn", "--name", "c1", "--prompt", "x"]);
    let v = cms.json(&["cleanup", "--days", "1"]);
    assert_eq!(v["removed"].as_array().unwrap().len(), 0);
    let out = cms.ok(&["cleanup", "--days", "0", "--yes"]);
    assert!(
        out.contains("Removed 1 session(s)") && out.contains("c1"),
        "{out}"
    );
    assert_eq!(cms.ok(&["list"]).trim(), "No sessions.");
}

#[test]
fn sigterm_stops_every_child_and_leaves_the_session_resumable() {
    // In process (--no-host): In the host SIGTERM of the client interrupts its turn; the session stays live.
    let cms = Cms::in_process();
    cms.ok(&["spawn", "--name", "h", "--prompt", "before"]);
    let mut child = cms.spawn_piped(&["send", "--name", "h", "--message", "HANG"]);
    let pid = cms.busy_pid("h");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    support::assert_gone(pid);
    let v = cms.json(&["status", "--name", "h"]);
    assert_eq!(v["state"], "stopped");
    let out = cms.ok(&["send", "--name", "h", "--message", "RECALL"]);
    assert!(out.contains("before"), "{out}");
}

#[test]
fn bypass_permissions_as_root_is_explained() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let cms = Cms::new();
    let err = cms.fails(&[
        "spawn",
        "--name",
        "r",
        "--prompt",
        "x",
        "--permission-mode",
        "bypassPermissions",
    ]);
    assert!(
        err.contains("root/sudo") && err.contains("IS_SANDBOX"),
        "{err}"
    );
}

#[test]
fn prompts_can_come_from_stdin() {
    let cms = Cms::new();
    let out = cms.run_with_input(&["spawn", "--name", "in", "--prompt", "-"], b"from stdin");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("echo: from stdin"));
}

/// Sends from several shells to one session never run side by side: each waits its
/// turn, in arrival order, and the conversation the next turn sees holds every
/// message and its answer (the sim's RECALL lists what its transcript holds).
#[test]
fn concurrent_sends_from_many_shells_are_served_one_at_a_time_in_arrival_order() {
    use std::io::{BufRead, BufReader, Read};
    // In process (--no-host): The lease's "waits its turn" line is in-process; the host queues in arrival order (host::two_clients_sending_at_once_get_their_own_answers_in_arrival_order).
    let cms = Cms::in_process();
    cms.ok(&["spawn", "--name", "race", "--prompt", "start"]);
    // The first send holds the session for a while; each next one is started only once
    // the one before it is in line, so the arrival order is known.
    let mut children = Vec::new();
    for i in 0..8 {
        let msg = format!("SLOW {} msg-{i}", if i == 0 { 3000 } else { 50 });
        let mut child = cms
            .cmd(&["send", "--name", "race", "--message", &msg])
            .env("CMS_PROGRESS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        if i == 0 {
            cms.busy_pid("race");
        } else {
            let waiting = rx
                .iter()
                .find(|l| l.contains("is busy in another cms command"))
                .is_some();
            assert!(waiting, "send {i} said it waits its turn");
        }
        children.push((child, reader));
    }
    for (i, (mut c, reader)) in children.into_iter().enumerate() {
        let status = c.wait().unwrap();
        let mut stdout = String::new();
        c.stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let stderr = reader.join().unwrap();
        assert!(status.success(), "send {i}: {stderr}");
        assert!(
            stdout.starts_with(&format!("echo: msg-{i}")),
            "send {i} got its own answer: {stdout}"
        );
    }
    let out = cms.ok(&["send", "--name", "race", "--message", "RECALL"]);
    let expected: Vec<String> = std::iter::once("start".to_string())
        .chain((0..8).map(|i| format!("SLOW {} msg-{i}", if i == 0 { 3000 } else { 50 })))
        .collect();
    assert!(
        out.starts_with(&format!("recall: {}", expected.join(" | "))),
        "every message, in order of arrival: {out}"
    );
    let history = cms.json(&["history", "--name", "race"]);
    let answers: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["response"].as_str().unwrap())
        .collect();
    assert_eq!(answers.len(), 10);
    for i in 0..8 {
        assert_eq!(answers[i + 1], format!("echo: msg-{i}"));
    }
}

/// `--no-wait` refuses instead of queueing, and a session held live by a long-lived
/// cms process is named with its pid and kind, never with a destructive suggestion.
#[test]
fn a_busy_or_held_session_is_explained_not_forked() {
    // In process (--no-host): the holder named is the other cms command (pid and kind);
    // in the host it is the host (host::no_wait_on_a_session_in_a_turn_fails_at_once).
    let cms = Cms::in_process();
    cms.ok(&["spawn", "--name", "x", "--prompt", "start"]);
    let slow = cms
        .cmd(&["send", "--name", "x", "--message", "SLOW 3000 long"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let holder = slow.id();
    cms.busy_pid("x");
    let err = cms.fails(&["send", "--no-wait", "--name", "x", "--message", "y"]);
    assert!(
        err.contains("is busy")
            && err.contains(&format!("pid {holder}"))
            && err.contains("--no-wait"),
        "{err}"
    );
    assert!(slow.wait_with_output().unwrap().status.success());

    // The script holds the session live until the test says it may end.
    let plan = cms.work().join("hold.lua");
    let flag = cms.work().join("done.flag");
    std::fs::write(
        &plan,
        format!(
            "local s = cms.spawn{{ name = 'held', prompt = 'hi' }}\n\
             while not io.open('{}') do cms.sleep(0.05) end\n",
            flag.display()
        ),
    )
    .unwrap();
    let mut script = cms.spawn_piped(&["script", plan.to_str().unwrap()]);
    let mut live = false;
    for _ in 0..100 {
        let v = cms.json(&["list"]);
        if v.as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "held" && s["state"] == "idle")
        {
            live = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(live, "the script holds the session live");
    let started = std::time::Instant::now();
    let err = cms.fails(&["send", "--name", "held", "--message", "y"]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refused at once"
    );
    assert!(
        err.contains(&format!("cms script (pid {})", script.id())),
        "{err}"
    );
    assert!(!err.contains("cms stop") && !err.contains("kill"), "{err}");
    let status = cms.json(&["status", "--name", "held"]);
    assert_eq!(status["host_kind"], "script");
    let text = cms.ok(&["status", "--name", "held"]);
    assert!(
        text.contains(&format!("heldBy: cms script (pid {})", script.id())),
        "{text}"
    );
    assert!(
        text.contains(&format!(", live in cms script (pid {})", script.id())),
        "{text}"
    );
    std::fs::write(&flag, "").unwrap();
    assert!(script.wait().unwrap().success());
    // Once the script has ended, the session is anyone's again.
    let out = cms.ok(&["send", "--name", "held", "--message", "RECALL"]);
    assert!(out.contains("recall: hi"), "{out}");
}

/// A child of `cms mcp` (run by Claude Code) must not act as the parent session.
#[test]
fn children_do_not_inherit_a_parent_claude_code_session() {
    let cms = Cms::new();
    let v = cms.json_with(
        &["spawn", "--name", "e", "--prompt", "ENV"],
        &[
            ("CLAUDECODE", "1"),
            ("CLAUDE_CODE_SESSION_ID", "parent-session"),
            ("CLAUDE_CODE_ENTRYPOINT", "sdk-cli"),
            ("CLAUDE_CODE_MESSAGING_SOCKET", "/tmp/parent.sock"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9"),
            ("CLAUDE_CONFIG_DIR", "/tmp/user-config"),
        ],
    );
    let text = v["response"]["text"].as_str().unwrap().to_string();
    let names: Vec<&str> = text.split_whitespace().collect();
    for parent in [
        "CLAUDECODE",
        "CLAUDE_CODE_SESSION_ID",
        "CLAUDE_CODE_ENTRYPOINT",
        "CLAUDE_CODE_MESSAGING_SOCKET",
    ] {
        assert!(!names.contains(&parent), "{parent} leaked: {text}");
    }
    for user in ["ANTHROPIC_BASE_URL", "CLAUDE_CONFIG_DIR", "HOME"] {
        assert!(names.contains(&user), "{user} must pass: {text}");
    }
}

/// While the API fails, the retries show as they happen (on a terminal, or with
/// CMS_PROGRESS=1), `status --json` carries them, and the final error names them.
#[test]
fn api_retries_are_shown_while_they_happen() {
    let cms = Cms::new();
    let out = cms
        .cmd(&["spawn", "--name", "r", "--prompt", "RETRY 3 API_ERROR 529"])
        .env("CMS_PROGRESS", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for attempt in 1..=3 {
        assert!(
            stderr.contains(&format!("API error 529 (overloaded); retry {attempt}/10")),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("after 3 API retries, last status 529"),
        "{stderr}"
    );

    let slow = cms.spawn_piped(&["send", "--name", "r", "--message", "RETRY 2 SLOW 3000 fine"]);
    let mut seen = None;
    for _ in 0..100 {
        let v = cms.json(&["status", "--name", "r"]);
        if v["state"] == "retrying" && v["retry"]["attempt"] == 2 {
            seen = Some(v);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let v = seen.expect("another process sees the retries");
    assert_eq!(v["retry"]["error_status"], 529);
    let out = slow.wait_with_output().unwrap();
    assert!(out.status.success());
    let v = cms.json(&["status", "--name", "r"]);
    assert!(v.get("retry").is_none(), "{v}");
}

/// The Claude session id is kept as soon as the CLI announces it: a session whose cms
/// died during its first turn is still resumable.
#[test]
fn a_session_whose_cms_died_in_its_first_turn_can_be_resumed() {
    let cms = Cms::new();
    let mut spawn =
        cms.spawn_piped(&["spawn", "--name", "k", "--prompt", "SLOW 10000 first words"]);
    let mut id = None;
    for _ in 0..100 {
        let out = cms.run(&["status", "--name", "k", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(s) = v["claude_session_id"].as_str() {
            id = Some(s.to_string());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let id = id.expect("the id is stored while the first turn runs");
    spawn.kill().unwrap();
    spawn.wait().unwrap();
    let v = cms.json(&["send", "--name", "k", "--message", "RECALL"]);
    assert_eq!(v["response"]["session_id"], id.as_str());
    assert!(
        v["response"]["text"]
            .as_str()
            .unwrap()
            .contains("SLOW 10000 first words"),
        "{v}"
    );
}

/// Claude Code runs each Bash tool in a process group of its own. However a session
/// ends — `cms kill` or `cms stop` from another shell, SIGTERM of its cms, `kill -9` of
/// its cms — nothing of its process tree is left a second later.
#[test]
fn no_process_of_an_ended_session_survives_it() {
    for how in ["kill", "stop", "sigterm", "sigkill"].iter() {
        // In process (--no-host): SIGTERM or SIGKILL of a client does not end a host session (host::a_client_killed_mid_turn_does_not_stop_the_turn).
        let cms = Cms::in_process();
        let marker = support::unique_marker();
        // A long-running tool (2.1.332 refuses a standalone long `sleep`); the marker is
        // an argument, so it is in the tool process's command line.
        let tool = format!("USE_TOOL Bash {{\"command\": \"perl -e 'sleep 600' {marker}\"}}");
        // The prompt goes on stdin: only the tool's processes carry the marker.
        let mut child = cms.spawn_all_piped(&[
            "spawn",
            "--name",
            "t",
            "--allowed-tools",
            "Bash",
            "--prompt",
            "-",
        ]);
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(tool.as_bytes()).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while support::processes_with(&marker) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{how}: the tool never ran"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        match *how {
            "kill" | "stop" => {
                cms.ok(&[how, "--name", "t"]);
            }
            // SAFETY: signalling our own child.
            "sigterm" => unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            },
            _ => child.kill().unwrap(),
        }
        let left = support::processes_left_after(&marker, Duration::from_secs(1));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(left, 0, "{how}: processes of the session survived it");
    }
}

/// Run `cms args` with stdout a pipe whose reader reads `lines` lines and then goes
/// away (`| head -N`; 0: gone before cms writes anything). Returns the exit code and
/// stderr.
fn with_stdout_closed_after(cms: &Cms, args: &[&str], lines: usize) -> (Option<i32>, String) {
    use std::io::{BufRead, Read};
    let (reader, writer) = std::io::pipe().unwrap();
    let mut reader = (lines > 0).then(|| std::io::BufReader::new(reader));
    let mut child = cms
        .cmd(args)
        .env("TMPDIR", cms.dir.path())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(r) = reader.as_mut() {
        for _ in 0..lines {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
        }
    }
    drop(reader);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap().code(), stderr)
}

#[test]
fn a_closed_stdout_ends_any_command_quietly() {
    let cms = Cms::new();
    for n in ["a", "b", "c"] {
        cms.ok(&["spawn", "--name", n, "--prompt", "hi"]);
    }
    std::fs::write(cms.work().join("plan.lua"), "return { answer = 42 }\n").unwrap();
    let commands: [&[&str]; 10] = [
        &["script", "plan.lua"],
        &["policy", "show"],
        &["lua-types"],
        &["plugins", "list"],
        &["--json", "lua-types"],
        &["list"],
        &["--json", "list"],
        &["history", "--name", "a"],
        &["send", "--name", "a", "--message", "more"],
        &["delegate", "--name", "d", "--task", "work"],
    ];
    for lines in [0, 1] {
        for args in commands {
            let (code, stderr) = with_stdout_closed_after(&cms, args, lines);
            assert_eq!(code, Some(0), "cms {args:?} | head -{lines}: {stderr}");
            assert!(
                !stderr.contains("panicked") && !stderr.contains("Error"),
                "cms {args:?} | head -{lines}: {stderr}"
            );
        }
        let _ = cms.run(&["delete", "--name", "d"]);
    }
    // The sessions a command ran were stopped as on any exit, and stay resumable.
    let v = cms.json(&["status", "--name", "a"]);
    assert_eq!(v["state"], cms.after_command(), "{v}");
    assert_eq!(v["interaction_count"], 3, "{v}");
    // The REPL stops reading input once nobody reads its output.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    std::fs::write(
        cms.work().join("steps.lua"),
        "1 + 1\ncms.spawn{ name = 'late', prompt = 'x' }\n",
    )
    .unwrap();
    let out = cms
        .cmd(&["repl"])
        .stdin(std::fs::File::open(cms.work().join("steps.lua")).unwrap())
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    cms.fails(&["status", "--name", "late"]);
    // A command that fails still fails, and says so on stderr.
    let (code, stderr) = with_stdout_closed_after(&cms, &["status", "--name", "ghost"], 0);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("session 'ghost' not found"), "{stderr}");
    // `cms ... 2>&1 | head -0`: stderr closed too; still its own exit code, no panic (101).
    for (args, expected) in [
        (&["status", "--name", "ghost"][..], 1),
        (&["--json", "status", "--name", "ghost"][..], 1),
        (&["list"][..], 0),
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let status = cms
            .cmd(args)
            .stdout(writer.try_clone().unwrap())
            .stderr(writer)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(expected), "cms {args:?} 2>&1 | head -0");
    }
}

#[test]
fn a_demo_cut_short_by_its_reader_stops_its_sessions_and_cleans_up() {
    let cms = Cms::new();
    // `cms demo | head -3`: the reader leaves while the demo's sessions run.
    let (code, stderr) = with_stdout_closed_after(&cms, &["demo"], 3);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(cms.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cms-demo-"))
        .collect();
    assert!(
        left.is_empty(),
        "the demo's scratch directory stays: {left:?}"
    );
    // No simulator of the demo is left running (none works in the scratch directory).
    let inside: Vec<_> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path().join("cwd")).ok())
        .filter(|cwd| cwd.starts_with(cms.dir.path()) && !cwd.ends_with("work"))
        .collect();
    assert!(inside.is_empty(), "{inside:?}");
}

/// The help entries (option or argument, and its text) of `cms ARGS --help`.
fn help_entries(args: &[&str]) -> (String, Vec<(String, String)>) {
    let mut all = args.to_vec();
    all.push("--help");
    let out = Cms::new().ok(&all);
    let usage = out
        .lines()
        .find(|l| l.starts_with("Usage:"))
        .unwrap_or_default()
        .to_string();
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in out.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let header = (2..=6).contains(&indent)
            && (trimmed.starts_with('-') || trimmed.starts_with('<') || trimmed.starts_with('['));
        if header {
            // `--opt <V>  text` on one line, or the text on the lines below.
            let (spec, text) = match trimmed.find("  ") {
                Some(i) => (&trimmed[..i], trimmed[i..].trim()),
                None => (trimmed, ""),
            };
            entries.push((spec.to_string(), text.to_string()));
        } else if indent > 6 {
            // The text below its option (long help).
            if let Some(last) = entries.last_mut() {
                last.1.push(' ');
                last.1.push_str(trimmed);
            }
        }
    }
    (usage, entries)
}

#[test]
fn every_help_entry_has_a_description_and_every_optional_value_its_default() {
    let top = Cms::new().ok(&["--help"]);
    let mut commands: Vec<Vec<&str>> = top
        .lines()
        .skip_while(|l| !l.starts_with("Sessions:"))
        .take_while(|l| !l.starts_with("Global options:"))
        .filter(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(|c| vec![c])
        .collect();
    assert!(commands.len() > 20, "{top}");
    for (group, subs) in [
        ("policy", ["check", "show"]),
        ("plugins", ["list", "check"]),
    ] {
        commands.retain(|c| c[0] != group);
        for s in subs {
            commands.push(vec![group, s]);
        }
    }
    commands.push(vec![]);
    let mut missing = Vec::new();
    for cmd in &commands {
        let (usage, entries) = help_entries(cmd);
        for (spec, text) in entries {
            let text = text.trim();
            if text.is_empty() {
                missing.push(format!("cms {} {spec}: no description", cmd.join(" ")));
            }
            // An option that takes a value and is not required says its default.
            let takes_value = spec.starts_with('-') && spec.contains('<');
            let flag = spec.split_whitespace().find(|w| w.starts_with("--"));
            let required = flag.is_some_and(|f| usage.contains(&format!("{f} <")));
            if takes_value && !required && !text.contains("[default:") {
                missing.push(format!("cms {} {spec}: no [default: ...]", cmd.join(" ")));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn help_shows_the_real_defaults() {
    let cms = Cms::new();
    let spawn = cms.ok(&["spawn", "--help"]);
    let model = cms::engine::EngineConfig::from_env().default_model;
    assert!(spawn.contains(&format!("[default: {model}]")), "{spawn}");
    let secs = cms::engine::config::DEFAULT_TURN_TIMEOUT_SECS;
    assert!(secs >= 30 * 60, "a turn default fit for real work");
    let engine = cms::engine::EngineConfig::from_env().turn_timeout;
    assert_eq!(engine.as_secs(), secs, "MCP and Lua use the same default");
    for cmd in ["spawn", "send", "resume", "fork"] {
        let help = cms.ok(&[cmd, "--help"]);
        assert!(help.contains(&format!("[default: {secs}]")), "{help}");
    }
    let delegate = cms.ok(&["delegate", "--help"]);
    assert!(
        delegate.contains(&format!("[default: safety.lua's, {secs}]")),
        "{delegate}"
    );
    let policy = cms.ok(&["policy", "show"]);
    assert!(
        policy.contains(&format!("/ {secs}s per interaction")),
        "the safety net's default is the same: {policy}"
    );
}

#[test]
fn batch_help_names_every_key_a_batch_file_may_use() {
    let help = Cms::new().ok(&["batch", "--help"]);
    let spec = serde_json::to_value(cms::engine::SpawnSpec::default()).unwrap();
    for key in spec.as_object().unwrap().keys() {
        assert!(help.contains(&format!("`{key}`")), "{key} missing: {help}");
    }
}

#[test]
fn cms_home_is_tightened_and_a_read_only_one_still_lists() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // In process (--no-host): A running host holds the store's WAL files (owned by the user who ran it), so another uid cannot open the store at all.
    let cms = Cms::in_process();
    let home = cms.dir.path().join("cms");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    cms.ok(&["spawn", "--name", "a", "--prompt", "hi"]);
    let mode = std::fs::metadata(&home).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "an existing CMS_HOME is tightened");

    // Now make it read-only for the user cms runs as (root ignores modes: run as nobody).
    let root = unsafe { libc::geteuid() } == 0;
    let nobody = 65534;
    if root {
        for p in [cms.dir.path(), cms.work().as_path()] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for p in [home.clone(), home.join("cms.db")] {
            std::os::unix::fs::chown(&p, Some(nobody), Some(nobody)).unwrap();
        }
    }
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o500)).unwrap();
    let as_user = |args: &[&str]| {
        let mut c = cms.cmd(args);
        if root {
            c.uid(nobody).gid(nobody);
        }
        c.output().unwrap()
    };
    let out = as_user(&["list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "a", "{v}");
    assert!(as_user(&["status", "--name", "a"]).status.success());
    // Writing fails with a message, not a crash.
    let out = as_user(&["spawn", "--name", "b", "--prompt", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    // The first write to refuse names the place: the session's lock file or the store.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("readonly database")
            || (stderr.contains("locks/b.lock") && stderr.contains("Permission denied")),
        "{stderr}"
    );
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// `cms stop` or `cms kill` from another shell during a turn is a stop or a kill, not
/// a failure: the turn says so and the session reads stopped or killed (resumable).
#[test]
fn stop_or_kill_from_another_shell_during_a_turn_is_not_a_failure() {
    for (verb, state, said) in [("stop", "stopped", "stopped"), ("kill", "killed", "killed")] {
        let cms = Cms::new();
        cms.ok(&["spawn", "--name", "s", "--prompt", "start"]);
        let send = cms.spawn_piped(&["send", "--name", "s", "--message", "SLOW 5000 late"]);
        cms.busy_pid("s");
        cms.ok(&[verb, "--name", "s"]);
        let out = send.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{verb}: {stderr}");
        assert!(
            stderr.contains(&format!("the session was {said} before the turn finished")),
            "{verb}: {stderr}"
        );
        let v = cms.json(&["status", "--name", "s"]);
        assert_eq!(v["state"], state, "{verb}: {v}");
        assert!(cms
            .ok(&["send", "--name", "s", "--message", "RECALL"])
            .contains("start"));
    }
}

#[test]
fn cleanup_shows_first_and_needs_yes_off_a_terminal() {
    // In process (--no-host): A live session (in the host) is not idle: cleanup leaves it.
    let cms = Cms::in_process();
    cms.ok(&["spawn", "--name", "c1", "--prompt", "x"]);
    let out = cms.ok(&["cleanup", "--days", "0", "--dry-run"]);
    assert!(
        out.contains("Would remove 1 session(s)") && out.contains("c1"),
        "{out}"
    );
    let v = cms.json(&["cleanup", "--days", "0", "--dry-run"]);
    assert_eq!(v["would_remove"], serde_json::json!(["c1"]));
    assert_eq!(v["removed"], serde_json::json!([]));
    // Not on a terminal, without --yes: nothing removed, exit 1, and why.
    let err = cms.fails(&["cleanup", "--days", "0"]);
    assert!(
        err.contains("would remove 1 session(s)") && err.contains("c1"),
        "{err}"
    );
    assert!(err.contains("--yes"), "{err}");
    assert!(cms.ok(&["list"]).contains("c1"), "still there");
    // Nothing to remove needs no --yes.
    assert!(cms
        .ok(&["cleanup", "--days", "30"])
        .contains("Nothing to remove"));
    let out = cms.ok(&["cleanup", "--days", "0", "-y"]);
    assert!(out.contains("Removed 1 session(s)"), "{out}");
    assert_eq!(cms.ok(&["list"]).trim(), "No sessions.");
}

#[test]
fn kill_of_a_session_with_no_process_says_so() {
    // In process (--no-host): In the host the session is live after the spawn: kill kills it.
    let cms = Cms::in_process();
    cms.ok(&["spawn", "--name", "k", "--prompt", "x"]);
    let out = cms.ok(&["kill", "--name", "k"]);
    assert!(
        out.contains("'k' has no running process; nothing to kill"),
        "{out}"
    );
    assert_eq!(cms.json(&["status", "--name", "k"])["state"], "stopped");
    assert!(cms.fails(&["kill", "--name", "nope"]).contains("not found"));
}

#[test]
fn reading_commands_do_not_make_a_home() {
    let cms = Cms::new();
    let home = cms.dir.path().join("cms");
    let out = cms.ok(&["list"]);
    assert!(
        out.contains("No sessions yet (CMS_HOME=") && out.contains("does not exist"),
        "{out}"
    );
    assert_eq!(cms.json(&["list"]), serde_json::json!([]));
    for args in [
        vec!["status", "--name", "x"],
        vec!["output", "--name", "x"],
        vec!["history", "--name", "x"],
    ] {
        let err = cms.fails(&args);
        assert!(
            err.contains("session 'x' not found") && err.contains("does not exist"),
            "{err}"
        );
    }
    assert!(
        !home.exists(),
        "a reading command created {}",
        home.display()
    );
    std::fs::write(&home, "not a folder").unwrap();
    for args in [vec!["list"], vec!["spawn", "--name", "a", "--prompt", "x"]] {
        let err = cms.fails(&args);
        assert!(err.contains("is a file, not a folder"), "{args:?}: {err}");
    }
}

#[test]
fn dot_and_dot_dot_are_no_session_names() {
    let cms = Cms::new();
    for bad in [".", ".."] {
        let err = cms.fails(&["spawn", "--name", bad, "--prompt", "x"]);
        assert!(err.contains("invalid session name"), "{err}");
    }
}

#[test]
fn ctrl_c_during_send_says_the_session_was_stopped_and_records_the_turn() {
    // In process (--no-host): In the host Ctrl-C interrupts the turn and the session stays live (host::ctrl_c_on_send_interrupts_the_turn_in_the_host).
    let cms = Cms::in_process();
    cms.ok(&["spawn", "--name", "h", "--prompt", "before"]);
    let child = cms.spawn_piped(&["send", "--name", "h", "--message", "HANG"]);
    let pid = cms.busy_pid("h");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("session 'h' was stopped") && err.contains("resumes it"),
        "{err}"
    );
    assert!(!err.contains("started was stopped"), "{err}");
    support::assert_gone(pid);
    assert_eq!(cms.json(&["status", "--name", "h"])["state"], "stopped");
    let h = cms.json(&["history", "--name", "h"]);
    let last = h.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["message"], "HANG", "{h}");
    assert!(
        last["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("interrupted"),
        "{last}"
    );
    let out = cms.ok(&["send", "--name", "h", "--message", "RECALL"]);
    assert!(out.contains("before"), "{out}");
}

#[test]
fn a_lost_conversation_names_where_claude_code_looked() {
    // In process (--no-host): In the host the session is still live and holds its conversation, so the send succeeds; the lost conversation shows when a process has to resume it.
    let cms = Cms::in_process();
    cms.ok(&["spawn", "--name", "l", "--prompt", "x"]);
    std::fs::remove_dir_all(cms.dir.path().join(".claude/projects")).unwrap();
    let out = cms.run(&["send", "--name", "l", "--message", "again"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("No conversation found")
            && err.contains(".claude/projects/")
            && err.contains(".jsonl"),
        "{err}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "no empty response block: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_timed_out_send_says_what_state_it_left() {
    // In process (--no-host): In the host a timed-out turn leaves the session live (see host::a_timed_out_send_leaves_the_session_live_in_the_host).
    let cms = Cms::in_process();
    cms.ok(&["spawn", "--name", "t", "--prompt", "before"]);
    let err = cms.fails(&[
        "send",
        "--name",
        "t",
        "--message",
        "SLOW 5000 late",
        "--timeout",
        "0.3",
    ]);
    assert!(
        err.contains("no answer within 0.3s") && err.contains("takes the next message"),
        "{err}"
    );
    assert!(
        !err.contains("still alive"),
        "the CLI's process ends with the command: {err}"
    );
    assert_eq!(cms.json(&["status", "--name", "t"])["state"], "stopped");
    let out = cms.ok(&["send", "--name", "t", "--message", "RECALL"]);
    assert!(out.contains("before"), "{out}");
}

/// Numbers past what a clock holds are limits that never come, not a panic.
#[test]
fn a_huge_timeout_is_no_panic() {
    let cms = Cms::new();
    let out = cms.ok(&["spawn", "big", "hello", "--timeout", "1e300"]);
    assert!(out.contains("echo: hello"), "{out}");
    let out = cms.ok(&["send", "big", "again", "--timeout", "1e300"]);
    assert!(out.contains("echo: again"), "{out}");
}

/// Ctrl-C while a new session waits for Claude Code's first word: the session never
/// got a conversation, so it is removed and its name is free again.
#[test]
fn ctrl_c_before_a_new_session_has_a_conversation_frees_its_name() {
    use std::os::unix::fs::PermissionsExt;
    // In process (--no-host): Two claude executables in one home (--claude-bin per command).
    let cms = Cms::in_process();
    let mute = cms.dir.path().join("mute-claude");
    std::fs::write(&mute, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&mute, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = cms.cmd(&["spawn", "unborn", "hello"]);
    cmd.env("CMS_CLAUDE_BIN", &mute)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Wait until the session is recorded (its process started).
    let recorded = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(25));
        cms.run(&["status", "unborn"]).status.success()
    });
    assert!(recorded, "the spawn never recorded its session");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("so it was removed; spawn it again"), "{err}");
    assert!(!cms.run(&["status", "unborn"]).status.success());
    // The name is free: the same spawn works now.
    assert!(cms
        .ok(&["spawn", "unborn", "hello"])
        .contains("echo: hello"));
}

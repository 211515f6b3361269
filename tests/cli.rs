//! Integration: the `cms` binary on the simulator, as a shell user runs it.

mod support;

use support::Cms;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn spawn_send_and_read_back() {
    let cms = Cms::new();
    let out = cms.ok(&["spawn", "--name", "a", "--prompt", "hello there"]);
    assert!(
        out.starts_with("echo: hello there\n\n[a] status=stopped cost=$0.0010"),
        "{out}"
    );
    let v = cms.json(&["send", "--name", "a", "--message", "RECALL"]);
    assert_eq!(v["response"]["text"], "recall: hello there");
    assert_eq!(v["session"]["interaction_count"], 2);
    assert_eq!(
        v["session"]["state"], "stopped",
        "a CLI command's process ends with it"
    );
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
    let cms = Cms::new();
    assert!(cms
        .fails(&["send", "--name", "ghost", "--message", "x"])
        .contains("session 'ghost' not found"));
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
        err.contains("claude executable not found: /nowhere/claude"),
        "{err}"
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
    let cms = Cms::new();
    cms.ok(&["spawn", "--name", "c1", "--prompt", "x"]);
    let v = cms.json(&["cleanup", "--days", "1"]);
    assert_eq!(v["removed"].as_array().unwrap().len(), 0);
    let out = cms.ok(&["cleanup", "--days", "0"]);
    assert!(
        out.contains("Removed 1 session(s)") && out.contains("c1"),
        "{out}"
    );
    assert_eq!(cms.ok(&["list"]).trim(), "No sessions.");
}

#[test]
fn sigterm_stops_every_child_and_leaves_the_session_resumable() {
    let cms = Cms::new();
    cms.ok(&["spawn", "--name", "h", "--prompt", "before"]);
    let mut child = cms
        .cmd(&["send", "--name", "h", "--message", "HANG"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = cms.busy_pid("h");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: existence check only.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "the claude child is gone");
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
    let mut child = cms
        .cmd(&["spawn", "--name", "in", "--prompt", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("echo: from stdin"));
}

#[test]
fn cms_home_is_tightened_and_a_read_only_one_still_lists() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let cms = Cms::new();
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
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("readonly database"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
}

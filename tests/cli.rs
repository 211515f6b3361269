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
        &["--json", "demo"],
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
    assert_eq!(v["state"], "stopped", "{v}");
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
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
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

//! Integration: the shape of the command line as people who live in docker, kubectl,
//! gh and cargo expect it: positional names, grouped help with examples, colours only
//! on a terminal, list filters, and `--json` for every outcome, usage errors included.

use crate::support::{self, Cms};
use serde_json::Value;

/// stdout parsed as JSON, whatever the exit code.
fn stdout_json(out: &std::process::Output) -> Value {
    support::parse_json(out)
}

#[test]
fn a_session_name_is_a_positional_or_a_flag() {
    let cms = Cms::new();
    let out = cms.ok(&["spawn", "p", "hello there"]);
    assert!(out.starts_with("echo: hello there"), "{out}");
    let v = cms.json(&["send", "p", "RECALL"]);
    assert_eq!(v["response"]["text"], "recall: hello there");
    // Flags and positionals mix: a positional fills what the flags leave out.
    let v = cms.json(&["send", "--name", "p", "more"]);
    assert_eq!(v["response"]["text"], "echo: more");
    assert!(cms.ok(&["status", "p"]).contains("name: p"));
    assert_eq!(cms.ok(&["output", "p"]).trim(), "echo: more");
    let all = cms.json(&["history", "p"]);
    assert_eq!(all.as_array().unwrap().len(), 3);
    let last = cms.json(&["history", "p", "--last", "1"]);
    assert_eq!(last.as_array().unwrap().len(), 1);
    assert_eq!(last[0]["message"], "more");
    cms.ok(&["fork", "p", "q"]);
    assert_eq!(cms.json(&["status", "q"])["forked_from"], "p");
    assert!(cms.ok(&["pause", "q"]).contains("Session 'q' paused"));
    assert!(cms.ok(&["resume", "q", "back"]).starts_with("echo: back"));
    cms.ok(&["stop", "q"]);
    cms.ok(&["delete", "q"]);
    cms.fails(&["status", "q"]);
    let (v, out) = cms.delegate(&["d", "hello"]);
    assert!(out.status.success(), "{v}");
    assert_eq!(
        (v["name"].as_str(), v["status"].as_str()),
        (Some("d"), Some("completed"))
    );
    let out = cms.ok(&["continue", "d", "more"]);
    assert!(out.starts_with("echo: more"), "{out}");
    assert!(cms.ok(&["finish", "d"]).contains("[d] finished"));

    // What is missing is named, with both forms; a usage error exits 2.
    let out = cms.run(&["send", "p"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a message is needed: `cms send NAME MESSAGE` or `--message`"),
        "{err}"
    );
    let out = cms.run(&["spawn"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("a session name is needed: `cms spawn NAME PROMPT` or `--name`"));
    let out = cms.run(&["status", "p", "--name", "p", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let v = stdout_json(&out);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("unexpected argument 'p'"),
        "{v}"
    );
}

#[test]
fn usage_errors_under_json_are_json_on_stdout() {
    let cms = Cms::new();
    for args in [
        &["--json", "spawn", "a", "x", "--bogus"][..],
        &["list", "--json", "--sort", "price"],
        &["--json", "frobnicate"],
        &["--json", "demo"],
    ] {
        let out = cms.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let v = stdout_json(&out);
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{args:?}: {v}"
        );
        assert!(!out.stderr.is_empty(), "{args:?}: said on stderr too");
    }
    let v = stdout_json(&cms.run(&["--json", "demo"]));
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("demo has no JSON output"));
    // Help is not an error.
    let out = cms.run(&["--json", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    // lua-types: the stub file as one JSON string.
    let v = cms.json(&["lua-types"]);
    assert_eq!(v["file"], "cms.lua");
    assert!(v["text"]
        .as_str()
        .unwrap()
        .contains("---@class cms.SpawnOptions"));
}

#[test]
fn a_failing_script_under_json_says_so_on_stdout() {
    let cms = Cms::new();
    std::fs::write(cms.work().join("bad.lua"), "error('no luck')\n").unwrap();
    // (After the file, words are the script's: `--json` goes first.)
    let out = cms.run(&["--json", "script", "bad.lua"]);
    assert_eq!(out.status.code(), Some(1));
    let v = stdout_json(&out);
    assert!(v["error"].as_str().unwrap().contains("no luck"), "{v}");
    let out = cms.run(&["--json", "script", "missing.lua"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout_json(&out)["error"].is_string());
    std::fs::write(cms.work().join("ok.lua"), "return { n = 1 }\n").unwrap();
    let out = cms.run(&["--json", "script", "ok.lua"]);
    assert_eq!(stdout_json(&out)["n"], 1);
}

#[test]
fn list_filters_sorts_and_widens() {
    // In process (--no-host): Reads the `stopped` state a command leaves its sessions in.
    let cms = Cms::in_process();
    cms.ok(&["spawn", "b-ok", "hello"]);
    assert_eq!(
        cms.run(&["spawn", "a-bad", "CRASH 3"]).status.code(),
        Some(1)
    );
    cms.ok(&["spawn", "c-ok", "hello"]);
    cms.ok(&["send", "c-ok", "again"]);
    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["list"];
        all.extend_from_slice(args);
        cms.json(&all)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&[]), ["c-ok", "a-bad", "b-ok"], "most recent first");
    assert_eq!(names(&["--sort", "name"]), ["a-bad", "b-ok", "c-ok"]);
    assert_eq!(
        names(&["--sort", "name", "--reverse"]),
        ["c-ok", "b-ok", "a-bad"]
    );
    assert_eq!(names(&["--sort", "turns"])[0], "c-ok");
    assert_eq!(names(&["--sort", "created"]), ["c-ok", "a-bad", "b-ok"]);
    assert_eq!(names(&["--state", "failed"]), ["a-bad"]);
    assert_eq!(
        names(&["--state", "failed", "--state", "stopped", "--sort", "name"]),
        ["a-bad", "b-ok", "c-ok"]
    );
    assert!(
        names(&["--live"]).is_empty(),
        "no process outlives a CLI command"
    );
    let out = cms.run(&["list", "--state", "sleepy"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("retrying"));

    let wide = cms.ok(&["list", "--wide"]);
    let header = wide.lines().next().unwrap();
    assert!(
        header.contains("WORK DIR") && header.contains("PID") && header.contains("HELD BY"),
        "{wide}"
    );
    assert!(wide.contains(cms.work().to_str().unwrap()), "{wide}");
    assert_eq!(
        cms.ok(&["list", "--state", "killed"]).trim(),
        "No sessions."
    );

    // --watch redraws a terminal; on a pipe it says so instead of looping.
    let out = cms.run(&["list", "--watch", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--watch"));
}

#[test]
fn colours_only_where_asked_or_on_a_terminal() {
    // In process (--no-host): Reads the `stopped` state a command leaves its sessions in.
    let cms = Cms::in_process();
    cms.ok(&["spawn", "g", "hello"]);
    assert_eq!(cms.run(&["spawn", "r", "CRASH 2"]).status.code(), Some(1));
    // A pipe: no colours by default.
    let plain = cms.ok(&["list"]);
    assert!(!plain.contains('\x1b'), "{plain:?}");
    let coloured = cms.ok(&["list", "--color", "always"]);
    assert!(coloured.contains("\x1b[31mfailed\x1b[0m"), "{coloured:?}");
    assert!(coloured.contains("\x1b[2mstopped\x1b[0m"), "{coloured:?}");
    // The columns line up as without colours.
    let strip = |s: &str| {
        s.replace("\x1b[31m", "")
            .replace("\x1b[2m", "")
            .replace("\x1b[0m", "")
    };
    let widths = |s: &str| {
        s.lines()
            .map(|l| l.find("MODEL").or(l.find("sonnet")))
            .collect::<Vec<_>>()
    };
    assert_eq!(widths(&strip(&coloured)), widths(&plain), "{coloured:?}");
    let status = cms.ok(&["status", "r", "--color=always"]);
    assert!(
        status.contains("status: \x1b[31mfailed\x1b[0m"),
        "{status:?}"
    );
    assert!(!cms
        .ok(&["status", "r", "--color", "never"])
        .contains('\x1b'));

    // Log lines in a pipe or a file carry no escape codes.
    let out = cms.run(&["-vv", "send", "g", "more"]);
    assert!(out.status.success());
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(!logs.is_empty() && !logs.contains('\x1b'), "{logs:?}");
    let out = cms.run(&["-vv", "--color", "always", "send", "g", "more"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains('\x1b'));
}

#[test]
fn help_groups_commands_and_shows_examples() {
    let cms = Cms::new();
    let top = cms.ok(&["--help"]);
    for heading in [
        "Sessions:",
        "Delegation:",
        "Lua:",
        "Setup and tools:",
        "Global options:",
        "Examples:",
    ] {
        assert!(top.contains(heading), "{heading}: {top}");
    }
    let sessions = top.find("Sessions:").unwrap();
    let delegation = top.find("Delegation:").unwrap();
    assert!((sessions..delegation).contains(&top.find("  spawn ").unwrap()));
    assert!(top.find("  delegate ").unwrap() > delegation);
    for cmd in [
        "spawn", "send", "list", "status", "delegate", "batch", "script",
    ] {
        let help = cms.ok(&[cmd, "--help"]);
        let examples = help
            .find("Examples:")
            .unwrap_or_else(|| panic!("{cmd}: {help}"));
        assert!(
            help[examples..].contains(&format!("cms {cmd}")),
            "{cmd}: {help}"
        );
        // The options every command takes are under their own heading.
        let global = help.find("Global options:").unwrap();
        assert!(help[global..].contains("--json") && help[global..].contains("--color"));
        assert!(!help[..global].contains("--claude-bin"), "{cmd}: {help}");
    }
    // An environment value never makes a global option look required.
    let out = cms
        .cmd(&["status", "--bogus"])
        .env("CMS_HOME", "/tmp/somewhere")
        .env("CMS_CLAUDE_BIN", "/bin/true")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("--home") && !err.contains("--claude-bin"),
        "{err}"
    );
    let help = cms.ok(&["status", "--help"]);
    let usage = help.lines().find(|l| l.starts_with("Usage:")).unwrap();
    assert_eq!(usage, "Usage: cms status [OPTIONS] <NAME|--name <NAME>>");
    assert!(cms.ok(&["spawn", "--help"]).contains("[default: sonnet]"));
    assert!(cms
        .ok(&["spawn", "--help"])
        .contains("acceptEdits, auto, plan"));
}

#[test]
fn money_in_json_is_rounded() {
    let cms = Cms::new();
    cms.ok(&["spawn", "m", "hello"]);
    for _ in 0..6 {
        cms.ok(&["send", "m", "more"]);
    }
    let raw = String::from_utf8(cms.run(&["status", "m", "--json"]).stdout).unwrap();
    let v: Value = serde_json::from_str(&raw).unwrap();
    let total = v["total_cost_usd"].as_f64().unwrap();
    assert!(support::close(total, 0.007), "{raw}");
    assert_eq!(total, (total * 1e9).round() / 1e9, "{raw}");
    for out in [
        cms.run(&["history", "m", "--json"]).stdout,
        cms.run(&["list", "--json"]).stdout,
        cms.run(&["send", "m", "again", "--json"]).stdout,
    ] {
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains("00000000") && !text.contains("99999999"),
            "{text}"
        );
    }
    // The CLI's `--json` keeps a turn's token usage (MCP results leave it out).
    let v = cms.json(&["send", "m", "last"]);
    assert!(v["response"]["usage"].is_object(), "{v}");
}

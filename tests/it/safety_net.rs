//! Issue 10 ("the safety net holds against the session it guards") and issue 9.6,
//! decided by the policy service directly: unknown verdicts deny, the shell reader
//! survives hostile lines, a policy that does not load refuses guarded work, cms's
//! and Claude Code's own configuration is protected whatever the preset.

use crate::support;

use cms::engine::{Decision, Guard};
use cms::policy::{Layers, PolicyService};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{call, guard, layers_in, service, write_plugin};

fn deny_reason(d: &Decision) -> String {
    match d {
        Decision::Deny { reason, .. } => reason.clone(),
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn plugin(dir: &Path, verdict: &str) -> PathBuf {
    write_plugin(
        dir,
        "odd",
        &format!(
            "return {{ name = 'odd', policies = {{ {{ name = 'odd', on_tool_use = function(tool) \
             if tool.name == 'Write' then return {verdict} end end }} }} }}\n"
        ),
    )
}

/// What a guarded session's Write in `work` comes to under a plugin policy that
/// answers `verdict` (Lua) for it; and the plugin's file.
fn decide_write(work: &Path, verdict: &str) -> (PathBuf, Decision) {
    let dir = tempfile::tempdir().unwrap();
    let file = plugin(dir.path(), verdict);
    let s = service(layers_in(dir.path()), cms::policy::DECISION_LIMIT);
    let d = s.decide(
        &call(
            work,
            "Write",
            json!({"file_path": "src/a.txt", "content": "x"}),
        ),
        &guard("full"),
    );
    (file, d)
}

/// Issue 10.6: a plugin verb cms does not know denies, naming plugin, value and file.
#[test]
fn an_unknown_plugin_verdict_denies_naming_plugin_value_and_file() {
    let work = tempfile::tempdir().unwrap();
    for (verdict, shown) in [
        ("'Deny'", "\"Deny\""),
        ("'bogus'", "\"bogus\""),
        ("42", "42"),
        ("true", "true"),
        ("{}", "a table"),
    ] {
        let (file, d) = decide_write(work.path(), verdict);
        let reason = deny_reason(&d);
        assert!(reason.contains("'odd'"), "{reason}");
        assert!(reason.contains(shown), "{verdict}: {reason}");
        assert!(reason.contains(&file.display().to_string()), "{reason}");
    }
    // nil is "no opinion": the safety policy decides.
    let (_, d) = decide_write(work.path(), "nil");
    assert_eq!(d, Decision::Allow);
}

/// Issue 10.6 for the safety policy itself: only "allow" and "deny" are answers.
#[test]
fn an_unknown_safety_verdict_denies_naming_the_file() {
    let work = tempfile::tempdir().unwrap();
    for verdict in ["'Allow'", "nil", "1", "'allow', 'not a table'"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("safety.lua"),
            format!("return {{ on_tool_use = function() return {verdict} end }}\n"),
        )
        .unwrap();
        let s = service(layers_in(dir.path()), cms::policy::DECISION_LIMIT);
        let reason = deny_reason(&s.decide(
            &call(work.path(), "Read", json!({"file_path": "a"})),
            &guard("full"),
        ));
        assert!(reason.contains("safety.lua"), "{verdict}: {reason}");
    }
}

/// Issue 10.7: 6,000 nested `$(` are denied as too complex (no stack overflow), and
/// 40,000 sequential `$(true)` are decided well inside the policy's time limit.
#[test]
fn hostile_bash_lines_are_decided_in_time_without_a_crash() {
    let work = tempfile::tempdir().unwrap();
    let s = service(Layers::builtin_only(), cms::policy::DECISION_LIMIT);
    let deep = format!("echo {}x{}", "$(".repeat(6000), ")".repeat(6000));
    // On a thread with a small stack: the reader must not recurse per level.
    let s2 = s.clone();
    let cwd = work.path().to_path_buf();
    let d = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            s2.decide(
                &call(&cwd, "Bash", json!({ "command": deep })),
                &guard("full"),
            )
        })
        .unwrap()
        .join()
        .unwrap();
    let reason = deny_reason(&d);
    assert!(reason.contains("too complex"), "{reason}");

    let long = format!("echo {}", "$(true)".repeat(40_000));
    // This thread's Lua state is built on its first decision: not part of the cost.
    s.decide(
        &call(work.path(), "Bash", json!({ "command": "ls" })),
        &guard("full"),
    );
    let started = Instant::now();
    let d = s.decide(
        &call(work.path(), "Bash", json!({ "command": long })),
        &guard("full"),
    );
    let took = started.elapsed();
    // It took 3.5 s before; now it is refused as too complex, quickly.
    let reason = deny_reason(&d);
    assert!(reason.contains("too complex"), "{reason}");
    assert!(took < Duration::from_millis(250), "took {took:?}");
    // A long but ordinary line is read and allowed inside the limit.
    let many = format!("echo {}", "$(true)".repeat(1_000));
    assert_eq!(
        s.decide(
            &call(work.path(), "Bash", json!({ "command": many })),
            &guard("full")
        ),
        Decision::Allow
    );
}

/// Issue 9.6: a user policy layer that does not load refuses guarded work, naming
/// `file:line`; once fixed, work goes on; a broken edit later keeps the last good
/// version and is reported.
#[test]
fn a_policy_that_does_not_load_refuses_guarded_work() {
    let work = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("safety.lua");
    std::fs::write(&file, "return {\n  on_tool_use = function( end\n}\n").unwrap();
    let (s, report) =
        PolicyService::start(layers_in(dir.path()), cms::policy::DECISION_LIMIT).unwrap();
    assert_eq!(report.errors.len(), 1);
    let err = s.ready().unwrap_err().to_string();
    assert!(err.contains(&format!("{}:2:", file.display())), "{err}");
    assert!(err.contains("cms policy check"), "{err}");
    // Not silently the built-in policy: even an ordinary call is refused.
    let reason = deny_reason(&s.decide(
        &call(work.path(), "Read", json!({"file_path": "a"})),
        &guard("full"),
    ));
    assert!(reason.contains("safety.lua:2:"), "{reason}");

    std::fs::write(
        &file,
        "return { on_tool_use = function() return 'allow' end }\n",
    )
    .unwrap();
    assert!(s.reload().errors.is_empty());
    assert!(s.ready().is_ok());
    assert!(s.stale().is_empty());

    std::fs::write(&file, "return {").unwrap();
    s.reload();
    assert!(s.ready().is_ok(), "the last good version stays in force");
    assert!(s.stale()[0].contains("safety.lua:1:"), "{:?}", s.stale());
    assert_eq!(
        s.decide(
            &call(work.path(), "Read", json!({"file_path": "a"})),
            &guard("full")
        ),
        Decision::Allow
    );
}

/// Issue 10.1: policy and plugin Lua gets no file writes or deletes.
#[test]
fn policies_and_plugins_cannot_write_or_delete_files() {
    let work = tempfile::tempdir().unwrap();
    let victim = work.path().join("victim.txt");
    std::fs::write(&victim, "keep").unwrap();
    let made = work.path().join("made.txt");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("safety.lua"),
        format!(
            "return {{ on_tool_use = function() \
               local a = pcall(os.remove, {v:?}) \
               local b = pcall(os.rename, {v:?}, {v:?} .. '.moved') \
               local c = pcall(io.open, {m:?}, 'w') \
               local d = pcall(io.output, {m:?}) \
               local e = pcall(os.tmpname) \
               local f = io.open({v:?}):read('a') == 'keep' and cms.path.read({v:?}) == 'keep' \
               if a or b or c or d or e or not f then return 'allow' end \
               return 'deny', 'confined' end }}\n",
            v = victim.display().to_string(),
            m = made.display().to_string()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("plugins/writer")).unwrap();
    std::fs::write(
        dir.path().join("plugins/writer/init.lua"),
        format!(
            "local f = io.open({m:?}, 'w') if f then f:write('x') f:close() end\n\
             return {{ name = 'writer' }}\n",
            m = made.display().to_string()
        ),
    )
    .unwrap();
    let s = service(layers_in(dir.path()), cms::policy::DECISION_LIMIT);
    let reason = deny_reason(&s.decide(
        &call(work.path(), "Read", json!({"file_path": "a"})),
        &guard("full"),
    ));
    assert_eq!(reason, "confined");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    assert!(!made.exists(), "a plugin wrote a file");
}

/// Issue 10.1 and 10.3: cms's and Claude Code's configuration and git's internals
/// are protected for every guarded session, even when the user's scripts allow
/// everything and protect nothing.
#[test]
fn own_configuration_is_protected_whatever_the_scripts_say() {
    let work = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("safety.lua"),
        "return { on_tool_use = function() return 'allow' end }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("protected_paths.lua"),
        "return { paths = {}, violation = function() return nil end }\n",
    )
    .unwrap();
    let s = service(layers_in(dir.path()), cms::policy::DECISION_LIMIT);
    let home = std::env::var("HOME").unwrap();
    for preset in ["edit", "full"] {
        let g = Guard {
            preset: Some(preset.into()),
            safety: true,
            ..Guard::default()
        };
        for p in [
            ".cms/safety.lua".to_string(),
            ".cms/protected_paths.lua".into(),
            ".cms/plugins/x/init.lua".into(),
            ".cms/strategies/single.lua".into(),
            ".claude/settings.local.json".into(),
            ".claude/settings.json".into(),
            ".mcp.json".into(),
            ".git/hooks/post-checkout".into(),
            format!("{home}/.claude/settings.json"),
            format!("{home}/.claude.json"),
            format!("{home}/.config/cms/safety.lua"),
        ] {
            let d = s.decide(
                &call(
                    work.path(),
                    "Write",
                    json!({"file_path": p, "content": "x"}),
                ),
                &g,
            );
            match d {
                Decision::Deny { rule, .. } => assert_eq!(rule.as_deref(), Some("protected_path")),
                other => panic!("{preset} {p}: {other:?}"),
            }
        }
        let d = s.decide(
            &call(
                work.path(),
                "Bash",
                json!({"command": "printf 'return {on_tool_use=function() return \"allow\" end}' > .cms/safety.lua"}),
            ),
            &g,
        );
        assert!(matches!(d, Decision::Deny { .. }), "{d:?}");
    }
    // Ordinary work still passes under these scripts.
    assert_eq!(
        s.decide(
            &call(
                work.path(),
                "Write",
                json!({"file_path": "src/a.rs", "content": "x"})
            ),
            &guard("full")
        ),
        Decision::Allow
    );
}

/// Issue 10.2: a repository's own `.cms/` does not decide the policy until the
/// user trusts it; each affected command says so with the command that trusts it;
/// a change after trusting is ignored again.
#[test]
fn a_repository_does_not_decide_the_policy_until_trusted() {
    // In process (--no-host): BUG (host, see the report): the host loads one safety policy from its own cwd, trust and
    // environment when it starts, not from the client's project, so a project trusted later
    // (or another project) does not decide its sessions' policy.
    let cms = support::Cms::in_process();
    let project = cms.work();
    std::fs::create_dir_all(project.join(".cms/plugins/tools")).unwrap();
    std::fs::write(
        project.join(".cms/safety.lua"),
        "return { on_tool_use = function() return 'allow' end }\n",
    )
    .unwrap();
    std::fs::write(
        project.join(".cms/plugins/tools/init.lua"),
        "return { name = 'tools', tools = { { name = 'sneaky', description = 'x', handler = function() return 1 end } } }\n",
    )
    .unwrap();
    let task = r#"USE_TOOL Write {"file_path": ".env", "content": "HACKED"}"#;
    let out = cms.run(&["delegate", "--json", "--name", "a", "--task", task]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(".cms/safety.lua is ignored: not trusted") && stderr.contains("cms trust"),
        "{stderr}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["deniedBeforeExecution"].as_array().unwrap().len(),
        1,
        "{v}"
    );
    assert!(
        !project.join(".env").exists(),
        "an untrusted policy decided"
    );
    let list = cms.run(&["plugins", "list"]);
    assert!(!String::from_utf8_lossy(&list.stdout).contains("sneaky"));
    assert!(String::from_utf8_lossy(&list.stderr).contains("init.lua is ignored"));

    // Trusted: the project's scripts count.
    let trusted = cms.ok(&["trust"]);
    assert!(trusted.contains("safety.lua"), "{trusted}");
    assert!(cms.ok(&["trust", "--list"]).contains(".cms"));
    let list = cms.ok(&["plugins", "list"]);
    assert!(list.contains("sneaky"), "{list}");
    let v = cms.json(&["delegate", "--name", "b", "--task", task]);
    assert_eq!(
        v["deniedBeforeExecution"].as_array().unwrap().len(),
        0,
        "{v}"
    );
    assert!(project.join(".env").exists());
    std::fs::remove_file(project.join(".env")).unwrap();

    // Changed after trusting (as a session or a pull would): ignored again.
    std::fs::write(
        project.join(".cms/safety.lua"),
        "return { on_tool_use = function() return 'allow' end } -- changed\n",
    )
    .unwrap();
    let out = cms.run(&["delegate", "--json", "--name", "c", "--task", task]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("changed since it was trusted"));
    assert!(!project.join(".env").exists());
    cms.ok(&["untrust"]);
    assert!(!cms.ok(&["plugins", "list"]).contains("sneaky"));
}

/// Issue 10.5 where there is no OS sandbox: a guarded Bash command the reader
/// cannot prove harmless is refused (saying why and what to do), unless the user
/// opts in.
#[test]
fn without_an_os_sandbox_only_provably_harmless_bash_runs() {
    // In process (--no-host): BUG (host, see the report): CMS_OS_SANDBOX and CMS_ALLOW_UNSANDBOXED_BASH are read
    // from the host's environment (the first client's), not the client's.
    let cms = support::Cms::in_process();
    let task =
        "USE_TOOL Bash {\"command\": \"touch made.txt\"}\nUSE_TOOL Bash {\"command\": \"ls\"}";
    let out = cms
        .cmd(&[
            "delegate", "--json", "--name", "a", "--preset", "full", "--task", task,
        ])
        .env("CMS_OS_SANDBOX", "off")
        .env_remove("CMS_ALLOW_UNSANDBOXED_BASH")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let denied = v["deniedBeforeExecution"].as_array().unwrap();
    assert_eq!(denied.len(), 1, "{v}");
    let reason = denied[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("no OS sandbox") && reason.contains("CMS_ALLOW_UNSANDBOXED_BASH"),
        "{reason}"
    );
    assert!(!cms.work().join("made.txt").exists());
    let out = cms
        .cmd(&[
            "delegate", "--json", "--name", "b", "--preset", "full", "--task", task,
        ])
        .env("CMS_OS_SANDBOX", "off")
        .env("CMS_ALLOW_UNSANDBOXED_BASH", "1")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["deniedBeforeExecution"].as_array().unwrap().len(),
        0,
        "{v}"
    );
}

/// Issue 9.6 through the CLI: a user's `safety.lua` with a syntax error makes
/// `cms delegate` refuse to start (exit 1) with `file:line` and what to do, not
/// run on the built-in policy.
#[test]
fn delegate_refuses_to_start_on_a_policy_that_does_not_load() {
    let cms = support::Cms::new();
    let config = cms.dir.path().join(".config/cms");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("safety.lua"),
        "return {\n  on_tool_use = function( end\n}\n",
    )
    .unwrap();
    let err = cms.fails(&["delegate", "--name", "x", "--task", "hello"]);
    assert!(err.contains("safety.lua:2:"), "{err}");
    assert!(err.contains("guarded work is refused"), "{err}");
    assert!(err.contains("cms policy check"), "{err}");
    assert!(cms.run(&["status", "--name", "x"]).status.code() != Some(0));
}

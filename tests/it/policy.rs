//! The shipped safety policy, decided by the policy service directly (no session):
//! protected paths against a table of bypass attempts, presets, limits, failing
//! and endless policies, and hot reload.

use crate::support;
use cms::engine::{Decision, Guard, Progress, SessionEvent, ToolCall, Verdict};
use cms::policy::{Layers, PolicyService};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::{call, guard, layers_in, service};

struct Project {
    _dir: tempfile::TempDir,
    root: PathBuf,
    cwd: PathBuf,
}

/// A project with a `.git/`, a `.env`, and symlinks that point into them.
fn project() -> Project {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let cwd = root.join("proj");
    std::fs::create_dir_all(cwd.join(".git/hooks")).unwrap();
    std::fs::create_dir_all(cwd.join("src")).unwrap();
    std::fs::create_dir_all(cwd.join("node_modules/left-pad")).unwrap();
    std::fs::write(cwd.join(".env"), "SECRET=1\n").unwrap();
    std::fs::write(cwd.join(".envrc"), "use nix\n").unwrap();
    std::os::unix::fs::symlink(".env", cwd.join("notes.txt")).unwrap();
    std::os::unix::fs::symlink(".git", cwd.join("docs")).unwrap();
    std::os::unix::fs::symlink(cwd.join(".env"), root.join("outside-link")).unwrap();
    Project {
        _dir: dir,
        root,
        cwd,
    }
}

/// How long these tests give the policy service for one decision.
const LIMIT: Duration = Duration::from_millis(500);

fn bash(p: &Project, command: &str) -> ToolCall {
    call(&p.cwd, "Bash", json!({ "command": command }))
}

fn write(p: &Project, path: &str) -> ToolCall {
    call(
        &p.cwd,
        "Write",
        json!({ "file_path": path, "content": "x" }),
    )
}

fn denied(d: &Decision) -> bool {
    matches!(d, Decision::Deny { .. })
}

#[test]
fn bypass_attempts_are_all_denied_before_the_tool_runs() {
    let p = project();
    let s = service(Layers::builtin_only(), LIMIT);
    let g = guard("full");
    let abs = p.cwd.join(".env").display().to_string();
    let outside = p.root.join("outside-link").display().to_string();
    let attempts: Vec<(&str, ToolCall)> = vec![
        ("plain", write(&p, ".env")),
        ("dot slash", write(&p, "./.env")),
        ("traversal", write(&p, "src/../.env")),
        ("deep traversal", write(&p, "src/../../proj/./.env")),
        ("absolute", write(&p, &abs)),
        ("symlink to file", write(&p, "notes.txt")),
        ("symlinked dir", write(&p, "docs/config")),
        ("link outside the project", write(&p, &outside)),
        ("upper case", write(&p, ".ENV")),
        ("mixed case dir", write(&p, ".Git/HEAD")),
        ("env variant", write(&p, "config/.env.production")),
        (
            "nested node_modules",
            write(&p, "node_modules/left-pad/index.js"),
        ),
        ("home ssh", write(&p, "~/.ssh/authorized_keys")),
        ("pem", write(&p, "certs/server.pem")),
        (
            "edit",
            call(
                &p.cwd,
                "Edit",
                json!({"file_path": ".env", "old_string": "1", "new_string": "2"}),
            ),
        ),
        (
            "multi edit",
            call(
                &p.cwd,
                "MultiEdit",
                json!({"file_path": "src/../.git/config", "edits": []}),
            ),
        ),
        (
            "notebook",
            call(
                &p.cwd,
                "NotebookEdit",
                json!({"notebook_path": ".git/x.ipynb", "new_source": ""}),
            ),
        ),
        ("redirect", bash(&p, "echo SECRET=2 > .env")),
        ("append", bash(&p, "echo x >> .env")),
        ("no spaces", bash(&p, "echo x>.env")),
        ("fd redirect", bash(&p, "echo x 2>.env")),
        ("both streams", bash(&p, "make &> .git/log")),
        ("clobber", bash(&p, "echo x >| .env")),
        ("tee", bash(&p, "echo x | tee .env")),
        ("tee append", bash(&p, "echo x | tee -a src/../.env")),
        ("cp", bash(&p, "cp /tmp/x .env")),
        ("mv", bash(&p, "mv src/a.txt .git/config")),
        ("rm", bash(&p, "rm -f .env")),
        ("rm -rf dir", bash(&p, "rm -rf .git")),
        ("sed -i", bash(&p, "sed -i s/1/2/ .env")),
        ("quoted pieces", bash(&p, "echo x > .e\"n\"v")),
        ("backslash", bash(&p, r"rm .e\nv")),
        ("ansi-c hex", bash(&p, r"rm $'\x2eenv'")),
        ("subshell", bash(&p, "echo $(rm .env)")),
        ("backticks", bash(&p, "echo `touch .git/x`")),
        ("bash -c", bash(&p, "bash -c 'echo x > .env'")),
        ("sh -c nested", bash(&p, "sh -c \"bash -c 'rm .env'\"")),
        ("eval", bash(&p, "eval 'rm .env'")),
        ("sudo", bash(&p, "sudo rm .env")),
        ("env wrapper", bash(&p, "env FOO=1 rm .env")),
        ("variable target", bash(&p, "F=.env; echo x > $F")),
        ("variable arg", bash(&p, "rm $TARGET")),
        ("cd then write", bash(&p, "cd .git && echo x > config")),
        (
            "cd through a symlink",
            bash(&p, "cd docs && echo x > config"),
        ),
        ("glob", bash(&p, "rm .e*")),
        ("star", bash(&p, "rm -rf *")),
        ("dd", bash(&p, "dd if=/dev/zero of=.env bs=1 count=1")),
        (
            "python",
            bash(&p, "python3 -c \"open('.env','w').write('x')\""),
        ),
        ("ln", bash(&p, "ln -sf /tmp/evil .env")),
        ("symlink via bash", bash(&p, "echo x > notes.txt")),
        ("whole project", bash(&p, "rm -rf .")),
        ("parent", bash(&p, "rm -rf ..")),
        ("line continuation", bash(&p, "rm \\\n .env")),
        ("after comment line", bash(&p, "# tidy up\nrm .env")),
        ("process substitution", bash(&p, "cat <(rm .env)")),
    ];
    assert!(attempts.len() >= 30);
    let mut through = Vec::new();
    for (what, c) in &attempts {
        let d = s.decide(c, &g);
        match &d {
            Decision::Deny { rule, .. } => {
                assert_eq!(rule.as_deref(), Some("protected_path"), "{what}: {d:?}")
            }
            _ => through.push(format!("{what}: {:?}", c.input)),
        }
    }
    assert!(through.is_empty(), "got through:\n{}", through.join("\n"));
    assert_eq!(
        std::fs::read_to_string(p.cwd.join(".env")).unwrap(),
        "SECRET=1\n"
    );
}

#[test]
fn ordinary_work_is_not_caught() {
    let p = project();
    let s = service(Layers::builtin_only(), LIMIT);
    let g = guard("full");
    let fine = vec![
        write(&p, "src/x.txt"),
        write(&p, &p.cwd.join("src/deep/new.rs").display().to_string()),
        write(&p, ".envrc"),
        write(&p, "src/environment.ts"),
        write(&p, "docs.md"),
        bash(&p, "cat .env"),
        bash(&p, "ls -la .git"),
        bash(&p, "grep -r SECRET .env src"),
        bash(&p, "echo hi > out.txt 2>&1"),
        bash(&p, "cargo test --quiet > /dev/null"),
        bash(&p, "git status && git diff"),
        bash(&p, "rm -f src/old.rs"),
        bash(&p, "mkdir -p build && cp src/a.txt build/"),
        bash(&p, "echo '.env is protected'"),
    ];
    for c in &fine {
        let d = s.decide(c, &g);
        assert_eq!(d, Decision::Allow, "{:?} was refused: {d:?}", c.input);
    }
}

#[test]
fn presets_decide_what_the_cli_asks_about() {
    let p = project();
    let s = service(Layers::builtin_only(), LIMIT);
    for (preset, tool, allowed) in [
        ("read-only", write(&p, "src/x.txt"), false),
        ("read-only", bash(&p, "touch src/y"), false),
        (
            "review",
            call(&p.cwd, "Read", json!({"file_path": "/etc/hostname"})),
            true,
        ),
        ("edit", write(&p, "src/x.txt"), true),
        ("edit", bash(&p, "touch src/y"), false),
        ("full", bash(&p, "touch src/y"), true),
        ("plan", write(&p, "src/x.txt"), false),
    ] {
        let d = s.decide(&tool, &guard(preset));
        assert_eq!(!denied(&d), allowed, "{preset} {}: {d:?}", tool.tool_name);
        if let Decision::Deny { reason, rule, .. } = &d {
            assert!(
                reason.contains(&format!("the {preset} preset does not allow")),
                "{reason}"
            );
            assert_eq!(rule, &None, "a preset refusal is not a violation");
        }
    }
    let edit = s.preset("edit").unwrap();
    assert_eq!(edit.permission_mode, "default");
    assert!(
        !edit.allowed_tools.contains(&"Write".to_string()),
        "the CLI must ask, so the net sees every Write"
    );
    let full = s.preset("full").unwrap();
    assert_ne!(
        full.permission_mode, "bypassPermissions",
        "full works as root too"
    );
    let err = s.preset("yolo").unwrap_err().to_string();
    assert!(
        err.contains("unknown preset 'yolo'") && err.contains("read-only"),
        "{err}"
    );
    // Without the safety net, protected paths are not checked; the preset still is.
    let no_safety = Guard {
        safety: false,
        ..guard("full")
    };
    assert_eq!(s.decide(&write(&p, ".env"), &no_safety), Decision::Allow);
    let no_safety_ro = Guard {
        safety: false,
        ..guard("read-only")
    };
    assert!(denied(&s.decide(&write(&p, "src/x.txt"), &no_safety_ro)));
}

fn result_event() -> SessionEvent {
    SessionEvent {
        session: "t".into(),
        at_ms: 0,
        kind: cms::engine::EventKind::Result {
            cost_usd: 0.1,
            session_cost_usd: 0.1,
            num_turns: 1,
            is_error: false,
            subtype: "success".into(),
        },
    }
}

#[test]
fn limits_kill_with_a_named_violation() {
    let s = service(Layers::builtin_only(), LIMIT);
    let limits = s.limits();
    assert_eq!(
        (limits.max_cost, limits.max_turns, limits.timeout),
        (Some(2.0), Some(50), Some(3600.0))
    );
    let g = Guard {
        max_cost_usd: Some(1.0),
        max_turns: Some(5),
        ..guard("edit")
    };
    let at = |cost: f64, turns: u32| Progress {
        cost_usd: cost,
        turns,
        turn_elapsed: Duration::ZERO,
    };
    assert_eq!(
        s.on_event(&result_event(), &g, &at(0.5, 3)),
        Verdict::Continue
    );
    assert_eq!(
        s.on_event(&result_event(), &g, &at(1.0, 5)),
        Verdict::Continue,
        "the limit itself is allowed"
    );
    match s.on_event(&result_event(), &g, &at(1.25, 3)) {
        Verdict::Kill(v) => {
            assert_eq!(v.rule, "cost_exceeded");
            assert_eq!(v.message, "Cost $1.2500 exceeded limit $1.0000");
        }
        other => panic!("{other:?}"),
    }
    match s.on_event(&result_event(), &g, &at(0.1, 6)) {
        Verdict::Kill(v) => assert_eq!(
            (v.rule.as_str(), v.message.as_str()),
            ("turns_exceeded", "Turns 6 exceeded limit 5")
        ),
        other => panic!("{other:?}"),
    }
    // Defaults apply when the guard sets none.
    assert!(matches!(
        s.on_event(&result_event(), &guard("edit"), &at(2.5, 1)),
        Verdict::Kill(_)
    ));
    assert_eq!(
        s.on_event(&result_event(), &Guard { safety: false, ..g }, &at(9.0, 99)),
        Verdict::Continue
    );
}

#[test]
fn a_failing_or_endless_policy_denies() {
    let p = project();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("safety.lua"),
        "return { on_tool_use = function(tool) error('rule exploded') end }\n",
    )
    .unwrap();
    let s = service(layers_in(dir.path()), LIMIT);
    match s.decide(&write(&p, "src/x.txt"), &guard("full")) {
        Decision::Deny { reason, rule, .. } => {
            assert!(reason.contains("safety.lua:1: rule exploded"), "{reason}");
            assert_eq!(rule.as_deref(), Some("policy_error"));
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(
        dir.path().join("safety.lua"),
        "return { on_tool_use = function() while true do end end }\n",
    )
    .unwrap();
    s.reload();
    let started = Instant::now();
    match s.decide(&write(&p, "src/x.txt"), &guard("full")) {
        Decision::Deny { reason, .. } => assert!(
            reason.contains("ran longer than its limit of 500 ms"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // And the service goes on answering.
    std::fs::write(
        dir.path().join("safety.lua"),
        "return { on_tool_use = function() return 'allow' end }\n",
    )
    .unwrap();
    s.reload();
    assert_eq!(
        s.decide(&write(&p, ".env"), &guard("full")),
        Decision::Allow
    );
    std::fs::write(
        dir.path().join("safety.lua"),
        "return { on_tool_use = function() return 'maybe' end }\n",
    )
    .unwrap();
    s.reload();
    assert!(denied(&s.decide(&write(&p, "src/x"), &guard("full"))));
}

#[test]
fn a_policy_spinning_inside_a_coroutine_denies_in_time() {
    let p = project();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("safety.lua"),
        "return { on_tool_use = function() coroutine.wrap(function() while true do end end)() end }\n",
    )
    .unwrap();
    let s = service(layers_in(dir.path()), LIMIT);
    let started = Instant::now();
    match s.decide(&write(&p, "src/x.txt"), &guard("full")) {
        Decision::Deny { reason, .. } => assert!(
            reason.contains("ran longer than its limit of 500 ms"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // A plugin policy is held to the same limit.
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("plugins/spin");
    std::fs::create_dir_all(&plugin).unwrap();
    std::fs::write(
        plugin.join("init.lua"),
        "return { policies = { { name = 'spin', on_tool_use = function() \
         local co = coroutine.create(function() while true do end end) coroutine.resume(co) end } } }\n",
    )
    .unwrap();
    let s = service(layers_in(dir.path()), LIMIT);
    let started = Instant::now();
    match s.decide(&write(&p, "src/x.txt"), &guard("full")) {
        Decision::Deny { reason, .. } => assert!(
            reason.contains("plugin policy 'spin'") && reason.contains("ran longer than"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_broken_edit_keeps_the_last_good_version() {
    let p = project();
    let dir = tempfile::tempdir().unwrap();
    // At start a broken user file is reported, and no version of it is in force:
    // every guarded decision is denied until it loads (issue 9.6).
    std::fs::write(
        dir.path().join("protected_paths.lua"),
        "return {\n  paths = { 'src/' \n",
    )
    .unwrap();
    let (s, report) =
        PolicyService::start(layers_in(dir.path()), Duration::from_millis(500)).unwrap();
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(
        report.errors[0].contains("protected_paths.lua:3:"),
        "{:?}",
        report.errors
    );
    assert!(
        denied(&s.decide(&write(&p, ".env"), &guard("full"))),
        "built-in rules in force"
    );

    let builtin = include_str!("../../scripts/protected_paths.lua");
    std::fs::write(
        dir.path().join("protected_paths.lua"),
        builtin.replace("M.paths = {", "M.paths = { \"src/\","),
    )
    .unwrap();
    let good = s.reload();
    assert!(good.errors.is_empty(), "{good:?}");
    assert!(good
        .origins
        .iter()
        .any(|o| o.ends_with("protected_paths.lua") && !o.starts_with("builtin:")));
    assert!(
        denied(&s.decide(&write(&p, "src/x.txt"), &guard("full"))),
        "the edit is in force"
    );

    std::fs::write(dir.path().join("protected_paths.lua"), "return { paths = ").unwrap();
    let bad = s.reload();
    assert_eq!(
        bad.generation, good.generation,
        "a broken edit is not a new generation"
    );
    assert!(
        bad.errors[0].contains("protected_paths.lua:1:"),
        "{:?}",
        bad.errors
    );
    assert!(
        denied(&s.decide(&write(&p, "src/x.txt"), &guard("full"))),
        "the last good version stays"
    );
}

#[test]
fn editing_a_script_takes_effect_through_the_watcher() {
    let p = project();
    let dir = tempfile::tempdir().unwrap();
    let s = service(layers_in(dir.path()), LIMIT);
    let (tx, rx) = std::sync::mpsc::channel();
    let _w = cms::policy::watch::watch(s.clone(), move |r| {
        let _ = tx.send(r.generation);
    })
    .unwrap();
    assert_eq!(
        s.decide(&write(&p, "src/x.txt"), &guard("full")),
        Decision::Allow
    );
    let builtin = include_str!("../../scripts/protected_paths.lua");
    let started = Instant::now();
    std::fs::write(
        dir.path().join("protected_paths.lua"),
        builtin.replace("M.paths = {", "M.paths = { \"src/\","),
    )
    .unwrap();
    rx.recv_timeout(Duration::from_secs(5))
        .expect("a reload after the edit");
    let took = started.elapsed();
    assert!(denied(&s.decide(&write(&p, "src/x.txt"), &guard("full"))));
    eprintln!("reload took {took:?}");
}

/// The `supervised` preset asks a person before a network command or a write outside
/// the work dir, however the command is spelled, and not for harmless ones.
#[test]
fn the_supervised_preset_asks_before_network_and_outside_writes_however_spelled() {
    let p = project();
    let s = service(Layers::builtin_only(), LIMIT);
    let g = guard("supervised");
    let asks = |c: &ToolCall| matches!(s.decide(c, &g), Decision::Ask { .. });
    for line in [
        "curl https://example.com",
        "/usr/bin/curl https://example.com",
        "sh -c \"curl https://example.com\"",
        "bash -c 'git push origin main'",
        "git -C . push",
        "xargs curl < urls.txt",
        "npm install left-pad",
        "cd /tmp && touch y",
        "echo hi > /tmp/elsewhere.txt",
        "cp src/a.rs /tmp/",
        "rm -rf ../other",
    ] {
        assert!(asks(&bash(&p, line)), "a person should decide: {line}");
    }
    for line in [
        "cargo test",
        "echo ok 2>/dev/null",
        "ls -la > listing.txt",
        "git status",
        "cd src && ls",
        "cp src/a.rs src/b.rs",
    ] {
        let d = s.decide(&bash(&p, line), &g);
        assert_eq!(d, Decision::Allow, "no question for: {line}");
    }
    assert!(asks(&write(&p, "/tmp/out.txt")));
    assert_eq!(s.decide(&write(&p, "src/in.txt"), &g), Decision::Allow);
    // Other presets ask nothing.
    let edit = guard("full");
    assert_eq!(
        s.decide(&bash(&p, "curl https://example.com"), &edit),
        Decision::Allow
    );
}

/// A session on another host: a path this machine cannot resolve there (a symlink
/// on the way, a folder it cannot stat) is judged protected; a plain one is not.
#[test]
fn on_another_host_an_unresolvable_path_is_protected() {
    use cms::engine::Policy;
    let p = project();
    std::os::unix::fs::symlink(p.cwd.join("src"), p.cwd.join("srclink")).unwrap();
    let s = service(Layers::builtin_only(), LIMIT);
    let session = cms::policy::GuardedSession::new(s, guard("full"));
    let on_b = |mut c: ToolCall| {
        c.host = Some("hostB".into());
        c
    };
    // Here, a symlink to a plain file in the project is fine; on hostB it is not.
    let here = write(&p, "srclink/main.rs");
    assert_eq!(session.decide(&here), Decision::Allow);
    let d = session.decide(&on_b(write(&p, "srclink/main.rs")));
    match &d {
        Decision::Deny { reason, rule, .. } => {
            assert!(
                reason.contains("hostB") && reason.contains("symlink"),
                "{reason}"
            );
            assert_eq!(rule.as_deref(), Some("protected_path"));
        }
        other => panic!("{other:?}"),
    }
    // The symlink to .env is refused either way; a folder the host alone has, too.
    assert!(denied(&session.decide(&on_b(write(&p, "notes.txt")))));
    assert!(denied(&session.decide(&on_b(write(&p, "only-on-b/x.rs")))));
    assert!(denied(&session.decide(&on_b(write(&p, "~/x.rs")))));
    let multi = on_b(call(
        &p.cwd,
        "MultiEdit",
        json!({ "file_path": "src/a.rs", "edits": [{ "file_path": "srclink/b.rs" }] }),
    ));
    assert!(denied(&session.decide(&multi)));
    // A plain path (every folder here, none a link; the file new) is allowed.
    assert_eq!(
        session.decide(&on_b(write(&p, "src/new.rs"))),
        Decision::Allow
    );
}

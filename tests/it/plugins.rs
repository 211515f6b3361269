//! Plugins on the simulator: the shipped git-guard policy deciding before Bash runs,
//! a plugin strategy used by `delegate`, `cms plugins list/check`, and a broken
//! plugin left out while the rest go on. (`cms setup` is in setup.rs, `cms plugins
//! run` in policy_tools.rs.)

use crate::support;

use serde_json::{json, Value};
use support::{tool_line, Cms};

#[test]
fn git_guard_blocks_force_pushes_and_commits_on_main() {
    let cms = Cms::new();
    std::fs::create_dir_all(cms.work().join(".git")).unwrap();
    std::fs::write(cms.work().join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    for (command, reason) in [
        (
            "git push --force origin feature",
            "force pushes are blocked by git-guard",
        ),
        (
            "git -C . push origin +feature",
            "force pushes (+refspec) are blocked",
        ),
        (
            "git push origin HEAD:main",
            "pushing to main is blocked by git-guard",
        ),
        (
            "cd sub && git commit -m wip",
            "committing on main is blocked by git-guard",
        ),
    ] {
        let v = cms
            .delegate(&[
                "--name",
                "g",
                "--preset",
                "full",
                "--task",
                &tool_line("Bash", json!({ "command": command })),
            ])
            .0;
        let denied = &v["deniedBeforeExecution"];
        assert!(
            denied[0]["reason"].as_str().unwrap_or("").contains(reason),
            "{command}: {v}"
        );
        assert_eq!(v["safety"]["violations"][0]["type"], "git-guard", "{v}");
        cms.ok(&["abort", "--name", "g"]);
    }
    let v = cms
        .delegate(&[
            "--name",
            "ok",
            "--preset",
            "full",
            "--task",
            &tool_line("Bash", json!({ "command": "git --version" })),
        ])
        .0;
    assert_eq!(v["deniedBeforeExecution"], serde_json::json!([]), "{v}");
}

#[test]
fn plugins_list_check_and_a_broken_one() {
    let cms = Cms::new();
    let list: Value = serde_json::from_str(&cms.ok(&["plugins", "list", "--json"])).unwrap();
    let names: Vec<&str> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["git-guard", "session-report"]);
    assert_eq!(
        list["plugins"][1]["tools"],
        serde_json::json!(["session_report"])
    );
    assert!(cms.ok(&["plugins", "check"]).contains("2 plugin(s) load"));

    let dir = cms.work().join(".cms/plugins/broken");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("init.lua"),
        "return {\n  tools = { { name = 'x' } },\n}\n",
    )
    .unwrap();
    // A project's plugin counts once trusted.
    assert!(cms.ok(&["plugins", "check"]).contains("2 plugin(s) load"));
    cms.ok(&["trust"]);
    let err = cms.fails(&["plugins", "check"]);
    assert!(
        err.contains("plugin 'broken' left out: tool 'x' has no handler function"),
        "{err}"
    );
    std::fs::write(dir.join("init.lua"), "return {\n  tools = {\n").unwrap();
    cms.ok(&["trust"]);
    let err = cms.fails(&["plugins", "check"]);
    assert!(err.contains("broken/init.lua:3:"), "{err}");
    // The others still load, and sessions still work.
    let text = cms.run(&["plugins", "list"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("session-report 1.0.0"));
    cms.ok(&["spawn", "--name", "s", "--prompt", "still fine"]);
}

#[test]
fn files_that_never_finish_loading_are_reported_like_syntax_errors() {
    let cms = Cms::new();
    let spin = "local n = 0\nwhile true do n = n + 1 end\n";
    // A policy script: `policy check` names the line; `delegate` goes on with the built-in one.
    std::fs::create_dir_all(cms.work().join(".cms")).unwrap();
    std::fs::write(cms.work().join(".cms/safety.lua"), spin).unwrap();
    let err = cms.fails(&["policy", "check", ".cms/safety.lua"]);
    assert!(
        err.contains(".cms/safety.lua:2: stopped: the file did not finish loading within 2 s"),
        "{err}"
    );
    let v = cms.delegate(&["--name", "d1", "--task", "hello"]).0;
    assert_eq!(v["status"], "completed", "{v}");
    std::fs::remove_file(cms.work().join(".cms/safety.lua")).unwrap();
    // A plugin: left out with its line, the rest go on.
    let dir = cms.work().join(".cms/plugins/spin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("init.lua"), spin).unwrap();
    cms.ok(&["trust"]);
    let err = cms.fails(&["plugins", "check"]);
    assert!(
        err.contains("plugin 'spin' left out")
            && err.contains("spin/init.lua:2: stopped: the file did not finish loading"),
        "{err}"
    );
    let out = cms.run(&["plugins", "list", "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["plugins"].as_array().unwrap().len(), 2, "{list}");
    let v = cms.delegate(&["--name", "d2", "--task", "hello"]).0;
    assert_eq!(v["status"], "completed", "{v}");
}

#[test]
fn a_plugin_strategy_drives_a_delegation() {
    let cms = Cms::new();
    let dir = cms.work().join(".cms/plugins/twice");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("init.lua"),
        r#"return { name = "twice", strategies = {
             twice = function(task) task:send(task.prompt); return task:send("RECALL") end,
           } }"#,
    )
    .unwrap();
    cms.ok(&["trust"]);
    let v = cms
        .delegate(&["--name", "t", "--task", "first", "--strategy", "twice"])
        .0;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["response"], "recall: first");
    assert_eq!(v["strategy"], "twice");
    let err = cms.fails(&[
        "delegate",
        "--name",
        "u",
        "--task",
        "x",
        "--strategy",
        "thrice",
    ]);
    assert!(
        err.contains("unknown strategy 'thrice' (known: correction_loop, review, single, twice)"),
        "{err}"
    );
}

#[test]
fn a_strategy_that_spins_is_stopped() {
    let cms = Cms::new();
    let dir = cms.work().join(".cms/plugins/sp");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("init.lua"),
        r#"return { name = "sp", strategies = { spin = function(task)
             task:send(task.prompt)
             coroutine.wrap(function() while true do end end)()
           end } }"#,
    )
    .unwrap();
    cms.ok(&["trust"]);
    let out = cms.run(&[
        "delegate",
        "--name",
        "s",
        "--task",
        "hi",
        "--strategy",
        "spin",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the strategy ran 5s without waiting"), "{err}");
}

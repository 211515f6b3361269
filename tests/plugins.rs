//! Plugins on the simulator: the shipped git-guard policy deciding before Bash runs,
//! a plugin strategy used by `delegate`, `cms plugins list/check`, and a broken
//! plugin left out while the rest go on. And `cms setup` on files (the real Claude
//! Code reading them is in e2e_claude.rs).

mod support;

use serde_json::Value;
use support::Cms;

fn delegate(cms: &Cms, args: &[&str]) -> Value {
    let mut all = vec!["delegate", "--json"];
    all.extend_from_slice(args);
    let out = cms.run(&all);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

fn bash(command: &str) -> String {
    format!(r#"USE_TOOL Bash {{"command": "{command}"}}"#)
}

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
        let v = delegate(
            &cms,
            &["--name", "g", "--preset", "full", "--task", &bash(command)],
        );
        let denied = &v["deniedBeforeExecution"];
        assert!(
            denied[0]["reason"].as_str().unwrap_or("").contains(reason),
            "{command}: {v}"
        );
        assert_eq!(v["safety"]["violations"][0]["type"], "git-guard", "{v}");
        cms.ok(&["abort", "--name", "g"]);
    }
    let v = delegate(
        &cms,
        &[
            "--name",
            "ok",
            "--preset",
            "full",
            "--task",
            &bash("git --version"),
        ],
    );
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
    let v = delegate(
        &cms,
        &["--name", "t", "--task", "first", "--strategy", "twice"],
    );
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
fn setup_keeps_other_keys_is_idempotent_and_refuses_broken_json() {
    let cms = Cms::new();
    let mcp = cms.work().join(".mcp.json");
    std::fs::write(
        &mcp,
        r#"{"mcpServers": {"other": {"command": "x"}}, "extra": [1, 2]}"#,
    )
    .unwrap();
    std::fs::write(cms.work().join("CLAUDE.md"), "# My project\n\nOur rules.\n").unwrap();
    let out = cms.ok(&["setup", "--local", "--guide"]);
    assert!(out.contains("added") && out.contains(".mcp.json"), "{out}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&mcp).unwrap()).unwrap();
    assert_eq!(v["extra"], serde_json::json!([1, 2]));
    assert_eq!(v["mcpServers"]["other"]["command"], "x");
    assert_eq!(v["mcpServers"]["cms"]["args"], serde_json::json!(["mcp"]));
    assert!(v["mcpServers"]["cms"]["command"]
        .as_str()
        .unwrap()
        .ends_with("/cms"));
    assert!(cms.work().join(".mcp.json.cms.bak").exists());
    let again = cms.ok(&["setup", "--local", "--guide"]);
    assert_eq!(again.matches("unchanged").count(), 2, "{again}");
    let md = std::fs::read_to_string(cms.work().join("CLAUDE.md")).unwrap();
    assert!(
        md.starts_with("# My project\n\nOur rules.\n\n<!-- cms:start -->"),
        "{md}"
    );
    assert_eq!(md.matches("<!-- cms:start -->").count(), 1);

    cms.ok(&["setup", "--uninstall"]);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&mcp).unwrap()).unwrap();
    assert!(v["mcpServers"].get("cms").is_none());
    assert_eq!(
        std::fs::read_to_string(cms.work().join("CLAUDE.md")).unwrap(),
        "# My project\n\nOur rules.\n"
    );

    std::fs::write(&mcp, "{ not json").unwrap();
    let err = cms.fails(&["setup", "--local"]);
    assert!(
        err.contains(".mcp.json is not valid JSON") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&mcp).unwrap(), "{ not json");
    let err = cms.fails(&["setup"]);
    assert!(
        err.contains("choose where to install: --global (all projects) or --local"),
        "{err}"
    );
}

//! Delegation on the simulator: every status and limit, presets, protected paths
//! decided before the tool runs, strategies, continue/finish/abort, `cms.delegate`
//! from Lua, hot reload in a running host, and `cms policy`.

use crate::support;

use serde_json::{json, Value};
use support::{close, tool_line, Cms};

#[test]
fn a_protected_write_is_denied_before_it_runs_and_the_rest_goes_through() {
    let cms = Cms::new();
    std::fs::write(cms.work().join(".env"), "SECRET=1\n").unwrap();
    let task = format!(
        "{}\n{}",
        tool_line("Write", json!({ "file_path": ".env", "content": "HACKED" })),
        tool_line(
            "Write",
            json!({ "file_path": "src/x.txt", "content": "ok" })
        )
    );
    let (v, out) = cms.delegate(&["--name", "d", "--task", &task]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(
        std::fs::read_to_string(cms.work().join(".env")).unwrap(),
        "SECRET=1\n"
    );
    assert_eq!(
        std::fs::read_to_string(cms.work().join("src/x.txt")).unwrap(),
        "ok"
    );
    let denied = v["deniedBeforeExecution"].as_array().unwrap();
    assert_eq!(denied.len(), 1, "{v}");
    assert_eq!(denied[0]["tool"], "Write");
    assert!(
        denied[0]["reason"]
            .as_str()
            .unwrap()
            .contains(".env is protected"),
        "{v}"
    );
    assert_eq!(v["safety"]["totalViolations"], 1);
    assert_eq!(v["safety"]["violations"][0]["type"], "protected_path");
    assert_eq!(v["safety"]["violations"][0]["action"], "denied");
    assert_eq!(v["safety"]["limits"]["maxCostUsd"], 2.0);
    assert_eq!(v["safety"]["limits"]["maxTurns"], 50);
    assert_eq!(v["retries"], 1, "one follow-up named the refusal");
    assert_eq!(v["canContinue"], true);
    assert_eq!(v["preset"], "edit");
    assert_eq!(v["strategy"], "single");
    assert!(v["toolsUsed"]
        .as_array()
        .unwrap()
        .contains(&Value::from("Write")));
    let history = cms.json(&["history", "--name", "d"]);
    let kinds: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["delegate", "retry"]);
    assert!(
        history[1]["message"]
            .as_str()
            .unwrap()
            .contains("- Write: .env is protected"),
        "{history}"
    );
    // The result's cost is this call's: both turns.
    assert!(close(
        v["cost"].as_f64().unwrap(),
        v["totalCost"].as_f64().unwrap()
    ));
}

#[test]
fn cost_limits_hold_across_restarts_and_end_the_delegation() {
    let cms = Cms::new();
    let (v, _) = cms.delegate(&[
        "--name",
        "c",
        "--task",
        "COST 0.3 first",
        "--max-cost",
        "0.5",
    ]);
    assert_eq!(v["status"], "completed", "{v}");
    // `continue` runs in a new process (the session resumes): the net still counts 0.3.
    let out = cms.run(&[
        "continue",
        "--name",
        "c",
        "--message",
        "COST 0.3 second",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "cost_exceeded", "{v}");
    assert_eq!(v["canContinue"], false);
    assert_eq!(
        v["safety"]["violations"][0]["message"],
        "Cost $0.6000 exceeded limit $0.5000"
    );
    assert_eq!(cms.json(&["status", "--name", "c"])["state"], "killed");
    let err = cms.fails(&["continue", "--name", "c", "--message", "more"]);
    assert!(
        err.contains("the safety net ended 'c' (Cost $0.6000 exceeded limit $0.5000)"),
        "{err}"
    );
}

#[test]
fn the_cli_budget_cap_also_counts_as_cost_exceeded() {
    let cms = Cms::new();
    let (v, out) = cms.delegate(&[
        "--name",
        "b",
        "--task",
        "COST 0.2 LOOP_TOOL Read {}",
        "--max-cost",
        "0.1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(v["status"], "cost_exceeded", "{v}");
}

#[test]
fn turn_limits_stop_a_runaway_turn() {
    let cms = Cms::new();
    let (v, out) = cms.delegate(&[
        "--name",
        "t",
        "--task",
        r#"LOOP_TOOL Read {"file_path": "x"}"#,
        "--max-turns",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(v["status"], "turns_exceeded", "{v}");
    let violations = v["safety"]["violations"].as_array().unwrap();
    assert_eq!(violations.len(), 1, "one violation, not one per event: {v}");
    assert_eq!(violations[0]["message"], "Turns 4 exceeded limit 3");
    assert_eq!(violations[0]["action"], "killed");
}

#[test]
fn a_crash_fails_and_the_session_can_continue() {
    let cms = Cms::new();
    let (v, out) = cms.delegate(&["--name", "f", "--task", "first"]);
    assert!(out.status.success());
    assert_eq!(v["status"], "completed");
    let out = cms.run(&["continue", "--name", "f", "--message", "CRASH", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "failed");
    assert!(v["error"].as_str().unwrap().contains("boom"), "{v}");
    assert_eq!(v["canContinue"], true);
    let out = cms.ok(&["continue", "--name", "f", "--message", "RECALL"]);
    assert!(out.starts_with("recall: first | CRASH"), "{out}");
}

#[test]
fn a_slow_turn_times_out_as_failed() {
    let cms = Cms::new();
    let (v, out) = cms.delegate(&["--name", "s", "--task", "SLOW 5000 zzz", "--timeout", "0.5"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(v["status"], "failed");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no answer within 0.5s"),
        "{v}"
    );
}

#[test]
fn a_check_that_never_passed_is_check_failed_with_exit_1_until_it_passes() {
    let cms = Cms::new();
    let args = [
        "--name",
        "n",
        "--task",
        "make done.txt",
        "--strategy",
        "correction_loop",
        "--check",
        "test -f done.txt && echo found",
        "--max-attempts",
        "2",
    ];
    let (v, out) = cms.delegate(&args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a check that never passed fails"
    );
    assert_eq!(v["status"], "check_failed", "{v}");
    assert_eq!(v["canContinue"], true, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("the check did not pass after 2 attempt(s)")
            && error.contains("cms continue --name n"),
        "{v}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Error: the check did not pass"), "{stderr}");
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0]["passed"], false);
    assert!(
        checks[0]["output"]
            .as_str()
            .unwrap()
            .contains("exited with 1"),
        "{v}"
    );
    assert_eq!(v["retries"], 1);
    let history = cms.json(&["history", "--name", "n"]);
    assert!(
        history[1]["message"]
            .as_str()
            .unwrap()
            .starts_with("The check failed (attempt 1 of 2)"),
        "{history}"
    );
    // Without --json too: the text result, then exit 1.
    let out = cms.run(&["continue", "--name", "n", "--message", "try again"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("[n] check_failed"), "{stdout}");
    // The work appears; continuing runs the check again and it passes.
    std::fs::write(cms.work().join("done.txt"), "").unwrap();
    let out = cms.run(&[
        "continue",
        "--name",
        "n",
        "--message",
        "check again",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["error"], Value::Null, "{v}");
    assert_eq!(v["checks"][0]["passed"], true);
    assert!(v["checks"][0]["output"].as_str().unwrap().contains("found"));
}

#[test]
fn a_strategy_cannot_call_a_failed_check_completed() {
    let cms = Cms::new();
    let dir = cms.work().join(".cms/strategies");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("optimist.lua"),
        "return function(task)\n  local r = task:send(task.prompt)\n  task:check(r)\n  return r, \"completed\"\nend\n",
    )
    .unwrap();
    // A project's own strategy counts once the user trusts it.
    cms.ok(&["trust"]);
    let (v, out) = cms.delegate(&[
        "--name",
        "o",
        "--task",
        "work",
        "--strategy",
        "optimist",
        "--check",
        "false",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(v["status"], "check_failed", "{v}");
}

#[test]
fn the_review_strategy_asks_a_read_only_reviewer() {
    let cms = Cms::new();
    let (v, _) = cms.delegate(&[
        "--name",
        "w",
        "--task",
        "write docs",
        "--strategy",
        "review",
    ]);
    assert_eq!(v["status"], "completed", "{v}");
    let reviews = v["reviews"].as_array().unwrap();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0]["session"], "w-review-1");
    // The reviewer runs read-only: its tools are limited in its argv.
    let args = cms.ok(&["send", "--name", "w-review-1", "--message", "ARGS"]);
    assert!(
        args.contains("--disallowedTools") && args.contains("Write"),
        "{args}"
    );
    assert!(args.contains("--permission-prompt-tool"), "{args}");
    assert!(
        close(v["cost"].as_f64().unwrap(), 0.002),
        "worker and reviewer: {v}"
    );
}

#[test]
fn presets_shape_the_session_and_full_works_without_bypass() {
    let cms = Cms::new();
    let (v, _) = cms.delegate(&[
        "--name",
        "ro",
        "--preset",
        "read-only",
        "--task",
        &tool_line("Write", json!({ "file_path": "src/r.txt", "content": "x" })),
    ]);
    assert!(!cms.work().join("src/r.txt").exists());
    assert_eq!(
        v["deniedBeforeExecution"].as_array().unwrap().len(),
        0,
        "read-only removes Write altogether"
    );
    let (v, _) = cms.delegate(&["--name", "full", "--preset", "full", "--task", "ARGS"]);
    let argv = v["response"].as_str().unwrap();
    assert!(argv.contains("\"--permission-mode\",\"default\""), "{argv}");
    assert!(!argv.contains("bypassPermissions"), "{argv}");
    assert!(argv.contains("\"--max-budget-usd\",\"2\""), "{argv}");
    let (v, _) = cms.delegate(&[
        "--name",
        "bash",
        "--preset",
        "full",
        "--task",
        r#"USE_TOOL Bash {"command": "touch made-by-bash"}"#,
    ]);
    assert_eq!(v["status"], "completed", "{v}");
    assert!(cms.work().join("made-by-bash").exists());
    let (v, _) = cms.delegate(&[
        "--name",
        "edit",
        "--task",
        r#"USE_TOOL Bash {"command": "touch nope"}"#,
    ]);
    assert!(!cms.work().join("nope").exists());
    assert!(
        v["deniedBeforeExecution"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("the edit preset does not allow Bash"),
        "{v}"
    );
    let err = cms.fails(&["delegate", "--name", "x", "--task", "t", "--preset", "yolo"]);
    assert!(
        err.contains(
            "unknown preset 'yolo' (known: edit, full, plan, read-only, review, supervised)"
        ),
        "{err}"
    );
}

#[test]
fn no_safety_turns_off_limits_and_protected_paths() {
    let cms = Cms::new();
    let (v, _) = cms.delegate(&[
        "--name",
        "ns",
        "--no-safety",
        "--task",
        &tool_line("Write", json!({ "file_path": ".env", "content": "X=1" })),
    ]);
    assert_eq!(v["status"], "completed");
    assert_eq!(v["safety"], Value::Null);
    assert_eq!(
        std::fs::read_to_string(cms.work().join(".env")).unwrap(),
        "X=1"
    );
}

#[test]
fn continue_finish_and_abort_need_a_delegated_session() {
    let cms = Cms::new();
    cms.ok(&["spawn", "--name", "plain", "--prompt", "hi"]);
    let err = cms.fails(&["continue", "--name", "plain", "--message", "x"]);
    assert!(err.contains("'plain' is not a delegated session"), "{err}");
    assert!(cms
        .fails(&["finish", "--name", "ghost"])
        .contains("session 'ghost' not found"));
    let err = cms.fails(&["delegate", "--name", "plain", "--task", "x"]);
    assert!(err.contains("session 'plain' already exists"), "{err}");
    cms.delegate(&["--name", "d", "--task", "COST 0.01 hi"]);
    let v = cms.json(&["finish", "--name", "d"]);
    assert_eq!(v["status"], "finished");
    assert!(close(v["totalCost"].as_f64().unwrap(), 0.01));
    let v = cms.json(&["abort", "--name", "d"]);
    assert_eq!(v["status"], "aborted");
    assert_eq!(cms.json(&["status", "--name", "d"])["state"], "killed");
    let err = cms.fails(&[
        "delegate",
        "--name",
        "d",
        "--task",
        "x",
        "--strategy",
        "nope",
    ]);
    assert!(
        err.contains("unknown strategy 'nope' (known: correction_loop, review, single)"),
        "{err}"
    );
}

#[test]
fn delegate_from_lua_with_a_check_function_and_continue() {
    let cms = Cms::new();
    std::fs::write(
        cms.work().join("plan.lua"),
        r#"
        local seen = {}
        local d = cms.delegate{
          name = "lua", task = "first try", strategy = "correction_loop", max_attempts = 3,
          check = function(r)
            seen[#seen + 1] = r.text
            if r.text:find("fixed") then return true end
            return false, "please say fixed"
          end,
        }
        local more = d:continue("done")
        local fin = d:finish()
        return { status = d.status, checks = #d.checks, seen = seen, more = more.status,
                 more_checks = #more.checks, fin = fin.status, retries = d.retries }
        "#,
    )
    .unwrap();
    let v: Value = serde_json::from_str(&cms.ok(&["script", "--json", "plan.lua"])).unwrap();
    // The correction repeats the check's message; the echo then contains "fixed".
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["checks"], 2);
    assert_eq!(v["retries"], 1);
    assert_eq!(v["seen"][0], "echo: first try");
    // d:continue keeps the check function: "echo: done" fails it, the correction passes.
    assert_eq!(v["more"], "completed", "{v}");
    assert_eq!(v["more_checks"], 2, "{v}");
    assert_eq!(v["seen"][2], "echo: done", "{v}");
    assert_eq!(v["fin"], "finished");
}

#[test]
fn a_lua_check_that_never_passes_is_check_failed_on_delegate_and_continue() {
    let cms = Cms::new();
    std::fs::write(
        cms.work().join("plan.lua"),
        r#"
        local d = cms.delegate{
          name = "never", task = "try", strategy = "correction_loop", max_attempts = 2,
          check = function(r) return false, "not yet" end,
        }
        local more = d:continue("again")
        return { status = d.status, error = d.error, checks = #d.checks,
                 more = more.status, more_checks = #more.checks, can = more.canContinue }
        "#,
    )
    .unwrap();
    let v: Value = serde_json::from_str(&cms.ok(&["script", "--json", "plan.lua"])).unwrap();
    assert_eq!(v["status"], "check_failed", "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("not yet"),
        "the last check's output is in the error: {v}"
    );
    assert_eq!(v["checks"], 2);
    assert_eq!(v["more"], "check_failed", "{v}");
    assert_eq!(v["more_checks"], 2, "{v}");
    assert_eq!(v["can"], true, "{v}");
}

#[test]
fn editing_protected_paths_changes_the_next_decision_in_a_running_script() {
    let cms = Cms::new();
    // The user's config dir ($HOME/.config/cms): it needs no trust.
    std::fs::create_dir_all(cms.dir.path().join(".config/cms")).unwrap();
    let builtin = include_str!("../../scripts/protected_paths.lua");
    let edited = builtin.replace("M.paths = {", "M.paths = { \"src/\",");
    std::fs::write(cms.work().join("edited.lua"), &edited).unwrap();
    std::fs::write(
        cms.work().join("plan.lua"),
        r#"
        local first = cms.delegate{ name = "a", task = 'USE_TOOL Write {"file_path": "src/a.txt", "content": "a"}' }
        -- Install a user override that also protects src/, as a person editing it would.
        local src = assert(io.open("edited.lua")):read("a")
        local f = assert(io.open("../.config/cms/protected_paths.lua", "w")); f:write(src); f:close()
        cms.sleep(0.3)
        local second = cms.delegate{ name = "b", task = 'USE_TOOL Write {"file_path": "src/b.txt", "content": "b"}' }
        return { first = #first.deniedBeforeExecution, second = second.deniedBeforeExecution[1] }
        "#,
    )
    .unwrap();
    let v: Value = serde_json::from_str(&cms.ok(&["script", "--json", "plan.lua"])).unwrap();
    assert_eq!(v["first"], 0, "{v}");
    assert!(
        v["second"]["reason"]
            .as_str()
            .unwrap()
            .contains("src/b.txt is protected (src/)"),
        "{v}"
    );
    assert!(cms.work().join("src/a.txt").exists());
    assert!(!cms.work().join("src/b.txt").exists());
}

#[test]
fn policy_check_and_show() {
    let cms = Cms::new();
    let dir = cms.work().join("p");
    std::fs::create_dir_all(dir.join("strategies")).unwrap();
    std::fs::write(
        dir.join("safety.lua"),
        "return { on_tool_use = function() return 'allow' end }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("presets.lua"),
        "return { odd = { permission_mode = 'sometimes' } }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("protected_paths.lua"),
        "local M = {}\nM.paths = { '.env'\nreturn M\n",
    )
    .unwrap();
    std::fs::write(dir.join("strategies/mine.lua"), "return 42\n").unwrap();
    assert!(cms
        .ok(&["policy", "check", "p/safety.lua"])
        .contains("ok (safety policy"));
    let err = cms.fails(&["policy", "check", "p/presets.lua"]);
    assert!(
        err.contains("preset 'odd': unknown permission_mode 'sometimes'"),
        "{err}"
    );
    let err = cms.fails(&["policy", "check", "p/protected_paths.lua"]);
    assert!(err.contains("p/protected_paths.lua:3:"), "{err}");
    let err = cms.fails(&["policy", "check", "p/strategies/mine.lua"]);
    assert!(err.contains("must return a function(task)"), "{err}");
    // Every script cms ships.
    for shipped in cms::sandbox::scripts::BUILTIN.iter().map(|(rel, _)| *rel) {
        let path = format!("{}/scripts/{shipped}", env!("CARGO_MANIFEST_DIR"));
        cms.ok(&["policy", "check", &path]);
    }
    // An override in the user's folder shows as in force.
    let user = cms.dir.path().join(".config/cms");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::copy(dir.join("safety.lua"), user.join("safety.lua")).unwrap();
    let show = cms.json(&["policy", "show"]);
    let scripts: Vec<&str> = show["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        scripts
            .iter()
            .any(|s| s.ends_with(".config/cms/safety.lua")),
        "{show}"
    );
    assert!(scripts.contains(&"builtin:presets.lua"), "{show}");
    assert_eq!(show["limits"]["max_cost"], 2.0);
}

/// A delegation tells of its rounds as they happen (on a terminal, or with
/// `CMS_PROGRESS=1`): each check run and its outcome; stdout keeps only the result.
#[test]
fn the_rounds_of_a_delegation_are_told_as_they_happen() {
    let cms = Cms::new();
    let out = cms
        .cmd(&[
            "delegate",
            "--json",
            "--name",
            "r",
            "--task",
            "try",
            "--strategy",
            "correction_loop",
            "--check",
            "echo boom; false",
            "--max-turns",
            "4",
        ])
        .env("CMS_PROGRESS", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("r: check 1: running `echo boom; false`"),
        "{err}"
    );
    assert!(err.contains("r: check 1: failed (boom)"), "{err}");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is the result only");
    assert_eq!(v["status"], "check_failed", "{v}");
}

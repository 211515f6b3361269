//! End-to-end: the engine driving the real Claude Code CLI (npm
//! `@anthropic-ai/claude-code`) against a fake Anthropic API on 127.0.0.1.
//! This is the proof that cms speaks the real protocol.

use crate::support;

use cms::engine::{
    Decision, EngineError, EventKind, Policy, SessionOptions, SessionState, ToolCall,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::real::{real_env, RealEnv as Env};
use support::{close, spawn_req};
use tokio::io::AsyncBufReadExt;

async fn env() -> Option<Env> {
    real_env(Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_sends_share_one_process_and_each_turn_has_its_own_cost() {
    let Some(env) = env().await else { return };
    let m = &env.manager;
    let (rec, r1) = m
        .spawn(spawn_req(&env.work, "multi", "first message"))
        .await
        .unwrap();
    assert_eq!(r1.text, "echo: first message");
    assert!(!r1.is_error);
    assert!(r1.cost_usd > 0.0, "the CLI prices the fake usage");
    let pid = m.live("multi").unwrap().pid();
    let r2 = m.send("multi", "second message", None).await.unwrap();
    let r3 = m.send("multi", "third message", None).await.unwrap();
    assert_eq!(r3.text, "echo: third message");
    assert_eq!(
        m.live("multi").unwrap().pid(),
        pid,
        "one long-lived process, no restart"
    );
    // total_cost_usd is cumulative per process; each response carries its own turn's cost.
    assert!(
        close(r1.cost_usd, r2.cost_usd) && close(r2.cost_usd, r3.cost_usd),
        "{} {} {}",
        r1.cost_usd,
        r2.cost_usd,
        r3.cost_usd
    );
    assert!(close(r3.session_cost_usd, r1.cost_usd * 3.0));
    assert_eq!(r3.session_id, rec.claude_session_id.clone().unwrap());
    let stored = m.status("multi").unwrap();
    assert!(close(stored.total_cost_usd, r1.cost_usd * 3.0));
    assert_eq!(stored.interaction_count, 3);
    assert_eq!(env.api.message_calls(), 3);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_then_send_resumes_the_same_conversation_and_cost_adds_up_across_processes() {
    let Some(env) = env().await else { return };
    let m = &env.manager;
    let (rec, r1) = m
        .spawn(spawn_req(
            &env.work,
            "resumable",
            "remember the word PELICAN",
        ))
        .await
        .unwrap();
    let id = rec.claude_session_id.clone().unwrap();
    let r2 = m.send("resumable", "and also OTTER", None).await.unwrap();
    let first_pid = m.live("resumable").unwrap().pid();
    let stopped = m.stop("resumable").await.unwrap();
    assert_eq!(stopped.state, SessionState::Stopped);
    assert!(m.live("resumable").is_none());

    let r3 = m.send("resumable", "RECALL", None).await.unwrap();
    assert_ne!(
        m.live("resumable").unwrap().pid(),
        first_pid,
        "a new process"
    );
    assert_eq!(r3.session_id, id, "same Claude session id after --resume");
    assert!(
        r3.text.contains("PELICAN") && r3.text.contains("OTTER"),
        "context kept: {}",
        r3.text
    );
    // The resumed process starts its cumulative total from 0 again: exact accounting
    // means the session total is the plain sum of the three turns.
    let sum = r1.cost_usd + r2.cost_usd + r3.cost_usd;
    assert!(r3.cost_usd > 0.0);
    assert!(
        close(r3.session_cost_usd, sum),
        "{} vs {}",
        r3.session_cost_usd,
        sum
    );
    let stored = m.status("resumable").unwrap();
    assert!(close(stored.total_cost_usd, sum));
    let history = m.history("resumable").unwrap();
    assert!(close(history.iter().map(|h| h.cost_usd).sum::<f64>(), sum));
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_gets_a_new_id_and_the_parents_context() {
    let Some(env) = env().await else { return };
    let m = &env.manager;
    let (parent, _) = m
        .spawn(spawn_req(&env.work, "parent", "the secret is HERON"))
        .await
        .unwrap();
    m.stop("parent").await.unwrap();
    let (fork, r) = m
        .fork(
            "parent",
            "child",
            Some("RECALL"),
            SessionOptions::default(),
            None,
        )
        .await
        .unwrap();
    let r = r.unwrap();
    assert!(
        r.text.contains("HERON"),
        "the fork holds the parent's context: {}",
        r.text
    );
    let parent_id = parent.claude_session_id.unwrap();
    let fork_id = fork.claude_session_id.clone().unwrap();
    assert_ne!(fork_id, parent_id);
    assert_eq!(
        r.session_id, fork_id,
        "the id cms chose is the id the CLI used"
    );
    assert_eq!(fork.forked_from.as_deref(), Some("parent"));
    // The fork can itself be stopped and resumed by its own id.
    m.stop("child").await.unwrap();
    let again = m.send("child", "RECALL", None).await.unwrap();
    assert_eq!(again.session_id, fork_id);
    // The parent is untouched.
    let p = m.send("parent", "RECALL", None).await.unwrap();
    assert!(!p.text.contains("RECALL | RECALL"), "{}", p.text);
    assert_eq!(p.session_id, parent_id);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_tool_call_runs_and_is_reported() {
    let Some(env) = env().await else { return };
    let m = &env.manager;
    let note = env.work.join("note.txt");
    std::fs::write(&note, "secret file content 42\n").unwrap();
    let mut events = m.subscribe();
    let prompt = format!("USE_TOOL Read {{\"file_path\": \"{}\"}}", note.display());
    let (_, r) = m
        .spawn(spawn_req(&env.work, "reader", &prompt))
        .await
        .unwrap();
    assert_eq!(r.tools_used, vec!["Read"]);
    assert_eq!(r.text, "done: 1 tool results");
    assert_eq!(r.num_turns, 2);
    let mut saw_result = false;
    while let Ok(e) = events.try_recv() {
        if let EventKind::ToolResult {
            content, is_error, ..
        } = e.kind
        {
            assert!(!is_error);
            assert!(content.to_string().contains("secret file content 42"));
            saw_result = true;
        }
    }
    assert!(saw_result, "the tool result reached subscribers");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_default_mode_is_denied_and_reported() {
    let Some(env) = env().await else { return };
    let m = &env.manager;
    let target = env.work.join("out.txt");
    let prompt = format!(
        "USE_TOOL Write {{\"file_path\": \"{}\", \"content\": \"x\"}}",
        target.display()
    );
    let (_, r) = m
        .spawn(spawn_req(&env.work, "writer", &prompt))
        .await
        .unwrap();
    assert_eq!(r.permission_denials.len(), 1);
    assert_eq!(r.permission_denials[0].tool_name, "Write");
    assert!(!target.exists());
    m.shutdown().await;
}

/// Denies writes to `.env`, allows everything else: the policy door, before the tool runs.
struct NoDotEnv;

impl Policy for NoDotEnv {
    fn wants_tool_prompts(&self) -> bool {
        true
    }
    fn decide(&self, call: &ToolCall) -> Decision {
        let path = call.input["file_path"].as_str().unwrap_or("");
        if path.ends_with("/.env") {
            Decision::deny(format!("{path} is protected"))
        } else {
            Decision::Allow
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_decides_before_a_tool_runs() {
    let Some(env) = env().await else { return };
    let m = &env.manager;
    m.set_policy(Arc::new(NoDotEnv));
    let env_file = env.work.join(".env");
    let ok_file = env.work.join("src/x.txt");
    let prompt = format!(
        "USE_TOOL Write {{\"file_path\": \"{}\", \"content\": \"TOKEN=1\"}}",
        env_file.display()
    );
    let (_, r) = m
        .spawn(spawn_req(&env.work, "guarded", &prompt))
        .await
        .unwrap();
    assert_eq!(r.permission_denials.len(), 1, "{r:?}");
    assert!(!env_file.exists(), "the denied write never happened");
    let prompt = format!(
        "USE_TOOL Write {{\"file_path\": \"{}\", \"content\": \"fine\"}}",
        ok_file.display()
    );
    let r = m.send("guarded", &prompt, None).await.unwrap();
    assert!(r.permission_denials.is_empty(), "{r:?}");
    assert_eq!(std::fs::read_to_string(&ok_file).unwrap(), "fine");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_ends_the_turn_and_the_process_takes_the_next_one() {
    let Some(env) = env().await else { return };
    let m = env.manager.clone();
    m.spawn(spawn_req(&env.work, "slow", "warm up"))
        .await
        .unwrap();
    let pid = m.live("slow").unwrap().pid();
    let sender = {
        let m = m.clone();
        tokio::spawn(async move { m.send("slow", "SLOW 20000 never finishes", None).await })
    };
    let session = m.live("slow").unwrap();
    let mut state = session.watch_state();
    tokio::time::timeout(
        Duration::from_secs(20),
        state.wait_for(|s| *s == SessionState::Busy),
    )
    .await
    .unwrap()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    m.interrupt("slow").await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(15), sender)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(r.is_error);
    assert_eq!(r.subtype, "error_during_execution");
    let next = m.send("slow", "after interrupt", None).await.unwrap();
    assert_eq!(next.text, "echo: after interrupt");
    assert_eq!(m.live("slow").unwrap().pid(), pid);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_permissions_as_root_is_reported_clearly() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: not running as root");
        return;
    }
    let Some(env) = env().await else { return };
    let mut req = spawn_req(&env.work, "bypass", "hello");
    req.options.permission_mode = Some("bypassPermissions".into());
    let err = env.manager.spawn(req).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EngineError::Exited { .. }), "{msg}");
    assert!(
        msg.contains("root/sudo"),
        "the CLI's own words are shown: {msg}"
    );
    assert!(msg.contains("IS_SANDBOX"), "and what to do: {msg}");
    assert!(
        env.manager.status("bypass").is_err(),
        "a session that never started leaves no record"
    );
}

/// A Lua plan (`cms script`) driving the real CLI: spawn, two sends on one live
/// process with per-turn costs that add up, a fork that remembers, and two
/// sessions in `cms.parallel`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lua_script_drives_the_real_cli() {
    let Some(env) = env().await else { return };
    let plan = env.work.join("plan.lua");
    std::fs::write(
        &plan,
        r#"
        local s = cms.spawn{ name = "lua-a", prompt = "hello from lua" }
        local r1 = s.response
        local r2 = s:send("second")
        local r3 = s:send("RECALL")
        local b = s:fork{ name = "lua-b", message = "RECALL" }
        local both = cms.parallel{
          function() return cms.spawn{ name = "lua-p1", prompt = "p1", stop = true }.response.text end,
          function() return cms.spawn{ name = "lua-p2", prompt = "p2", stop = true }.response.text end,
        }
        return { first = r1.text, costs = { r1.cost_usd, r2.cost_usd, r3.cost_usd },
                 session_cost = r3.session_cost_usd, recall = r3.text, fork = b.response.text,
                 fork_differs = b.id ~= s.id, parallel = both, total = s:status().total_cost_usd }
        "#,
    )
    .unwrap();
    let mut cmd = cms_command(&env, &["script", "--json"]);
    cmd.arg(&plan);
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("the script finished")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["first"], "echo: hello from lua");
    assert_eq!(v["recall"], "recall: hello from lua | second");
    assert_eq!(v["fork"], "recall: hello from lua | second | RECALL");
    assert_eq!(v["fork_differs"], true);
    assert_eq!(v["parallel"], serde_json::json!(["echo: p1", "echo: p2"]));
    let costs: Vec<f64> = v["costs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_f64().unwrap())
        .collect();
    assert!(
        costs.iter().all(|c| *c > 0.0),
        "every turn has its own cost: {costs:?}"
    );
    let sum: f64 = costs.iter().sum();
    assert!(close(sum, v["session_cost"].as_f64().unwrap()), "{v}");
    assert!(close(sum, v["total"].as_f64().unwrap()), "{v}");
}

/// `cms ARGS` in the project, on the real CLI and the fake API, with its own home.
fn cms_command(env: &Env, args: &[&str]) -> tokio::process::Command {
    let claude = support::real_claude().unwrap();
    let root = env.work.parent().unwrap().to_path_buf();
    let mut cmd = tokio::process::Command::new(support::cms_bin());
    cmd.args(args)
        .current_dir(&env.work)
        .env("CMS_HOME", root.join("cms-home"))
        .env("CMS_CLAUDE_BIN", &claude)
        .env("CMS_CONFIG_DIR", root.join("config"))
        .env("RUST_LOG", "warn")
        // A host this test started ends soon after the test.
        .env("CMS_HOST_IDLE", "20s")
        .env_remove("CMS_NO_HOST");
    if std::env::var_os("CMS_TEST_NO_HOST").is_some() {
        cmd.env("CMS_NO_HOST", "1");
    }
    cmd.envs(env.api.claude_env(&root.join("home")));
    cmd
}

/// [`cms_command`] pinned to `--no-host`: the session's process ends with the command.
fn cms_command_in_process(env: &Env, args: &[&str]) -> tokio::process::Command {
    let mut cmd = cms_command(env, args);
    cmd.env("CMS_NO_HOST", "1");
    cmd
}

async fn run_json(mut cmd: tokio::process::Command) -> serde_json::Value {
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("cms finished")
        .unwrap();
    support::parse_json(&out)
}

/// `cms delegate` on the real CLI: a Write to `.env` is refused before it runs (the
/// file never appears) while a Write to `src/x.txt` goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_denies_a_protected_write_before_it_happens() {
    let Some(env) = env().await else { return };
    let task = format!(
        "USE_TOOL Write {{\"file_path\": \"{}\", \"content\": \"HACKED=1\\n\"}}",
        env.work.join(".env").display()
    );
    let v = run_json(cms_command(
        &env,
        &["delegate", "--json", "--name", "guarded", "--task", &task],
    ))
    .await;
    assert!(
        !env.work.join(".env").exists(),
        "the protected file never appeared: {v}"
    );
    assert_eq!(v["deniedBeforeExecution"][0]["tool"], "Write", "{v}");
    assert!(
        v["deniedBeforeExecution"][0]["reason"]
            .as_str()
            .unwrap()
            .contains(".env is protected"),
        "{v}"
    );
    assert_eq!(v["safety"]["violations"][0]["type"], "protected_path");
    assert_eq!(v["status"], "completed", "the retry finished the turn: {v}");

    let task = format!(
        "USE_TOOL Write {{\"file_path\": \"{}\", \"content\": \"fine\\n\"}}",
        env.work.join("src/x.txt").display()
    );
    let v = run_json(cms_command(
        &env,
        &["delegate", "--json", "--name", "allowed", "--task", &task],
    ))
    .await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["deniedBeforeExecution"], serde_json::json!([]), "{v}");
    assert_eq!(
        std::fs::read_to_string(env.work.join("src/x.txt")).unwrap(),
        "fine\n"
    );
    assert!(v["toolsUsed"]
        .as_array()
        .unwrap()
        .contains(&serde_json::Value::from("Write")));
}

/// Editing the protected-path script while a host runs (here `cms script`) changes
/// its next decision, on the real CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_protected_paths_script_changes_the_next_decision() {
    let Some(env) = env().await else { return };
    let config = env.work.parent().unwrap().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let edited = include_str!("../../scripts/protected_paths.lua")
        .replace("M.paths = {", "M.paths = { \"docs/\",");
    std::fs::write(env.work.join("edited.lua"), edited).unwrap();
    let write = |p: &str| {
        format!(
            "USE_TOOL Write {{\\\"file_path\\\": \\\"{}\\\", \\\"content\\\": \\\"x\\\"}}",
            env.work.join(p).display()
        )
    };
    let plan = format!(
        r#"
        local first = cms.delegate{{ name = "before", task = "{}" }}
        local src = assert(io.open("edited.lua")):read("a")
        local f = assert(io.open("{}", "w")); f:write(src); f:close()
        cms.sleep(0.4)
        local second = cms.delegate{{ name = "after", task = "{}" }}
        return {{ first = first, second = second }}
        "#,
        write("docs/a.md"),
        config.join("protected_paths.lua").display(),
        write("docs/b.md")
    );
    std::fs::write(env.work.join("plan.lua"), plan).unwrap();
    let v = run_json(cms_command(&env, &["script", "--json", "plan.lua"])).await;
    assert_eq!(
        v["first"]["deniedBeforeExecution"],
        serde_json::json!([]),
        "{v}"
    );
    assert!(env.work.join("docs/a.md").exists());
    assert!(
        v["second"]["deniedBeforeExecution"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("is protected (docs/)"),
        "{v}"
    );
    assert!(!env.work.join("docs/b.md").exists());
}

/// The real Claude Code as an MCP client: started with `--mcp-config` pointing at
/// `cms mcp`, the (fake) model calls `mcp__cms__spawn_session` and
/// `mcp__cms__list_sessions`, and the session appears in `cms list`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_drives_cms_through_mcp() {
    let Some(env) = env().await else { return };
    let root = env.work.parent().unwrap().to_path_buf();
    let inner_home = root.join("inner-cms");
    let config = serde_json::json!({ "mcpServers": { "cms": {
        "command": support::cms_bin(), "args": ["mcp"],
        "env": { "CMS_HOME": inner_home, "CMS_CLAUDE_BIN": support::sim_bin(), "RUST_LOG": "warn", "CMS_HOST_IDLE": "5s" }
    } } });
    let config_path = root.join("mcp.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let mut req = spawn_req(
        &env.work,
        "outer",
        r#"USE_TOOL mcp__cms__spawn_session {"name": "from-claude", "prompt": "ENV"}"#,
    );
    req.options.mcp_config = Some(config_path.display().to_string());
    req.options.allowed_tools = vec![
        "mcp__cms__spawn_session".into(),
        "mcp__cms__list_sessions".into(),
    ];
    let (_, r) = env.manager.spawn(req).await.unwrap();
    assert_eq!(r.tools_used, vec!["mcp__cms__spawn_session"], "{r:?}");
    assert!(
        r.permission_denials.is_empty(),
        "{:?}",
        r.permission_denials
    );
    let r = env
        .manager
        .send("outer", "USE_TOOL mcp__cms__list_sessions {}", None)
        .await
        .unwrap();
    assert_eq!(r.tools_used, vec!["mcp__cms__list_sessions"]);
    // What the tool returned reached the model (the fake API saw it in the next request).
    let requests = env.api.requests.lock().unwrap().clone();
    let last = requests.last().unwrap().to_string();
    assert!(
        last.contains("from-claude") && last.contains("server_version"),
        "{last}"
    );
    // And the session is in the store the MCP server used.
    let out = std::process::Command::new(support::cms_bin())
        .args(["list", "--json"])
        .env("CMS_HOME", &inner_home)
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["from-claude"]);
    assert_eq!(list[0]["total_cost_usd"], 0.001);
    // Claude Code gives `cms mcp` its own session's variables; the session cms starts is
    // a new session and gets none of them, while the user's configuration passes.
    let out = std::process::Command::new(support::cms_bin())
        .args(["output", "--name", "from-claude", "--full"])
        .env("CMS_HOME", &inner_home)
        .output()
        .unwrap();
    let inherited = String::from_utf8_lossy(&out.stdout).to_string();
    // The host that `cms mcp` started for the inner home ends with the test.
    let _ = std::process::Command::new(support::cms_bin())
        .args(["host", "stop"])
        .env("CMS_HOME", &inner_home)
        .output();
    let names: Vec<&str> = inherited.split_whitespace().collect();
    assert!(names.contains(&"ANTHROPIC_BASE_URL"), "{inherited}");
    for parent in [
        "CLAUDECODE",
        "CLAUDE_CODE_SESSION_ID",
        "CLAUDE_CODE_ENTRYPOINT",
        "CLAUDE_PROJECT_DIR",
        "AI_AGENT",
    ] {
        assert!(!names.contains(&parent), "{parent} leaked: {inherited}");
    }
}

/// `cms setup --global` writes where Claude Code reads MCP servers: `claude mcp list`
/// shows cms (and connects to it); after `--uninstall` it does not. Other keys of
/// ~/.claude.json are kept and the file is backed up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_registers_cms_where_claude_code_finds_it() {
    let Some(env) = env().await else { return };
    let claude = support::real_claude().unwrap();
    let home = env.work.parent().unwrap().join("home");
    std::fs::write(
        home.join(".claude.json"),
        r#"{"numStartups": 3, "mcpServers": {"other": {"command": "true"}}}"#,
    )
    .unwrap();
    let run_cms = |args: &[&str]| {
        std::process::Command::new(support::cms_bin())
            .args(args)
            .current_dir(&env.work)
            .env("HOME", &home)
            .env("CMS_CLAUDE_BIN", support::sim_bin())
            .env("CMS_HOME", home.join("cms"))
            .output()
            .unwrap()
    };
    let mcp_list = || {
        let out = std::process::Command::new(&claude)
            .args(["mcp", "list"])
            .current_dir(&env.work)
            .env("HOME", &home)
            .env("ANTHROPIC_API_KEY", "sk-test-dummy")
            .env("ANTHROPIC_BASE_URL", env.api.base_url())
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let before = mcp_list();
    assert!(!before.contains("cms:"), "{before}");
    let out = run_cms(&["setup", "--global", "--guide"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = mcp_list();
    assert!(
        listed.contains("cms:"),
        "claude mcp list after setup:\n{listed}"
    );
    assert!(
        listed.contains("Connected"),
        "claude could start `cms mcp`:\n{listed}"
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join(".claude.json")).unwrap()).unwrap();
    assert_eq!(config["numStartups"], 3, "other keys are kept");
    assert!(config["mcpServers"]["other"].is_object());
    assert!(home.join(".claude.json.cms.bak").exists());
    let guide = std::fs::read_to_string(home.join(".claude/CLAUDE.md")).unwrap();
    assert_eq!(guide.matches("<!-- cms:start -->").count(), 1);

    let out = run_cms(&["setup", "--uninstall"]);
    assert!(out.status.success());
    let after = mcp_list();
    assert!(
        !after.contains("cms:"),
        "claude mcp list after uninstall:\n{after}"
    );
    // The guide was all ~/.claude/CLAUDE.md held (setup made it): it goes with it.
    assert!(!std::fs::read_to_string(home.join(".claude/CLAUDE.md"))
        .unwrap_or_default()
        .contains("cms:start"));
}

/// Bypass attempts through the real CLI: one turn with many parallel tool calls, each
/// trying to change a protected path another way. Every one is refused by the
/// safety net before it runs, and nothing protected changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_attempts_through_the_real_cli_all_fail() {
    let Some(env) = env().await else { return };
    let w = &env.work;
    std::fs::create_dir_all(w.join(".git")).unwrap();
    std::fs::create_dir_all(w.join("src")).unwrap();
    std::fs::write(w.join(".env"), "SECRET=1\n").unwrap();
    std::fs::write(w.join(".git/config"), "[core]\n").unwrap();
    std::os::unix::fs::symlink(".env", w.join("notes.txt")).unwrap();
    std::os::unix::fs::symlink(".git", w.join("docs")).unwrap();
    let abs = w.join(".env").display().to_string();
    let writes = [
        ".env".to_string(),
        "./.env".into(),
        "src/../.env".into(),
        abs.clone(),
        format!("{}/src/../.env", w.display()),
        "notes.txt".into(),
        "docs/config".into(),
        ".ENV".into(),
        ".env.local".into(),
        ".git/hooks/pre-commit".into(),
        "node_modules/x/index.js".into(),
        "credentials/aws.json".into(),
        "certs/server.pem".into(),
    ];
    let commands = [
        "echo x > .env",
        "echo x >> .env",
        "echo x>.env",
        "printf x | tee .env",
        "cp /etc/hostname .env",
        "mv src/a .git/config",
        "rm -f .env",
        "rm -rf .git",
        "sed -i s/1/2/ .env",
        "echo x > .e\\\"n\\\"v",
        "echo $(rm .env)",
        "bash -c 'echo x > .env'",
        "sh -c \\\"rm .env\\\"",
        "eval 'rm .env'",
        "F=.env; echo x > $F",
        "cd .git && echo x > config",
        "rm .e*",
        "dd if=/dev/zero of=.env count=1",
        "python3 -c \\\"open('.env','w')\\\"",
        "ln -sf /tmp/x .env",
        "echo x > notes.txt",
        "rm -rf .",
    ];
    let mut message = String::new();
    for p in &writes {
        message.push_str(&format!(
            "USE_TOOL Write {{\"file_path\": \"{p}\", \"content\": \"HACKED\"}}\n"
        ));
    }
    for c in &commands {
        message.push_str(&format!("USE_TOOL Bash {{\"command\": \"{c}\"}}\n"));
    }
    let attempts = writes.len() + commands.len();
    assert!(attempts >= 30);

    let (service, _) = cms::policy::PolicyService::start(
        cms::policy::Layers::builtin_only(),
        cms::policy::DECISION_LIMIT,
    )
    .unwrap();
    env.manager
        .set_policy(Arc::new(cms::policy::LuaPolicy(service)));
    let mut events = env.manager.subscribe();
    let mut req = spawn_req(&env.work, "bypass", message.trim_end());
    req.options.guard = Some(cms::engine::Guard {
        preset: Some("full".into()),
        safety: true,
        ..cms::engine::Guard::default()
    });
    // Claude Code refuses to overwrite a file it has not read (before asking anyone):
    // read the existing ones first, so every Write below reaches the safety net.
    let mut reads = String::new();
    for p in writes
        .iter()
        .filter(|p| w.join(p).exists() || Path::new(p).exists())
    {
        reads.push_str(&format!("USE_TOOL Read {{\"file_path\": \"{p}\"}}\n"));
    }
    let mut first = spawn_req(&env.work, "bypass", reads.trim_end());
    first.options.guard = req.options.guard.clone();
    env.manager.spawn(first).await.unwrap();
    while events.try_recv().is_ok() {}
    let r = env
        .manager
        .send("bypass", message.trim_end(), None)
        .await
        .unwrap();
    let mut violations = 0;
    // From 2.1.332 on, Claude Code itself refuses a Write through a symlink
    // before asking anyone: that refusal counts as refused too.
    let mut refused_by_the_cli = 0;
    while let Ok(e) = events.try_recv() {
        match &e.kind {
            EventKind::Violation { rule, .. } => {
                assert_eq!(rule, "protected_path");
                violations += 1;
            }
            EventKind::ToolResult {
                is_error: true,
                content,
                ..
            } if content.to_string().contains("it is a symbolic link") => refused_by_the_cli += 1,
            _ => {}
        }
    }
    assert_eq!(
        violations + refused_by_the_cli,
        attempts,
        "every attempt was refused by the net: {r:?}"
    );
    assert_eq!(r.permission_denials.len(), attempts);
    assert_eq!(
        std::fs::read_to_string(w.join(".env")).unwrap(),
        "SECRET=1\n"
    );
    assert_eq!(
        std::fs::read_to_string(w.join(".git/config")).unwrap(),
        "[core]\n"
    );
    for p in [
        ".ENV",
        ".env.local",
        "node_modules",
        "credentials",
        "certs",
        ".git/hooks/pre-commit",
    ] {
        assert!(!w.join(p).exists(), "{p} appeared");
    }
    assert!(w.join("notes.txt").is_symlink() && w.join("docs").is_symlink());
}

/// Every turn is charged once on the real CLI, whichever way it counts
/// `total_cost_usd` (per process on 2.1.197, per conversation from 2.1.332 on):
/// spawn → send → stop → resume → fork → stop → send, each turn costs what one raw
/// turn costs, and the fork is charged only its own turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_turn_is_charged_once_across_resume_and_fork() {
    let Some(env) = env().await else { return };
    let m = &env.manager;
    let (_, raw) = m
        .spawn(spawn_req(&env.work, "raw", "one raw turn"))
        .await
        .unwrap();
    let one = raw.cost_usd;
    assert!(one > 0.0);
    let mut costs = Vec::new();
    let (_, r) = m.spawn(spawn_req(&env.work, "c", "first")).await.unwrap();
    costs.push(("spawn", r.cost_usd));
    costs.push(("send", m.send("c", "second", None).await.unwrap().cost_usd));
    m.stop("c").await.unwrap();
    let (_, r) = m.resume("c", Some("third"), None).await.unwrap();
    costs.push(("resume", r.unwrap().cost_usd));
    let baseline = m.live("c").unwrap().info().cost_baseline.unwrap();
    m.stop("c").await.unwrap();
    let (_, r) = m
        .fork("c", "f", Some("fourth"), SessionOptions::default(), None)
        .await
        .unwrap();
    costs.push(("fork", r.unwrap().cost_usd));
    m.stop("f").await.unwrap();
    costs.push((
        "fork resumed",
        m.send("f", "fifth", None).await.unwrap().cost_usd,
    ));
    eprintln!("one raw turn ${one}; cost basis after resume {baseline:?}; turns {costs:?}");
    for (what, c) in &costs {
        assert!(close(*c, one), "{what}: ${c} vs one turn ${one}");
    }
    assert!(close(m.status("c").unwrap().total_cost_usd, 3.0 * one));
    assert!(close(m.status("f").unwrap().total_cost_usd, 2.0 * one));
    m.shutdown().await;
}

/// Three `cms send` from three shells at once: served one after the other, and the
/// next turn's conversation (the fake API's RECALL lists what the real CLI sent it)
/// holds every message, in order of arrival.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cli_sends_on_the_real_cli_keep_one_conversation() {
    // In process (--no-host): the lease's "waits its turn" line is in-process; the host queues sends in arrival order.
    let Some(env) = env().await else { return };
    let spawned = run_json(cms_command_in_process(
        &env,
        &["spawn", "--name", "race", "--prompt", "start", "--json"],
    ))
    .await;
    assert_eq!(spawned["response"]["text"], "echo: start", "{spawned}");
    // The first send holds the session for a while; each next one is started only once
    // the one before it says it waits in line, so the arrival order is known.
    let mut sends = Vec::new();
    for i in 0..3 {
        let msg = format!("SLOW {} msg-{i}", if i == 0 { 4000 } else { 100 });
        let mut cmd = cms_command_in_process(
            &env,
            &["send", "--name", "race", "--message", &msg, "--json"],
        );
        cmd.env("CMS_PROGRESS", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        if i == 0 {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let st = run_json(cms_command_in_process(
                    &env,
                    &["status", "--name", "race", "--json"],
                ))
                .await;
                if st["state"] == "busy" {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "never busy: {st}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            let waiting = tokio::time::timeout(Duration::from_secs(60), async {
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains("is busy in another cms command") {
                        return true;
                    }
                }
                false
            })
            .await
            .unwrap_or(false);
            assert!(waiting, "send {i} said it waits its turn");
        }
        // Keep draining stderr so the child never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        sends.push(child);
    }
    for (i, s) in sends.into_iter().enumerate() {
        let out = tokio::time::timeout(Duration::from_secs(120), s.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert_eq!(v["response"]["text"], format!("echo: msg-{i}"), "{v}");
    }
    let v = run_json(cms_command_in_process(
        &env,
        &["send", "--name", "race", "--message", "RECALL", "--json"],
    ))
    .await;
    let text = v["response"]["text"].as_str().unwrap();
    let order: Vec<usize> = ["start", "msg-0", "msg-1", "msg-2"]
        .iter()
        .map(|w| {
            text.find(w)
                .unwrap_or_else(|| panic!("{w} missing: {text}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {text}");
}

/// The real CLI runs each Bash tool in a process group of its own. However a session
/// ends — `cms kill` or `cms stop` from another shell, SIGTERM of its cms, `kill -9` of
/// its cms — no process of its tree is left a second later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_of_an_ended_session_survives_it_on_the_real_cli() {
    // In process (--no-host): SIGTERM or SIGKILL of a client does not end a host session.
    let Some(env) = env().await else { return };
    for how in ["kill", "stop", "sigterm", "sigkill"].iter() {
        let marker = support::unique_marker();
        let name = format!("tree-{how}");
        // A long-running tool (2.1.332 refuses a standalone long `sleep`); the marker is
        // an argument, so it is in the tool process's command line.
        let tool = format!("USE_TOOL Bash {{\"command\": \"perl -e 'sleep 600' {marker}\"}}");
        let mut cmd = cms_command_in_process(
            &env,
            &[
                "spawn",
                "--name",
                &name,
                "--allowed-tools",
                "Bash",
                "--prompt",
                "-",
            ],
        );
        // The prompt goes on stdin: only the tool's processes carry the marker.
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        {
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(tool.as_bytes()).await.unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while support::processes_with(&marker) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{how}: the tool never ran"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match *how {
            "kill" | "stop" => {
                let out = cms_command_in_process(&env, &[how, "--name", &name])
                    .output()
                    .await
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
            }
            // SAFETY: signalling our own child.
            "sigterm" => unsafe {
                libc::kill(child.id().unwrap() as i32, libc::SIGTERM);
            },
            _ => child.start_kill().unwrap(),
        }
        let left = tokio::task::spawn_blocking(move || {
            support::processes_left_after(&marker, Duration::from_secs(1))
        })
        .await
        .unwrap();
        let _ = child.start_kill();
        let _ = child.wait().await;
        eprintln!("{how}: {left} process(es) left after 1 s");
        assert_eq!(left, 0, "{how}: processes of the session survived it");
    }
}

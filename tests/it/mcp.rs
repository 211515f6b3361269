//! `cms mcp` driven by a real MCP client (rmcp's), on the simulator: every built-in
//! tool, plugin tools, list_changed when a plugin changes on disk, background work,
//! progress, and 10,000 malformed messages answered without the server dying.

use crate::support;

use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject, ProgressNotificationParam};
use rmcp::service::{NotificationContext, RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, ServiceExt};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::write_plugin;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

struct Env {
    dir: tempfile::TempDir,
}

impl Drop for Env {
    /// The test's host (if one started) stops with the test.
    fn drop(&mut self) {
        if self.dir.path().join("cms/host.json").exists() {
            let _ = std::process::Command::new(support::cms_bin())
                .args(["host", "stop"])
                .env("CMS_HOME", self.dir.path().join("cms"))
                .output();
        }
    }
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        Env { dir }
    }
    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }
    fn command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(support::cms_bin());
        c.arg("mcp")
            .current_dir(self.work())
            .env("CMS_HOME", self.dir.path().join("cms"))
            .env("CMS_CLAUDE_BIN", support::sim_bin())
            .env("HOME", self.dir.path())
            .env("CMS_CONFIG_DIR", self.dir.path().join("config"))
            .env("CMS_PLUGIN_TOOL_TIMEOUT", "2")
            .env("CMS_HOST_IDLE", "20s")
            .env_remove("CMS_NO_HOST")
            .env("RUST_LOG", "warn");
        if std::env::var_os("CMS_TEST_NO_HOST").is_some() {
            c.env("CMS_NO_HOST", "1");
        }
        c
    }
}

/// A client that reports list_changed and progress notifications.
#[derive(Clone)]
struct Watcher {
    changed: mpsc::UnboundedSender<()>,
    progress: mpsc::UnboundedSender<String>,
}

impl ClientHandler for Watcher {
    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        let _ = self.changed.send(());
    }
    async fn on_progress(&self, p: ProgressNotificationParam, _: NotificationContext<RoleClient>) {
        let _ = self.progress.send(p.message.unwrap_or_default());
    }
}

type Client = RunningService<RoleClient, Watcher>;

async fn connect(
    env: &Env,
) -> (
    Client,
    mpsc::UnboundedReceiver<()>,
    mpsc::UnboundedReceiver<String>,
) {
    connect_with(env.command()).await
}

/// [`connect`] with extra environment for the server.
async fn connect_with_env(
    env: &Env,
    vars: &[(&str, &str)],
) -> (
    Client,
    mpsc::UnboundedReceiver<()>,
    mpsc::UnboundedReceiver<String>,
) {
    let mut command = env.command();
    for (k, v) in vars {
        command.env(k, v);
    }
    connect_with(command).await
}

async fn connect_with(
    command: tokio::process::Command,
) -> (
    Client,
    mpsc::UnboundedReceiver<()>,
    mpsc::UnboundedReceiver<String>,
) {
    let (ctx, crx) = mpsc::unbounded_channel();
    let (ptx, prx) = mpsc::unbounded_channel();
    let transport = TokioChildProcess::new(command).unwrap();
    let client = Watcher {
        changed: ctx,
        progress: ptx,
    }
    .serve(transport)
    .await
    .unwrap();
    (client, crx, prx)
}

/// What a server wrote on stderr, collected as it comes (instead of leaking into
/// the test run), for tests that break a plugin on purpose and expect it said.
#[derive(Clone, Default)]
struct Stderr(std::sync::Arc<std::sync::Mutex<String>>);

impl Stderr {
    /// Wait until the server's stderr has a line with `text`.
    async fn wait_for(&self, text: &str) {
        let end = Instant::now() + Duration::from_secs(10);
        while !self.0.lock().unwrap().contains(text) {
            assert!(
                Instant::now() < end,
                "the server never said {text:?}; its stderr:\n{}",
                self.0.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// [`connect_with`], its stderr collected rather than printed.
async fn connect_quietly(
    command: tokio::process::Command,
) -> (Client, mpsc::UnboundedReceiver<()>, Stderr) {
    let (ctx, _crx) = mpsc::unbounded_channel();
    let (ptx, _prx) = mpsc::unbounded_channel();
    let (transport, stderr) = TokioChildProcess::builder(command)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = Stderr::default();
    if let Some(stderr) = stderr {
        let log = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut all = log.0.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
    }
    let client = Watcher {
        changed: ctx,
        progress: ptx,
    }
    .serve(transport)
    .await
    .unwrap();
    (client, _crx, log)
}

fn args(v: Value) -> JsonObject {
    match v {
        Value::Object(m) => m,
        _ => panic!("arguments must be an object"),
    }
}

async fn call(client: &Client, tool: &str, a: Value) -> CallToolResult {
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args(a)))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The JSON a successful call returned.
async fn ok(client: &Client, tool: &str, a: Value) -> Value {
    let r = call(client, tool, a).await;
    assert_ne!(r.is_error, Some(true), "{tool} failed: {}", text(&r));
    serde_json::from_str(&text(&r)).unwrap()
}

async fn fails(client: &Client, tool: &str, a: Value) -> String {
    let r = call(client, tool, a).await;
    assert_eq!(r.is_error, Some(true), "{tool} should fail: {}", text(&r));
    text(&r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builtin_tool_works_through_a_real_client() {
    let env = Env::new();
    let (client, _, _) = connect(&env).await;
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    for expected in [
        "spawn_session",
        "send_message",
        "resume_session",
        "pause_session",
        "fork_session",
        "stop_session",
        "kill_session",
        "get_session_status",
        "get_last_output",
        "list_sessions",
        "get_history",
        "delete_session",
        "delegate_task",
        "continue_task",
        "finish_task",
        "abort_task",
        "batch_spawn",
        "list_pending_approvals",
        "decide_approval",
        "session_report",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "missing {expected}: {names:?}"
        );
    }
    assert_eq!(names.len(), 20, "{names:?}");
    for t in &tools {
        assert_eq!(
            t.input_schema.get("type"),
            Some(&json!("object")),
            "{}",
            t.name
        );
    }
    let spawn = tools.iter().find(|t| t.name == "spawn_session").unwrap();
    assert_eq!(spawn.input_schema["required"], json!(["name", "prompt"]));

    let v = ok(
        &client,
        "spawn_session",
        json!({ "name": "a", "prompt": "hello" }),
    )
    .await;
    assert_eq!(v["response"]["text"], "echo: hello");
    assert_eq!(
        v["session"]["state"], "idle",
        "the session stays live in the server"
    );
    assert!(
        v["response"].get("usage").is_none() && v["response"]["cost_usd"].is_number(),
        "MCP results leave out the raw token usage: {v}"
    );
    let v = ok(
        &client,
        "send_message",
        json!({ "name": "a", "message": "RECALL" }),
    )
    .await;
    assert_eq!(v["response"]["text"], "recall: hello");
    assert_eq!(
        ok(&client, "get_last_output", json!({ "name": "a" })).await["output"],
        "recall: hello"
    );
    let v = ok(&client, "get_session_status", json!({ "name": "a" })).await;
    assert_eq!(v["interaction_count"], 2);
    // Nothing waits for a decision; a model may not approve unless the user said so.
    let v = ok(&client, "list_pending_approvals", json!({})).await;
    assert_eq!(v["approvals"], json!([]));
    let denied = fails(
        &client,
        "decide_approval",
        json!({ "name": "a", "allow": true }),
    )
    .await;
    assert!(denied.contains("CMS_MCP_MAY_APPROVE"), "{denied}");
    let none = fails(
        &client,
        "decide_approval",
        json!({ "name": "a", "allow": false }),
    )
    .await;
    assert!(none.contains("no tool call waiting"), "{none}");
    assert_eq!(
        ok(&client, "get_history", json!({ "name": "a", "limit": 1 })).await["history"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        ok(&client, "pause_session", json!({ "name": "a" })).await["state"],
        "paused"
    );
    assert!(fails(
        &client,
        "send_message",
        json!({ "name": "a", "message": "x" })
    )
    .await
    .contains("paused"));
    let v = ok(
        &client,
        "resume_session",
        json!({ "name": "a", "message": "back" }),
    )
    .await;
    assert_eq!(v["response"]["text"], "echo: back");
    let v = ok(
        &client,
        "fork_session",
        json!({ "name": "a", "new_name": "b", "message": "RECALL" }),
    )
    .await;
    assert_eq!(v["response"]["text"], "recall: hello | RECALL | back");
    assert_eq!(
        ok(&client, "stop_session", json!({ "name": "a" })).await["state"],
        "stopped"
    );
    assert_eq!(
        ok(&client, "kill_session", json!({ "name": "b" })).await["state"],
        "killed"
    );
    let v = ok(&client, "list_sessions", json!({ "status": "killed" })).await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(v["server_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        ok(&client, "delete_session", json!({ "name": "b" })).await["deleted"],
        true
    );

    std::fs::write(env.work().join(".env"), "S=1\n").unwrap();
    let task = r#"USE_TOOL Write {"file_path": ".env", "content": "X"}"#;
    let v = ok(
        &client,
        "delegate_task",
        json!({ "name": "d", "task": task, "max_cost": 1.0 }),
    )
    .await;
    assert_eq!(v["status"], "completed");
    assert_eq!(v["deniedBeforeExecution"][0]["tool"], "Write");
    assert_eq!(
        std::fs::read_to_string(env.work().join(".env")).unwrap(),
        "S=1\n"
    );
    let v = ok(
        &client,
        "continue_task",
        json!({ "name": "d", "message": "RECALL" }),
    )
    .await;
    assert!(
        v["response"]
            .as_str()
            .unwrap()
            .starts_with("recall: USE_TOOL Write"),
        "{v}"
    );
    assert_eq!(
        ok(&client, "finish_task", json!({ "name": "d" })).await["status"],
        "finished"
    );
    assert_eq!(
        ok(&client, "abort_task", json!({ "name": "d" })).await["status"],
        "aborted"
    );
    let v = ok(&client, "batch_spawn", json!({ "sessions": [
        { "name": "p1", "prompt": "one" }, { "name": "p2", "prompt": "CRASH" }, { "name": "p3", "prompt": "three" }
    ] })).await;
    let oks: Vec<bool> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["ok"].as_bool().unwrap())
        .collect();
    assert_eq!(oks, [true, false, true], "{v}");
    let v = ok(&client, "session_report", json!({ "top": 1 })).await;
    assert_eq!(v["count"], 5, "{v}");
    assert_eq!(v["most_expensive"].as_array().unwrap().len(), 1);

    // Tool errors say what is wrong; the server goes on.
    // ... in the words of this server, not of the CLI.
    let e = fails(
        &client,
        "send_message",
        json!({ "name": "ghost", "message": "x" }),
    )
    .await;
    assert!(
        e.contains("session 'ghost' not found; list_sessions") && !e.contains("cms list"),
        "{e}"
    );
    assert!(fails(&client, "spawn_session", json!({ "name": "x" }))
        .await
        .contains("missing field `prompt`"));
    assert!(fails(
        &client,
        "spawn_session",
        json!({ "name": "x", "prompt": "p", "modle": "opus" })
    )
    .await
    .contains("unknown field `modle`"));
    assert!(fails(
        &client,
        "delegate_task",
        json!({ "name": "y", "task": "t", "preset": "yolo" })
    )
    .await
    .contains("unknown preset 'yolo'"));
    // A tool the server does not have is a JSON-RPC error (-32602), not a failed call.
    match client
        .call_tool(CallToolRequestParams::new("no_such_tool").with_arguments(args(json!({}))))
        .await
    {
        Err(rmcp::ServiceError::McpError(e)) => {
            assert_eq!(e.code, rmcp::model::ErrorCode::INVALID_PARAMS);
            assert!(
                e.message.contains("Unknown tool: no_such_tool"),
                "{}",
                e.message
            );
        }
        other => panic!("an unknown tool should be a -32602 error: {other:?}"),
    }
    let dup =
        json!({ "sessions": [{ "name": "q", "prompt": "1" }, { "name": "q", "prompt": "2" }] });
    assert!(fails(&client, "batch_spawn", dup)
        .await
        .contains("the batch names 'q' twice"));
    let bad_timeout = json!({ "name": "t", "prompt": "p", "timeout": -1 });
    assert!(fails(&client, "spawn_session", bad_timeout)
        .await
        .contains("timeout must be"));
    assert!(fails(
        &client,
        "spawn_session",
        json!({ "name": "a", "prompt": "dup" })
    )
    .await
    .contains("already exists"));
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_never_passed_is_check_failed_through_mcp() {
    let env = Env::new();
    let (client, _, _) = connect(&env).await;
    let v = ok(
        &client,
        "delegate_task",
        json!({ "name": "c", "task": "make done.txt", "strategy": "correction_loop",
                "check": "test -f done.txt", "max_attempts": 2 }),
    )
    .await;
    assert_eq!(v["status"], "check_failed", "{v}");
    assert_eq!(v["checks"].as_array().unwrap().len(), 2, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("the check did not pass"),
        "{v}"
    );
    assert_eq!(v["canContinue"], true);
    let v = ok(
        &client,
        "continue_task",
        json!({ "name": "c", "message": "try again" }),
    )
    .await;
    assert_eq!(v["status"], "check_failed", "{v}");
    std::fs::write(env.work().join("done.txt"), "").unwrap();
    let v = ok(
        &client,
        "continue_task",
        json!({ "name": "c", "message": "check again" }),
    )
    .await;
    assert_eq!(v["status"], "completed", "{v}");
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_work_runs_in_the_background_and_reports_progress() {
    let env = Env::new();
    let (client, _, mut progress) = connect(&env).await;
    let started = Instant::now();
    let v = ok(
        &client,
        "delegate_task",
        json!({ "name": "bg", "task": "SLOW 1500 slow work", "background": true }),
    )
    .await;
    assert_eq!(v["status"], "started");
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "returned at once"
    );
    let mut done = Value::Null;
    for _ in 0..100 {
        let s = ok(&client, "get_session_status", json!({ "name": "bg" })).await;
        if s["background"]["status"] == "done" {
            done = s;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        done["background"]["result"]["status"], "completed",
        "{done}"
    );
    assert_eq!(done["background"]["result"]["response"], "echo: slow work");

    // A client that sends a progress token hears about tool uses and turns.
    let mut params = CallToolRequestParams::new("delegate_task").with_arguments(args(json!({
        "name": "fg", "task": r#"USE_TOOL Read {"file_path": "/etc/hostname"}"#
    })));
    let mut meta = rmcp::model::RequestMetaObject::default();
    meta.set_progress_token(rmcp::model::ProgressToken(
        rmcp::model::NumberOrString::Number(7),
    ));
    params.meta = Some(meta);
    let r = client.call_tool(params).await.unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let mut messages = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), progress.recv()).await
    {
        messages.push(m);
    }
    assert!(messages.iter().any(|m| m == "using Read"), "{messages:?}");
    assert!(
        messages.iter().any(|m| m.starts_with("turn done")),
        "{messages:?}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_changes_on_disk_update_the_tool_list() {
    let env = Env::new();
    // The user's config dir (a project's .cms would need `cms trust` first).
    let project = env.dir.path().join("config");
    std::fs::create_dir_all(&project).unwrap();
    let (client, mut changed, stderr) = connect_quietly(env.command()).await;
    let count = |tools: &[rmcp::model::Tool]| tools.iter().filter(|t| t.name == "hello").count();
    assert_eq!(count(&client.list_all_tools().await.unwrap()), 0);

    write_plugin(
        &project,
        "hello",
        r#"
        return { name = "hello", version = "1.0", tools = { {
          name = "hello", description = "Greets",
          input_schema = { type = "object", properties = { who = { type = "string" } }, required = { "who" } },
          handler = function(args) return { greeting = "hello " .. args.who, sessions = #cms.list() } end,
        } } }
    "#,
    );
    tokio::time::timeout(Duration::from_secs(5), changed.recv())
        .await
        .expect("tools/list_changed after adding a plugin");
    assert_eq!(count(&client.list_all_tools().await.unwrap()), 1);
    let v = ok(&client, "hello", json!({ "who": "there" })).await;
    assert_eq!(v, json!({ "greeting": "hello there", "sessions": 0 }));

    // A handler that throws is a tool error; the server goes on.
    write_plugin(
        &project,
        "hello",
        r#"
        return { name = "hello", tools = { { name = "hello", description = "Greets (v2)", handler = function() error("no greeting today") end } } }
    "#,
    );
    tokio::time::timeout(Duration::from_secs(5), changed.recv())
        .await
        .expect("list_changed after editing");
    let e = fails(&client, "hello", json!({})).await;
    assert!(
        e.contains("plugin hello tool hello failed") && e.contains("init.lua:2: no greeting today"),
        "{e}"
    );

    // A plugin that fails to load is left out, with the others still served.
    write_plugin(&project, "hello", "return { tools = {");
    tokio::time::timeout(Duration::from_secs(5), changed.recv())
        .await
        .expect("list_changed after breaking it");
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(count(&tools), 0);
    assert!(tools.iter().any(|t| t.name == "session_report"));
    stderr.wait_for("plugin 'hello' left out: ").await;
    std::fs::remove_dir_all(project.join("plugins/hello")).unwrap();
    ok(&client, "list_sessions", json!({})).await;

    // A handler that spins is stopped at the tool time limit; the server goes on.
    write_plugin(
        &project,
        "spin",
        r#"
        return { name = "spin", tools = { { name = "spin", description = "Never ends", handler = function() while true do end end } } }
    "#,
    );
    tokio::time::timeout(Duration::from_secs(5), changed.recv())
        .await
        .expect("list_changed after adding spin");
    let started = Instant::now();
    let e = fails(&client, "spin", json!({})).await;
    assert!(e.contains("ran past its time limit"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    ok(&client, "list_sessions", json!({})).await;
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_plugin_holds_up_nothing_else() {
    let env = Env::new();
    let config = env.dir.path().join("config");
    // A plugin whose file never finishes loading: left out, and the server still starts.
    write_plugin(
        &config,
        "hang",
        "local n = 0\nwhile true do n = n + 1 end\n",
    );
    write_plugin(
        &config,
        "spin",
        r#"return { name = "spin", tools = {
          { name = "spin", description = "Spins in a coroutine",
            handler = function() coroutine.wrap(function() while true do end end)() end },
          { name = "quick", description = "Answers", handler = function() return { ok = true } end },
        } }"#,
    );
    write_plugin(
        &config,
        "hello",
        r#"return { name = "hello", tools = { { name = "hello", description = "Greets",
          handler = function() return { greeting = "hello" } end } } }"#,
    );
    let mut command = env.command();
    command.env("CMS_PLUGIN_TOOL_TIMEOUT", "8");
    let (client, _, stderr) = connect_quietly(command).await;
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "spin"));
    assert!(!tools.iter().any(|t| t.name == "hang"));
    stderr.wait_for("plugin 'hang' left out: ").await;
    stderr.wait_for("did not finish loading").await;
    let client = std::sync::Arc::new(client);
    let spinning = {
        let c = client.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            (fails(&c, "spin", json!({})).await, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Other tools (of the same plugin too) and delegations answer while it spins.
    assert_eq!(
        ok(&client, "hello", json!({})).await,
        json!({ "greeting": "hello" })
    );
    assert_eq!(ok(&client, "quick", json!({})).await, json!({ "ok": true }));
    let v = ok(
        &client,
        "delegate_task",
        json!({ "name": "d", "task": "hello" }),
    )
    .await;
    assert_eq!(v["status"], "completed", "{v}");
    let v = ok(
        &client,
        "continue_task",
        json!({ "name": "d", "message": "again" }),
    )
    .await;
    assert_eq!(v["status"], "completed", "{v}");
    assert!(
        !spinning.is_finished(),
        "the spinning tool was still running"
    );
    let (e, took) = spinning.await.unwrap();
    assert!(e.contains("ran past its time limit of 8s"), "{e}");
    assert!(took >= Duration::from_secs(7), "{took:?}");
}

#[test]
fn huge_and_null_id_requests_are_answered_and_sigterm_ends_the_server() {
    use std::io::{BufRead, Write};
    let env = Env::new();
    // In process (--no-host): SIGTERM of `cms mcp` ends the server; in the host its
    // sessions live on (host::one_live_session_is_seen_by_the_cli_mcp_and_a_script).
    let mut child = std::process::Command::new(support::cms_bin())
        .arg("mcp")
        .env("CMS_NO_HOST", "1")
        .current_dir(env.work())
        .env("CMS_HOME", env.dir.path().join("cms"))
        .env("CMS_CLAUDE_BIN", support::sim_bin())
        .env("HOME", env.dir.path())
        .env("CMS_CONFIG_DIR", env.dir.path().join("config"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Replies arrive on a channel, so a request left unanswered fails the test.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = || -> Value {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a reply from cms mcp");
        serde_json::from_str(&line).unwrap()
    };
    let init = r#"{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    writeln!(stdin, "{init}").unwrap();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    assert_eq!(next()["id"], "init");
    // "id": null gets an error that carries "id": null.
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":null,"method":"ping"}}"#).unwrap();
    let v = next();
    assert!(v.as_object().unwrap().contains_key("id"), "{v}");
    assert_eq!(v["id"], Value::Null);
    assert_eq!(v["error"]["code"], -32600, "{v}");
    // A valid request of 17 MB gets an error reply with its id.
    let huge = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "get_session_status", "arguments": {"name": "x".repeat(17 << 20)}}});
    writeln!(stdin, "{huge}").unwrap();
    let v = next();
    assert_eq!(v["id"], 7, "{v}");
    assert_eq!(v["error"]["code"], -32600, "{v}");
    // A session, then SIGTERM with stdin still open: the server stops it and exits.
    let spawn = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
        "params": {"name": "spawn_session", "arguments": {"name": "m", "prompt": "hi"}}});
    writeln!(stdin, "{spawn}").unwrap();
    assert_eq!(next()["id"], 8);
    let status = std::process::Command::new(support::cms_bin())
        .args(["status", "--name", "m", "--json"])
        .env("CMS_HOME", env.dir.path().join("cms"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    let pid = v["pid"]
        .as_i64()
        .expect("the session is live in the server") as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("cms mcp did not exit on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(130));
    drop(stdin);
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: existence check only.
    assert_ne!(
        unsafe { libc::kill(pid, 0) },
        0,
        "the session's process is gone"
    );
}

/// A small deterministic generator of bad input.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_malformed_messages_get_errors_not_a_dead_server() {
    let env = Env::new();
    let mut child = env
        .command()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let init = r#"{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"fuzz","version":"1"}}}"#;
    stdin
        .write_all(
            format!("{init}\n{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}}\n")
                .as_bytes(),
        )
        .await
        .unwrap();

    let mut rng = Rng(0x9e3779b97f4a7c15);
    let valid = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_session_status","arguments":{"name":"x"}}}"#;
    let mut out = Vec::with_capacity(1 << 20);
    let n = 10_000;
    for i in 0..n {
        let line: Vec<u8> = match i % 10 {
            0 => (0..(rng.next() % 60 + 1)).map(|_| b"{}[]\":,abc 0189\\\x01\x7f"[(rng.next() % 18) as usize]).filter(|b| *b != b'\n').collect(),
            1 => valid.as_bytes()[..(rng.next() as usize % (valid.len() - 1)) + 1].to_vec(),
            2 => rng.pick(&["[]", "[1,2]", "42", "\"str\"", "null", "true", "[{\"jsonrpc\":\"2.0\"}]"]).as_bytes().to_vec(),
            3 => format!(r#"{{"jsonrpc":"{}","id":{i},"method":"ping"}}"#, rng.pick(&["1.0", "3", ""])).into_bytes(),
            4 => format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"{}"}}"#, rng.pick(&["tools/nope", "x", "initialize/again", "shutdown"])).into_bytes(),
            5 => format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{}}}"#, rng.pick(&["5", "\"s\"", "{\"name\":7}", "{\"name\":\"x\",\"arguments\":[1]}"])).into_bytes(),
            6 => format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"{}","arguments":{{"name":{}}}}}}}"#, rng.pick(&["get_session_status", "kill_session", "get_history"]), rng.pick(&["5", "null", "[]", "{}"])).into_bytes(),
            7 => format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"{}","arguments":{{}}}}}}"#, rng.pick(&["spawn_session", "delegate_task", "batch_spawn", "ghost_tool"])).into_bytes(),
            8 => vec![0xff, 0xfe, b'{', 0xc3, 0x28],
            _ => format!(r#"{{"jsonrpc":"2.0","id":{{"nested":{i}}},"method":"ping"}}"#).into_bytes(),
        };
        out.extend_from_slice(&line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":\"final\",\"method\":\"ping\"}\n");
    let writer = tokio::spawn(async move {
        stdin.write_all(&out).await.unwrap();
        stdin.flush().await.unwrap();
        stdin
    });
    let mut errors = 0;
    let mut tool_errors = 0;
    let mut answered = std::collections::HashSet::new();
    let mut final_seen = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let Ok(line) = tokio::time::timeout_at(deadline.into(), lines.next_line()).await else {
            let missing: Vec<u64> = (0..n as u64)
                .filter(|i| matches!(i % 10, 3..=7) && !answered.contains(i))
                .collect();
            panic!("no more answers after {errors} errors and {tool_errors} tool errors; unanswered: {missing:?}");
        };
        let line = line.unwrap();
        let Some(line) = line else {
            panic!("the server died after {errors} errors")
        };
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not JSON-RPC on stdout ({e}): {line}"));
        // (Requests are handled concurrently: slow tool calls may answer after the final ping.)
        assert_eq!(v["jsonrpc"], "2.0", "{line}");
        if v["id"] == "final" {
            assert_eq!(v["result"], json!({}));
            final_seen = true;
        }
        if v["id"] == "final" {
            if errors + tool_errors == n {
                break;
            }
            continue;
        }
        if v["id"] == "init" {
            continue;
        }
        if let Some(id) = v["id"].as_u64() {
            answered.insert(id);
        }
        if v.get("error").is_some() {
            errors += 1;
        } else if v["result"]["isError"] == true {
            tool_errors += 1;
        } else {
            panic!("a malformed message succeeded: {line}");
        }
        if final_seen && errors + tool_errors == n {
            break;
        }
    }
    let missing: Vec<u64> = (0..n as u64)
        .filter(|i| matches!(i % 10, 3..=7) && !answered.contains(i))
        .collect();
    assert!(missing.is_empty(), "no answer to {missing:?}");
    assert_eq!(
        errors + tool_errors,
        n,
        "one answer per malformed message ({errors} JSON-RPC errors, {tool_errors} tool errors)"
    );
    let _stdin = writer.await.unwrap();
}

/// Issue 10.4: cms's own MCP server is no way out. Sessions started over MCP are
/// guarded; wide permission modes and `safety: false` are refused with the reason;
/// `on_spawn` in the user's policy sees who asks and may refuse; a server started
/// inside a guarded session starts nothing wider than its parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_server_is_no_way_out_of_the_guard() {
    let env = Env::new();
    let (client, _, _) = connect(&env).await;
    for mode in ["acceptEdits", "bypassPermissions", "dontAsk"] {
        let e = fails(
            &client,
            "spawn_session",
            json!({ "name": "wide", "prompt": "hi", "permission_mode": mode }),
        )
        .await;
        assert!(e.contains(mode) && e.contains("refused"), "{e}");
    }
    let e = fails(
        &client,
        "delegate_task",
        json!({ "name": "unsafe", "task": "hi", "safety": false }),
    )
    .await;
    assert!(e.contains("safety: false"), "{e}");
    let e = fails(
        &client,
        "spawn_session",
        json!({ "name": "pre", "prompt": "hi", "allowed_tools": ["Bash"] }),
    )
    .await;
    assert!(e.contains("Bash"), "{e}");
    // A plain spawn is guarded (preset edit): the net lets a Write to src/ through
    // and refuses one to .env before it runs.
    let v = ok(
        &client,
        "spawn_session",
        json!({ "name": "plain", "prompt": "USE_TOOL Write {\"file_path\": \"src/ok.txt\", \"content\": \"x\"}\nUSE_TOOL Write {\"file_path\": \".env\", \"content\": \"x\"}" }),
    )
    .await;
    assert!(env.work().join("src/ok.txt").exists(), "{v}");
    assert!(!env.work().join(".env").exists(), "{v}");
    client.cancel().await.unwrap();

    // on_spawn in the user's policy sees who asks.
    let config = env.dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let builtin = include_str!("../../scripts/safety.lua");
    std::fs::write(
        config.join("safety.lua"),
        builtin.replace(
            "return M",
            "function M.on_spawn(spec, ctx)\n  if ctx.caller == 'mcp' and spec.name == 'friday' then return 'deny', 'no spawning on Fridays' end\nend\nreturn M",
        ),
    )
    .unwrap();
    let (client, _, _) = connect(&env).await;
    let e = fails(
        &client,
        "spawn_session",
        json!({ "name": "friday", "prompt": "hi" }),
    )
    .await;
    assert!(e.contains("no spawning on Fridays"), "{e}");
    client.cancel().await.unwrap();
    std::fs::remove_file(config.join("safety.lua")).unwrap();

    // Inside a read-only guarded session: a full delegation is lowered to read-only.
    let (client, _, _) = connect_with_env(
        &env,
        &[("CMS_GUARD", r#"{"preset":"read-only","safety":true}"#)],
    )
    .await;
    let v = ok(
        &client,
        "delegate_task",
        json!({ "name": "inner", "task": "USE_TOOL Write {\"file_path\": \"src/a.txt\", \"content\": \"x\"}", "preset": "full" }),
    )
    .await;
    assert_eq!(v["preset"], "read-only", "{v}");
    assert!(!env.work().join("src/a.txt").exists(), "{v}");
    client.cancel().await.unwrap();
}

/// Inside a guarded session, cms's MCP tools steer only sessions at least as guarded:
/// an unguarded session the user made cannot be sent, resumed, forked or continued by
/// it. The user's own (unguarded) `cms mcp` steers it as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_session_cannot_steer_a_less_guarded_one() {
    let env = Env::new();
    let (top, _, _) = connect(&env).await;
    // The user's window: its own spawn is guarded (edit) and it steers anything.
    ok(
        &top,
        "spawn_session",
        json!({ "name": "guarded", "prompt": "hi" }),
    )
    .await;
    ok(
        &top,
        "send_message",
        json!({ "name": "guarded", "message": "more" }),
    )
    .await;
    top.cancel().await.unwrap();
    // An unguarded session, made by the user from the shell.
    let out = std::process::Command::new(support::cms_bin())
        .args(["spawn", "--name", "free", "--prompt", "hi"])
        .env("CMS_HOST_IDLE", "20s")
        .current_dir(env.work())
        .env("CMS_HOME", env.dir.path().join("cms"))
        .env("CMS_CLAUDE_BIN", support::sim_bin())
        .env("HOME", env.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let guard = r#"{"preset":"edit","safety":true}"#;
    let (inner, _, _) = connect_with_env(&env, &[("CMS_GUARD", guard)]).await;
    for (tool, args) in [
        (
            "send_message",
            json!({ "name": "free", "message": "write .env" }),
        ),
        (
            "resume_session",
            json!({ "name": "free", "message": "write .env" }),
        ),
        (
            "fork_session",
            json!({ "name": "free", "new_name": "free2", "message": "x" }),
        ),
    ] {
        let e = fails(&inner, tool, args).await;
        assert!(
            e.contains("refused to steer 'free'") && e.contains("not guarded"),
            "{tool}: {e}"
        );
    }
    // A session at least as guarded may be steered.
    ok(
        &inner,
        "send_message",
        json!({ "name": "guarded", "message": "again" }),
    )
    .await;
    inner.cancel().await.unwrap();
}

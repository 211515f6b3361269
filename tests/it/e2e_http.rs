//! End-to-end: the real Claude Code as an MCP client of the host over streamable
//! HTTP (`cms serve --http`), registered the way a user does it (`cms setup --http`),
//! against a fake Anthropic API that scripts the model's tool calls. The sessions
//! the host starts run on the simulator: the MCP client is what is under test.
//!
//! Claude Code 2.1.238+ asks `server/discover` first and then speaks 2026-07-28
//! (no `initialize`, no MCP session); older ones `initialize` a 2025-11-25 session.
//! The host's debug log shows which, and the test checks the right one was used.

use crate::support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::real::{real_env, RealEnv};
use support::spawn_req;

/// The first Claude Code that probes `server/discover` before `initialize`.
const DISCOVERS_FROM: (u32, u32, u32) = (2, 1, 238);

/// The version of a `claude` executable (`2.1.332 (Claude Code)`).
fn version_of(claude: &Path) -> (u32, u32, u32) {
    let out = Command::new(claude).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next())
}

/// A host of its own home serving HTTP on a port it picks, its sessions on the
/// simulator; stopped (and waited for) on drop.
struct Host {
    home: PathBuf,
    child: Child,
    log: PathBuf,
    /// `127.0.0.1:PORT`.
    at: String,
}

impl Host {
    fn start(home: PathBuf, log: PathBuf) -> Host {
        let child = Command::new(support::cms_bin())
            .args(["serve", "--http", "127.0.0.1:0"])
            .env("CMS_HOME", &home)
            .env("CMS_CLAUDE_BIN", support::sim_bin())
            .env("RUST_LOG", "info,rmcp=debug")
            .env("CMS_HOST_IDLE", "120s")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut host = Host {
            home,
            child,
            log,
            at: String::new(),
        };
        let mut at = String::new();
        let up = support::eventually(Duration::from_secs(30), || {
            let v = host.cms(&["host", "status", "--json"]);
            at = v["http"].as_str().unwrap_or_default().to_string();
            !at.is_empty()
        });
        assert!(up, "the host did not serve HTTP: {}", host.log_text());
        host.at = at;
        host
    }

    /// `cms ARGS --json`-style output of a command on this host's home, as JSON.
    fn cms(&self, args: &[&str]) -> Value {
        let out = Command::new(support::cms_bin())
            .args(args)
            .env("CMS_HOME", &self.home)
            .env("CMS_CLAUDE_BIN", support::sim_bin())
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new(support::cms_bin())
            .args(["host", "stop"])
            .env("CMS_HOME", &self.home)
            .output();
        if !support::eventually(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        }) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `cms setup --http` registers the host for the real Claude Code (user scope, a
/// temporary HOME); `claude mcp list` connects to it over HTTP; then the (fake)
/// model calls `mcp__cms__spawn_session` and `mcp__cms__list_sessions` over HTTP,
/// the session exists in the host, and the tool results reach the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_drives_the_host_over_http() {
    let Some(env) = real_env(Duration::from_secs(90)).await else {
        return;
    };
    let claude = support::real_claude().unwrap();
    let version = version_of(&claude);
    let root = env.dir.path().to_path_buf();
    let host = Host::start(root.join("inner-cms"), root.join("host.log"));

    // Registered as a user would: HOME is the real CLI's, CMS_HOME the host's.
    setup_http(&env, &host, "--global");
    let url = format!("http://{}/mcp", host.at);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(env.home.join(".claude.json")).unwrap())
            .unwrap();
    assert_eq!(config["mcpServers"]["cms"]["url"], url.as_str(), "{config}");

    // Claude Code's own health check connects with the registered token.
    let listed = Command::new(&claude)
        .args(["mcp", "list"])
        .current_dir(&env.work)
        .envs(env.api.claude_env(&env.home))
        .output()
        .unwrap();
    let listed = format!(
        "{}{}",
        String::from_utf8_lossy(&listed.stdout),
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        listed.contains(&format!("cms: {url} (HTTP)")) && listed.contains("Connected"),
        "claude mcp list:\n{listed}\nhost log:\n{}",
        host.log_text()
    );

    // The model's tool calls, over HTTP, from a session of the outer engine on the
    // real CLI (no --mcp-config: the server comes from ~/.claude.json).
    let mut req = spawn_req(
        &env.work,
        "outer",
        r#"USE_TOOL mcp__cms__spawn_session {"name": "from-http", "prompt": "hello over http"}"#,
    );
    req.options.allowed_tools = vec![
        "mcp__cms__spawn_session".into(),
        "mcp__cms__list_sessions".into(),
    ];
    let (_, r) = env.manager.spawn(req).await.unwrap();
    assert_eq!(
        r.tools_used,
        vec!["mcp__cms__spawn_session"],
        "{r:?}\nhost log:\n{}",
        host.log_text()
    );
    assert!(
        r.permission_denials.is_empty(),
        "{:?}",
        r.permission_denials
    );
    let spawned = env.api.requests.lock().unwrap().last().unwrap().to_string();
    assert!(
        spawned.contains("echo: hello over http"),
        "the spawn's answer reached the model: {spawned}"
    );
    let r = env
        .manager
        .send("outer", "USE_TOOL mcp__cms__list_sessions {}", None)
        .await
        .unwrap();
    assert_eq!(r.tools_used, vec!["mcp__cms__list_sessions"], "{r:?}");
    let listed = env.api.requests.lock().unwrap().last().unwrap().to_string();
    assert!(
        listed.contains("from-http") && listed.contains("server_version"),
        "list_sessions' result reached the model: {listed}"
    );
    env.manager.shutdown().await;

    // The session is the host's: every other client sees it.
    let list = host.cms(&["list", "--json"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap_or_else(|| panic!("cms list --json: {list}"))
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["from-http"], "{list}");

    // Which revision the CLI spoke (rmcp logs each request at debug).
    let log = host.log_text();
    if version >= DISCOVERS_FROM {
        assert!(
            log.contains("request=DiscoverRequest") && !log.contains("create new session"),
            "{version:?} probes server/discover and needs no MCP session:\n{log}"
        );
    } else {
        assert!(
            log.contains("create new session")
                && log.contains("ProtocolVersion(\"2025-11-25\")")
                && !log.contains("request=DiscoverRequest"),
            "{version:?} initializes a 2025-11-25 session:\n{log}"
        );
    }
    assert!(log.contains("request=CallToolRequest"), "{log}");
}

/// `cms setup --local --http` keeps the token out of `./.mcp.json` (teams commit it)
/// and writes `Bearer ${CMS_HTTP_TOKEN}`: the real Claude Code fills it in from its
/// environment and connects; without the variable it says it is missing and the
/// host refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_project_scope_takes_the_token_from_the_environment() {
    let Some(env) = real_env(Duration::from_secs(60)).await else {
        return;
    };
    let claude = support::real_claude().unwrap();
    let root = env.dir.path().to_path_buf();
    let host = Host::start(root.join("inner-cms"), root.join("host.log"));
    setup_http(&env, &host, "--local");
    let token = std::fs::read_to_string(host.home.join("http-token")).unwrap();
    let text = std::fs::read_to_string(env.work.join(".mcp.json")).unwrap();
    assert!(!text.contains(token.trim()), "{text}");
    // The user approved the project's server once (what `/mcp` records).
    let work = env.work.display().to_string();
    let approved = serde_json::json!({ "projects": { work: {
        "enabledMcpjsonServers": ["cms"], "hasTrustDialogAccepted": true
    } } });
    std::fs::write(env.home.join(".claude.json"), approved.to_string()).unwrap();
    let mcp_list = |token: Option<&str>| {
        let mut cmd = Command::new(&claude);
        cmd.args(["mcp", "list"])
            .current_dir(&env.work)
            .envs(env.api.claude_env(&env.home))
            .env_remove("CMS_HTTP_TOKEN");
        if let Some(t) = token {
            cmd.env("CMS_HTTP_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let with = mcp_list(Some(token.trim()));
    let url = format!("http://{}/mcp", host.at);
    assert!(
        with.contains(&format!("cms: {url} (HTTP)")) && with.contains("Connected"),
        "with CMS_HTTP_TOKEN:\n{with}"
    );
    let without = mcp_list(None);
    assert!(
        without.contains("Missing environment variables: CMS_HTTP_TOKEN")
            && !without.contains("Connected"),
        "without CMS_HTTP_TOKEN:\n{without}"
    );
}

/// `cms setup SCOPE --http` as the user of `env` would run it, for `host`.
fn setup_http(env: &RealEnv, host: &Host, scope: &str) {
    let out = Command::new(support::cms_bin())
        .args(["setup", scope, "--http"])
        .current_dir(&env.work)
        .env("HOME", &env.home)
        .env("CMS_HOME", &host.home)
        .env("CMS_CLAUDE_BIN", support::sim_bin())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

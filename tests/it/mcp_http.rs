//! MCP over streamable HTTP (`cms serve --http`) in both revisions: plugin tools
//! and `tools/list_changed` reach a 2025-11-25 session's stream and a 2026-07-28
//! `subscriptions/listen` stream; `server/discover` answers without a session.

use crate::support::http::{mcp_session, request, Stream};
use crate::support::{write_plugin, Cms};
use serde_json::{json, Value};
use std::time::Duration;

const PLUGIN: &str = r#"
return { name = "hello", version = "1.0", tools = { {
  name = "hello", description = "Greets",
  input_schema = { type = "object", properties = { who = { type = "string" } }, required = { "who" } },
  handler = function(args) return { greeting = "hello " .. args.who } end,
} } }
"#;

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "cms-test", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}
    })
}

/// A 2026-07-28 request: no session, everything in the request itself.
fn stateless(host: &crate::support::http::HttpHost, method: &str, mut params: Value) -> Value {
    params["_meta"] = meta();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let auth = format!("Bearer {}", host.token);
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
        ("Mcp-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", method),
    ];
    // A call names its tool (a read, its resource) in a header too.
    if let Some(name) = params["name"].as_str().or(params["uri"].as_str()) {
        headers.push(("Mcp-Name", name));
    }
    let a = request(
        "POST",
        &format!("http://{}/mcp", host.addr),
        &headers,
        Some(&body),
    );
    assert!(
        a.status == 200 || a.body.contains("\"error\""),
        "{method}: {}",
        a.body
    );
    a.body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .find_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .unwrap_or_else(|| panic!("{method}: no message in {}", a.body))
}

#[test]
fn both_revisions_hear_of_plugin_tools_as_they_change() {
    let cms = Cms::new();
    let config = cms.dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let config_env = config.display().to_string();
    let host = cms.serve_http_with(&[], &[("CMS_CONFIG_DIR", &config_env)]);
    let url = format!("http://{}/mcp", host.addr);
    let auth = format!("Bearer {}", host.token);

    // 2026-07-28: discover, then listen.
    let found = stateless(&host, "server/discover", json!({}));
    let versions = found["result"]["supportedVersions"].to_string();
    assert!(
        versions.contains("2026-07-28") && versions.contains("2025-11-25"),
        "{found}"
    );
    assert_eq!(
        found["result"]["capabilities"]["tools"]["listChanged"], true,
        "{found}"
    );
    let mut params = json!({"notifications": {"toolsListChanged": true}});
    params["_meta"] = meta();
    let listen =
        json!({"jsonrpc": "2.0", "id": 9, "method": "subscriptions/listen", "params": params});
    let listening = Stream::open(
        "POST",
        &url,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
            ("Mcp-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "subscriptions/listen"),
        ],
        Some(&listen.to_string()),
    );
    assert_eq!(listening.status, 200);
    listening
        .next("acknowledged", Duration::from_secs(5))
        .expect("the subscription is acknowledged");

    // 2025-11-25: a session and its stream.
    let id = mcp_session(&host);
    let session_stream = Stream::open(
        "GET",
        &url,
        &[
            ("Authorization", &auth),
            ("Accept", "text/event-stream"),
            ("Mcp-Session-Id", &id),
            ("Mcp-Protocol-Version", "2025-11-25"),
        ],
        None,
    );
    assert_eq!(session_stream.status, 200);

    let tools = stateless(&host, "tools/list", json!({}));
    assert!(!tools.to_string().contains("\"hello\""), "{tools}");
    write_plugin(&config, "hello", PLUGIN);
    let heard = listening.next("notifications/tools/list_changed", Duration::from_secs(10));
    assert!(heard.is_some(), "2026-07-28 listener told");
    let heard = session_stream.next("notifications/tools/list_changed", Duration::from_secs(10));
    assert!(heard.is_some(), "2025-11-25 session told");

    let tools = stateless(&host, "tools/list", json!({}));
    assert!(tools.to_string().contains("\"hello\""), "{tools}");
    let called = stateless(
        &host,
        "tools/call",
        json!({"name": "hello", "arguments": {"who": "web"}}),
    );
    assert_eq!(
        called["result"]["structuredContent"],
        json!({"greeting": "hello web"}),
        "{called}"
    );
}

/// Sessions are resources: listed, read with their history, and an unknown URI is
/// -32602 carrying the URI.
#[test]
fn sessions_are_resources() {
    let cms = Cms::new();
    let host = cms.serve_http(&[]);
    cms.ok(&["spawn", "--name", "r1", "--prompt", "remember the tide"]);
    let listed = stateless(&host, "resources/list", json!({}));
    let resources = listed["result"]["resources"].as_array().unwrap();
    assert!(
        resources
            .iter()
            .any(|r| r["uri"] == "cms://sessions/r1" && r["mimeType"] == "application/json"),
        "{listed}"
    );
    let read = stateless(&host, "resources/read", json!({"uri": "cms://sessions/r1"}));
    let text = read["result"]["contents"][0]["text"].as_str().unwrap();
    let body: Value = serde_json::from_str(text).unwrap();
    assert_eq!(body["session"]["name"], "r1");
    assert!(
        body["history"].to_string().contains("remember the tide"),
        "{body}"
    );
    let missing = stateless(
        &host,
        "resources/read",
        json!({"uri": "cms://sessions/nope"}),
    );
    assert_eq!(missing["error"]["code"], -32602, "{missing}");
    assert_eq!(missing["error"]["data"]["uri"], "cms://sessions/nope");
    assert!(missing["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no session 'nope'"));
}

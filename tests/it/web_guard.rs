//! The gate of the host's HTTP face (`cms serve --http`): the token, the names it
//! answers to, its limits, the login cookie, and who asks from this machine.

use crate::support::http::{call_tool, mcp_session, request};
use crate::support::Cms;
use serde_json::json;

fn init_body() -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}})
    .to_string()
}

const JSON: (&str, &str) = ("Content-Type", "application/json");
const ACCEPT: (&str, &str) = ("Accept", "application/json, text/event-stream");

/// Without the token, with a wrong one, with a foreign `Host` or `Origin`: refused,
/// each with a message that says what to do. With the token: served.
#[test]
fn mcp_over_http_needs_the_token_and_its_own_names() {
    let cms = Cms::new();
    let host = cms.serve_http(&[]);
    let url = format!("http://{}/mcp", host.addr);
    let body = init_body();
    let good = format!("Bearer {}", host.token);

    let a = request("POST", &url, &[JSON, ACCEPT], Some(&body));
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(a.header("www-authenticate"), Some("Bearer"));
    assert!(a.json()["error"]
        .as_str()
        .unwrap()
        .contains("cms serve --print-token"));

    let wrong = format!("Bearer {}", "0".repeat(64));
    let a = request(
        "POST",
        &url,
        &[JSON, ACCEPT, ("Authorization", &wrong)],
        Some(&body),
    );
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.body.contains("wrong token"), "{}", a.body);

    let auth = ("Authorization", good.as_str());
    let a = request(
        "POST",
        &url,
        &[JSON, ACCEPT, auth, ("Host", "evil.example:80")],
        Some(&body),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.body.contains("DNS rebinding"), "{}", a.body);

    let a = request(
        "POST",
        &url,
        &[JSON, ACCEPT, auth, ("Origin", "http://evil.example")],
        Some(&body),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.body.contains("other sites"), "{}", a.body);
    assert_eq!(a.header("access-control-allow-origin"), None);

    let a = request("POST", &url, &[JSON, ACCEPT, auth], Some(&body));
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.body.contains("\"serverInfo\":{\"name\":\"cms\""),
        "{}",
        a.body
    );
    // The same names as the client used: localhost works too.
    let local = url.replace("127.0.0.1", "localhost");
    let a = request("POST", &local, &[JSON, ACCEPT, auth], Some(&body));
    assert_eq!(a.status, 200, "{}", a.body);
}

/// After 20 wrong tokens in a minute an address is refused even with the right one.
#[test]
fn wrong_tokens_lock_the_address_out() {
    let cms = Cms::new();
    let host = cms.serve_http(&[]);
    let url = format!("http://{}/mcp", host.addr);
    for _ in 0..20 {
        let a = request(
            "POST",
            &url,
            &[JSON, ("Authorization", "Bearer nope")],
            Some("{}"),
        );
        assert_eq!(a.status, 401);
    }
    let good = format!("Bearer {}", host.token);
    let a = request(
        "POST",
        &url,
        &[JSON, ACCEPT, ("Authorization", &good)],
        Some(&init_body()),
    );
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.body.contains("wrong tokens"), "{}", a.body);
}

/// Over its rate an address gets 429 with Retry-After; a body over 4 MiB gets 413.
#[test]
fn the_rate_and_size_limits_answer_clearly() {
    let cms = Cms::new();
    let host = cms.serve_http(&["--http-rate", "5"]);
    let url = format!("http://{}/mcp", host.addr);
    let good = format!("Bearer {}", host.token);
    let auth = ("Authorization", good.as_str());
    let big = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{{\"x\":\"{}\"}}}}",
        "a".repeat(5 << 20)
    );
    let a = request("POST", &url, &[JSON, ACCEPT, auth], Some(&big));
    assert_eq!(a.status, 413, "{}", &a.body[..a.body.len().min(300)]);
    let statuses: Vec<u16> = (0..15)
        .map(|_| request("POST", &url, &[JSON, ACCEPT, auth], Some(&init_body())).status)
        .collect();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        statuses[..8].iter().all(|s| *s == 200),
        "a burst of twice the rate passes: {statuses:?}"
    );
    assert!(refused >= 3, "{statuses:?}");
    let a = request("POST", &url, &[JSON, ACCEPT, auth], Some(&init_body()));
    assert_eq!(a.header("retry-after"), Some("1"));
    assert!(a.body.contains("--http-rate"), "{}", a.body);
}

/// The login page takes the token once and sets a private cookie; the cookie opens
/// the dashboard (not /mcp), changes need the page's own Origin, logout ends it.
#[test]
fn the_login_cookie_opens_the_dashboard_only() {
    let cms = Cms::new();
    let host = cms.serve_http(&[]);
    let base = format!("http://{}", host.addr);
    let form = ("Content-Type", "application/x-www-form-urlencoded");

    let a = request("GET", &format!("{base}/"), &[], None);
    assert_eq!((a.status, a.header("location")), (303, Some("/login")));
    let a = request("GET", &format!("{base}/login"), &[], None);
    assert!(
        a.status == 200 && a.body.contains("name=\"token\""),
        "{}",
        a.body
    );

    let a = request(
        "POST",
        &format!("{base}/login"),
        &[form],
        Some("token=nope"),
    );
    assert_eq!(a.status, 401);
    assert!(a.body.contains("That is not the token"), "{}", a.body);

    let a = request(
        "POST",
        &format!("{base}/login"),
        &[form],
        Some(&format!("token={}", host.token)),
    );
    assert_eq!(
        (a.status, a.header("location")),
        (303, Some("/")),
        "{}",
        a.body
    );
    let set = a.header("set-cookie").unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains(&host.token), "the cookie is not the token");
    let cookie = set.split(';').next().unwrap().to_string();
    let with = ("Cookie", cookie.as_str());

    let a = request("GET", &format!("{base}/"), &[with], None);
    assert_eq!(a.status, 200, "{}", a.body);
    let a = request(
        "POST",
        &format!("{base}/mcp"),
        &[with, JSON, ACCEPT],
        Some(&init_body()),
    );
    assert_eq!(a.status, 401, "the cookie does not open /mcp: {}", a.body);
    let a = request("POST", &format!("{base}/logout"), &[with], None);
    assert_eq!(
        a.status, 403,
        "a change without the page's Origin: {}",
        a.body
    );
    let origin = ("Origin", base.as_str());
    let a = request("POST", &format!("{base}/logout"), &[with, origin], None);
    assert_eq!((a.status, a.header("location")), (303, Some("/login")));
    let a = request("GET", &format!("{base}/"), &[with], None);
    assert_eq!(a.status, 303, "logged out");
}

/// Only loopback unless --allow-remote; a port in use is named; the token is made
/// once, private, and printed the same each time.
#[test]
fn serve_http_says_what_is_wrong_with_its_address() {
    let cms = Cms::new();
    let out = cms.run(&["serve", "--http", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("not a loopback address") && err.contains("--allow-remote"),
        "{err}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = cms.run(&["serve", "--http", &addr]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_string()
            .contains("another program listens there"),
        "{}",
        String::from_utf8_lossy(&out.stderr).to_string()
    );

    let one = cms.ok(&["serve", "--print-token"]);
    assert_eq!(one, cms.ok(&["serve", "--print-token"]));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cms.dir.path().join("cms/http-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// MCP over HTTP reaches the host's sessions: one spawned by the CLI is listed there,
/// one spawned there is in `cms list`; `cms host status` names the address.
#[test]
fn mcp_over_http_steers_the_same_sessions_as_the_cli() {
    let cms = Cms::new();
    let host = cms.serve_http(&[]);
    cms.ok(&["spawn", "--name", "from-cli", "--prompt", "hi"]);
    let id = mcp_session(&host);
    let listed = call_tool(&host, &id, "list_sessions", json!({})).unwrap();
    assert!(listed.to_string().contains("from-cli"), "{listed}");
    call_tool(
        &host,
        &id,
        "spawn_session",
        json!({"name": "from-http", "prompt": "hello"}),
    )
    .unwrap();
    let list = cms.json(&["list"]);
    assert!(list.to_string().contains("from-http"), "{list}");
    let status = cms.ok(&["host", "status"]);
    assert!(status.contains(&host.addr), "{status}");
}

/// A process inside a guarded session that found the token is still held to its
/// guard over HTTP: what it starts through MCP is guarded, and the dashboard
/// changes nothing for it. The same calls from outside start an unguarded session.
#[test]
fn a_client_inside_a_guarded_session_is_held_to_its_guard() {
    let cms = Cms::new();
    if !cms.host_mode() {
        return;
    }
    let host = cms.serve_http(&[]);
    let probe = format!(
        r#"U=http://{addr}/mcp; A="Authorization: Bearer {token}"
H1="Content-Type: application/json"; H2="Accept: application/json, text/event-stream"
curl -s -D h.txt -o /dev/null -X POST $U -H "$A" -H "$H1" -H "$H2" -d '{init}'
S=$(grep -i '^mcp-session-id' h.txt | cut -d' ' -f2 | tr -d '\r')
V="Mcp-Protocol-Version: 2025-11-25"
curl -s -o /dev/null -X POST $U -H "$A" -H "$H1" -H "$H2" -H "Mcp-Session-Id: $S" -H "$V" -d '{{"jsonrpc":"2.0","method":"notifications/initialized"}}'
curl -s -X POST $U -H "$A" -H "$H1" -H "$H2" -H "Mcp-Session-Id: $S" -H "$V" -d '{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"send_message","arguments":{{"name":"free","message":"hi"}}}}}}' > mcp.txt
curl -s -X POST http://{addr}/api/approvals/1 -H "$A" -H "$H1" -d '{{"verdict":"allow"}}' > web.txt
"#,
        addr = host.addr,
        token = host.token,
        init = init_body()
    );
    std::fs::write(cms.work().join("probe.sh"), probe).unwrap();
    cms.ok(&["spawn", "--name", "free", "--prompt", "hi"]);
    let task = "USE_TOOL Bash {\"command\": \"sh probe.sh; true\"}";
    let (v, _) = cms.delegate(&["--name", "g", "--task", task, "--preset", "supervised"]);
    assert_eq!(v["status"], "completed", "{v}");
    let web = std::fs::read_to_string(cms.work().join("web.txt")).unwrap();
    assert!(web.contains("inside guarded session 'g'"), "{web}");
    // 'free' (started by the user, unguarded) may not be steered from inside 'g'.
    let mcp = std::fs::read_to_string(cms.work().join("mcp.txt")).unwrap();
    assert!(mcp.contains("cms refused to steer 'free'"), "{mcp}");
    assert_eq!(cms.json(&["status", "free"])["interaction_count"], 1);

    let id = mcp_session(&host);
    call_tool(
        &host,
        &id,
        "send_message",
        json!({"name": "free", "message": "hi"}),
    )
    .unwrap();
    assert_eq!(
        cms.json(&["status", "free"])["interaction_count"],
        2,
        "from outside it may"
    );
}

/// With --http and --idle-exit, requests over HTTP keep the host up; with none it
/// exits after its idle time.
#[test]
fn http_requests_count_as_activity_for_the_idle_exit() {
    let cms = Cms::new();
    let mut child = cms
        .cmd(&["serve", "--http", "127.0.0.1:0", "--idle-exit", "2s"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut addr = None;
    assert!(crate::support::eventually(
        std::time::Duration::from_secs(10),
        || {
            let out = cms.cmd(&["host", "status", "--json"]).output().unwrap();
            addr = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .ok()
                .and_then(|v| v["http"].as_str().map(str::to_string));
            addr.is_some()
        }
    ));
    let url = format!("http://{}/login", addr.unwrap());
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(4) {
        assert_eq!(request("GET", &url, &[], None).status, 200, "still up");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "kept up by its HTTP clients"
    );
    assert!(
        crate::support::eventually(std::time::Duration::from_secs(10), || child
            .try_wait()
            .unwrap()
            .is_some()),
        "exits once idle"
    );
}

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
    // A wrong guess more is refused as such; the right token still passes (an
    // address that guesses wrong cannot lock the user out).
    let a = request(
        "POST",
        &url,
        &[JSON, ("Authorization", "Bearer nope")],
        Some("{}"),
    );
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.body.contains("wrong tokens"), "{}", a.body);
    let good = format!("Bearer {}", host.token);
    let a = request(
        "POST",
        &url,
        &[JSON, ACCEPT, ("Authorization", &good)],
        Some(&init_body()),
    );
    assert_eq!(a.status, 200, "{}", a.body);
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
/// guard over HTTP: over MCP it cannot steer an unguarded session nor call a plugin
/// tool (those run with the host's powers), the dashboard changes nothing for it,
/// and parking its socket in a Unix socket while the host looks does not hide it.
/// The same calls from outside succeed.
#[test]
fn a_client_inside_a_guarded_session_is_held_to_its_guard() {
    held_to_its_guard("127.0.0.1:0", &[]);
}

/// The same on an address of every interface (`[::]`, so a client on 127.0.0.1
/// arrives as `::ffff:127.0.0.1`): a client on this machine is not "remote".
#[test]
fn on_every_interface_a_local_client_is_still_placed() {
    held_to_its_guard("[::]:0", &["--allow-remote"]);
}

const PARK: &str = r#"
import socket, sys, time
addr, token, path = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = addr.rsplit(':', 1)
s = socket.create_connection((host, int(port)))
body = b'{"message": "hi"}'
head = (f"POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
s.sendall(head.encode() + body)
# Out of every process's open files while the host looks: in flight in a Unix socket.
a, b = socket.socketpair()
socket.send_fds(a, [b'x'], [s.fileno()])
s.close()
time.sleep(1.5)
_, fds, _, _ = socket.recv_fds(b, 1, 1)
back = socket.socket(fileno=fds[0])
answer = b''
while chunk := back.recv(65536):
    answer += chunk
open('parked.txt', 'wb').write(answer)
"#;

fn held_to_its_guard(bind: &str, extra: &[&str]) {
    let Some(cms) = Cms::hosted() else {
        return;
    };
    let config = cms.dir.path().join("config");
    crate::support::write_plugin(
        &config,
        "relay",
        r#"return { name = "relay", tools = { { name = "relay", description = "Sends",
             handler = function(a) cms.get(a.name):send(a.message) return "sent" end } } }"#,
    );
    let config_env = config.display().to_string();
    let host = cms.serve_http_on(bind, extra, &[("CMS_CONFIG_DIR", &config_env)]);
    let probe = format!(
        r#"U=http://{addr}/mcp; A="Authorization: Bearer {token}"
H1="Content-Type: application/json"; H2="Accept: application/json, text/event-stream"
curl -s -D h.txt -o /dev/null -X POST $U -H "$A" -H "$H1" -H "$H2" -d '{init}'
S=$(grep -i '^mcp-session-id' h.txt | cut -d' ' -f2 | tr -d '\r')
V="Mcp-Protocol-Version: 2025-11-25"
curl -s -o /dev/null -X POST $U -H "$A" -H "$H1" -H "$H2" -H "Mcp-Session-Id: $S" -H "$V" -d '{{"jsonrpc":"2.0","method":"notifications/initialized"}}'
curl -s -X POST $U -H "$A" -H "$H1" -H "$H2" -H "Mcp-Session-Id: $S" -H "$V" -d '{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"send_message","arguments":{{"name":"free","message":"hi"}}}}}}' > mcp.txt
curl -s -X POST $U -H "$A" -H "$H1" -H "$H2" -H "Mcp-Session-Id: $S" -H "$V" -d '{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"relay","arguments":{{"name":"free","message":"hi"}}}}}}' > plugin.txt
curl -s -X POST http://{addr}/api/approvals/1 -H "$A" -H "$H1" -d '{{"verdict":"allow"}}' > web.txt
python3 park.py {addr} {token} /api/sessions/free/send
"#,
        addr = host.addr,
        token = host.token,
        init = init_body()
    );
    std::fs::write(cms.work().join("probe.sh"), probe).unwrap();
    std::fs::write(cms.work().join("park.py"), PARK).unwrap();
    cms.ok(&["spawn", "--name", "free", "--prompt", "hi"]);
    let task = "USE_TOOL Bash {\"command\": \"sh probe.sh; true\"}";
    let (v, _) = cms.delegate(&["--name", "g", "--task", task, "--preset", "supervised"]);
    assert_eq!(v["status"], "completed", "{v}");
    let read = |f: &str| std::fs::read_to_string(cms.work().join(f)).unwrap_or_default();
    let web = read("web.txt");
    assert!(web.contains("inside guarded session 'g'"), "{web}");
    // 'free' (started by the user, unguarded) may not be steered from inside 'g'.
    let mcp = read("mcp.txt");
    assert!(mcp.contains("cms refused to steer 'free'"), "{mcp}");
    let plugin = read("plugin.txt");
    assert!(
        plugin.contains("cms refused: plugin tool 'relay'"),
        "{plugin}"
    );
    let parked = read("parked.txt");
    assert!(
        parked.starts_with("HTTP/1.1 403") && parked.contains("cannot tell which process"),
        "{parked}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
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

/// With --http and --idle-exit, requests with the token keep the host up (requests
/// without it do not); with none it exits after its idle time.
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
    let url = format!("http://{}/api/sessions", addr.unwrap());
    let token = format!("Bearer {}", cms.ok(&["serve", "--print-token"]).trim());
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(4) {
        let a = request("GET", &url, &[("Authorization", &token)], None);
        assert_eq!(a.status, 200, "still up: {}", a.body);
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

/// The dashboard's event stream opened with the login cookie ends with that login:
/// after logout it carries no more of the sessions' events.
#[test]
fn the_event_stream_ends_with_its_login() {
    let cms = Cms::new();
    let host = cms.serve_http(&[]);
    let base = format!("http://{}", host.addr);
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let a = request(
        "POST",
        &format!("{base}/login"),
        &[form],
        Some(&format!("token={}", host.token)),
    );
    let cookie = a
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let events = crate::support::http::Stream::open(
        "GET",
        &format!("{base}/api/events"),
        &[("Cookie", &cookie), ("Accept", "text/event-stream")],
        None,
    );
    assert_eq!(events.status, 200);
    let five = std::time::Duration::from_secs(5);
    assert!(events.next("event: hello", five).is_some());
    cms.ok(&["spawn", "--name", "before", "--prompt", "hi"]);
    assert!(
        events.next("\"session\":\"before\"", five).is_some(),
        "heard while logged in"
    );
    let origin = ("Origin", base.as_str());
    let a = request(
        "POST",
        &format!("{base}/logout"),
        &[("Cookie", &cookie), origin],
        None,
    );
    assert_eq!(a.status, 303);
    cms.ok(&["spawn", "--name", "after", "--prompt", "hi"]);
    assert!(
        events.next("\"session\":\"after\"", five).is_none(),
        "nothing after logout"
    );
}

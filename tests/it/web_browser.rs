//! The dashboard of `cms serve --http` driven in headless Chromium: logging in, the
//! refusals (no token, another `Origin`, another site's page with the login cookie),
//! a session spawned from the CLI appearing live, a message answered as it streams,
//! a tool call approved from the page; and the page's screenshots for `docs/`
//! (written only with `CMS_SCREENSHOTS=1`).
//!
//! Each test starts its own host on a free port of 127.0.0.1 and its own browser;
//! the browser tests are skipped when Chromium is not installed (see
//! `support::browser`), the plain-HTTP refusals run everywhere.

use crate::support::browser::Browser;
use crate::support::http::{request, HttpHost};
use crate::support::{self, Cms};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// How long the page may take to show what the host did.
const SHOWS: Duration = Duration::from_secs(5);

/// A host with its HTTP face, and the `cms` of its home.
struct WebHost {
    /// Dropped first: its drop stops the host gracefully (`cms host stop`).
    cms: Cms,
    http: HttpHost,
    /// `http://127.0.0.1:PORT`
    base: String,
}

impl WebHost {
    /// `cms serve --http 127.0.0.1:0`, once it answers.
    fn start() -> WebHost {
        let cms = Cms::new();
        let http = cms.serve_http(&[]);
        let base = format!("http://{}", http.addr);
        WebHost { cms, http, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A browser logged in on the dashboard, `width` x `height`; None without Chromium.
    fn logged_in(&self, width: u32, height: u32) -> Option<Browser> {
        let b = Browser::start(width, height)?;
        b.goto(&self.url("/login"));
        b.type_into("input#token", &self.http.token);
        b.click("button#login");
        self.wait_on_dashboard(&b);
        Some(b)
    }

    /// Wait until `b` shows the dashboard with its event stream connected.
    fn wait_on_dashboard(&self, b: &Browser) {
        let home = self.url("/");
        b.wait_until(SHOWS, "the dashboard, live", |b| {
            b.url() == home && b.text("#live").is_some_and(|t| t.trim() == "live")
        });
    }
}

/// A small web site of its own on another port of 127.0.0.1 (so another origin,
/// but the same *site* for the browser's SameSite rules): it serves `page` at
/// every path, until dropped.
struct OtherSite {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OtherSite {
    fn serve(page: String) -> OtherSite {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
            }
        });
        OtherSite {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for OtherSite {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where the screenshots go when `CMS_SCREENSHOTS=1`; None otherwise.
fn screenshots() -> Option<PathBuf> {
    (std::env::var("CMS_SCREENSHOTS").as_deref() == Ok("1"))
        .then(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots"))
}

/// The login page takes the token once and opens the dashboard; a wrong token
/// stays on the login page with an error; logging out asks for the token again.
#[test]
fn logging_in_with_the_token_opens_the_dashboard_and_a_wrong_one_does_not() {
    let host = WebHost::start();
    let Some(b) = Browser::start(1280, 800) else {
        return;
    };
    // Not logged in: the dashboard sends the browser to the login page.
    b.goto(&host.url("/"));
    assert_eq!(b.url(), host.url("/login"));
    b.type_into("input#token", &"0".repeat(64));
    b.click("button#login");
    b.wait_until(SHOWS, "the login page's error", |b| {
        b.text(".error")
            .is_some_and(|t| t.contains("not the token"))
    });
    assert_eq!(b.url(), host.url("/login"));
    assert!(
        b.find("#sessions").is_none(),
        "no dashboard without the token"
    );
    b.goto(&host.url("/"));
    assert_eq!(b.url(), host.url("/login"), "a wrong token logs no one in");

    b.type_into("input#token", &host.http.token);
    b.click("button#login");
    host.wait_on_dashboard(&b);
    assert!(b.find("input#token").is_none());
    // The cookie lets this browser in from now on.
    b.goto(&host.url("/"));
    host.wait_on_dashboard(&b);

    b.click("#logout");
    b.wait_until(SHOWS, "the login page after logging out", |b| {
        b.url() == host.url("/login") && b.find("input#token").is_some()
    });
    b.goto(&host.url("/"));
    assert_eq!(b.url(), host.url("/login"), "logged out for good");
}

/// A request to the dashboard's API without the token, or with the token but
/// another site's `Origin`, is refused (plain HTTP); a browser that has not logged
/// in gets the refusal from the API and the login page for the dashboard.
#[test]
fn requests_without_the_token_or_from_another_origin_are_refused() {
    let host = WebHost::start();
    let api = host.url("/api/sessions");
    let bearer = format!("Bearer {}", host.http.token);

    let a = request("GET", &api, &[], None);
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.body.contains("cms serve --print-token"), "{}", a.body);
    let send = host.url("/api/sessions/s1/send");
    let message = r#"{"message": "hi"}"#;
    let a = request("POST", &send, &[JSON], Some(message));
    assert_eq!(a.status, 401, "{}", a.body);

    // The token from this server's own origin is let in: each refusal below differs
    // from it by the Origin alone.
    let own = [
        ("Authorization", bearer.as_str()),
        ("Origin", host.base.as_str()),
    ];
    let a = request("GET", &api, &own, None);
    assert_eq!(a.status, 200, "{}", a.body);
    for origin in ["http://evil.example", "http://localhost:1", "null"] {
        let headers = [("Authorization", bearer.as_str()), ("Origin", origin)];
        let a = request("GET", &api, &headers, None);
        assert_eq!(a.status, 403, "Origin {origin}: {}", a.body);
        assert!(a.body.contains("other sites"), "{}", a.body);
        assert_eq!(a.header("access-control-allow-origin"), None);
        let a = request(
            "POST",
            &send,
            &[headers[0], headers[1], JSON],
            Some(message),
        );
        assert_eq!(a.status, 403, "Origin {origin}: {}", a.body);
    }

    let Some(b) = Browser::start(1280, 800) else {
        return;
    };
    b.goto(&api);
    let text = b.page_text();
    assert!(text.contains("no token"), "{text}");
    b.goto(&host.url("/"));
    assert_eq!(b.url(), host.url("/login"));
    assert!(b.find("input#token").is_some());
    assert!(b.find("#sessions").is_none());
}

/// The messages session `name` was sent, in order.
fn messages(cms: &Cms, name: &str) -> Vec<String> {
    cms.json(&["history", name])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["message"].as_str().map(str::to_string))
        .collect()
}

/// The requests another site's page tries with the browser's login cookie, as a
/// script that hands what each got (`NAME: failed`, or `NAME: TYPE STATUS
/// BODY-LENGTH`) to function `then`: a read of the API, a message to session `s1`
/// (as a "simple" no-cors POST that needs no preflight, and as JSON), a logout.
fn attempts(base: &str, then: &str) -> String {
    format!(
        r#"const base = "{base}";
async function attempt(name, url, init) {{
  try {{
    const r = await fetch(base + url, Object.assign({{credentials: "include"}}, init));
    let body = "";
    try {{ body = await r.text(); }} catch (e) {{}}
    return name + ": " + r.type + " " + r.status + " " + body.length;
  }} catch (e) {{
    return name + ": failed";
  }}
}}
const message = JSON.stringify({{message: "from " + location.origin}});
(async () => [
  await attempt("read", "/api/sessions", {{}}),
  await attempt("send", "/api/sessions/s1/send",
    {{method: "POST", mode: "no-cors", headers: {{"content-type": "text/plain"}}, body: message}}),
  await attempt("send-json", "/api/sessions/s1/send",
    {{method: "POST", headers: {{"content-type": "application/json"}}, body: message}}),
  await attempt("logout", "/logout", {{method: "POST", mode: "no-cors"}}),
])().then({then});"#
    )
}

/// What the attempts of another site's page (loaded in `b`) got.
fn attempted(b: &Browser) -> Vec<String> {
    let mut results = Value::Null;
    b.wait_until(SHOWS, "the attempts' results", |b| {
        results = b.script("return window.results || null", serde_json::json!([]));
        results.is_array()
    });
    strings(&results)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect()
}

/// A page of another site (another port of 127.0.0.1, so the browser does send the
/// SameSite=Strict login cookie along) can neither read the dashboard's API nor
/// change anything: its requests carry its own `Origin` and are refused. The same
/// requests from the dashboard's own page do work (so the refusal is what stops them).
#[test]
fn a_page_of_another_site_can_neither_read_nor_change_anything() {
    let host = WebHost::start();
    host.cms.ok(&["spawn", "s1", "hello"]);
    let Some(b) = host.logged_in(1280, 800) else {
        return;
    };
    let other = OtherSite::serve(format!(
        "<!doctype html><title>another site</title><p>another site</p><script>{}</script>",
        attempts(&host.base, "r => { window.results = r; }")
    ));
    b.goto(&other.url());
    // It reads nothing: a CORS request fails, a no-cors one is opaque (no status, no body).
    assert_eq!(
        attempted(&b),
        [
            "read: failed",
            "send: opaque 0 0",
            "send-json: failed",
            "logout: opaque 0 0"
        ]
    );
    // And changes nothing: no message reached the session, the browser is still logged in.
    assert_eq!(messages(&host.cms, "s1"), ["hello"]);
    b.goto(&host.url("/"));
    host.wait_on_dashboard(&b);

    // The same requests from the dashboard's own page do what they say.
    // (The script hands its results back itself: the page leaves for the login page
    // once it finds itself logged out.)
    let results = strings(&b.script_async(
        &attempts(&host.base, "arguments[arguments.length - 1]"),
        serde_json::json!([]),
    ));
    assert!(results[0].starts_with("read: basic 200 "), "{results:?}");
    assert!(results[1].starts_with("send: basic 20"), "{results:?}");
    assert!(
        support::eventually(SHOWS, || messages(&host.cms, "s1").len() >= 2),
        "the own page's message reached the session: {results:?}"
    );
    assert_eq!(messages(&host.cms, "s1")[1], format!("from {}", host.base));
    b.goto(&host.url("/"));
    assert_eq!(b.url(), host.url("/login"), "the own page's logout worked");
}

/// The text of the element matching `selector` (empty when there is none).
fn text(b: &Browser, selector: &str) -> String {
    b.text(selector).unwrap_or_default()
}

/// A session spawned from the CLI appears on the open page without a reload; the
/// page sends it a message and shows the answer as it streams in, part by part.
#[test]
fn a_session_from_the_cli_appears_live_and_its_answer_streams_into_the_page() {
    let host = WebHost::start();
    let Some(b) = host.logged_in(1280, 800) else {
        return;
    };
    let item = "#sessions [data-session=\"w1\"]";
    assert!(b.find(item).is_none());
    // A mark that a reload of the page would wipe.
    b.script("window.notReloaded = true", serde_json::json!([]));
    host.cms.ok(&["spawn", "w1", "hello"]);
    b.wait_until(SHOWS, "session w1 on the page, idle", |b| {
        text(b, &format!("{item} .state")) == "idle"
    });
    let mark = b.script("return window.notReloaded === true", serde_json::json!([]));
    assert_eq!(mark, true, "the page showed w1 without a reload");
    assert!(text(&b, &format!("{item} .cost")).contains("0.001"));

    b.click(item);
    b.wait_until(SHOWS, "w1's first answer in #output", |b| {
        text(b, "#output").contains("echo: hello")
    });
    // Four parts, 250 ms apart: the page shows the first before the last exists.
    b.type_into("#message", "LINES 4 250 part");
    b.click("#send");
    let mut seen_partial = false;
    b.wait_until(SHOWS, "the whole answer in #output", |b| {
        let out = text(b, "#output");
        seen_partial |= out.contains("part 1") && !out.contains("part 4");
        out.contains("part 4")
    });
    assert!(
        seen_partial,
        "the answer arrived in one piece, not as it streamed"
    );
    b.wait_until(SHOWS, "w1 idle after the answer", |b| {
        text(b, &format!("{item} .state")) == "idle"
    });
    assert_eq!(messages(&host.cms, "w1"), ["hello", "LINES 4 250 part"]);
    // The costs panel counts both turns.
    b.wait_until(SHOWS, "the costs of both turns", |b| {
        text(b, "#cost-total").contains("0.002")
    });
    let today = b.find_all("#costs [data-day]");
    assert!(!today.is_empty(), "a row for today");
}

/// A turn the page interrupts ends at once (the session stays live, idle); a session
/// the page stops is stopped.
#[test]
fn the_page_interrupts_a_turn_and_stops_a_session() {
    let host = WebHost::start();
    let Some(b) = host.logged_in(1280, 800) else {
        return;
    };
    host.cms.ok(&["spawn", "w2", "hello"]);
    let item = "#sessions [data-session=\"w2\"]";
    b.wait_for(SHOWS, item);
    b.click(item);
    b.wait_until(SHOWS, "w2 selected", |b| {
        text(b, "#output").contains("echo: hello")
    });
    b.type_into("#message", "HANG");
    b.click("#send");
    b.wait_until(SHOWS, "w2 busy", |b| {
        text(b, &format!("{item} .state")) == "busy"
    });
    b.click("#interrupt");
    b.wait_until(SHOWS, "w2 idle after the interrupt", |b| {
        text(b, &format!("{item} .state")) == "idle"
    });
    assert_eq!(host.cms.json(&["status", "w2"])["state"], "idle");
    b.click("#stop");
    b.wait_until(SHOWS, "w2 stopped", |b| {
        text(b, &format!("{item} .state")) == "stopped"
    });
    assert_eq!(host.cms.json(&["status", "w2"])["state"], "stopped");
}

/// A `cms delegate` with the supervised preset whose task writes `file` outside the
/// work dir: its call waits for a person's decision. Ended (if still running) when dropped.
struct Delegation(Child);

impl Delegation {
    fn start(host: &WebHost, name: &str, file: &std::path::Path) -> Delegation {
        let task = support::tool_line(
            "Write",
            serde_json::json!({"file_path": file, "content": "ok"}),
        );
        let child = host
            .cms
            .cmd(&[
                "delegate",
                "--name",
                name,
                "--task",
                &task,
                "--preset",
                "supervised",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Delegation(child)
    }

    /// How it ended (true: well), within `within`; None while it still runs.
    fn ended(&mut self, within: Duration) -> Option<bool> {
        let mut ended = None;
        support::eventually(within, || {
            ended = self.0.try_wait().ok().flatten().map(|s| s.success());
            ended.is_some()
        });
        ended
    }
}

impl Drop for Delegation {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(Some(_))) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A tool call waiting for a person shows on the page; Allow lets it run (the file
/// is written), Deny with a reason refuses it (no file; the reason is kept).
#[test]
fn a_pending_tool_call_is_approved_or_denied_from_the_page() {
    let host = WebHost::start();
    let Some(b) = host.logged_in(1280, 800) else {
        return;
    };
    // The supervised preset asks a person before a write outside the work dir.
    let outside = tempfile::tempdir().unwrap();
    let yes = outside.path().join("yes.txt");
    let mut first = Delegation::start(&host, "g1", &yes);
    let pending = b.wait_for(SHOWS, "#approvals [data-approval]");
    let shown = b.text_of(&pending).unwrap_or_default();
    assert!(shown.contains("g1") && shown.contains("Write"), "{shown}");
    assert!(shown.contains("yes.txt"), "{shown}");
    assert!(!yes.exists(), "nothing runs before the decision");
    b.click("#approvals [data-approval] .allow");
    assert!(
        support::eventually(SHOWS, || std::fs::read_to_string(&yes)
            .is_ok_and(|t| t == "ok")),
        "the approved write happened"
    );
    assert_eq!(first.ended(SHOWS), Some(true), "the delegation completed");
    b.wait_until(SHOWS, "no call waiting on the page", |b| {
        b.find("#approvals [data-approval]").is_none()
    });
    let logs = host.cms.ok(&["logs", "g1"]);
    assert!(logs.contains("approved by"), "{logs}");

    let no = outside.path().join("no.txt");
    let mut second = Delegation::start(&host, "g2", &no);
    b.wait_for(SHOWS, "#approvals [data-approval] .reason");
    b.type_into("#approvals [data-approval] .reason", "not there");
    b.click("#approvals [data-approval] .deny");
    assert!(second.ended(SHOWS).is_some(), "the denied delegation ended");
    assert!(!no.exists(), "the denied write did not happen");
    let logs = host.cms.ok(&["logs", "g2"]);
    assert!(logs.contains("not there"), "{logs}");
}

/// `CMS_SCREENSHOTS=1`: the dashboard with a few sessions and a call waiting, at a
/// desktop's width and a phone's, into docs/screenshots/ (committed).
#[test]
fn screenshots_of_the_dashboard_at_desktop_and_phone_widths() {
    let Some(dir) = screenshots() else {
        return;
    };
    let host = WebHost::start();
    host.cms
        .ok(&["spawn", "fix-auth", "COST 0.42 the login bug is fixed"]);
    host.cms
        .ok(&["spawn", "review-api", "COST 0.18 LINES 3 10 reviewed"]);
    host.cms
        .ok(&["spawn", "docs", "COST 0.05 the README is updated"]);
    host.cms.ok(&["stop", "docs"]);
    let outside = tempfile::tempdir().unwrap();
    let _waiting = Delegation::start(&host, "release", &outside.path().join("deploy.sh"));
    let Some(b) = host.logged_in(1280, 800) else {
        return;
    };
    b.wait_for(SHOWS, "#approvals [data-approval]");
    b.click("#sessions [data-session=\"review-api\"]");
    b.wait_until(SHOWS, "review-api's answer", |b| {
        text(b, "#output").contains("reviewed 3")
    });
    b.screenshot(&dir.join("dashboard-desktop.png"));
    b.emulate(390, 844, true);
    b.goto(&host.url("/"));
    host.wait_on_dashboard(&b);
    b.wait_for(SHOWS, "#approvals [data-approval]");
    b.screenshot(&dir.join("dashboard-phone.png"));
}

/// On a phone's screen (390 x 844, as a phone shows pages) the page needs no
/// sideways scrolling, every session shows in full and a tap on one selects it.
#[test]
fn the_dashboard_is_usable_on_a_phone_screen() {
    let host = WebHost::start();
    host.cms.ok(&["spawn", "p1", "hello"]);
    host.cms.ok(&["spawn", "p2", "hello again"]);
    let Some(b) = host.logged_in(390, 844) else {
        return;
    };
    b.emulate(390, 844, true);
    b.goto(&host.url("/"));
    host.wait_on_dashboard(&b);
    b.wait_for(SHOWS, "#sessions [data-session=\"p2\"]");
    let wide = b.script(
        "return document.scrollingElement.scrollWidth - window.innerWidth",
        serde_json::json!([]),
    );
    assert_eq!(wide, 0, "the page is wider than the screen by {wide} px");
    for name in ["p1", "p2"] {
        // Scrolled to, as a person would, the item is what a tap on it reaches.
        let item = format!("#sessions [data-session=\"{name}\"]");
        let reached = b.script(
            "const e = document.querySelector(arguments[0]); \
             e.scrollIntoView({block: 'center'}); \
             const r = e.getBoundingClientRect(); \
             const at = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2); \
             return [r.height, r.left >= 0 && r.right <= window.innerWidth, \
                     at === e || e.contains(at), at ? at.outerHTML.slice(0, 80) : null];",
            serde_json::json!([item]),
        );
        assert!(
            reached[0].as_f64().unwrap_or(0.0) >= 30.0 && reached[1] == true && reached[2] == true,
            "session {name} is not shown in full where a tap reaches it \
             (height, inside the screen, reached, what a tap reaches): {reached}"
        );
    }
    b.click("#sessions [data-session=\"p1\"]");
    b.wait_until(SHOWS, "p1's answer after a tap", |b| {
        text(b, "#output").contains("echo: hello")
    });
}

//! The dashboard's JSON and server-sent-events API (`cms serve --http`), driven over
//! HTTP as the page drives it: sessions spawned from the CLI are listed, a message
//! sent over HTTP is accepted at once and answered in the background (in the history
//! and on `/api/events`), a turn is interrupted and a session stopped, approvals are
//! listed and decided as `dashboard`, costs per day add up to the sessions' costs,
//! and every refusal is JSON that says what to do.

use crate::support::{self, eventually, Cms};
use serde_json::{json, Value};
use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A host serving HTTP on a free port, and a client holding its token.
struct Web {
    cms: Cms,
    serve: Child,
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.cms.run(&["host", "stop"]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.serve.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.serve.kill();
        let _ = self.serve.wait();
    }
}

/// `cms serve --http 127.0.0.1:0`, once its address shows in `cms host status`
/// (None where the tests run without the host).
fn start() -> Option<Web> {
    let cms = Cms::new();
    if !cms.host_mode() {
        return None;
    }
    let serve = cms
        .cmd(&["serve", "--http", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut addr = None;
    let up = eventually(Duration::from_secs(10), || {
        let out = cms.run(&["host", "status", "--json"]);
        addr = serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["http"].as_str().map(str::to_string));
        addr.is_some()
    });
    assert!(up, "the host never said its HTTP address");
    let token = cms.ok(&["serve", "--print-token"]).trim().to_string();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    Some(Web {
        cms,
        serve,
        base: format!("http://{}", addr.unwrap()),
        token,
        agent,
    })
}

impl Web {
    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// GET `path`: its status and JSON.
    fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", self.bearer())
            .call()
            .unwrap();
        answer(r)
    }

    /// POST `body` (JSON, or nothing) to `path`: its status and JSON.
    fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", self.bearer());
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.send_empty(),
        }
        .unwrap();
        answer(r)
    }

    /// The lines of `/api/events` as they come.
    fn events(&self) -> mpsc::Receiver<String> {
        let r = self
            .agent
            .get(format!("{}/api/events", self.base))
            .header("Authorization", self.bearer())
            .config()
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let kind = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let lines = std::io::BufReader::new(r.into_body().into_reader()).lines();
            for line in lines {
                let Ok(l) = line else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        rx
    }

    fn session(&self, name: &str) -> Value {
        let (status, v) = self.get(&format!("/api/sessions/{name}"));
        assert_eq!(status, 200, "{v}");
        v
    }

    fn state(&self, name: &str) -> String {
        self.session(name)["session"]["state"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

fn answer(mut r: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    let v =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} not JSON ({e}): {text}"));
    (status, v)
}

/// The first line of `rx` that `ok` accepts within `within`.
fn line_where(
    rx: &mpsc::Receiver<String>,
    within: Duration,
    ok: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match rx.recv_timeout(left) {
            Ok(l) if ok(&l) => return Some(l),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// A data line of an event: its JSON.
fn data(line: &str) -> Value {
    serde_json::from_str(line.strip_prefix("data: ").unwrap()).unwrap()
}

#[test]
fn a_cli_session_is_listed_and_a_message_sent_over_http_is_answered_in_the_background() {
    let Some(web) = start() else { return };
    web.cms.ok(&["spawn", "w", "first words"]);
    let (status, v) = web.get("/api/sessions");
    assert_eq!(status, 200, "{v}");
    let w = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "w")
        .unwrap_or_else(|| panic!("w is not listed: {v}"));
    assert_eq!(w["state"], "idle");
    assert!(w["total_cost_usd"].as_f64().unwrap() > 0.0, "{w}");

    let events = web.events();
    let hello = line_where(&events, Duration::from_secs(5), |l| l == "event: hello");
    assert!(hello.is_some(), "the stream starts with hello");
    let state =
        data(&line_where(&events, Duration::from_secs(5), |l| l.starts_with("data: ")).unwrap());
    assert_eq!(state["sessions"][0]["name"], "w", "{state}");

    // Accepted at once: the turn (2 s) runs in the background.
    let asked = Instant::now();
    let (status, v) = web.post(
        "/api/sessions/w/send",
        Some(json!({ "message": "SLOW 2000 over http" })),
    );
    assert_eq!(status, 202, "{v}");
    assert_eq!(v, json!({ "session": "w", "accepted": true }));
    let (_, h) = web.get("/api/sessions/w/history");
    assert_eq!(
        h["history"].as_array().unwrap().len(),
        1,
        "not answered yet: {h}"
    );
    assert!(asked.elapsed() < Duration::from_millis(2000));
    // A second message while the first runs is refused, saying why.
    let (status, v) = web.post("/api/sessions/w/send", Some(json!({ "message": "more" })));
    assert_eq!(status, 409, "{v}");
    let why = v["error"].as_str().unwrap();
    assert!(why.contains("'w'") && why.contains("interrupt"), "{why}");

    // The answer streams on /api/events, then is in the history and the status.
    let text = line_where(&events, Duration::from_secs(5), |l| {
        l.contains(r#""event":"text""#) && l.contains("over http")
    })
    .expect("the answer's text on /api/events");
    let text = data(&text);
    assert_eq!(text["session"], "w");
    assert_eq!(text["text"], "echo: over http");
    let result = line_where(&events, Duration::from_secs(5), |l| {
        l.contains(r#""event":"result""#)
    });
    assert!(result.is_some(), "the turn's result on /api/events");
    let mut last = Value::Null;
    assert!(
        eventually(Duration::from_secs(5), || {
            last = web.get("/api/sessions/w/history?limit=1").1;
            last["history"][0]["response"] == "echo: over http"
        }),
        "{last}"
    );
    assert_eq!(last["history"].as_array().unwrap().len(), 1, "limit=1");
    assert_eq!(last["history"][0]["message"], "SLOW 2000 over http");
    let s = web.session("w");
    assert_eq!(s["last_output"], "echo: over http");
    assert_eq!(s["session"]["interaction_count"], 2);
    assert_eq!(s["turn_text"], Value::Null, "no turn runs");
}

#[test]
fn a_turn_is_interrupted_and_a_session_stopped_over_http() {
    let Some(web) = start() else { return };
    web.cms.ok(&["spawn", "w", "hi"]);
    let (status, v) = web.post(
        "/api/sessions/w/send",
        Some(json!({ "message": "LINES 40 100 part" })),
    );
    assert_eq!(status, 202, "{v}");
    // A page opened mid-turn gets the turn's text so far.
    let mut s = Value::Null;
    assert!(
        eventually(Duration::from_secs(5), || {
            s = web.session("w");
            s["turn_text"]
                .as_str()
                .is_some_and(|t| t.contains("part 2"))
        }),
        "{s}"
    );
    assert_eq!(s["session"]["state"], "busy");
    let (status, v) = web.post("/api/sessions/w/interrupt", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({ "session": "w", "interrupted": true }));
    assert!(
        eventually(Duration::from_secs(5), || web.state("w") == "idle"),
        "the session is idle after the interrupt"
    );
    let (status, v) = web.post("/api/sessions/w/interrupt", None);
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("nothing to interrupt"),
        "{v}"
    );
    let (status, v) = web.post("/api/sessions/w/stop", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["session"]["state"], "stopped");
    assert_eq!(web.cms.json(&["status", "w"])["state"], "stopped");
    // A stopped session takes a message: it is resumed.
    let (status, v) = web.post("/api/sessions/w/send", Some(json!({ "message": "back" })));
    assert_eq!(status, 202, "{v}");
    assert!(eventually(Duration::from_secs(5), || {
        web.session("w")["last_output"] == "echo: back"
    }));
}

#[test]
fn approvals_are_listed_and_decided_over_http_as_the_dashboard() {
    let Some(web) = start() else { return };
    let outside = tempfile::tempdir().unwrap();
    let (yes, no) = (
        outside.path().join("yes.txt"),
        outside.path().join("no.txt"),
    );
    let delegate = |name: &str, file: &std::path::Path| {
        let task = format!(
            r#"USE_TOOL Write {{"file_path": "{}", "content": "ok"}}"#,
            file.display()
        );
        web.cms.spawn_piped(&[
            "delegate",
            "--json",
            "--name",
            name,
            "--preset",
            "supervised",
            "--task",
            &task,
        ])
    };
    let waiting = |name: &str| {
        let mut found = Value::Null;
        let seen = eventually(Duration::from_secs(10), || {
            let (_, v) = web.get("/api/approvals");
            found = v["approvals"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["session"] == name)
                .cloned()
                .unwrap_or(Value::Null);
            !found.is_null()
        });
        assert!(seen, "no call of {name} waited");
        found
    };

    let first = delegate("y", &yes);
    let a = waiting("y");
    assert_eq!(a["tool"], "Write");
    assert_eq!(a["target"], yes.display().to_string());
    assert_eq!(a["summary"], format!("Write {}", yes.display()));
    assert_eq!(web.state("y"), "waiting_approval");
    assert_eq!(web.session("y")["approvals"][0]["id"], a["id"]);
    let id = a["id"].as_str().unwrap();
    let (status, v) = web.post(
        &format!("/api/approvals/{id}"),
        Some(json!({ "verdict": "maybe" })),
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("\"allow\" or \"deny\""),
        "{v}"
    );
    assert!(!yes.exists(), "nothing runs before the decision");
    let (status, v) = web.post(
        &format!("/api/approvals/{id}"),
        Some(json!({ "verdict": "allow" })),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({ "session": "y", "id": id, "tool": "Write", "allowed": true })
    );
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&yes).unwrap(), "ok");
    assert!(web.cms.ok(&["logs", "y"]).contains("approved by dashboard"));
    // Decided: it waits no more.
    let (status, v) = web.post(
        &format!("/api/approvals/{id}"),
        Some(json!({ "verdict": "deny" })),
    );
    assert_eq!(status, 404, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("GET /api/approvals"),
        "{v}"
    );

    let second = delegate("n", &no);
    let id = waiting("n")["id"].as_str().unwrap().to_string();
    let (status, v) = web.post(
        &format!("/api/approvals/{id}"),
        Some(json!({ "verdict": "deny", "reason": "not there" })),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["allowed"], false);
    second.wait_with_output().unwrap();
    assert!(!no.exists(), "a denied write is not done");
    let logs = web.cms.ok(&["logs", "n"]);
    assert!(
        logs.contains("denied by dashboard") && logs.contains("not there"),
        "{logs}"
    );
    assert_eq!(web.get("/api/approvals").1, json!({ "approvals": [] }));
}

#[test]
fn costs_per_day_add_up_to_the_sessions_costs() {
    let Some(web) = start() else { return };
    web.cms.ok(&["spawn", "a", "COST 0.25 one"]);
    web.cms.ok(&["spawn", "b", "COST 0.5 two"]);
    web.cms.ok(&["send", "b", "COST 0.125 three"]);
    let (status, c) = web.get("/api/costs");
    assert_eq!(status, 200, "{c}");
    let days = c["days"].as_array().unwrap();
    assert_eq!(days.len(), 7, "a week by default: {c}");
    let today = std::process::Command::new("date")
        .arg("+%F")
        .output()
        .unwrap();
    let today = String::from_utf8(today.stdout).unwrap();
    assert_eq!(c["today"], today.trim(), "{c}");
    assert_eq!(days[0]["day"], today.trim());
    assert_eq!(days[0]["messages"], 3);
    let per_day: f64 = days.iter().map(|d| d["cost_usd"].as_f64().unwrap()).sum();
    let (_, list) = web.get("/api/sessions");
    let per_session: f64 = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["total_cost_usd"].as_f64().unwrap())
        .sum();
    assert!(support::close(per_session, 0.875), "{list}");
    assert!(support::close(per_day, per_session), "{c}");
    assert!(
        support::close(c["total_usd"].as_f64().unwrap(), per_session),
        "{c}"
    );
    assert_eq!(c["sessions"][0]["name"], "b", "the costliest first: {c}");
    assert!(support::close(
        c["sessions"][0]["cost_usd"].as_f64().unwrap(),
        0.625
    ));
    assert_eq!(
        web.get("/api/costs?days=30").1["days"]
            .as_array()
            .unwrap()
            .len(),
        30
    );
    for bad in ["/api/costs?days=0", "/api/costs?days=many"] {
        let (status, v) = web.get(bad);
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
}

#[test]
fn unknown_sessions_and_bad_requests_are_refused_in_json_saying_what_to_do() {
    let Some(web) = start() else { return };
    let (status, v) = web.get("/api/sessions/ghost");
    assert_eq!(status, 404, "{v}");
    let why = v["error"].as_str().unwrap();
    assert!(
        why.contains("session 'ghost' not found") && why.contains("GET /api/sessions"),
        "{why}"
    );
    for path in [
        "/api/sessions/ghost/history",
        "/api/sessions/ghost/interrupt",
    ] {
        let (status, v) = if path.ends_with("history") {
            web.get(path)
        } else {
            web.post(path, None)
        };
        assert_eq!(status, 404, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains("'ghost'"), "{v}");
    }
    let (status, v) = web.post("/api/sessions/ghost/send", Some(json!({ "message": "hi" })));
    assert_eq!(status, 404, "{v}");
    let (status, v) = web.post("/api/sessions/ghost/stop", None);
    assert_eq!(status, 404, "{v}");
    web.cms.ok(&["spawn", "w", "hi"]);
    let (status, v) = web.post("/api/sessions/w/send", None);
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains(r#"{"message": "...""#),
        "{v}"
    );
    let (status, v) = web.post("/api/sessions/w/send", Some(json!({ "message": "  " })));
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("empty"), "{v}");
    let (status, v) = web.post("/api/sessions/w/send", Some(json!({ "text": "hi" })));
    assert_eq!(status, 400, "{v}");
    let (status, v) = web.get("/api/nothing-here");
    assert_eq!(status, 404, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("GET /api/sessions"),
        "{v}"
    );

    // Without the token: refused, and the page sends a browser to log in.
    let r = web
        .agent
        .get(format!("{}/api/sessions", web.base))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let page = web
        .agent
        .get(format!("{}/", web.base))
        .config()
        .max_redirects(0)
        .build()
        .call()
        .unwrap();
    assert_eq!(page.status().as_u16(), 303);
    assert_eq!(page.headers()["location"], "/login");
    // With it: the page, which no other site may frame, and its script.
    let mut page = web
        .agent
        .get(format!("{}/", web.base))
        .header("Authorization", web.bearer())
        .call()
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    // `no-referrer` would make the page's logout form post `Origin: null`, refused.
    assert_eq!(page.headers()["referrer-policy"], "same-origin");
    let html = page.body_mut().read_to_string().unwrap();
    for id in [
        "id=\"sessions\"",
        "id=\"output\"",
        "id=\"approvals\"",
        "id=\"costs\"",
        "src=\"/app.js\"",
    ] {
        assert!(html.contains(id), "the page has {id}");
    }
    let mut js = web
        .agent
        .get(format!("{}/app.js", web.base))
        .header("Authorization", web.bearer())
        .call()
        .unwrap();
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(js
        .body_mut()
        .read_to_string()
        .unwrap()
        .contains("/api/events"));
}

#[test]
fn a_message_that_fails_is_said_on_the_event_stream_but_an_interrupted_one_is_not() {
    let Some(web) = start() else { return };
    web.cms.ok(&["spawn", "w", "hi"]);
    let events = web.events();
    assert!(line_where(&events, Duration::from_secs(5), |l| l == "event: hello").is_some());
    let sent = |message: &str| {
        let (status, v) = web.post("/api/sessions/w/send", Some(json!({ "message": message })));
        assert_eq!(status, 202, "{v}");
    };
    let failed = |l: &str| l.contains(r#""event":"send_failed""#);
    // Interrupted from the dashboard: ended on purpose, no news.
    sent("HANG");
    assert!(eventually(Duration::from_secs(5), || web.state("w") == "busy"));
    let (status, v) = web.post("/api/sessions/w/interrupt", None);
    assert_eq!(status, 200, "{v}");
    assert!(eventually(Duration::from_secs(5), || web.state("w") == "idle"));
    // A crash: the page hears why its message was not answered.
    sent("CRASH");
    let said = line_where(&events, Duration::from_secs(5), failed).expect("send_failed");
    let said = data(&said);
    assert_eq!(said["session"], "w");
    let why = said["message"].as_str().unwrap();
    assert!(
        why.contains("not answered") && why.contains("exited"),
        "{why}"
    );
    assert!(
        line_where(&events, Duration::from_millis(300), failed).is_none(),
        "said once, and not for the interrupted turn"
    );
}

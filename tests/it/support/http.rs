//! A host with its HTTP face (`cms serve --http 127.0.0.1:0`) for a test: its
//! address and token, and small HTTP helpers (ureq) that never fail on a status.

use super::Cms;
use serde_json::Value;
use std::process::{Child, Stdio};
use std::time::Duration;

pub struct HttpHost {
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub token: String,
    child: Child,
}

impl Drop for HttpHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cms {
    /// Start `cms serve --http 127.0.0.1:0 EXTRA...` and wait until it answers.
    pub fn serve_http(&self, extra: &[&str]) -> HttpHost {
        self.serve_http_with(extra, &[])
    }

    /// [`Cms::serve_http`] with more environment for the host.
    pub fn serve_http_with(&self, extra: &[&str], env: &[(&str, &str)]) -> HttpHost {
        self.serve_http_on("127.0.0.1:0", extra, env)
    }

    /// [`Cms::serve_http_with`] on address `bind`; `addr` is then where a client on
    /// this machine reaches it (127.0.0.1 for an address of every interface).
    pub fn serve_http_on(&self, bind: &str, extra: &[&str], env: &[(&str, &str)]) -> HttpHost {
        let mut args = vec!["serve", "--http", bind, "--idle-exit", "120s"];
        args.extend_from_slice(extra);
        let child = self
            .cmd(&args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut addr = None;
        super::eventually(Duration::from_secs(20), || {
            let out = self.cmd(&["host", "status", "--json"]).output().unwrap();
            addr = serde_json::from_slice::<Value>(&out.stdout)
                .ok()
                .and_then(|v| v["http"].as_str().map(str::to_string));
            addr.is_some()
        });
        let addr = addr.expect("the host serves HTTP within 20 s");
        let addr = match addr.rsplit_once(':') {
            Some(("[::]" | "0.0.0.0", port)) => format!("127.0.0.1:{port}"),
            _ => addr,
        };
        let token = self.ok(&["serve", "--print-token"]).trim().to_string();
        HttpHost { addr, token, child }
    }
}

/// An HTTP answer: status, headers we look at, body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// An agent that reports every status as an answer (no redirects followed).
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// `method url` with `headers` and `body` (None: no body).
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Answer {
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body.unwrap_or("").to_string()).unwrap();
    let mut res = agent()
        .run(req)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let headers = res
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    Answer {
        status: res.status().as_u16(),
        headers,
        body: res.body_mut().read_to_string().unwrap_or_default(),
    }
}

/// A 2025-11-25 JSON-RPC request to `/mcp` with the token; the answer's JSON-RPC
/// message (read from the SSE stream or the JSON body).
pub fn mcp_message(
    host: &HttpHost,
    session: Option<&str>,
    body: &Value,
) -> (Answer, Option<Value>) {
    let url = format!("http://{}/mcp", host.addr);
    let auth = format!("Bearer {}", host.token);
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
    ];
    if let Some(s) = session {
        headers.push(("Mcp-Session-Id", s));
        headers.push(("Mcp-Protocol-Version", "2025-11-25"));
    }
    let a = request("POST", &url, &headers, Some(&body.to_string()));
    let message = a
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .chain(std::iter::once(a.body.as_str()))
        .find_map(|d| {
            serde_json::from_str::<Value>(d.trim())
                .ok()
                .filter(|v| v.get("jsonrpc").is_some())
        });
    (a, message)
}

/// Open a 2025-11-25 MCP session: its id.
pub fn mcp_session(host: &HttpHost) -> String {
    let init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "cms-test", "version": "1"}}});
    let (a, msg) = mcp_message(host, None, &init);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(msg.is_some_and(|m| m["result"]["serverInfo"]["name"] == "cms"));
    let id = a
        .header("mcp-session-id")
        .expect("a session id")
        .to_string();
    let done = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (a, _) = mcp_message(host, Some(&id), &done);
    assert!(a.status < 300, "{}", a.body);
    id
}

/// `tools/call NAME ARGS` in session `id`: the tool's structured result, or its
/// error text as Err.
pub fn call_tool(host: &HttpHost, id: &str, name: &str, args: Value) -> Result<Value, String> {
    let req = serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": name, "arguments": args}});
    let (a, msg) = mcp_message(host, Some(id), &req);
    let msg = msg.unwrap_or_else(|| panic!("no JSON-RPC answer ({}): {}", a.status, a.body));
    let result = &msg["result"];
    if result["isError"] == true {
        return Err(result["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .to_string());
    }
    Ok(result["structuredContent"].clone())
}

/// Lines of an open HTTP response (an SSE stream), read on a thread: `next` waits
/// for a line that contains `wanted`.
pub struct Stream {
    lines: std::sync::mpsc::Receiver<String>,
    pub status: u16,
}

impl Stream {
    /// `method url` with `headers` and `body`, its answer read as it comes.
    pub fn open(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Stream {
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body.unwrap_or("").to_string()).unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let res = agent
            .run(req)
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = res.status().as_u16();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let reader = std::io::BufReader::new(res.into_body().into_reader());
            for line in reader.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Stream { lines, status }
    }

    /// The first line (from now) that contains `wanted`, within `within`.
    pub fn next(&self, wanted: &str, within: Duration) -> Option<String> {
        let until = std::time::Instant::now() + within;
        loop {
            let left = until.checked_duration_since(std::time::Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(wanted) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

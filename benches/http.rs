//! Benchmark of MCP over HTTP (`cargo bench --bench http`), against the goals of
//! issue 16, on a real `cms serve --http 127.0.0.1:0` of this build (the simulator as
//! claude, a temporary CMS_HOME, 20 sessions spawned through the host first):
//!
//! 1. `tools/call list_sessions`, one call at a time from one client on one
//!    kept-alive connection: p50 and p99, for both revisions (2025-11-25: `initialize`
//!    once, then `Mcp-Session-Id` on each call; 2026-07-28: no session, the protocol
//!    version and capabilities in each request's `_meta`, `Mcp-Method`/`Mcp-Name`
//!    headers). `ping` (2025-11-25; `server/discover` for 2026-07-28, which has no
//!    `ping`) on the same connection is the protocol floor, and the same
//!    calls over stdio (`cms mcp`, a client of the same host) are interleaved call by
//!    call, so the ratio means something on a noisy machine. Goal: p50 ≤ 2 ms.
//! 2. 100 concurrent clients (threads, each its own connection; half on each
//!    revision) calling list_sessions for 10 s, the host started with
//!    `--http-rate 0` (its default limit of 200 requests a second per client address
//!    would refuse them: they all come from 127.0.0.1). Goal: no errors; throughput,
//!    p50, p99 reported.
//! 3. With the default limit, a short burst from 40 clients: what exceeds the limit
//!    gets clean `429 Too Many Requests` (with `Retry-After`), never an error or a
//!    timeout, and what is admitted matches the limit.
//!
//! `cargo bench --bench http` is the full run. `-- --quick`, or no `--bench`
//! argument (the smoke run of `cargo test --all-targets`, see `tests/run.sh`), runs
//! small counts in a few seconds; its figures are informational.

mod support;

use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use rmcp::ServiceExt;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use support::{micros, pct, print_table, Row, Verdict};

/// How much each part does.
struct Sizes {
    /// Sequential calls of each kind (after `warmup` more).
    calls: usize,
    warmup: usize,
    /// Concurrent clients, and how long they call.
    clients: usize,
    load: Duration,
    /// Clients of the rate-limit phase, and how long they call.
    limited_clients: usize,
    limited: Duration,
}

/// The sessions in the store while list_sessions is measured.
const SESSIONS: usize = 20;
/// The goal of part 1, in µs.
const GOAL_P50_US: f64 = 2000.0;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--quick");
    let sizes = if full {
        Sizes {
            calls: 2000,
            warmup: 200,
            clients: 100,
            load: Duration::from_secs(10),
            limited_clients: 40,
            limited: Duration::from_secs(3),
        }
    } else {
        Sizes {
            calls: 100,
            warmup: 20,
            clients: 100,
            load: Duration::from_secs(2),
            limited_clients: 40,
            limited: Duration::from_secs(1),
        }
    };
    if full {
        println!("cms HTTP benchmark (full run)");
    } else {
        println!(
            "cms HTTP benchmark (quick run: small counts, showing the benchmark works; its \
             figures are informational, goals are judged by the full `cargo bench --bench http`)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let cms = PathBuf::from(env!("CARGO_BIN_EXE_cms"));
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_cms-sim"));
    let env = Env::new(&cms, &sim, dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut table = Vec::new();

    // The host without a rate limit, and the sessions.
    let host = Host::start(&env, Some(0));
    let t = Instant::now();
    env.spawn_sessions(SESSIONS);
    println!(
        "\nhost: `cms serve --http {} --http-rate 0` ({SESSIONS} sessions spawned through it \
         in {:.0} ms)",
        host.addr,
        t.elapsed().as_secs_f64() * 1e3
    );

    // 1. One client, one call at a time.
    let seq = rt.block_on(sequential(&env, &host, &sizes));
    println!(
        "\n1. one client, sequential calls on one kept-alive connection each ({} calls of each \
         kind, interleaved, after {} of warm-up; {SESSIONS} sessions in the store)",
        sizes.calls, sizes.warmup
    );
    for (label, v) in &seq.rows {
        println!(
            "   {label:<44} p50 {:>8.1} µs  p99 {:>8.1} µs",
            pct(v, 0.5),
            pct(v, 0.99)
        );
    }
    println!(
        "   HTTP connections opened by this client: {} (1 each for the two HTTP clients: kept alive)",
        seq.connections
    );
    let (l50, l99) = (
        pct(seq.get("list_sessions http 2025-11-25"), 0.5),
        pct(seq.get("list_sessions http 2025-11-25"), 0.99),
    );
    let (s50, s99) = (
        pct(seq.get("list_sessions http 2026-07-28"), 0.5),
        pct(seq.get("list_sessions http 2026-07-28"), 0.99),
    );
    let io50 = pct(seq.get("list_sessions stdio (cms mcp)"), 0.5);
    println!(
        "   HTTP / stdio at p50: {:.2} (2025-11-25), {:.2} (2026-07-28); list_sessions minus ping \
         over HTTP (the tool itself) p50 {:.1} µs",
        l50 / io50,
        s50 / io50,
        l50 - pct(seq.get("ping http 2025-11-25"), 0.5)
    );
    if l50 > 30_000.0 && pct(seq.get("ping http 2025-11-25"), 0.5) > 30_000.0 {
        println!(
            "   about 40 ms on every 2025-11-25 call, ping too: Nagle's algorithm meeting the \
             client's delayed ACK (the answer, an event stream, goes out in several writes); \
             the host's listener wants TCP_NODELAY"
        );
    }
    table.push(Row {
        goal: "1. list_sessions over HTTP, 2025-11-25: p50 <= 2 ms",
        figure: format!(
            "p50 {:.2} ms, p99 {:.2} ms ({:.1}x stdio)",
            l50 / 1e3,
            l99 / 1e3,
            l50 / io50
        ),
        verdict: Verdict::judged(l50 <= GOAL_P50_US),
    });
    table.push(Row {
        goal: "1. list_sessions over HTTP, 2026-07-28: p50 <= 2 ms",
        figure: format!(
            "p50 {:.2} ms, p99 {:.2} ms ({:.1}x stdio)",
            s50 / 1e3,
            s99 / 1e3,
            s50 / io50
        ),
        verdict: Verdict::judged(s50 <= GOAL_P50_US),
    });

    // 2. Many clients at once.
    let load = concurrent(&host, sizes.clients, sizes.load);
    println!(
        "\n2. {} concurrent clients (threads, one connection each, {} on 2025-11-25 sessions, {} on \
         2026-07-28) calling list_sessions for {:.0} s; the host runs with --http-rate 0 (no rate \
         limit: every client is 127.0.0.1, and the default 200/s per address would refuse most)",
        sizes.clients,
        sizes.clients.div_ceil(2),
        sizes.clients / 2,
        sizes.load.as_secs_f64()
    );
    load.print();
    let lp50 = pct(&load.latencies, 0.5);
    let lp99 = pct(&load.latencies, 0.99);
    table.push(Row {
        goal: "2. 100 clients for 10 s: no errors",
        figure: format!(
            "{} calls, {:.0}/s, {} errors, p50 {:.1} ms, p99 {:.1} ms",
            load.ok + load.errors(),
            load.ok as f64 / load.elapsed.as_secs_f64(),
            load.errors(),
            lp50 / 1e3,
            lp99 / 1e3
        ),
        verdict: Verdict::judged(load.errors() == 0 && load.ok > 0),
    });
    drop(host);

    // 3. The default rate limit.
    let host = Host::start(&env, None);
    let limited = concurrent(&host, sizes.limited_clients, sizes.limited);
    let secs = limited.elapsed.as_secs_f64();
    let allowed = 2.0 * 200.0 + 200.0 * secs;
    println!(
        "\n3. the default rate limit (`cms serve --http {}`, 200 requests/s per address, bursts of \
         400): {} clients calling list_sessions for {:.1} s",
        host.addr, sizes.limited_clients, secs
    );
    limited.print();
    println!(
        "   admitted {} calls, the limit allows about {:.0} (400 + 200/s); every 429 carried \
         Retry-After: {}",
        limited.ok,
        allowed,
        limited.retry_after_missing == 0
    );
    if ((limited.ok + limited.too_many + limited.errors()) as f64) < allowed {
        println!(
            "   the clients sent fewer requests than the limit allows: the phase did not reach it"
        );
    }
    let clean = limited.errors() == 0 && limited.too_many > 0 && limited.retry_after_missing == 0;
    table.push(Row {
        goal: "3. default limit: the excess gets clean 429s",
        figure: format!(
            "{} ok, {} x 429, {} errors",
            limited.ok,
            limited.too_many,
            limited.errors()
        ),
        verdict: Verdict::judged(clean && (limited.ok as f64) <= allowed * 1.1 + 10.0),
    });
    drop(host);

    print_table(&table, full, "issue 16");
}

// ----- the host ----------------------------------------------------------------------

/// Where everything lives: the binaries, the home, the user's config.
struct Env {
    cms: PathBuf,
    sim: PathBuf,
    dir: PathBuf,
    home: PathBuf,
    config: PathBuf,
}

impl Env {
    fn new(cms: &Path, sim: &Path, dir: &Path) -> Env {
        let home = dir.join("cms-home");
        let config = dir.join("config");
        std::fs::create_dir_all(config.join("cms")).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        Env {
            cms: cms.to_path_buf(),
            sim: sim.to_path_buf(),
            dir: dir.to_path_buf(),
            home,
            config,
        }
    }

    /// A `cms` command on this home.
    fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.cms);
        cmd.current_dir(&self.dir)
            .env("CMS_HOST_IDLE", "never")
            .env_remove("CMS_NO_HOST")
            .env("CMS_EXE", &self.cms)
            .env("CMS_HOME", &self.home)
            .env("CMS_CLAUDE_BIN", &self.sim)
            .env("HOME", &self.dir)
            .env("XDG_CONFIG_HOME", &self.config)
            .env("CMS_CONFIG_DIR", self.config.join("cms"))
            .stdin(Stdio::null());
        cmd
    }

    /// `n` sessions, spawned with `cms batch` through the running host.
    fn spawn_sessions(&self, n: usize) {
        let batch: Vec<Value> = (0..n)
            .map(|i| json!({ "name": format!("s{i:02}"), "prompt": "hello" }))
            .collect();
        let file = self.dir.join("batch.json");
        std::fs::write(&file, serde_json::to_string(&batch).unwrap()).unwrap();
        let out = self
            .command()
            .args(["batch", "--file"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cms batch failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A `cms serve --http` started by this benchmark.
struct Host {
    child: std::process::Child,
    stop: std::process::Command,
    addr: String,
    token: String,
}

impl Host {
    /// Start `cms serve --http 127.0.0.1:0` (with `--http-rate RATE` when given) and
    /// learn its address (from its log) and token (`cms serve --print-token`).
    fn start(env: &Env, rate: Option<u32>) -> Host {
        let log_path = env.dir.join(format!("host-{}.log", rate.unwrap_or(200)));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = env.command();
        cmd.args(["serve", "--http", "127.0.0.1:0"]);
        if let Some(r) = rate {
            cmd.args(["--http-rate", &r.to_string()]);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(rest) = text.split("MCP at http://").nth(1) {
                break rest.split('/').next().unwrap().to_string();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("cms serve --http exited at start ({status}): {text}");
            }
            assert!(
                Instant::now() < deadline,
                "cms serve --http did not listen: {text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = env
            .command()
            .args(["serve", "--print-token"])
            .output()
            .unwrap();
        assert!(out.status.success(), "cms serve --print-token failed");
        let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let mut stop = env.command();
        stop.args(["host", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let host = Host {
            child,
            stop,
            addr,
            token,
        };
        // Wait until it answers MCP (the address is printed before the host is ready).
        let mut c = Client::new(&host, Revision::Stateless);
        while let Err(e) = c.call("server/discover", json!({})) {
            assert!(
                Instant::now() < deadline,
                "the host does not answer ping: {e}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        host
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.stop.status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(None) = self.child.try_wait() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
    }
}

// ----- an MCP client over HTTP -------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Revision {
    /// 2025-11-25: `initialize`, then `Mcp-Session-Id` on every request.
    Session,
    /// 2026-07-28: each request on its own, its version and capabilities in `_meta`.
    Stateless,
}

/// How a call ended, when not with a result.
enum Failure {
    /// `429 Too Many Requests` (with whether `Retry-After` came).
    TooMany { retry_after: bool },
    /// Another HTTP status.
    Status(u16, String),
    /// No answer: connection refused or reset, a timeout.
    Transport(String),
    /// An answer that is not the JSON-RPC result asked for, or a tool error.
    Answer(String),
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::TooMany { retry_after } => {
                write!(f, "429 Too Many Requests (Retry-After sent: {retry_after})")
            }
            Failure::Status(code, body) => write!(f, "HTTP {code}: {body}"),
            Failure::Transport(e) => write!(f, "no answer: {e}"),
            Failure::Answer(e) => write!(f, "{e}"),
        }
    }
}

/// One MCP client on one agent (one kept-alive connection, as it calls one at a time).
struct Client {
    agent: ureq::Agent,
    url: String,
    token: String,
    revision: Revision,
    session: Option<String>,
    next_id: u64,
}

impl Client {
    fn new(host: &Host, revision: Revision) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .max_idle_connections_per_host(1)
            .build()
            .into();
        Client {
            agent,
            url: format!("http://{}/mcp", host.addr),
            token: host.token.clone(),
            revision,
            session: None,
            next_id: 1,
        }
    }

    /// A client ready to call: for 2025-11-25, `initialize` and `initialized` done.
    fn connect(host: &Host, revision: Revision) -> Result<Client, Failure> {
        let mut c = Client::new(host, revision);
        if revision == Revision::Session {
            c.initialize()?;
        }
        Ok(c)
    }

    fn initialize(&mut self) -> Result<(), Failure> {
        let body = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": { "name": "cms-bench", "version": "0" }
            }
        });
        let resp = self.post(&body, None)?;
        let session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        read_result(resp, 0)?;
        self.session = Some(session.ok_or_else(|| Failure::Answer("no Mcp-Session-Id".into()))?);
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let mut resp = self.post(&note, Some("notifications/initialized"))?;
        let status = resp.status().as_u16();
        let _ = resp.body_mut().read_to_string();
        if status != 202 {
            return Err(Failure::Status(
                status,
                "to notifications/initialized".into(),
            ));
        }
        Ok(())
    }

    /// Call `method` with `params`; the result.
    fn call(&mut self, method: &str, mut params: Value) -> Result<Value, Failure> {
        let id = self.next_id;
        self.next_id += 1;
        if self.revision == Revision::Stateless {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": { "name": "cms-bench", "version": "0" }
            });
        }
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let resp = self.post(&body, Some(method))?;
        read_result(resp, id)
    }

    /// `tools/call list_sessions`, checked to be no tool error.
    fn list_sessions(&mut self) -> Result<Value, Failure> {
        let r = self.call(
            "tools/call",
            json!({ "name": "list_sessions", "arguments": {} }),
        )?;
        if r.get("isError") == Some(&Value::Bool(true)) {
            return Err(Failure::Answer(format!("list_sessions failed: {r}")));
        }
        Ok(r)
    }

    fn post(
        &self,
        body: &Value,
        method: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let mut req = self
            .agent
            .post(&self.url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json");
        match self.revision {
            Revision::Session => {
                if let Some(s) = &self.session {
                    req = req
                        .header("Mcp-Session-Id", s)
                        .header("MCP-Protocol-Version", "2025-11-25");
                }
            }
            Revision::Stateless => {
                req = req.header("MCP-Protocol-Version", "2026-07-28");
                if let Some(m) = method {
                    req = req.header("Mcp-Method", m);
                }
                if let Some(name) = body["params"]["name"].as_str() {
                    req = req.header("Mcp-Name", name);
                }
            }
        }
        let resp = req
            .send(serde_json::to_vec(body).unwrap())
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        if status == 429 {
            let retry_after = resp.headers().contains_key("retry-after");
            let mut resp = resp;
            let _ = resp.body_mut().read_to_string();
            return Err(Failure::TooMany { retry_after });
        }
        if !(200..300).contains(&status) {
            let mut resp = resp;
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            return Err(Failure::Status(status, text));
        }
        Ok(resp)
    }
}

/// The result of JSON-RPC request `id` in `resp` (JSON, or an event stream whose
/// `data:` lines carry messages), the body read to its end so the connection is kept.
fn read_result(mut resp: ureq::http::Response<ureq::Body>, id: u64) -> Result<Value, Failure> {
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| Failure::Transport(e.to_string()))?;
    let messages: Vec<Value> = if text.trim_start().starts_with('{') {
        serde_json::from_str(&text).into_iter().collect()
    } else {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str(d.trim()).ok())
            .collect()
    };
    let m = messages
        .into_iter()
        .find(|m| m.get("id") == Some(&json!(id)))
        .ok_or_else(|| Failure::Answer(format!("no answer to request {id} in: {text}")))?;
    match m.get("result") {
        Some(r) => Ok(r.clone()),
        None => Err(Failure::Answer(format!("error answer: {m}"))),
    }
}

/// The client sockets of this process connected to `addr` (from /proc/net/tcp).
fn connections_to(addr: &str) -> usize {
    let port = addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let want = format!("0100007F:{port:04X}");
    let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2] == want && f[3] == "01"
        })
        .count()
}

// ----- 1. sequential calls -----------------------------------------------------------

struct Sequential {
    rows: Vec<(&'static str, Vec<f64>)>,
    connections: usize,
}

impl Sequential {
    fn get(&self, label: &str) -> &[f64] {
        &self.rows.iter().find(|(l, _)| *l == label).unwrap().1
    }
}

async fn sequential(env: &Env, host: &Host, sizes: &Sizes) -> Sequential {
    let mut session = Client::connect(host, Revision::Session).unwrap();
    let mut stateless = Client::connect(host, Revision::Stateless).unwrap();
    let first = session.list_sessions().unwrap().to_string();
    assert!(
        first.contains(&format!("s{:02}", SESSIONS - 1)),
        "list_sessions over HTTP does not show the {SESSIONS} sessions: {first}"
    );

    let mut cmd = tokio::process::Command::from(env.command());
    cmd.arg("mcp").stderr(Stdio::null());
    let stdio = ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap();

    let labels = [
        "list_sessions http 2025-11-25",
        "list_sessions http 2026-07-28",
        "list_sessions stdio (cms mcp)",
        "ping http 2025-11-25",
        "server/discover http 2026-07-28",
        "ping stdio (cms mcp)",
    ];
    let mut v: Vec<Vec<f64>> = vec![Vec::with_capacity(sizes.calls); labels.len()];
    for i in 0..sizes.warmup + sizes.calls {
        let mut t = [0f64; 6];
        let s = Instant::now();
        session.list_sessions().unwrap();
        t[0] = micros(s.elapsed());
        let s = Instant::now();
        stateless.list_sessions().unwrap();
        t[1] = micros(s.elapsed());
        let s = Instant::now();
        let r = stdio
            .call_tool(CallToolRequestParams::new("list_sessions"))
            .await
            .unwrap();
        t[2] = micros(s.elapsed());
        assert_ne!(r.is_error, Some(true));
        let s = Instant::now();
        session.call("ping", json!({})).unwrap();
        t[3] = micros(s.elapsed());
        let s = Instant::now();
        stateless.call("server/discover", json!({})).unwrap();
        t[4] = micros(s.elapsed());
        let s = Instant::now();
        stdio
            .send_request(rmcp::model::ClientRequest::PingRequest(Default::default()))
            .await
            .unwrap();
        t[5] = micros(s.elapsed());
        if i >= sizes.warmup {
            for (k, x) in t.iter().enumerate() {
                v[k].push(*x);
            }
        }
    }
    let connections = connections_to(&host.addr);
    let _ = stdio.cancel().await;
    Sequential {
        rows: labels.into_iter().zip(v).collect(),
        connections,
    }
}

// ----- 2 and 3. concurrent clients ---------------------------------------------------

#[derive(Default)]
struct Load {
    ok: usize,
    too_many: usize,
    retry_after_missing: usize,
    status: usize,
    transport: usize,
    answer: usize,
    /// Of calls answered with a result, in µs.
    latencies: Vec<f64>,
    elapsed: Duration,
    /// The first few failures other than 429, to show.
    examples: Vec<String>,
}

impl Load {
    fn errors(&self) -> usize {
        self.status + self.transport + self.answer
    }

    fn add(&mut self, other: Load) {
        self.ok += other.ok;
        self.too_many += other.too_many;
        self.retry_after_missing += other.retry_after_missing;
        self.status += other.status;
        self.transport += other.transport;
        self.answer += other.answer;
        self.latencies.extend(other.latencies);
        for e in other.examples {
            if self.examples.len() < 5 {
                self.examples.push(e);
            }
        }
    }

    fn print(&self) {
        let secs = self.elapsed.as_secs_f64();
        println!(
            "   {} calls answered ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.ok,
            self.ok as f64 / secs,
            pct(&self.latencies, 0.5) / 1e3,
            pct(&self.latencies, 0.99) / 1e3,
            self.latencies.iter().cloned().fold(0.0, f64::max) / 1e3
        );
        println!(
            "   429 Too Many Requests: {}; errors: {} (other HTTP status {}, no answer/timeout {}, \
             wrong answer {})",
            self.too_many,
            self.errors(),
            self.status,
            self.transport,
            self.answer
        );
        for e in &self.examples {
            println!("   e.g. {e}");
        }
    }
}

/// `clients` threads, each its own connection (half on each revision), calling
/// list_sessions for `length`.
fn concurrent(host: &Host, clients: usize, length: Duration) -> Load {
    let start = Arc::new(Barrier::new(clients + 1));
    let mut threads = Vec::new();
    for i in 0..clients {
        let revision = if i % 2 == 0 {
            Revision::Session
        } else {
            Revision::Stateless
        };
        let start = start.clone();
        let client = Client::connect(host, revision);
        threads.push(std::thread::spawn(move || {
            let mut load = Load::default();
            let mut client = match client {
                Ok(c) => c,
                Err(e) => {
                    load.answer += 1;
                    load.examples.push(format!("connect: {e}"));
                    start.wait();
                    return load;
                }
            };
            start.wait();
            let end = Instant::now() + length;
            // What the call before an error got (a refused request's connection may
            // be closed by the host).
            let mut before = "none (the first call)";
            while Instant::now() < end {
                let t = Instant::now();
                match client.list_sessions() {
                    Ok(_) => {
                        load.ok += 1;
                        load.latencies.push(micros(t.elapsed()));
                        before = "an answer";
                    }
                    Err(Failure::TooMany { retry_after }) => {
                        load.too_many += 1;
                        if !retry_after {
                            load.retry_after_missing += 1;
                        }
                        before = "a 429";
                    }
                    Err(e) => {
                        match e {
                            Failure::Status(..) => load.status += 1,
                            Failure::Transport(_) => load.transport += 1,
                            _ => load.answer += 1,
                        }
                        if load.examples.len() < 2 {
                            load.examples
                                .push(format!("{e} (the call before got {before})"));
                        }
                        before = "an error";
                    }
                }
            }
            load
        }));
    }
    start.wait();
    let t = Instant::now();
    let mut total = Load::default();
    for th in threads {
        total.add(th.join().unwrap());
    }
    total.elapsed = t.elapsed();
    total
}

//! The simulator: a stand-in for the `claude` executable that speaks the same
//! stream-json protocol (as in `tests/fixtures/transcripts`), scripted by the
//! text of each user message, fast and deterministic. Tests and `cms demo` run on it.
//!
//! A message's first word picks what the simulated model does: [`WORDS`] lists them
//! (`cms-sim --help` prints that table, and the simulator reads words through it).
//!
//! Cost is counted like the CLI generation it plays: per process (2.1.197, the
//! default) or, with `CMS_SIM_COST_SCOPE=conversation`, per conversation as from
//! 2.1.332 on (a `--resume`d or `--fork-session` process starts from the
//! conversation's total so far, kept on disk beside the history; `--max-budget-usd`
//! still counts this process only). `get_session_cost` answers in that generation's
//! words.
//!
//! It honours `--resume`, `--fork-session`, `--session-id`, `--max-turns`,
//! `--max-budget-usd`, `--permission-mode`, `--allowedTools`, `--disallowedTools`,
//! `--permission-prompt-tool stdio` and `--include-partial-messages`, and keeps
//! conversations on disk where the real CLI does
//! (`$CLAUDE_CONFIG_DIR` or `$HOME/.claude`, `projects/<cwd>/<id>.jsonl`).

mod tools;

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A scripting word: the first word of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Word {
    UseTool,
    LoopTool,
    Slow,
    Hang,
    Deaf,
    Crash,
    Garbage,
    Huge,
    Retry,
    ApiError,
    Cost,
    Recall,
    Args,
    Cwd,
    Env,
    Stderr,
    Lines,
}

/// One scripting word: how it is written and what the simulated model does.
pub struct WordDoc {
    pub word: Word,
    pub name: &'static str,
    pub usage: &'static str,
    pub does: &'static str,
}

/// Every scripting word, the one table that `--help` prints and [`word`] reads.
pub const WORDS: &[WordDoc] = &[
    WordDoc { word: Word::UseTool, name: "USE_TOOL", usage: "USE_TOOL Name {json}",
        does: "calls the tool (one line each for parallel calls), then answers `done: N tool results`" },
    WordDoc { word: Word::LoopTool, name: "LOOP_TOOL", usage: "LOOP_TOOL Name {json}",
        does: "calls the tool again and again (until --max-turns)" },
    WordDoc { word: Word::Slow, name: "SLOW", usage: "SLOW ms [text]",
        does: "waits, then echoes (an interrupt ends it early)" },
    WordDoc { word: Word::Hang, name: "HANG", usage: "HANG",
        does: "never answers (until interrupted or killed)" },
    WordDoc { word: Word::Deaf, name: "DEAF", usage: "DEAF",
        does: "never answers and ignores interrupts (only a kill ends it)" },
    WordDoc { word: Word::Crash, name: "CRASH", usage: "CRASH [code]",
        does: "writes `boom` on stderr and exits mid-turn (code 3)" },
    WordDoc { word: Word::Garbage, name: "GARBAGE", usage: "GARBAGE [text]",
        does: "prints a line that is not JSON, then echoes" },
    WordDoc { word: Word::Huge, name: "HUGE", usage: "HUGE bytes",
        does: "answers with a text of that many bytes on one line" },
    WordDoc { word: Word::Retry, name: "RETRY", usage: "RETRY n [message]",
        does: "prints n system/api_retry lines, then plays the rest as a message" },
    WordDoc { word: Word::ApiError, name: "API_ERROR", usage: "API_ERROR status",
        does: "fails like an API error: `subtype: success`, `is_error: true`" },
    WordDoc { word: Word::Cost, name: "COST", usage: "COST usd [message]",
        does: "each API call of this turn costs usd (default $CMS_SIM_COST or 0.001), then plays the rest" },
    WordDoc { word: Word::Recall, name: "RECALL", usage: "RECALL",
        does: "lists every earlier user message of the conversation" },
    WordDoc { word: Word::Args, name: "ARGS", usage: "ARGS",
        does: "answers with its argv (JSON)" },
    WordDoc { word: Word::Cwd, name: "CWD", usage: "CWD",
        does: "answers with its working directory" },
    WordDoc { word: Word::Env, name: "ENV", usage: "ENV [NAME]",
        does: "answers with a variable, or every variable's name" },
    WordDoc { word: Word::Stderr, name: "STDERR", usage: "STDERR text",
        does: "writes text on stderr, then echoes" },
    WordDoc { word: Word::Lines, name: "LINES", usage: "LINES n ms [text]",
        does: "answers in n messages `text 1` .. `text n`, ms apart (an interrupt ends it early)" },
];

/// The scripting word `s` is, if any.
pub fn word(s: &str) -> Option<Word> {
    WORDS.iter().find(|w| w.name == s).map(|w| w.word)
}

/// `cms-sim --help`.
pub fn help() -> String {
    let width = WORDS.iter().map(|w| w.usage.len()).max().unwrap_or(0);
    let mut h = String::from(
        "cms-sim: a stand-in for the `claude` executable that speaks its stream-json protocol,\n\
         for tests and `cms demo` (no account, no network).\n\n\
         Usage: cms-sim -p --input-format stream-json --output-format stream-json --verbose [OPTIONS]\n\n\
         Each user message is a script: its first word picks what the simulated model does.\n\n",
    );
    for w in WORDS {
        h.push_str(&format!("  {:width$}  {}\n", w.usage, w.does));
    }
    h.push_str(&format!(
        "  {:width$}  {}\n",
        "anything else", "answers `echo: <message>`"
    ));
    h.push_str(
        "\nOptions honoured: --resume, --fork-session, --session-id, --max-turns, --max-budget-usd,\n\
         --permission-mode, --allowedTools, --disallowedTools, --permission-prompt-tool stdio,\n\
         --include-partial-messages, --model; --system-prompt, --mcp-config, --settings and a few\n\
         more are accepted and ignored.\n\n\
         Environment:\n  \
         CMS_SIM_COST=usd                   the cost of one API call (default 0.001)\n  \
         CMS_SIM_COST_SCOPE=conversation    count cost per conversation, as Claude Code 2.1.332 on\n  \
         CLAUDE_CONFIG_DIR, HOME            where conversations are kept (as the real CLI)\n\n\
         Point cms at it: cms --claude-bin cms-sim ...\n",
    );
    h
}

pub const VERSION: &str = "2.1.197-sim";
/// The version reported when cost is counted per conversation.
pub const VERSION_CONVERSATION_COST: &str = "2.1.332-sim";

/// True when cost is counted per conversation (`CMS_SIM_COST_SCOPE=conversation`).
fn conversation_cost() -> bool {
    std::env::var("CMS_SIM_COST_SCOPE").as_deref() == Ok("conversation")
}

fn version() -> &'static str {
    if conversation_cost() {
        VERSION_CONVERSATION_COST
    } else {
        VERSION
    }
}

static SIGINT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    SIGINT.store(true, Ordering::SeqCst);
}

#[derive(Debug, Default, Clone)]
struct Args {
    print: bool,
    input_stream: bool,
    output_stream: bool,
    verbose: bool,
    model: Option<String>,
    permission_mode: String,
    allowed: Vec<String>,
    disallowed: Vec<String>,
    max_turns: Option<u32>,
    max_budget: Option<f64>,
    resume: Option<String>,
    fork: bool,
    session_id: Option<String>,
    prompt_stdio: bool,
    partial: bool,
    raw: Vec<String>,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        permission_mode: "default".into(),
        raw: argv.to_vec(),
        ..Args::default()
    };
    let mut it = argv.iter().peekable();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("error: option '{name}' argument missing"))
        };
        match flag.as_str() {
            "-p" | "--print" => a.print = true,
            "--verbose" => a.verbose = true,
            "--input-format" => a.input_stream = value(&flag)? == "stream-json",
            "--output-format" => a.output_stream = value(&flag)? == "stream-json",
            "--model" => a.model = Some(value(&flag)?),
            "--permission-mode" => a.permission_mode = value(&flag)?,
            "--allowedTools" | "--allowed-tools" => a.allowed.extend(split_tools(&value(&flag)?)),
            "--disallowedTools" | "--disallowed-tools" => {
                a.disallowed.extend(split_tools(&value(&flag)?))
            }
            "--max-turns" => {
                let v = value(&flag)?;
                a.max_turns = Some(
                    v.parse()
                        .map_err(|_| format!("error: invalid --max-turns '{v}'"))?,
                );
            }
            "--max-budget-usd" => {
                let v = value(&flag)?;
                a.max_budget = Some(
                    v.parse()
                        .map_err(|_| format!("error: invalid --max-budget-usd '{v}'"))?,
                );
            }
            "-r" | "--resume" => a.resume = Some(value(&flag)?),
            "--fork-session" => a.fork = true,
            "--session-id" => a.session_id = Some(value(&flag)?),
            "--permission-prompt-tool" => a.prompt_stdio = value(&flag)? == "stdio",
            "--include-partial-messages" => a.partial = true,
            "--dangerously-skip-permissions" => a.permission_mode = "bypassPermissions".into(),
            "--append-system-prompt"
            | "--system-prompt"
            | "--agent"
            | "--mcp-config"
            | "-w"
            | "--worktree"
            | "--add-dir"
            | "--settings"
            | "--setting-sources"
            | "--fallback-model" => {
                value(&flag)?;
            }
            "--strict-mcp-config" | "--bare" => {}
            other => return Err(format!("error: unknown option '{other}'")),
        }
    }
    Ok(a)
}

fn split_tools(s: &str) -> Vec<String> {
    // Commas or spaces separate tools, but not inside parentheses: "Bash(git *)".
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' | ' ' if depth == 0 => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

enum Input {
    User(String),
    Control { id: String, request: Value },
    ControlResponse { id: String, body: Value },
    Eof,
}

struct Out {
    stdout: std::io::Stdout,
}

impl Out {
    fn line(&mut self, v: &Value) {
        let mut lock = self.stdout.lock();
        let _ = writeln!(lock, "{v}");
        let _ = lock.flush();
    }

    fn raw(&mut self, s: &str) {
        let mut lock = self.stdout.lock();
        let _ = writeln!(lock, "{s}");
        let _ = lock.flush();
    }
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Where the real CLI keeps the conversations of a working directory.
pub fn project_dir(cwd: &std::path::Path) -> PathBuf {
    let base = std::env::var_os("CLAUDE_CONFIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".claude")
        });
    let mangled: String = cwd
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base.join("projects").join(mangled)
}

struct Sim {
    args: Args,
    out: Out,
    rx: Receiver<Input>,
    cwd: PathBuf,
    session_id: String,
    file: PathBuf,
    history: Vec<(String, String)>,
    model: String,
    /// The cumulative `total_cost_usd` this process reports.
    total_cost: f64,
    /// What this process itself spent (what `--max-budget-usd` limits).
    process_cost: f64,
    pending: VecDeque<String>,
    last_error: bool,
    eof: bool,
    started: Instant,
}

/// Run the simulator with the given arguments (without the program name); returns the exit code.
pub fn run(argv: Vec<String>) -> i32 {
    if argv.iter().any(|a| a == "--help" || a == "-h") {
        print!("{}", help());
        return 0;
    }
    if argv.iter().any(|a| a == "--version" || a == "-v") {
        println!("{} (Claude Code)", version());
        return 0;
    }
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if args.print && args.output_stream && !args.verbose {
        eprintln!("Error: When using --print, --output-format=stream-json requires --verbose");
        return 1;
    }
    if !args.print || !args.input_stream || !args.output_stream {
        eprintln!("cms-sim only speaks `-p --input-format stream-json --output-format stream-json --verbose`");
        return 1;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if args.permission_mode == "bypassPermissions"
        && root
        && std::env::var("IS_SANDBOX").as_deref() != Ok("1")
    {
        eprintln!("--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons");
        return 1;
    }
    if args.session_id.is_some() && args.resume.is_some() && !args.fork {
        eprintln!("Error: --session-id can only be used with --continue or --resume if --fork-session is also specified.");
        return 1;
    }
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let dir = project_dir(&cwd);
    let mut out = Out {
        stdout: std::io::stdout(),
    };
    let (session_id, history, carried_cost) = match &args.resume {
        Some(id) => {
            let path = dir.join(format!("{id}.jsonl"));
            let Ok(text) = std::fs::read_to_string(&path) else {
                let msg = format!("No conversation found with session ID: {id}");
                out.line(&json!({"type":"result","subtype":"error_during_execution","duration_ms":0,
                    "duration_api_ms":0,"is_error":true,"num_turns":0,"stop_reason":null,"session_id":id,
                    "total_cost_usd":0,"usage":{"input_tokens":0,"output_tokens":0},"modelUsage":{},
                    "permission_denials":[],"uuid":uuid(),"errors":[msg]}));
                eprintln!("{msg}");
                return 1;
            };
            let history = read_history(&text);
            let carried = if conversation_cost() {
                read_cost_state(&text)
            } else {
                0.0
            };
            if args.fork {
                let new_id = args.session_id.clone().unwrap_or_else(uuid);
                (new_id, history, carried)
            } else {
                (id.clone(), history, carried)
            }
        }
        None => {
            let id = args.session_id.clone().unwrap_or_else(uuid);
            if dir.join(format!("{id}.jsonl")).exists() {
                eprintln!("Error: Session ID {id} is already in use.");
                return 1;
            }
            (id, Vec::new(), 0.0)
        }
    };
    let file = dir.join(format!("{session_id}.jsonl"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || read_stdin(tx));
    let model = args.model.clone().unwrap_or_else(|| "claude-sim-1".into());
    let mut sim = Sim {
        args,
        out,
        rx,
        cwd,
        session_id,
        file,
        history,
        model,
        total_cost: carried_cost,
        process_cost: 0.0,
        pending: VecDeque::new(),
        last_error: false,
        eof: false,
        started: Instant::now(),
    };
    if sim.args.fork {
        // The fork holds a copy of the parent's history from the start.
        sim.persist_all();
    }
    sim.main_loop()
}

/// The conversation's cost so far: the last `cost_state` line of its file.
fn read_cost_state(text: &str) -> f64 {
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v["cost_state"].as_f64())
        .unwrap_or(0.0)
}

fn read_history(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            Some((
                v["role"].as_str()?.to_string(),
                v["text"].as_str()?.to_string(),
            ))
        })
        .collect()
}

fn read_stdin(tx: mpsc::Sender<Input>) {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("Error parsing streaming input line: {line}: {e}");
                std::process::exit(1);
            }
        };
        let input = match v["type"].as_str() {
            Some("user") => {
                let Some(content) = v.get("message").and_then(|m| m.get("content")) else {
                    eprintln!("Error parsing streaming input line: {line}: message is required");
                    std::process::exit(1);
                };
                Input::User(content_text(content))
            }
            Some("control_request") => Input::Control {
                id: v["request_id"].as_str().unwrap_or_default().to_string(),
                request: v["request"].clone(),
            },
            Some("control_response") => Input::ControlResponse {
                id: v["response"]["request_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                body: v["response"].clone(),
            },
            _ => continue,
        };
        if tx.send(input).is_err() {
            return;
        }
    }
    let _ = tx.send(Input::Eof);
}

fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Why a turn ended early.
enum Stop {
    Interrupted,
}

impl Sim {
    fn main_loop(&mut self) -> i32 {
        loop {
            if let Some(text) = self.take_pending() {
                self.turn(&text);
                continue;
            }
            if self.eof {
                return if self.last_error { 1 } else { 0 };
            }
            match self.rx.recv() {
                Ok(input) => self.handle_idle(input),
                Err(_) => self.eof = true,
            }
        }
    }

    /// Messages queued during a turn are merged into one, as the real CLI does.
    fn take_pending(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        Some(self.pending.drain(..).collect::<Vec<_>>().join("\n"))
    }

    fn handle_idle(&mut self, input: Input) {
        match input {
            Input::User(t) => self.pending.push_back(t),
            Input::Control { id, request } => {
                self.control(&id, &request);
            }
            Input::ControlResponse { .. } => {}
            Input::Eof => self.eof = true,
        }
    }

    /// Answer a control request; returns true for `interrupt`.
    fn control(&mut self, id: &str, request: &Value) -> bool {
        let subtype = request["subtype"].as_str().unwrap_or_default();
        let ok = |resp: Value| json!({"type":"control_response","response":{"subtype":"success","request_id":id,"response":resp}});
        match subtype {
            "interrupt" => {
                self.out.line(&json!({"type":"control_response","response":{"subtype":"success","request_id":id}}));
                return true;
            }
            "initialize" => self.out.line(&ok(json!({"commands":[],"agents":[],"output_style":"default",
                "models":[{"value":"default","displayName":"Simulated"}],
                "account":{"tokenSource":"none","apiProvider":"simulator"},"pid":std::process::id()}))),
            "set_permission_mode" => {
                let mode = request["mode"].as_str().unwrap_or("default").to_string();
                if mode == "bypassPermissions" {
                    self.out.line(&json!({"type":"control_response","response":{"subtype":"error","request_id":id,
                        "error":"Cannot set permission mode to bypassPermissions because the session was not launched with --dangerously-skip-permissions"}}));
                } else {
                    self.args.permission_mode = mode.clone();
                    self.out.line(&ok(json!({"mode": mode})));
                    self.out.line(&json!({"type":"system","subtype":"status","status":null,"permissionMode":mode,
                        "uuid":uuid(),"session_id":self.session_id}));
                }
            }
            "set_model" => {
                if let Some(m) = request["model"].as_str() {
                    self.model = m.to_string();
                }
                self.out.line(&ok(json!({})));
            }
            "mcp_status" => self.out.line(&ok(json!({"mcpServers":[]}))),
            "get_binary_version" => self.out.line(&ok(json!({"version": version()}))),
            "get_session_cost" => {
                let label = if conversation_cost() {
                    "Estimated cost:        "
                } else {
                    "Total cost:            "
                };
                let text = format!(
                    "{label}${:.4}\nTotal duration (API):  0s\nTotal duration (wall): 0s",
                    self.total_cost
                );
                self.out.line(&ok(json!({ "text": text })));
            }
            other => self.out.line(&json!({"type":"control_response","response":{"subtype":"error","request_id":id,
                "error":format!("Unsupported control request subtype: {other}")}})),
        }
        false
    }

    /// Wait up to `d` while answering control requests and queueing user messages.
    /// Returns Err(Stop) when interrupted.
    fn wait(&mut self, d: Option<Duration>) -> Result<(), Stop> {
        let end = d.map(|d| Instant::now() + d);
        loop {
            if SIGINT.swap(false, Ordering::SeqCst) {
                return Err(Stop::Interrupted);
            }
            let step = match end {
                Some(e) => {
                    let now = Instant::now();
                    if now >= e {
                        return Ok(());
                    }
                    (e - now).min(Duration::from_millis(20))
                }
                None => Duration::from_millis(20),
            };
            match self.rx.recv_timeout(step) {
                Ok(Input::User(t)) => self.pending.push_back(t),
                Ok(Input::Control { id, request }) => {
                    if self.control(&id, &request) {
                        return Err(Stop::Interrupted);
                    }
                }
                Ok(Input::ControlResponse { .. }) => {}
                Ok(Input::Eof) => self.eof = true,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.eof = true;
                    std::thread::sleep(step);
                }
            }
        }
    }

    /// Wait for the host's answer to a `can_use_tool` request.
    fn wait_permission(&mut self, request_id: &str) -> Result<Value, Stop> {
        loop {
            if SIGINT.swap(false, Ordering::SeqCst) {
                return Err(Stop::Interrupted);
            }
            match self.rx.recv_timeout(Duration::from_millis(20)) {
                Ok(Input::ControlResponse { id, body }) if id == request_id => return Ok(body),
                Ok(Input::ControlResponse { .. }) => {}
                Ok(Input::User(t)) => self.pending.push_back(t),
                Ok(Input::Control { id, request }) => {
                    if self.control(&id, &request) {
                        return Err(Stop::Interrupted);
                    }
                }
                Ok(Input::Eof) | Err(RecvTimeoutError::Disconnected) => {
                    self.eof = true;
                    return Ok(
                        json!({"subtype":"error","error":"Tool permission stream closed before response received"}),
                    );
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn persist_all(&self) {
        if let Some(parent) = self.file.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let text: String = self
            .history
            .iter()
            .map(|(role, text)| format!("{}\n", json!({"role": role, "text": text})))
            .chain(std::iter::once(format!(
                "{}\n",
                json!({ "cost_state": self.total_cost })
            )))
            .collect();
        let _ = std::fs::write(&self.file, text);
    }

    fn persist(&mut self, role: &str, text: &str) {
        self.history.push((role.to_string(), text.to_string()));
        self.append(&json!({"role": role, "text": text}));
    }

    /// Keep the conversation's running total beside its history (as 2.1.332 does).
    fn persist_cost_state(&self) {
        self.append(&json!({ "cost_state": self.total_cost }));
    }

    /// One line at the end of the conversation's file.
    fn append(&self, line: &Value) {
        if let Some(parent) = self.file.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
        {
            let _ = writeln!(f, "{line}");
        }
    }

    fn init_line(&mut self) {
        let tools = [
            "Task",
            "Bash",
            "Edit",
            "Glob",
            "Grep",
            "NotebookEdit",
            "Read",
            "WebFetch",
            "WebSearch",
            "Write",
        ];
        let tools: Vec<&str> = tools
            .iter()
            .copied()
            .filter(|t| !self.args.disallowed.iter().any(|d| d == t))
            .collect();
        self.out.line(&json!({"type":"system","subtype":"init","cwd":self.cwd.display().to_string(),
            "session_id":self.session_id,"tools":tools,"mcp_servers":[],"model":self.model,
            "permissionMode":self.args.permission_mode,"apiKeySource":"none","claude_code_version":version(),
            "output_style":"default","uuid":uuid()}));
    }

    fn assistant(&mut self, blocks: Vec<Value>, msg_id: &str) {
        for b in blocks {
            let is_text = b["type"] == "text";
            if self.args.partial && is_text {
                self.out.line(&json!({"type":"stream_event","event":{"type":"content_block_start","index":0,
                    "content_block":{"type":"text","text":""}},"session_id":self.session_id,"parent_tool_use_id":null,"uuid":uuid()}));
                self.out.line(&json!({"type":"stream_event","event":{"type":"content_block_delta","index":0,
                    "delta":{"type":"text_delta","text":b["text"]}},"session_id":self.session_id,"parent_tool_use_id":null,"uuid":uuid()}));
            }
            self.out.line(&json!({"type":"assistant","message":{"id":msg_id,"type":"message","role":"assistant",
                "model":self.model,"content":[b],"stop_reason":null,"stop_sequence":null,
                "usage":{"input_tokens":100,"output_tokens":1}},"parent_tool_use_id":null,
                "session_id":self.session_id,"uuid":uuid()}));
            if self.args.partial && is_text {
                self.out.line(
                    &json!({"type":"stream_event","event":{"type":"content_block_stop","index":0},
                    "session_id":self.session_id,"parent_tool_use_id":null,"uuid":uuid()}),
                );
            }
        }
    }

    fn turn(&mut self, text: &str) {
        let started = Instant::now();
        self.init_line();
        let earlier: Vec<String> = self
            .history
            .iter()
            .filter(|(r, _)| r == "user")
            .map(|(_, t)| t.clone())
            .collect();
        self.persist("user", text);
        let mut t = TurnState {
            cost_per_call: std::env::var("CMS_SIM_COST")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0.001),
            ..TurnState::default()
        };
        let outcome = self.play(text, &earlier, &mut t);
        let (subtype, is_error, result_text, errors, terminal, api_status) = match outcome {
            Outcome::Text(s) => ("success", false, Some(s), vec![], Some("completed"), None),
            Outcome::ApiError(status, s) => (
                "success",
                true,
                Some(s),
                vec![],
                Some("completed"),
                Some(status),
            ),
            Outcome::Interrupted => {
                self.out.line(&json!({"type":"user","message":{"role":"user","content":[{"type":"text",
                    "text":"[Request interrupted by user]"}]},"parent_tool_use_id":null,"session_id":self.session_id,"uuid":uuid()}));
                (
                    "error_during_execution",
                    true,
                    None,
                    vec![
                        "[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null"
                            .to_string(),
                    ],
                    Some("aborted_streaming"),
                    None,
                )
            }
            Outcome::MaxTurns(n) => (
                "error_max_turns",
                true,
                None,
                vec![format!("Reached maximum number of turns ({n})")],
                Some("max_turns"),
                None,
            ),
            Outcome::Budget(b) => (
                "error_max_budget_usd",
                true,
                None,
                vec![format!("Reached maximum budget (${b})")],
                None,
                None,
            ),
        };
        if let Some(text) = &result_text {
            self.persist("assistant", text);
        }
        let mut result = json!({"type":"result","subtype":subtype,"is_error":is_error,
            "duration_ms":started.elapsed().as_millis() as u64,"duration_api_ms":self.started.elapsed().as_millis() as u64,
            "num_turns":1 + t.tool_results,"stop_reason":if is_error {Value::Null} else {json!("end_turn")},
            "session_id":self.session_id,"total_cost_usd":self.total_cost,
            "usage":{"input_tokens":100 * t.calls,"output_tokens":20 * t.calls},
            "modelUsage":{self.model.clone():{"inputTokens":100,"outputTokens":20,"costUSD":self.total_cost}},
            "permission_denials":t.denials,"uuid":uuid()});
        if let Some(s) = result_text {
            result["result"] = s.into();
        }
        if !errors.is_empty() {
            result["errors"] = json!(errors);
        }
        if let Some(tr) = terminal {
            result["terminal_reason"] = tr.into();
        }
        if subtype == "success" {
            result["api_error_status"] = api_status.map_or(Value::Null, |s| json!(s));
        }
        self.last_error = is_error;
        self.persist_cost_state();
        self.out.line(&result);
    }

    /// One simulated API call; false when the budget stops the turn.
    fn bill(&mut self, t: &mut TurnState) -> bool {
        t.calls += 1;
        self.total_cost += t.cost_per_call;
        self.process_cost += t.cost_per_call;
        match self.args.max_budget {
            Some(b) => self.process_cost < b,
            None => true,
        }
    }

    fn play(&mut self, text: &str, earlier: &[String], t: &mut TurnState) -> Outcome {
        let msg_id = format!("msg_sim_{}", &uuid()[..8]);
        let mut body = text.trim();
        let (first, after) = split_word(body);
        if word(first) == Some(Word::Cost) {
            let (c, r) = split_word(after);
            t.cost_per_call = c.parse().unwrap_or(t.cost_per_call);
            body = r;
        }
        let (first, rest) = split_word(body);
        let echo = |s: &str| format!("echo: {s}");
        let Some(w) = word(first) else {
            return self.answer(echo(body), t, &msg_id);
        };
        let reply = match w {
            Word::UseTool | Word::LoopTool => {
                return self.tools(body, w == Word::LoopTool, t, &msg_id)
            }
            Word::Slow => {
                let (ms, r) = split_word(rest);
                if self
                    .wait(Some(Duration::from_millis(ms.parse().unwrap_or(1000))))
                    .is_err()
                {
                    return Outcome::Interrupted;
                }
                echo(r)
            }
            Word::Deaf => {
                // Ignores interrupts and SIGINT: only a kill ends it.
                // SAFETY: ignoring a signal.
                unsafe {
                    libc::signal(libc::SIGINT, libc::SIG_IGN);
                }
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            Word::Hang => {
                let _ = self.wait(None);
                return Outcome::Interrupted;
            }
            Word::Crash => {
                self.assistant(
                    vec![json!({"type":"text","text":"about to crash"})],
                    &msg_id,
                );
                eprintln!("boom");
                std::process::exit(rest.trim().parse().unwrap_or(3));
            }
            Word::Garbage => {
                self.out.raw("this line is {not json");
                echo(rest)
            }
            Word::Huge => "x".repeat(rest.trim().parse().unwrap_or(1024)),
            Word::Retry => {
                let (n, r) = split_word(rest);
                let n: u32 = n.parse().unwrap_or(1);
                for attempt in 1..=n {
                    self.out.line(&json!({"type":"system","subtype":"api_retry","attempt":attempt,"max_retries":10,
                        "retry_delay_ms":10.0,"error_status":529,"error":"overloaded","session_id":self.session_id,"uuid":uuid()}));
                    if self.wait(Some(Duration::from_millis(10))).is_err() {
                        return Outcome::Interrupted;
                    }
                }
                // What follows plays as a message of its own (`RETRY 3 API_ERROR 529`).
                return self.play(r, earlier, t);
            }
            Word::ApiError => {
                let status: i64 = rest.trim().parse().unwrap_or(500);
                let msg = format!("API Error: {status} simulated failure");
                self.out.line(&json!({"type":"assistant","message":{"id":msg_id,"type":"message","role":"assistant",
                    "model":"<synthetic>","content":[{"type":"text","text":msg}],"stop_reason":"stop_sequence"},
                    "parent_tool_use_id":null,"session_id":self.session_id,"uuid":uuid(),"error":"server_error"}));
                return Outcome::ApiError(status, msg);
            }
            Word::Recall => format!("recall: {}", earlier.join(" | ")),
            Word::Args => serde_json::to_string(&self.args.raw).unwrap_or_default(),
            Word::Cwd => self.cwd.display().to_string(),
            Word::Env if rest.trim().is_empty() => {
                // Every variable's name, sorted: what a child inherited.
                let mut names: Vec<String> = std::env::vars_os()
                    .map(|(k, _)| k.to_string_lossy().into_owned())
                    .collect();
                names.sort();
                names.join(" ")
            }
            Word::Env => std::env::var(rest.trim()).unwrap_or_default(),
            Word::Stderr => {
                eprintln!("{rest}");
                echo(rest)
            }
            // A second COST (`COST 1 COST 2 x`) is text like any other.
            Word::Cost => echo(body),
            Word::Lines => return self.lines(rest, t, &msg_id),
        };
        self.answer(reply, t, &msg_id)
    }

    /// `LINES n ms [text]`: n text messages, `ms` apart, the last one the answer.
    fn lines(&mut self, rest: &str, t: &mut TurnState, msg_id: &str) -> Outcome {
        let (n, r) = split_word(rest);
        let (ms, text) = split_word(r);
        let n: u32 = n.parse().unwrap_or(3).clamp(1, 10_000);
        let pause = Duration::from_millis(ms.parse().unwrap_or(500));
        let text = if text.trim().is_empty() {
            "line"
        } else {
            text.trim()
        };
        for i in 1..n {
            self.assistant(
                vec![json!({"type":"text","text":format!("{text} {i}")})],
                msg_id,
            );
            if self.wait(Some(pause)).is_err() {
                return Outcome::Interrupted;
            }
        }
        self.answer(format!("{text} {n}"), t, msg_id)
    }

    /// One billed API call that answers `reply`.
    fn answer(&mut self, reply: String, t: &mut TurnState, msg_id: &str) -> Outcome {
        let within_budget = self.bill(t);
        self.assistant(vec![json!({"type":"text","text":reply})], msg_id);
        if !within_budget {
            return Outcome::Budget(self.args.max_budget.unwrap_or(0.0));
        }
        Outcome::Text(reply)
    }
}

#[derive(Default)]
struct TurnState {
    cost_per_call: f64,
    calls: u32,
    tool_results: u32,
    denials: Vec<Value>,
}

enum Outcome {
    Text(String),
    ApiError(i64, String),
    Interrupted,
    MaxTurns(u32),
    Budget(f64),
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

pub use tools::parse_tool_lines;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_is_read_through_the_table_and_in_the_help() {
        let help = help();
        for w in WORDS {
            assert_eq!(word(w.name), Some(w.word));
            assert!(w.usage.starts_with(w.name), "{}", w.usage);
            assert!(help.contains(w.usage), "{} missing from --help", w.name);
        }
        assert_eq!(word("hello"), None);
        assert_eq!(word("use_tool"), None);
    }
}

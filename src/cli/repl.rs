//! `cms repl`: the `cms` Lua module, interactively. History in `$CMS_HOME`, multi-line
//! input, completion of `cms.` names and session names, values pretty-printed,
//! `:help`, `:load FILE`, `:quit`. With stdin not a terminal it runs the lines given.

use super::args::ReplArgs;
use super::out::{self, errln, outln};
use crate::app::{exit, App, HostUse, LuaApp};
use crate::engine::{EngineConfig, Sessions};
use crate::lua::host::Eval;
use crate::lua::{pretty::pretty, LuaHost, ScriptError};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use std::io::{BufRead, IsTerminal};
use std::sync::Arc;

const HELP: &str = "\
cms repl — the `cms` Lua module, interactively. Engine calls wait for Claude Code.

  s = cms.spawn{name = \"a\", prompt = \"hello\"}   start a session (s.response.text)
  s:send(\"more\")                                 a follow-up; r.text, r.cost_usd, r.num_turns
  s:fork{name = \"b\", message = \"try another way\"}
  cms.parallel{function() ... end, ...}           run functions concurrently
  cms.list(), cms.get(\"a\"), s:history(), s:status()
  cms.on(\"tool_use\", function(e) print(e.name) end)

  :help            this text
  :load FILE       run a Lua file here
  :quit            leave (Ctrl-D too); live sessions are stopped, resumable later

An unfinished chunk (an open function, table or string) continues on the next line.
Tab completes cms.* names and, inside quotes, session names.";

struct ReplHelper {
    manager: Arc<dyn Sessions>,
    /// The names offered after `cms.`: read from the REPL's own `cms` table, so every
    /// name of the module (`cms.delegate`, `cms.path.*`, ...) is there.
    api_names: Vec<String>,
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "._-:".contains(c)))
            .map_or(0, |i| i + 1);
        let word = &before[start..];
        let quoted = start > 0 && matches!(before.as_bytes()[start - 1], b'"' | b'\'');
        let pair = |s: &str| Pair {
            display: s.to_string(),
            replacement: s.to_string(),
        };
        let candidates: Vec<Pair> = if quoted {
            let names = self
                .manager
                .list()
                .map(|r| r.into_iter().map(|r| r.name).collect::<Vec<_>>());
            names
                .unwrap_or_default()
                .iter()
                .filter(|n| n.starts_with(word))
                .map(|n| pair(n))
                .collect()
        } else if word.starts_with(':') && start == 0 {
            [":help", ":load ", ":quit"]
                .iter()
                .filter(|c| c.starts_with(word))
                .map(|c| pair(c))
                .collect()
        } else if word.starts_with("cms") {
            self.api_names
                .iter()
                .filter(|c| c.starts_with(word))
                .map(|c| pair(c))
                .collect()
        } else {
            Vec::new()
        };
        Ok((start, candidates))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}
impl Highlighter for ReplHelper {}
impl Validator for ReplHelper {}
impl Helper for ReplHelper {}

/// Where a line of input comes from.
enum Input {
    Terminal(Box<Editor<ReplHelper, DefaultHistory>>),
    Piped(std::io::StdinLock<'static>),
}

/// One read from the input.
enum Line {
    Text(String),
    /// Ctrl-C at the prompt: drop the unfinished chunk.
    Cleared,
    /// Ctrl-D or the end of piped input.
    End,
}

impl Input {
    fn read(&mut self, prompt: &str) -> Line {
        match self {
            Input::Terminal(ed) => match ed.readline(prompt) {
                Ok(line) => Line::Text(line),
                Err(ReadlineError::Interrupted) => {
                    let _ = outln!("(Ctrl-C: input cleared; :quit or Ctrl-D to leave)");
                    Line::Cleared
                }
                Err(_) => Line::End,
            },
            Input::Piped(stdin) => {
                let mut line = String::new();
                match stdin.read_line(&mut line) {
                    Ok(0) | Err(_) => Line::End,
                    Ok(_) => Line::Text(line.trim_end_matches(['\n', '\r']).to_string()),
                }
            }
        }
    }

    fn remember(&mut self, entry: &str) {
        if let Input::Terminal(ed) = self {
            let _ = ed.add_history_entry(entry);
        }
    }
}

pub fn run(cfg: EngineConfig, args: ReplArgs, want: HostUse) -> i32 {
    let history = cfg.home.join("repl_history");
    let app = match App::open(cfg, want) {
        Ok(app) => app,
        Err(e) => return exit::fail(e),
    };
    let manager = app.sessions().clone();
    let handle = app.handle();
    let _inside = handle.enter();
    let LuaApp {
        host,
        policy: _attached,
    } = match app.lua(args.lua.host_options(Vec::new())) {
        Ok(h) => h,
        Err(e) => return exit::fail(e),
    };
    let interactive = std::io::stdin().is_terminal();
    let mut input = if interactive {
        let mut ed: Editor<ReplHelper, DefaultHistory> = match Editor::new() {
            Ok(ed) => ed,
            Err(e) => return exit::fail(format!("cannot start the line editor: {e}")),
        };
        ed.set_helper(Some(ReplHelper {
            manager: manager.clone(),
            api_names: crate::lua::stubs::module_names(host.lua()),
        }));
        let _ = ed.load_history(&history);
        let _ = outln!(
            "cms {} — Lua REPL. :help for help, :quit to leave.",
            env!("CARGO_PKG_VERSION")
        );
        Input::Terminal(Box::new(ed))
    } else {
        Input::Piped(std::io::stdin().lock())
    };
    let mut buffer = String::new();
    let mut failed = false;
    // A reader that closed stdout (`cms repl < steps.lua | head -1`) ends the session.
    while !out::is_closed() {
        let prompt = if buffer.is_empty() { "cms> " } else { "  >> " };
        let line = match input.read(prompt) {
            Line::Text(line) => line,
            Line::Cleared => {
                buffer.clear();
                continue;
            }
            Line::End => break,
        };
        if buffer.is_empty() {
            match line.trim() {
                "" => continue,
                ":quit" | ":q" | ":exit" => break,
                ":help" | ":h" => {
                    let _ = outln!("{HELP}");
                    input.remember(line.trim());
                    continue;
                }
                cmd if cmd.starts_with(":load") => {
                    input.remember(cmd);
                    let path = cmd.trim_start_matches(":load").trim();
                    if path.is_empty() {
                        errln!("error: usage: :load FILE");
                        failed = true;
                        continue;
                    }
                    let r = app.run_local(evaluate(&host, Job::File(path.into())));
                    failed |= !show(r);
                    continue;
                }
                cmd if cmd.starts_with(':') => {
                    errln!("error: unknown command {cmd} (:help, :load FILE, :quit)");
                    failed = true;
                    continue;
                }
                _ => {}
            }
        }
        if !buffer.is_empty() {
            buffer.push('\n');
        }
        buffer.push_str(&line);
        let r = app.run_local(evaluate(&host, Job::Chunk(buffer.clone())));
        if matches!(r, Ok(Eval::Incomplete)) {
            continue;
        }
        input.remember(&buffer);
        failed |= !show(r);
        buffer.clear();
    }
    if !buffer.trim().is_empty() {
        errln!("error: unfinished input at the end: {}", buffer.trim());
        failed = true;
    }
    if let Input::Terminal(ed) = &mut input {
        let _ = ed.save_history(&history);
    }
    // Sessions started here end with the REPL, unless started with `keep = true`.
    app.run_local(host.stop_started());
    app.block_on(manager.shutdown());
    if failed && !interactive {
        1
    } else {
        0
    }
}

enum Job {
    Chunk(String),
    File(std::path::PathBuf),
}

/// Run a chunk or file; Ctrl-C interrupts the running turns and abandons the chunk,
/// a busy one (`while true do end`) included: a task on the runtime's workers sets
/// the state's interrupt flag, which the instruction hook sees.
async fn evaluate(host: &LuaHost, job: Job) -> Result<Eval, ScriptError> {
    let flag = crate::sandbox::limits::interrupter(host.lua());
    // Registered before the chunk runs, so no early Ctrl-C is missed.
    let sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let watcher = flag.clone().zip(sigint).map(|(flag, mut sigint)| {
        tokio::spawn(async move {
            if sigint.recv().await.is_some() {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })
    });
    let r = evaluate_inner(host, job).await;
    if let Some(w) = watcher {
        w.abort();
    }
    if let Some(flag) = flag {
        // The next chunk starts afresh.
        if flag.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return Err(ScriptError::Lua(mlua::Error::runtime(
                "interrupted (Ctrl-C)",
            )));
        }
    }
    r
}

async fn evaluate_inner(host: &LuaHost, job: Job) -> Result<Eval, ScriptError> {
    let work = async {
        match &job {
            Job::Chunk(code) => host.eval(code).await,
            Job::File(path) => host
                .run_file(path)
                .await
                .map(|v| Eval::Values(mlua::MultiValue::from_vec(vec![v]))),
        }
    };
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => {
            host.sessions().interrupt_all().await;
            Err(ScriptError::Lua(mlua::Error::runtime("interrupted (Ctrl-C)")))
        }
    }
}

/// Print values (or the error); false on error.
fn show(r: Result<Eval, ScriptError>) -> bool {
    match r {
        Ok(Eval::Values(values)) => {
            for v in values.iter().filter(|v| !v.is_nil()) {
                let _ = outln!("{}", pretty(v));
            }
            true
        }
        Ok(Eval::Incomplete) => true,
        Err(ScriptError::Exit(code)) => {
            let _ = outln!("(os.exit({code}) ignored in the REPL; use :quit)");
            true
        }
        Err(e) => {
            errln!("error: {e}");
            false
        }
    }
}

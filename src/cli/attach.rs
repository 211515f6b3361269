//! `cms attach NAME`: a prompt on one session. Each line typed is sent to it
//! ([`Sessions::send`]) and its answer streams in, with the tools it uses; what
//! other clients make it do (someone else's `cms send`) shows too. Ctrl-C during a
//! turn interrupts the turn (the session stays live), Ctrl-C at the prompt only
//! says how to leave, Ctrl-D detaches and leaves the session running in the host.
//! With stdin not a terminal, each line read is sent in turn, the answers printed
//! (text on stdout, the rest on stderr), and attach ends at the end of the input.

use super::args::NameArg;
use super::out::{self, errln};
use super::outcome::CliError;
use super::progress::{self, describe, Feed};
use crate::app::{exit, App, HostUse};
use crate::engine::{EngineConfig, EventKind, Manager, SessionEvent, SessionState, Sessions};
use futures_util::FutureExt;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Editor, ExternalPrinter};
use std::io::{BufRead, IsTerminal};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Where the feed writes while the prompt may be on screen.
enum Sink {
    /// A terminal: through the line editor, which keeps its prompt below.
    Printer(Mutex<Box<dyn ExternalPrinter + Send>>),
    /// Text on stdout, the other lines on stderr.
    Plain,
}

impl Sink {
    fn text(&self, text: &str) {
        match self {
            Sink::Printer(p) => self.print(p, format!("{}\n", text.trim_end())),
            Sink::Plain => progress::print_text(text),
        }
    }

    fn line(&self, line: &str) {
        match self {
            Sink::Printer(p) => {
                let l = progress::dim(line, super::style::stdout());
                self.print(p, format!("{l}\n"))
            }
            Sink::Plain => errln!("{line}"),
        }
    }

    fn print(&self, p: &Mutex<Box<dyn ExternalPrinter + Send>>, msg: String) {
        if let Ok(mut p) = p.lock() {
            let _ = p.print(msg);
        }
    }
}

pub fn run(cfg: EngineConfig, a: NameArg, want: HostUse) -> i32 {
    let name = a.name;
    // An unknown session is said to be so before any host starts.
    let known = Manager::open_existing(cfg.clone())
        .map_err(CliError::from)
        .and_then(|m| match m {
            Some(m) => m.status(&name).map_err(CliError::from),
            None => Err(CliError::Input(format!(
                "session '{name}' not found: there are no sessions yet (CMS_HOME={} does not \
                 exist); `cms spawn {name} PROMPT` starts one",
                cfg.home.display()
            ))),
        });
    if let Err(e) = known {
        return out::fail(false, e);
    }
    let app = match App::open(cfg, want) {
        Ok(app) => app,
        Err(e) => return out::fail(false, e),
    };
    let sessions = app.sessions().clone();
    let interactive = std::io::stdin().is_terminal();
    let mut editor = None;
    let mut sink = Sink::Plain;
    if interactive {
        let mut ed: Editor<(), DefaultHistory> = match Editor::new() {
            Ok(ed) => ed,
            Err(e) => return exit::fail(format!("cannot start the line editor: {e}")),
        };
        if let Ok(p) = ed.create_external_printer() {
            sink = Sink::Printer(Mutex::new(Box::new(p)));
        }
        editor = Some(ed);
    }
    let sink = Arc::new(sink);
    let in_turn = Arc::new(AtomicBool::new(false));
    let feed = app.block_on(async {
        let (sink, in_turn) = (sink.clone(), in_turn.clone());
        progress::feed(sessions.as_ref(), vec![name.clone()], move |e| {
            show(&sink, e, in_turn.load(Ordering::SeqCst))
        })
    });
    // From here Ctrl-C is ours: it interrupts a turn (and ends a piped attach).
    let mut sigint = match app.block_on(async { signal(SignalKind::interrupt()) }) {
        Ok(s) => s,
        Err(e) => return exit::fail(format!("cannot watch for Ctrl-C: {e}")),
    };
    let turn = Turn {
        sessions: sessions.as_ref(),
        name: &name,
        feed: &feed,
        sink: &sink,
        in_turn: &in_turn,
    };
    let code = match editor {
        Some(mut ed) => {
            greet(sessions.as_ref(), &name);
            loop {
                match ed.readline(&format!("{name}> ")) {
                    Ok(line) if line.trim().is_empty() => continue,
                    Ok(line) => {
                        let _ = ed.add_history_entry(line.as_str());
                        app.block_on(turn.run(&line, &mut sigint));
                    }
                    Err(ReadlineError::Interrupted) => errln!(
                        "(no turn is running: Ctrl-C interrupts one; Ctrl-D detaches and \
                         leaves '{name}' running)"
                    ),
                    Err(_) => break exit::OK,
                }
            }
        }
        None => app.block_on(piped(&turn, &mut sigint)),
    };
    drop(feed);
    app.block_on(sessions.shutdown());
    if code != exit::INTERRUPTED {
        say_detached(sessions.as_ref(), &name);
    }
    code
}

/// The first words on a terminal: where the session is and how to leave.
fn greet(sessions: &dyn Sessions, name: &str) {
    let state = match sessions.status(name) {
        Ok(r) if r.pid.is_some() => format!("{}, live", r.state),
        Ok(r) => format!("{}: the first message resumes it", r.state),
        Err(_) => "unknown".into(),
    };
    errln!(
        "Attached to '{name}' ({state}). Type a message and Enter; Ctrl-C interrupts a turn, \
         Ctrl-D detaches."
    );
}

fn say_detached(sessions: &dyn Sessions, name: &str) {
    match sessions.location() {
        crate::engine::Where::Host => errln!(
            "Detached from '{name}': it stays live in the session host (`cms attach {name}` \
             comes back, `cms stop {name}` ends it)."
        ),
        crate::engine::Where::InProcess => errln!(
            "Detached from '{name}': it was stopped with this command (--no-host), and \
             `cms send {name} ...` resumes it."
        ),
    }
}

/// Show one event of the session: text as it comes, a line for the rest.
fn show(sink: &Sink, e: &SessionEvent, in_turn: bool) {
    match &e.kind {
        EventKind::Text { text } => sink.text(text),
        EventKind::State {
            state: SessionState::Busy,
        } if !in_turn => sink.line("· a turn from another client"),
        EventKind::State { state } if !progress::notable_state(*state) => {}
        _ => {
            if let Some(l) = describe(e) {
                sink.line(&l);
            }
        }
    }
}

/// What a turn needs.
struct Turn<'a> {
    sessions: &'a dyn Sessions,
    name: &'a str,
    feed: &'a Feed,
    sink: &'a Sink,
    in_turn: &'a AtomicBool,
}

impl Turn<'_> {
    /// Send `line` and wait for its answer; Ctrl-C interrupts the turn, a second
    /// one stops waiting for it. False when it failed.
    async fn run(&self, line: &str, sigint: &mut Signal) -> bool {
        // A Ctrl-C from before this turn is not for it.
        while let Some(Some(())) = sigint.recv().now_or_never() {}
        let mark = self.feed.mark(self.name);
        self.in_turn.store(true, Ordering::SeqCst);
        let send = self.sessions.send(self.name, line, None);
        tokio::pin!(send);
        let mut interrupted = false;
        let result = loop {
            tokio::select! {
                r = &mut send => break Some(r),
                _ = sigint.recv() => {
                    if interrupted {
                        errln!("(stopped waiting; the turn goes on in the session)");
                        break None;
                    }
                    interrupted = true;
                    errln!("(interrupting the turn; Ctrl-C again stops waiting for it)");
                    if let Err(e) = self.sessions.interrupt(self.name).await {
                        errln!("error: {}", super::render::engine_error(&e));
                    }
                }
            }
        };
        let settled = self.feed.settle(self.name, mark).await;
        self.in_turn.store(false, Ordering::SeqCst);
        match result {
            None => false,
            Some(Ok(r)) => {
                // Events can be lost (a slow reader): the answer is printed whole then.
                if !settled.text && !r.text.trim().is_empty() {
                    self.sink.text(&r.text);
                }
                if !settled.result {
                    let turns = if r.num_turns == 1 { "turn" } else { "turns" };
                    self.sink.line(&format!(
                        "= {} · {} {turns}",
                        super::render::money(r.cost_usd),
                        r.num_turns
                    ));
                }
                if interrupted {
                    self.sink.line("(interrupted)");
                }
                !r.is_error || interrupted
            }
            Some(Err(e)) if interrupted => {
                self.sink.line(&format!("(interrupted: {e})"));
                true
            }
            Some(Err(e)) => {
                errln!("error: {}", super::render::engine_error(&e));
                false
            }
        }
    }
}

/// Lines from a pipe: each sent in turn; the end of the input ends attach. Ctrl-C
/// between turns ends it too (130).
async fn piped(turn: &Turn<'_>, sigint: &mut Signal) -> i32 {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut failed = false;
    loop {
        if out::is_closed() {
            break;
        }
        let line = tokio::select! {
            l = rx.recv() => l,
            _ = sigint.recv() => return exit::INTERRUPTED,
        };
        let Some(line) = line else { break };
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        failed |= !turn.run(line, sigint).await;
    }
    if failed {
        exit::FAILED
    } else {
        exit::OK
    }
}

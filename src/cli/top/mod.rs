//! `cms top`: a full-screen dashboard of every session the host knows: which work,
//! which wait for a person, what each spends, which is stuck. The [`model`] holds
//! the sessions (from `Sessions::list` every few seconds, kept live by the events);
//! the [`view`] draws it (ratatui over crossterm). Actions (send, interrupt, pause,
//! stop, kill, fork, approve, deny) run as tasks: the screen never waits for them,
//! their outcome shows in the status line. `q` leaves; the sessions keep running.

pub mod model;
pub mod view;

use crate::app::{exit, App, HostUse};
use crate::engine::approval::Verdict;
use crate::engine::{EngineConfig, SessionState, Sessions};
use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use model::Model;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

/// How often the list (and today's cost) is read again.
const REFRESH: Duration = Duration::from_secs(3);
/// The shortest time between two frames while events pour in.
const FRAME: Duration = Duration::from_millis(50);

/// What is being typed at the bottom line.
#[derive(Debug, Clone, PartialEq)]
enum Prompt {
    Filter,
    Message(String),
    Fork(String),
    Deny(String),
    /// `y` kills it.
    Kill(String),
}

impl Prompt {
    fn question(&self) -> String {
        match self {
            Prompt::Filter => "filter".into(),
            Prompt::Message(n) => format!("message to {n}"),
            Prompt::Fork(n) => format!("fork {n} as"),
            Prompt::Deny(n) => format!("deny {n}'s call, reason (may be empty)"),
            Prompt::Kill(n) => format!("kill {n}? y/n"),
        }
    }
}

struct Screen {
    model: Model,
    prompt: Option<Prompt>,
    typed: String,
    status: String,
    note: &'static str,
    read_only: bool,
    quit: bool,
}

pub fn run(cfg: EngineConfig, want: HostUse) -> i32 {
    if !std::io::stdout().is_terminal() {
        crate::cli::out::fail(
            false,
            "cms top draws a screen: its output must be a terminal (`cms list --json` is for programs)",
        );
        return exit::USAGE;
    }
    let home = cfg.home.clone();
    let app = match App::open(cfg, want) {
        Ok(app) => app,
        Err(e) => return crate::cli::out::fail(false, e),
    };
    let _ = home;
    let read_only = want == HostUse::Never;
    let sessions = app.sessions().clone();
    let color = crate::cli::style::stdout();
    let r = app.block_on(async move {
        let mut term = match setup_terminal() {
            Ok(t) => t,
            Err(e) => return Err(format!("cannot set up the terminal: {e}")),
        };
        let r = event_loop(&mut term, sessions, read_only, color).await;
        restore_terminal(&mut term);
        r
    });
    match r {
        Ok(()) => 0,
        Err(e) => exit::fail(e),
    }
}

type Term = Terminal<CrosstermBackend<std::io::Stdout>>;

fn setup_terminal() -> std::io::Result<Term> {
    crossterm::terminal::enable_raw_mode()?;
    let mut out = std::io::stdout();
    crossterm::execute!(out, crossterm::terminal::EnterAlternateScreen)?;
    // A panic leaves the terminal as it found it.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = crossterm::terminal::disable_raw_mode();
        let _ = crossterm::execute!(std::io::stdout(), crossterm::terminal::LeaveAlternateScreen);
        hook(info);
    }));
    let mut t = Terminal::new(CrosstermBackend::new(out))?;
    t.clear()?;
    Ok(t)
}

fn restore_terminal(t: &mut Term) {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(t.backend_mut(), crossterm::terminal::LeaveAlternateScreen);
    let _ = t.show_cursor();
}

/// Read the list and today's cost into the model.
fn refresh(s: &dyn Sessions, m: &mut Model) -> Result<(), String> {
    let recs: Vec<_> = s
        .list()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| {
            // Listed records are summaries: a new row reads the whole record once
            // (its last answer, its host), with the state as listed.
            if !m.needs_record(&r.name) {
                return r;
            }
            match s.store().get(&r.name) {
                Ok(Some(full)) => crate::engine::SessionRecord {
                    state: r.state,
                    retry: r.retry.clone(),
                    ..full
                },
                _ => r,
            }
        })
        .collect();
    m.sync(&recs);
    if let Ok(today) = s
        .store()
        .cost_since(crate::engine::capacity::local_midnight_ms())
    {
        m.today_usd = today;
    }
    Ok(())
}

async fn event_loop(
    term: &mut Term,
    sessions: Arc<dyn Sessions>,
    read_only: bool,
    color: bool,
) -> Result<(), String> {
    let mut events = sessions.subscribe();
    let mut screen = Screen {
        model: Model::new(),
        prompt: None,
        typed: String::new(),
        status: String::new(),
        note: if read_only {
            "--no-host: the store's sessions, read-only (no live events)"
        } else {
            ""
        },
        read_only,
        quit: false,
    };
    refresh(sessions.as_ref(), &mut screen.model)?;
    // Keys are read on a thread of their own (crossterm's read blocks).
    let (keys_tx, mut keys) = mpsc::unbounded_channel();
    std::thread::spawn(move || loop {
        match crossterm::event::poll(Duration::from_millis(200)) {
            Ok(true) => match crossterm::event::read() {
                Ok(e) => {
                    if keys_tx.send(e).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
            Ok(false) => {
                if keys_tx.is_closed() {
                    return;
                }
            }
            Err(_) => return,
        }
    });
    let (done_tx, mut done) = mpsc::unbounded_channel::<String>();
    let mut tick = tokio::time::interval(FRAME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_refresh = Instant::now();
    let mut last_frame = Instant::now() - Duration::from_secs(1);
    let mut last_second = 0;
    loop {
        tokio::select! {
            k = keys.recv() => match k {
                Some(Event::Key(k)) if k.kind != KeyEventKind::Release => {
                    on_key(&mut screen, k, &sessions, &done_tx);
                    screen.model.dirty = true;
                    // A key is answered at once.
                    last_frame = Instant::now() - FRAME;
                }
                Some(Event::Resize(..)) => screen.model.dirty = true,
                Some(_) => {}
                None => return Ok(()),
            },
            e = events.recv() => match e {
                Ok(e) => {
                    screen.model.apply(&e);
                    // Take what else is waiting before drawing.
                    while let Ok(e) = events.try_recv() {
                        screen.model.apply(&e);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = refresh(sessions.as_ref(), &mut screen.model);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    // No more live events (in process, or the host went away): the
                    // list read every few seconds keeps the table right.
                    events = broadcast::channel(1).1;
                    screen.status = "no live events: the table is read every 3 s".into();
                }
            },
            Some(msg) = done.recv() => {
                screen.status = msg;
                screen.model.dirty = true;
                let _ = refresh(sessions.as_ref(), &mut screen.model);
            }
            _ = tick.tick() => {}
        }
        if screen.quit {
            return Ok(());
        }
        if last_refresh.elapsed() >= REFRESH {
            last_refresh = Instant::now();
            if let Err(e) = refresh(sessions.as_ref(), &mut screen.model) {
                screen.status = format!("cannot list the sessions: {e}");
            }
        }
        // The ages move every second.
        let second = crate::engine::events::now_ms() / 1000;
        if second != last_second {
            last_second = second;
            screen.model.dirty = true;
        }
        if screen.model.dirty && last_frame.elapsed() >= FRAME {
            let question = screen.prompt.as_ref().map(Prompt::question);
            let chrome = view::Chrome {
                prompt: question.as_deref().map(|q| (q, screen.typed.as_str())),
                status: &screen.status,
                note: screen.note,
                color,
                now_ms: crate::engine::events::now_ms(),
            };
            term.draw(|f| view::draw(f, &screen.model, &chrome))
                .map_err(|e| format!("cannot draw: {e}"))?;
            screen.model.dirty = false;
            last_frame = Instant::now();
        }
    }
}

fn on_key(
    sc: &mut Screen,
    k: KeyEvent,
    sessions: &Arc<dyn Sessions>,
    done: &mpsc::UnboundedSender<String>,
) {
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && k.code == KeyCode::Char('c') {
        sc.quit = true;
        return;
    }
    if let Some(p) = sc.prompt.clone() {
        if let Prompt::Kill(name) = &p {
            sc.prompt = None;
            if k.code == KeyCode::Char('y') {
                act(sc, sessions, done, name.clone(), Action::Kill);
            } else {
                sc.status = "not killed".into();
            }
            return;
        }
        match k.code {
            KeyCode::Esc => {
                if p == Prompt::Filter {
                    sc.model.filter.clear();
                }
                sc.prompt = None;
                sc.typed.clear();
            }
            KeyCode::Enter => {
                sc.prompt = None;
                let typed = std::mem::take(&mut sc.typed);
                match p {
                    Prompt::Filter => {}
                    Prompt::Message(n) if !typed.trim().is_empty() => {
                        act(sc, sessions, done, n, Action::Send(typed))
                    }
                    Prompt::Fork(n) if !typed.trim().is_empty() => act(
                        sc,
                        sessions,
                        done,
                        n,
                        Action::Fork(typed.trim().to_string()),
                    ),
                    Prompt::Deny(n) => act(sc, sessions, done, n, Action::Decide(false, typed)),
                    _ => {}
                }
            }
            KeyCode::Backspace => {
                sc.typed.pop();
                if p == Prompt::Filter {
                    sc.model.filter = sc.typed.clone();
                }
            }
            KeyCode::Char(ch) if !ctrl => {
                sc.typed.push(ch);
                if p == Prompt::Filter {
                    sc.model.filter = sc.typed.clone();
                }
            }
            _ => {}
        }
        return;
    }
    let selected = sc.model.selected_name();
    let ask = |sc: &mut Screen, make: fn(String) -> Prompt| match &selected {
        Some(n) if sc.read_only => {
            sc.status = format!("read-only with --no-host: `cms` commands act on {n}")
        }
        Some(n) => {
            sc.prompt = Some(make(n.clone()));
            sc.typed.clear();
        }
        None => sc.status = "no session selected".into(),
    };
    match k.code {
        KeyCode::Char('q') => sc.quit = true,
        KeyCode::Up | KeyCode::Char('k') => sc.model.move_selection(-1),
        KeyCode::Down | KeyCode::Char('j') => sc.model.move_selection(1),
        KeyCode::PageUp => sc.model.move_selection(-10),
        KeyCode::PageDown => sc.model.move_selection(10),
        KeyCode::Home | KeyCode::Char('g') => sc.model.move_selection(-100_000),
        KeyCode::End | KeyCode::Char('G') => sc.model.move_selection(100_000),
        KeyCode::Char('s') => sc.model.sort = sc.model.sort.next(),
        KeyCode::Char('/') => {
            sc.prompt = Some(Prompt::Filter);
            sc.typed = sc.model.filter.clone();
        }
        KeyCode::Esc => sc.model.filter.clear(),
        KeyCode::Char('m') => ask(sc, Prompt::Message),
        KeyCode::Char('f') => ask(sc, Prompt::Fork),
        KeyCode::Char('d') => ask(sc, Prompt::Deny),
        KeyCode::Char('K') => ask(sc, Prompt::Kill),
        KeyCode::Char(c @ ('i' | 'p' | 'x' | 'a')) => {
            let Some(n) = selected.clone() else {
                sc.status = "no session selected".into();
                return;
            };
            let paused = sc
                .model
                .row(&n)
                .is_some_and(|r| r.state == SessionState::Paused);
            let action = match c {
                'i' => Action::Interrupt,
                'p' if paused => Action::Resume,
                'p' => Action::Pause,
                'x' => Action::Stop,
                _ => Action::Decide(true, String::new()),
            };
            act(sc, sessions, done, n, action);
        }
        _ => {}
    }
}

enum Action {
    Send(String),
    Interrupt,
    Pause,
    Resume,
    Stop,
    Kill,
    Fork(String),
    /// Approve (true) or deny with a reason the oldest waiting call.
    Decide(bool, String),
}

/// Run an action in the background; its outcome comes back as a status line.
fn act(
    sc: &mut Screen,
    sessions: &Arc<dyn Sessions>,
    done: &mpsc::UnboundedSender<String>,
    name: String,
    action: Action,
) {
    if sc.read_only {
        sc.status = format!("read-only with --no-host: `cms` commands act on {name}");
        return;
    }
    let (s, done) = (sessions.clone(), done.clone());
    sc.status = match &action {
        Action::Send(_) => format!("sending to {name}..."),
        Action::Fork(new) => format!("forking {name} as {new}..."),
        _ => String::new(),
    };
    tokio::spawn(async move {
        let r: Result<String, String> = async {
            let e = |e: crate::engine::EngineError| e.to_string();
            Ok(match action {
                Action::Send(msg) => {
                    let r = s.send(&name, &msg, None).await.map_err(e)?;
                    if r.is_error {
                        format!("{name}: the turn failed: {}", r.error_summary())
                    } else {
                        format!(
                            "{name} answered ({})",
                            crate::cli::render::money(r.cost_usd)
                        )
                    }
                }
                Action::Interrupt => {
                    s.interrupt(&name).await.map_err(e)?;
                    format!("{name} interrupted")
                }
                Action::Pause => {
                    s.pause(&name).await.map_err(e)?;
                    format!("{name} paused (p resumes)")
                }
                Action::Resume => {
                    s.resume(&name, None, None).await.map_err(e)?;
                    format!("{name} resumed")
                }
                Action::Stop => {
                    s.stop(&name).await.map_err(e)?;
                    format!("{name} stopped")
                }
                Action::Kill => {
                    s.kill(&name).await.map_err(e)?;
                    format!("{name} killed")
                }
                Action::Fork(new) => {
                    s.fork(&name, &new, None, Default::default(), None)
                        .await
                        .map_err(e)?;
                    format!("{name} forked as {new}")
                }
                Action::Decide(allow, reason) => {
                    let a = s
                        .decide(Verdict {
                            session: name.clone(),
                            id: None,
                            allow,
                            reason: (!reason.trim().is_empty()).then_some(reason),
                            by: "top".into(),
                            always: false,
                        })
                        .await
                        .map_err(e)?;
                    let verdict = if allow { "approved" } else { "denied" };
                    format!("{name}: {verdict} {}", a.summary())
                }
            })
        }
        .await;
        let _ = done.send(r.unwrap_or_else(|e| format!("error: {e}")));
    });
}

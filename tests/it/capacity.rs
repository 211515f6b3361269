//! Integration: the manager's capacity on the simulator: `max_live` (parking idle
//! sessions, then a FIFO line), `max_turns`, the budgets across sessions, and `M.host`
//! of `safety.lua` reloaded while the manager runs.

use crate::support;

use cms::engine::{
    Capacity, EngineConfig, EngineError, EventKind, Manager, SessionOptions, SessionState,
    SpawnRequest,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{close, spawn_req};

struct Env {
    _dir: tempfile::TempDir,
    work: PathBuf,
    manager: Arc<Manager>,
    /// In every child's argv (its system prompt), to count the children.
    marker: String,
}

fn env_with(scope: Option<&str>, cap: Capacity) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut cfg = EngineConfig::from_env();
    cfg.claude_bin = support::sim_bin();
    cfg.supervisor = None;
    cfg.home = dir.path().join("cms");
    cfg.child_env = vec![("HOME".into(), dir.path().display().to_string())];
    if let Some(scope) = scope {
        cfg.child_env
            .push(("CMS_SIM_COST_SCOPE".into(), scope.into()));
    }
    cfg.turn_timeout = Duration::from_secs(60);
    let manager = Manager::new(cfg).unwrap();
    manager.set_capacity(cap);
    Env {
        _dir: dir,
        work,
        manager,
        marker: support::unique_marker(),
    }
}

fn live(n: usize) -> Capacity {
    Capacity {
        max_live: Some(n),
        ..Capacity::default()
    }
}

impl Env {
    fn req(&self, name: &str, prompt: &str) -> SpawnRequest {
        let mut r = spawn_req(&self.work, name, prompt);
        r.options = SessionOptions {
            work_dir: Some(self.work.clone()),
            system_prompt: Some(self.marker.clone()),
            ..SessionOptions::default()
        };
        r
    }

    /// Count the children (simulators carrying this env's marker) every few ms
    /// while it lives; the peak when stopped.
    fn sample_children(&self) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(0));
        let (s, p, marker) = (stop.clone(), peak.clone(), self.marker.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                p.fetch_max(support::processes_with(&marker), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Sampler { stop, peak, handle }
    }
}

struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    handle: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn peak(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.handle.join();
        self.peak.load(Ordering::SeqCst)
    }
}

/// Wait (up to 10 s) for `f` to hold.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The sum of a session's per-turn costs is its total.
fn costs_add_up(m: &Manager, name: &str) {
    let rec = m.status(name).unwrap();
    let sum: f64 = m.history(name).unwrap().iter().map(|h| h.cost_usd).sum();
    assert!(
        close(sum, rec.total_cost_usd),
        "{name}: turns sum to {sum}, the session says {}",
        rec.total_cost_usd
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_sessions_share_four_children_and_keep_their_context_and_costs() {
    for scope in [None, Some("conversation")] {
        let env = env_with(scope, live(4));
        let m = env.manager.clone();
        let children = env.sample_children();
        let mut spawns = tokio::task::JoinSet::new();
        for i in 0..20 {
            let (m, req) = (
                m.clone(),
                env.req(&format!("s{i}"), &format!("SLOW 50 first-{i}")),
            );
            spawns.spawn(async move { m.spawn(req).await });
        }
        while let Some(r) = spawns.join_next().await {
            let (rec, resp) = r.unwrap().unwrap();
            let i = &rec.name[1..];
            assert_eq!(resp.text, format!("echo: first-{i}"), "{scope:?}");
        }
        // Every session answers again, with what it was told before: the parked ones
        // are resumed (in line, four at a time).
        let mut sends = tokio::task::JoinSet::new();
        for i in 0..20 {
            let m = m.clone();
            sends.spawn(async move {
                let name = format!("s{i}");
                let r = m.send(&name, "RECALL", None).await;
                (i, r)
            });
        }
        while let Some(r) = sends.join_next().await {
            let (i, r) = r.unwrap();
            let text = r.unwrap().text;
            assert!(
                text.contains(&format!("first-{i}")),
                "{scope:?} s{i}: {text}"
            );
        }
        let peak = children.peak();
        assert!(peak <= 4, "{scope:?}: {peak} children at once");
        assert!(peak >= 2, "{scope:?}: the sampler saw {peak} children");
        let recs = m.list().unwrap();
        let parked = recs
            .iter()
            .filter(|r| r.state == SessionState::Parked)
            .count();
        assert!(parked >= 16, "{scope:?}: {parked} parked");
        assert!(m.live_names().len() <= 4);
        for i in 0..20 {
            costs_add_up(&m, &format!("s{i}"));
            let rec = m.status(&format!("s{i}")).unwrap();
            assert!(
                close(rec.total_cost_usd, 0.002),
                "{scope:?} s{i}: two turns of $0.001 each, got {}",
                rec.total_cost_usd
            );
        }
        assert_eq!(m.waiting(), 0);
        m.shutdown().await;
    }
}

/// The queued events of each session, in order.
fn queued_positions(
    rx: &mut tokio::sync::broadcast::Receiver<cms::engine::SessionEvent>,
    into: &mut HashMap<String, Vec<usize>>,
) {
    while let Ok(e) = rx.try_recv() {
        if let EventKind::Queued { position } = e.kind {
            into.entry(e.session).or_default().push(position);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_line_is_first_come_first_served_and_announces_each_place() {
    let env = env_with(None, live(1));
    let m = env.manager.clone();
    let mut events = m.subscribe();
    let mut seen: HashMap<String, Vec<usize>> = HashMap::new();
    // `a` holds the one slot with a long turn: it cannot be parked meanwhile.
    let busy = {
        let (m, req) = (m.clone(), env.req("a", "SLOW 1500 a"));
        tokio::spawn(async move { m.spawn(req).await })
    };
    eventually("a runs", || m.live_names() == ["a"]).await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for name in ["b", "c", "d"] {
        let (m2, req, order) = (m.clone(), env.req(name, "SLOW 100 hi"), order.clone());
        waiters.push(tokio::spawn(async move {
            let r = m2.spawn(req).await;
            order.lock().unwrap().push(r.unwrap().0.name);
        }));
        // In line before the next one comes.
        eventually("in line", || {
            queued_positions(&mut events, &mut seen);
            seen.contains_key(name)
        })
        .await;
        assert_eq!(m.status(name).unwrap().state, SessionState::Queued);
    }
    busy.await.unwrap().unwrap();
    for w in waiters {
        w.await.unwrap();
    }
    queued_positions(&mut events, &mut seen);
    assert_eq!(*order.lock().unwrap(), ["b", "c", "d"]);
    assert_eq!(seen["b"], [1]);
    assert_eq!(seen["c"], [2, 1]);
    assert_eq!(seen["d"], [3, 2, 1]);
    assert!(!seen.contains_key("a"), "a never waited");
    for name in ["a", "b", "c"] {
        assert_eq!(
            m.status(name).unwrap().state,
            SessionState::Parked,
            "{name}"
        );
    }
    assert_eq!(m.status("d").unwrap().state, SessionState::Idle);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_waiter_leaves_the_line_and_its_state() {
    let env = env_with(None, live(1));
    let m = env.manager.clone();
    m.spawn(env.req("b", "remember me")).await.unwrap();
    m.stop("b").await.unwrap();
    let busy = {
        let (m, req) = (m.clone(), env.req("a", "SLOW 600 a"));
        tokio::spawn(async move { m.spawn(req).await })
    };
    eventually("a runs", || m.live_names() == ["a"]).await;
    let send = {
        let m = m.clone();
        tokio::spawn(async move { m.send("b", "never sent", None).await })
    };
    eventually("b waits", || {
        m.status("b").unwrap().state == SessionState::Queued
    })
    .await;
    assert_eq!(m.waiting(), 1);
    send.abort();
    assert!(send.await.unwrap_err().is_cancelled());
    assert_eq!(m.waiting(), 0, "the line is empty");
    let rec = m.status("b").unwrap();
    assert_eq!(rec.state, SessionState::Stopped, "the state it had");
    assert_eq!(rec.interaction_count, 1, "nothing was sent");
    // Nobody is left in front: the next request gets the slot once `a` is idle.
    busy.await.unwrap().unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), m.send("b", "RECALL", None))
        .await
        .expect("not stuck behind a cancelled waiter")
        .unwrap();
    assert!(r.text.contains("remember me"), "{}", r.text);
    assert_eq!(m.status("a").unwrap().state, SessionState::Parked);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_turns_one_runs_the_turns_of_two_sessions_one_after_the_other() {
    let env = env_with(None, Capacity::default());
    let m = env.manager.clone();
    m.spawn(env.req("x", "hi")).await.unwrap();
    m.spawn(env.req("y", "hi")).await.unwrap();
    let both = || async {
        let started = Instant::now();
        let (a, b) = tokio::join!(
            m.send("x", "SLOW 400 x", None),
            m.send("y", "SLOW 400 y", None)
        );
        a.unwrap();
        b.unwrap();
        started.elapsed().as_secs_f64()
    };
    let together = both().await;
    m.set_capacity(Capacity {
        max_turns: Some(1),
        ..Capacity::default()
    });
    let mut events = m.subscribe();
    let serial = both().await;
    assert!(
        serial / together > 1.6,
        "two 400 ms turns: {together:.3}s at once, {serial:.3}s with max_turns = 1"
    );
    let mut seen = HashMap::new();
    queued_positions(&mut events, &mut seen);
    assert_eq!(
        seen.values().flatten().collect::<Vec<_>>(),
        [&1],
        "{seen:?}"
    );
    // Waiting for a turn keeps the session's state (it has its process).
    assert_eq!(m.status("x").unwrap().state, SessionState::Idle);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_daily_or_total_budget_refuses_the_next_turn() {
    let env = env_with(None, Capacity::default());
    let m = env.manager.clone();
    m.spawn(env.req("p", "COST 0.25 hi")).await.unwrap();
    let pid = m.live("p").unwrap().pid();
    m.set_capacity(Capacity {
        daily_usd: Some(0.25),
        ..Capacity::default()
    });
    let err = m.send("p", "hello again", None).await.unwrap_err();
    assert!(
        matches!(err, EngineError::HostBudgetSpent { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    for part in [
        "daily_usd",
        "$0.2500",
        "$0.25",
        "host.daily_usd in safety.lua",
    ] {
        assert!(msg.contains(part), "{part} missing from: {msg}");
    }
    assert!(!msg.contains("--"), "no CLI flags: {msg}");
    let rec = m.status("p").unwrap();
    assert_eq!(rec.interaction_count, 1, "nothing was sent");
    assert_eq!(m.live("p").unwrap().info().turns, rec.total_turns);
    assert_eq!(m.live("p").unwrap().pid(), pid, "the child is untouched");
    // A new session's first turn too, before any process starts.
    let err = m.spawn(env.req("q", "hi")).await.unwrap_err();
    assert!(
        matches!(err, EngineError::HostBudgetSpent { .. }),
        "{err:?}"
    );
    assert!(m.status("q").is_err(), "no record is left");
    // Raised, it goes on; the total budget counts this manager's turns.
    m.set_capacity(Capacity {
        daily_usd: Some(10.0),
        total_usd: Some(0.3),
        ..Capacity::default()
    });
    m.send("p", "COST 0.1 more", None).await.unwrap();
    let err = m.send("p", "more", None).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("total_usd") && msg.contains("$0.3500") && msg.contains("host started"),
        "{msg}"
    );
    m.shutdown().await;
}

/// The builtin safety.lua with its `M.host` line replaced.
fn safety_with_host(host: &str) -> String {
    let builtin = include_str!("../../scripts/safety.lua");
    let line = builtin
        .lines()
        .find(|l| l.starts_with("M.host = "))
        .expect("safety.lua has an M.host line");
    builtin.replace(line, &format!("M.host = {host}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn editing_safety_lua_changes_max_live_without_a_restart() {
    let env = env_with(None, Capacity::default());
    let m = env.manager.clone();
    let scripts = tempfile::tempdir().unwrap();
    let file = scripts.path().join("safety.lua");
    std::fs::write(&file, safety_with_host("{ max_live = 3, max_turns = 2 }")).unwrap();
    let attached = cms::policy::attach_layers(&m, support::layers_in(scripts.path())).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    attached.on_reload(move |r| {
        let _ = tx.send(r.clone());
    });
    assert_eq!(m.capacity().max_live, Some(3));
    assert_eq!(m.capacity().max_turns, Some(2));
    for name in ["a", "b", "c"] {
        m.spawn(env.req(name, &format!("hi {name}"))).await.unwrap();
    }
    assert_eq!(m.live_names().len(), 3, "three fit");

    std::fs::write(&file, safety_with_host("{ max_live = 1 }")).unwrap();
    eventually("the edit is read", || m.capacity().max_live == Some(1)).await;
    assert_eq!(m.capacity().max_turns, None);
    // The idle sessions beyond the cap are parked at once.
    let parked = || -> Vec<String> {
        let mut names: Vec<String> = m
            .list()
            .unwrap()
            .into_iter()
            .filter(|r| r.state == SessionState::Parked)
            .map(|r| r.name)
            .collect();
        names.sort();
        names
    };
    eventually("two parked", || parked().len() == 2).await;
    assert_eq!(parked(), ["a", "b"], "the least recently used go first");
    eventually("one child left", || m.live_names().len() == 1).await;
    assert_eq!(m.live_names(), ["c"]);
    let r = m.send("a", "RECALL", None).await.unwrap();
    assert!(r.text.contains("hi a"), "{}", r.text);
    assert_eq!(m.live_names(), ["a"]);

    // A broken edit is refused with file:line, and the last good caps stay.
    while rx.try_recv().is_ok() {}
    std::fs::write(
        &file,
        safety_with_host("{ max_live = 1,\n  max_lives = 2 }"),
    )
    .unwrap();
    let report = loop {
        let r = rx.recv_timeout(Duration::from_secs(5)).expect("a reload");
        if !r.errors.is_empty() {
            break r;
        }
    };
    let err = &report.errors[0];
    let line = safety_with_host("{ max_live = 1,\n  max_lives = 2 }")
        .lines()
        .position(|l| l.contains("max_lives"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!(
            "safety.lua:{line}: M.host has an unknown key 'max_lives'"
        )),
        "{err}"
    );
    assert_eq!(m.capacity().max_live, Some(1));
    drop(attached);
    m.shutdown().await;
}

#[test]
fn host_values_are_checked() {
    for (host, expect) in [
        (
            "{ max_live = 0 }",
            "M.host.max_live must be a whole number of 1 or more (or nil), not 0",
        ),
        (
            "{ max_turns = 1.5 }",
            "M.host.max_turns must be a whole number of 1 or more",
        ),
        (
            "{ daily_usd = -1 }",
            "M.host.daily_usd must be a number of USD, 0 or more (or nil), not -1",
        ),
        (
            "{ total_usd = 'lots' }",
            "M.host.total_usd must be a number of USD",
        ),
        ("'big'", "M.host must be a table"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("safety.lua"), safety_with_host(host)).unwrap();
        let (_, report) = cms::policy::PolicyService::start(
            support::layers_in(dir.path()),
            Duration::from_millis(500),
        )
        .unwrap();
        assert_eq!(report.errors.len(), 1, "{host}: {report:?}");
        assert!(
            report.errors[0].contains(expect),
            "{host}: {}",
            report.errors[0]
        );
        assert!(
            report.errors[0].contains("safety.lua:"),
            "{}",
            report.errors[0]
        );
    }
    // Left out, max_live is sized from memory; the shipped script sets no limit.
    let s = support::service(
        cms::policy::Layers::builtin_only(),
        Duration::from_millis(500),
    );
    let cap = s.capacity();
    assert!(
        cap.max_live.is_some_and(|n| (2..=8).contains(&n)),
        "{cap:?}"
    );
    assert_eq!(
        (cap.max_turns, cap.daily_usd, cap.total_usd),
        (None, None, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_session_is_never_parked() {
    let env = env_with(None, live(1));
    let m = env.manager.clone();
    m.spawn(env.req("a", "hi")).await.unwrap();
    m.pause("a").await.unwrap();
    let b = {
        let (m, req) = (m.clone(), env.req("b", "hi b"));
        tokio::spawn(async move { m.spawn(req).await })
    };
    eventually("b waits", || {
        m.status("b").is_ok_and(|r| r.state == SessionState::Queued)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        m.live_names(),
        ["a"],
        "the paused session keeps its process"
    );
    assert_eq!(m.status("a").unwrap().state, SessionState::Paused);
    // Resumed (idle again), it can be parked, and `b` goes ahead.
    m.resume("a", None, None).await.unwrap();
    let (rec, r) = tokio::time::timeout(Duration::from_secs(10), b)
        .await
        .expect("b starts once a can be parked")
        .unwrap()
        .unwrap();
    assert_eq!(r.text, "echo: hi b");
    assert_eq!(rec.state, SessionState::Idle);
    assert_eq!(m.status("a").unwrap().state, SessionState::Parked);
    m.shutdown().await;
}

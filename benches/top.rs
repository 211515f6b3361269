//! Benchmark of `cms top` (`cargo bench --bench top`), against the goals of issue 14:
//!
//! 1. Frame time: the model with 200 sessions, every one receiving a text event
//!    between two frames, drawn into ratatui's `TestBackend` (160x45). Goal: ≤ 50 ms
//!    per frame (p99).
//! 2. The host's CPU (utime + stime of `cms serve`, from `/proc/PID/stat`) while 200
//!    simulated sessions stream text (`LINES`) to one subscriber that feeds the model
//!    and draws at most every 50 ms, as `cms top` does; the subscriber's own CPU too.
//!    The user's safety.lua lets all 200 run at once (`host = { max_live, max_turns }`).
//!
//! `-- --quick`, or no `--bench` argument (the smoke run of `cargo test --all-targets`),
//! runs small counts in a few seconds; its figures are informational.

mod support;

use cms::cli::top::{model::Model, view};
use cms::engine::{EventKind, SessionEvent, SessionRecord, SessionState, Sessions};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::host::{same_version_cms, Host};
use support::{banner, goal, percentile};

struct Sizes {
    sessions: usize,
    frames: usize,
    streaming: usize,
    lines: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--quick");
    let sizes = if full {
        Sizes {
            sessions: 200,
            frames: 300,
            streaming: 200,
            lines: 100,
        }
    } else {
        Sizes {
            sessions: 200,
            frames: 20,
            streaming: 10,
            lines: 20,
        }
    };
    banner("top", full);

    // 1. Frame time.
    let (mut draw_ms, mut apply_ms) = frames(sizes.sessions, sizes.frames);
    let (p50, p99) = (
        percentile(&mut draw_ms, 0.5),
        percentile(&mut draw_ms, 0.99),
    );
    let (a50, a99) = (
        percentile(&mut apply_ms, 0.5),
        percentile(&mut apply_ms, 0.99),
    );
    println!(
        "\n1. {} sessions, each one text event between two frames, {} frames into a 160x45 TestBackend",
        sizes.sessions, sizes.frames
    );
    println!(
        "   apply {} events     p50 {a50:>8.3} ms  p99 {a99:>8.3} ms",
        sizes.sessions
    );
    println!(
        "   draw one frame       p50 {p50:>8.3} ms  p99 {p99:>8.3} ms  {}",
        goal(full, "≤ 50 ms/frame", p99 <= 50.0)
    );

    // 2. The host's CPU while sessions stream to one subscriber.
    let dir = tempfile::tempdir().unwrap();
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_cms-sim"));
    let cms = same_version_cms(&dir.path().join("bin"));
    std::env::set_var("CMS_EXE", &cms);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(stream(&cms, &sim, dir.path(), &sizes));
    println!(
        "\n2. {} simulated sessions in the host, all at once, each answering `LINES {} 20` (a line \
         every 20 ms), one subscriber feeding the model and drawing at most every 50 ms",
        sizes.streaming, sizes.lines
    );
    println!(
        "   {} events in {:.2} s ({:.0} events/s); {} frames drawn, p99 {:.3} ms",
        s.events,
        s.wall,
        s.events as f64 / s.wall,
        s.frames,
        s.frame_p99
    );
    println!(
        "   host CPU {:.2} s ({:.0}% of one core); subscriber CPU {:.2} s ({:.0}% of one core)",
        s.host_cpu,
        100.0 * s.host_cpu / s.wall,
        s.me_cpu,
        100.0 * s.me_cpu / s.wall
    );
}

fn record(name: &str, i: usize) -> SessionRecord {
    let mut r = SessionRecord::new(name, Default::default(), PathBuf::from("/tmp"));
    r.state = SessionState::Busy;
    r.total_cost_usd = i as f64 * 0.01;
    r.total_turns = i as u32;
    r
}

/// Draw times and apply times (ms) of `frames` frames of a model of `n` sessions.
fn frames(n: usize, frames: usize) -> (Vec<f64>, Vec<f64>) {
    let names: Vec<String> = (0..n).map(|i| format!("session-{i:03}")).collect();
    let mut m = Model::new();
    let recs: Vec<SessionRecord> = names
        .iter()
        .enumerate()
        .map(|(i, n)| record(n, i))
        .collect();
    m.sync(&recs);
    let mut term = Terminal::new(TestBackend::new(160, 45)).unwrap();
    let (mut draw, mut apply) = (Vec::new(), Vec::new());
    for f in 0..frames {
        let t = Instant::now();
        for (i, name) in names.iter().enumerate() {
            m.apply(&SessionEvent {
                session: name.clone(),
                at_ms: cms::engine::events::now_ms() + i as i64,
                kind: EventKind::Text {
                    text: format!("frame {f}: a line of text as a model writes it, number {i}\n"),
                },
            });
        }
        apply.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        draw_once(&mut term, &m, "");
        draw.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (draw, apply)
}

fn draw_once(term: &mut Terminal<TestBackend>, m: &Model, status: &str) {
    let chrome = view::Chrome {
        prompt: None,
        status,
        note: "",
        color: true,
        now_ms: cms::engine::events::now_ms(),
    };
    term.draw(|f| view::draw(f, m, &chrome)).unwrap();
}

struct Streamed {
    events: usize,
    frames: usize,
    frame_p99: f64,
    wall: f64,
    host_cpu: f64,
    me_cpu: f64,
}

async fn stream(cms: &Path, sim: &Path, dir: &Path, sizes: &Sizes) -> Streamed {
    // Every session streams at once: the default caps (max_live from the memory,
    // 2 to 8) would queue them.
    let n = sizes.streaming;
    std::fs::create_dir_all(dir.join("config/cms")).unwrap();
    let safety = cms::sandbox::scripts::builtin("safety.lua").unwrap().code;
    let at = safety.rfind("return M").expect("safety.lua returns M");
    let script = format!(
        "{}M.host = {{ max_live = {n}, max_turns = {n} }}\n\n{}",
        &safety[..at],
        &safety[at..]
    );
    std::fs::write(dir.join("config/cms/safety.lua"), script).unwrap();
    let host = Host::start(cms, sim, dir, &[]).await;
    let client: Arc<dyn Sessions> = host.client.clone();
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let names: Vec<String> = (0..sizes.streaming).map(|i| format!("s{i:03}")).collect();
    let reqs = names.iter().map(|n| support::request(n, &work)).collect();
    let spawned = client.batch(reqs, 16, &mut |_| {}).await;
    assert!(
        spawned.iter().all(|o| o.ok),
        "spawn failed: {:?}",
        spawned.iter().find(|o| !o.ok)
    );

    let mut events = client.subscribe();
    let mut m = Model::new();
    m.sync(&client.list().unwrap());
    let mut term = Terminal::new(TestBackend::new(160, 45)).unwrap();
    let (host0, me0) = (cpu_seconds(host.pid()), cpu_seconds(std::process::id()));
    let start = Instant::now();
    let message = format!("LINES {} 20 streamed line", sizes.lines);
    let mut sends = Vec::new();
    for n in &names {
        let (c, n, msg) = (client.clone(), n.clone(), message.clone());
        sends.push(tokio::spawn(async move { c.send(&n, &msg, None).await }));
    }
    let all = futures_util::future::join_all(sends);
    tokio::pin!(all);
    let (mut count, mut draws) = (0, Vec::new());
    let mut last = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            r = &mut all => {
                for r in r {
                    r.unwrap().unwrap();
                }
                break;
            }
            e = events.recv() => if let Ok(e) = e {
                count += 1;
                m.apply(&e);
            },
            _ = tick.tick() => {}
        }
        if m.dirty && last.elapsed() >= Duration::from_millis(50) {
            let t = Instant::now();
            draw_once(&mut term, &m, "");
            draws.push(t.elapsed().as_secs_f64() * 1e3);
            m.dirty = false;
            last = Instant::now();
        }
    }
    while let Ok(e) = events.try_recv() {
        count += 1;
        m.apply(&e);
    }
    let wall = start.elapsed().as_secs_f64();
    let (host1, me1) = (cpu_seconds(host.pid()), cpu_seconds(std::process::id()));
    host.stop().await;
    let frames = draws.len();
    Streamed {
        events: count,
        frames,
        frame_p99: if draws.is_empty() {
            0.0
        } else {
            percentile(&mut draws, 0.99)
        },
        wall,
        host_cpu: host1 - host0,
        me_cpu: me1 - me0,
    }
}

/// utime + stime of a process (children excluded), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

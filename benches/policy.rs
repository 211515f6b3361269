//! Benchmarks of the safety policy (`cargo bench --bench policy`).
//!
//! 1. Decision latency: `PolicyService::decide` (the round trip from a session's
//!    thread to the Lua policy and back) for typical calls: an allowed Write, a
//!    protected Write, and Bash lines the shell reader must take apart.
//!    Goal ≤ 100 µs at p99.
//! 2. Reload latency: from writing an edited `protected_paths.lua` to the first
//!    decision that follows the edit, through the file watcher. Goal ≤ 300 ms.
//! 3. With the OS layer on: the decision as a guarded session makes it (cms's own
//!    protection in Rust, the Lua policy, the no-sandbox check), and what running
//!    one shell command under the bubblewrap prefix adds to running it plainly.
//!
//! Under `cargo test` it runs a smoke version; figures count only under `cargo bench`.

mod support;

use support::{banner, goal, percentile};

use cms::engine::{Decision, Guard, ToolCall};
use cms::policy::{Layers, PolicyService, DECISION_LIMIT};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (decisions, reloads) = if full { (20_000, 40) } else { (200, 3) };
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("proj");
    let config = dir.path().join("config");
    std::fs::create_dir_all(cwd.join("src")).unwrap();
    std::fs::create_dir_all(&config).unwrap();
    banner("policy", full);

    let (service, _) = PolicyService::start(
        Layers {
            dirs: vec![config.clone()],
            ..Layers::default()
        },
        DECISION_LIMIT,
    )
    .unwrap();
    let guard = Guard {
        preset: Some("full".into()),
        safety: true,
        ..Guard::default()
    };
    let cases: [(&str, &str, Value); 4] = [
        (
            "Write src/x.txt (allowed)",
            "Write",
            json!({"file_path": "src/x.txt", "content": "x"}),
        ),
        (
            "Write src/../.env (denied)",
            "Write",
            json!({"file_path": "src/../.env", "content": "x"}),
        ),
        (
            "Bash, 3 commands (allowed)",
            "Bash",
            json!({"command": "cd src && cargo test --quiet 2>&1 | tail -n 20 > out.txt"}),
        ),
        (
            "Bash, nested shell (denied)",
            "Bash",
            json!({"command": "bash -c \"echo $(date) >> .git/config\""}),
        ),
    ];
    println!("\n1. decision latency ({decisions} calls each, interleaved)");
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for i in 0..decisions + 200 {
        for (k, (_, tool, input)) in cases.iter().enumerate() {
            let c = call(&cwd, tool, input.clone());
            let t = Instant::now();
            let d = service.decide(&c, &guard);
            let us = t.elapsed().as_secs_f64() * 1e6;
            assert_eq!(matches!(d, Decision::Deny { .. }), k % 2 == 1, "{d:?}");
            if i >= 200 {
                samples[k].push(us);
            }
        }
    }
    // The floor: the same round trip to a policy that allows at once.
    let trivial = dir.path().join("trivial");
    std::fs::create_dir_all(&trivial).unwrap();
    std::fs::write(
        trivial.join("safety.lua"),
        "return { on_tool_use = function() return 'allow' end }",
    )
    .unwrap();
    let (floor_service, _) = PolicyService::start(
        Layers {
            dirs: vec![trivial],
            ..Layers::default()
        },
        DECISION_LIMIT,
    )
    .unwrap();
    let mut floor = Vec::new();
    for i in 0..decisions + 200 {
        let c = call(&cwd, "Write", json!({"file_path": "src/x.txt"}));
        let t = Instant::now();
        floor_service.decide(&c, &guard);
        if i >= 200 {
            floor.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    println!(
        "   {:<30} p50 {:>7.1} µs  p99 {:>7.1} µs",
        "(a policy that just allows)",
        percentile(&mut floor, 0.5),
        percentile(&mut floor, 0.99)
    );
    let mut worst_p99: f64 = 0.0;
    for (k, (what, _, _)) in cases.iter().enumerate() {
        let (p50, p99) = (
            percentile(&mut samples[k], 0.5),
            percentile(&mut samples[k], 0.99),
        );
        worst_p99 = worst_p99.max(p99);
        println!("   {what:<30} p50 {p50:>7.1} µs  p99 {p99:>7.1} µs");
    }
    println!(
        "   worst p99 {worst_p99:.1} µs {}",
        goal(full, "≤ 100 µs", worst_p99 <= 100.0)
    );

    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s2 = seen.clone();
    let _watch = cms::policy::watch::watch(service.clone(), move |r| {
        s2.store(r.generation, std::sync::atomic::Ordering::SeqCst);
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let builtin = include_str!("../scripts/protected_paths.lua");
    let protect_src = builtin.replace("M.paths = {", "M.paths = { \"src/\",");
    let probe = call(
        &cwd,
        "Write",
        json!({"file_path": "src/x.txt", "content": "x"}),
    );
    let mut times = Vec::new();
    for i in 0..reloads {
        let protect = i % 2 == 0;
        let t = Instant::now();
        std::fs::write(
            config.join("protected_paths.lua"),
            if protect { &protect_src } else { builtin },
        )
        .unwrap();
        loop {
            let denied = matches!(service.decide(&probe, &guard), Decision::Deny { .. });
            if denied == protect {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the edit never took effect"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(60));
    }
    println!("\n2. reload latency: edit saved -> next decision follows it ({reloads} edits)");
    let max = times.iter().cloned().fold(0.0, f64::max);
    println!(
        "   p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms {}",
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.99),
        max,
        goal(full, "≤ 300 ms", max <= 300.0)
    );
    // Section 3 on the shipped scripts (the reloads above leave an edited copy).
    let (shipped, _) = PolicyService::start(Layers::builtin_only(), DECISION_LIMIT).unwrap();
    os_layer(&shipped, &cwd, &dir.path().join("sandbox"), full);
    if full {
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        println!(
            "\ngoals: decision p99 {} | reload {}",
            verdict(worst_p99 <= 100.0),
            verdict(times.iter().cloned().fold(0.0, f64::max) <= 300.0)
        );
    }
}

/// Section 3: decisions of a guarded session with the OS layer on, and the cost
/// of the bubblewrap prefix per shell command.
fn os_layer(service: &std::sync::Arc<PolicyService>, cwd: &Path, scripts: &Path, full: bool) {
    use cms::engine::{Policy, SessionOptions};
    let Some(_) = cms::engine::os_sandbox::available() else {
        println!("\n3. OS layer: bubblewrap is not available here; skipped");
        return;
    };
    let guard = Guard {
        preset: Some("full".into()),
        safety: true,
        ..Guard::default()
    };
    let options = SessionOptions {
        guard: Some(guard),
        ..SessionOptions::default()
    };
    let session = cms::policy::LuaPolicy(service.clone())
        .session_policy("bench", &options)
        .expect("a guarded session policy");
    let n = if full { 20_000 } else { 200 };
    let mut samples = Vec::new();
    let line = json!({"command": "cd src && cargo test --quiet 2>&1 | tail -n 20 > out.txt"});
    for i in 0..n + 200 {
        let c = call(cwd, "Bash", line.clone());
        let t = Instant::now();
        let d = session.decide(&c);
        if i >= 200 {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        assert!(
            matches!(d, Decision::Allow | Decision::AllowWith(_)),
            "{d:?}"
        );
    }
    println!("\n3. with the OS layer on");
    println!(
        "   {:<30} p50 {:>7.1} µs  p99 {:>7.1} µs",
        "guarded Bash decision",
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99)
    );
    let spec = cms::engine::os_sandbox::SandboxSpec {
        work_dir: cwd.to_path_buf(),
        entries: service.protected_entries(),
        roots: cms::policy::isolation::roots(&[]),
        script_dir: scripts.to_path_buf(),
    };
    let prefix = cms::engine::os_sandbox::shell_prefix(&spec).expect("prefix script");
    let runs = if full { 200 } else { 5 };
    let time = |prog: &str, args: &[&str]| {
        let mut v = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let ok = std::process::Command::new(prog)
                .args(args)
                .current_dir(cwd)
                .status()
                .unwrap()
                .success();
            assert!(ok);
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        v
    };
    let mut plain = time("/bin/bash", &["-c", "true"]);
    let mut boxed = time(&prefix, &["true"]);
    println!(
        "   {:<30} p50 {:>7.2} ms  p99 {:>7.2} ms",
        "bash -c true",
        percentile(&mut plain, 0.5),
        percentile(&mut plain, 0.99)
    );
    println!(
        "   {:<30} p50 {:>7.2} ms  p99 {:>7.2} ms",
        "the same under bubblewrap",
        percentile(&mut boxed, 0.5),
        percentile(&mut boxed, 0.99)
    );
}

fn call(cwd: &Path, tool: &str, input: Value) -> ToolCall {
    ToolCall::new("bench", tool, input, cwd)
}

//! Benchmarks of the Lua layer against the simulator (`cargo bench --bench lua`).
//!
//! 1. A Lua → engine call round trip: `s:send("ping")` from Lua against the same
//!    turn through `Manager::send` from Rust, interleaved, simulator answering at
//!    once. The difference is what the Lua layer adds to a call.
//! 2. `cms.parallel` over 100 simulated sessions (each spawned and sent one more
//!    message), against the same work from Rust with a `JoinSet`: total time, and
//!    the RSS of this process before and after (children excluded).
//!
//! Under `cargo test` it runs a smoke version; figures count only under `cargo bench`.

mod support;

use support::{banner, manager, percentile, request, rss_mb};

use cms::lua::{HostOptions, LuaHost};
use mlua::Function;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (turns, sessions) = if full { (2000, 100) } else { (30, 8) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let dir = tempfile::tempdir().unwrap();
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_cms-sim"));
    banner("Lua", full);

    let (rust, lua) = rt.block_on(local.run_until(round_trip(&sim, &dir.path().join("rt"), turns)));
    println!("\n1. one turn, simulator answering at once ({turns} turns each, interleaved)");
    println!(
        "   Manager::send from Rust   p50 {:>8.1} µs  p99 {:>8.1} µs",
        rust.0, rust.1
    );
    println!(
        "   s:send from Lua           p50 {:>8.1} µs  p99 {:>8.1} µs",
        lua.0, lua.1
    );
    println!("   Lua layer adds at p50: {:.1} µs", lua.0 - rust.0);

    let (lua_t, rss_before, rss_after) =
        rt.block_on(local.run_until(lua_parallel(&sim, &dir.path().join("lp"), sessions)));
    let rust_t = rt.block_on(rust_parallel(&sim, &dir.path().join("rp"), sessions));
    println!("\n2. {sessions} sessions at once, spawn + one send each");
    println!(
        "   cms.parallel from Lua     {:>8.0} ms",
        lua_t.as_secs_f64() * 1000.0
    );
    println!(
        "   JoinSet from Rust         {:>8.0} ms",
        rust_t.as_secs_f64() * 1000.0
    );
    println!(
        "   ratio Lua / Rust          {:>8.2}",
        lua_t.as_secs_f64() / rust_t.as_secs_f64()
    );
    println!("   RSS of this process: {rss_before:.1} MB before, {rss_after:.1} MB with all {sessions} live from Lua");
}

async fn round_trip(sim: &Path, dir: &Path, n: usize) -> ((f64, f64), (f64, f64)) {
    let m = manager(sim, dir);
    m.spawn(request("rust", dir)).await.unwrap();
    let host = LuaHost::new(m.clone(), HostOptions::default()).unwrap();
    let send: Function = host
        .lua()
        .load(format!(
            "local s = cms.spawn{{ name = 'lua', prompt = 'hello', work_dir = {:?} }}\n\
             return function() return s:send('ping').text end",
            dir.display().to_string()
        ))
        .call_async(())
        .await
        .unwrap();
    let (mut rust, mut lua) = (Vec::new(), Vec::new());
    for i in 0..n + 20 {
        let t = Instant::now();
        m.send("rust", "ping", None).await.unwrap();
        let rust_t = t.elapsed().as_secs_f64() * 1e6;
        let t = Instant::now();
        let text: String = send.call_async(()).await.unwrap();
        let lua_t = t.elapsed().as_secs_f64() * 1e6;
        assert_eq!(text, "echo: ping");
        if i >= 20 {
            rust.push(rust_t);
            lua.push(lua_t);
        }
    }
    m.shutdown().await;
    (
        (percentile(&mut rust, 0.5), percentile(&mut rust, 0.99)),
        (percentile(&mut lua, 0.5), percentile(&mut lua, 0.99)),
    )
}

async fn lua_parallel(sim: &Path, dir: &Path, n: usize) -> (Duration, f64, f64) {
    let m = manager(sim, dir);
    let host = LuaHost::new(m.clone(), HostOptions::default()).unwrap();
    let before = rss_mb();
    let t = Instant::now();
    let done: usize = host
        .lua()
        .load(format!(
            "local fns = {{}}\n\
             for i = 1, {n} do\n\
               fns[i] = function()\n\
                 local s = cms.spawn{{ name = 'p' .. i, prompt = 'hello', work_dir = {:?} }}\n\
                 return s:send('second').text\n\
               end\n\
             end\n\
             return #cms.parallel(fns)",
            dir.display().to_string()
        ))
        .call_async(())
        .await
        .unwrap();
    let elapsed = t.elapsed();
    assert_eq!(done, n);
    assert_eq!(m.live_names().len(), n, "all sessions live");
    let after = rss_mb();
    m.shutdown().await;
    (elapsed, before, after)
}

async fn rust_parallel(sim: &Path, dir: &Path, n: usize) -> Duration {
    let m = manager(sim, dir);
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let (m, dir) = (m.clone(), dir.to_path_buf());
        set.spawn(async move {
            let name = format!("r{i}");
            m.spawn(request(&name, &dir)).await.unwrap();
            m.send(&name, "second", None).await.unwrap();
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let elapsed = t.elapsed();
    m.shutdown().await;
    elapsed
}

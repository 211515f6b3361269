//! Benchmark of the MCP server (`cargo bench --bench mcp`): the latency of a
//! `tools/call list_sessions` through rmcp's client and a `cms mcp` child process
//! over stdio, with 20 sessions in the store, against `ping` (the protocol floor)
//! in the same run. Goal: list_sessions ≤ 1 ms at p50.
//!
//! Under `cargo test` it runs a smoke version; figures count only under `cargo bench`.

mod support;

use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use rmcp::ServiceExt;
use std::path::PathBuf;
use std::time::Instant;
use support::{banner, goal, percentile};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let calls = if full { 3000 } else { 50 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cms = PathBuf::from(env!("CARGO_BIN_EXE_cms"));
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_cms-sim"));
    banner("MCP", full);
    // 20 sessions in the store.
    let mut batch = Vec::new();
    for i in 0..20 {
        batch.push(serde_json::json!({ "name": format!("s{i:02}"), "prompt": "hello" }));
    }
    let file = dir.path().join("batch.json");
    std::fs::write(&file, serde_json::to_string(&batch).unwrap()).unwrap();
    let status = std::process::Command::new(&cms)
        .args(["batch", "--file"])
        .arg(&file)
        .env("CMS_HOME", dir.path().join("cms"))
        .env("CMS_CLAUDE_BIN", &sim)
        .env("HOME", dir.path())
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    rt.block_on(async {
        let mut cmd = tokio::process::Command::new(&cms);
        cmd.arg("mcp")
            .env("CMS_HOME", dir.path().join("cms"))
            .env("CMS_CLAUDE_BIN", &sim)
            .env("HOME", dir.path())
            .env("CMS_CONFIG_DIR", dir.path().join("config"))
            .current_dir(dir.path());
        let client = ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap();
        let (mut list, mut ping) = (Vec::new(), Vec::new());
        for i in 0..calls + 100 {
            let t = Instant::now();
            let r = client
                .call_tool(CallToolRequestParams::new("list_sessions"))
                .await
                .unwrap();
            let l = t.elapsed().as_secs_f64() * 1e6;
            assert_ne!(r.is_error, Some(true));
            let t = Instant::now();
            client
                .send_request(rmcp::model::ClientRequest::PingRequest(Default::default()))
                .await
                .unwrap();
            let p = t.elapsed().as_secs_f64() * 1e6;
            if i >= 100 {
                list.push(l);
                ping.push(p);
            }
        }
        let pct = |v: &mut Vec<f64>, p: f64| percentile(v, p);
        println!(
            "\ntools/call over stdio ({calls} calls each, interleaved, 20 sessions in the store)"
        );
        println!(
            "   ping                    p50 {:>7.1} µs  p99 {:>7.1} µs",
            pct(&mut ping, 0.5),
            pct(&mut ping, 0.99)
        );
        let (p50, p99) = (pct(&mut list, 0.5), pct(&mut list, 0.99));
        println!(
            "   list_sessions           p50 {p50:>7.1} µs  p99 {p99:>7.1} µs {}",
            goal(full, "≤ 1000 µs at p50", p50 <= 1000.0)
        );
        if full {
            println!(
                "\ngoal: list_sessions p50 {}",
                if p50 <= 1000.0 { "met" } else { "MISSED" }
            );
        }
        client.cancel().await.unwrap();
    });
    // `cms batch` started a host for this home, its 20 sessions live: end it.
    let _ = std::process::Command::new(&cms)
        .args(["host", "stop"])
        .env("CMS_HOME", dir.path().join("cms"))
        .output();
}

//! End-to-end: the session host (`cms serve`) on the real Claude Code CLI against the
//! fake API. The `cms` commands run as a person runs them (the first one starts the
//! host in the background); `tests/run.sh` runs this on the newest and the oldest
//! supported CLI, which count `total_cost_usd` per process and per conversation.

use crate::support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::fake_api::FakeApi;

/// A home, a project and a CLI HOME in one temporary folder, the fake API, and the
/// host stopped when the test ends (however it ends).
struct HostEnv {
    dir: tempfile::TempDir,
    api: FakeApi,
    claude: PathBuf,
}

impl Drop for HostEnv {
    fn drop(&mut self) {
        let _ = self.cms(&["host", "stop"]).output();
    }
}

impl HostEnv {
    async fn new() -> Option<HostEnv> {
        let claude = support::real_claude()?;
        let dir = tempfile::tempdir().unwrap();
        for d in ["project", "home", "config"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Some(HostEnv {
            dir,
            api: FakeApi::start().await,
            claude,
        })
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    fn cms_home(&self) -> PathBuf {
        self.dir.path().join("cms-home")
    }

    fn cms(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(support::cms_bin());
        cmd.args(args)
            .current_dir(self.work())
            .env("CMS_HOME", self.cms_home())
            .env("CMS_CLAUDE_BIN", &self.claude)
            .env("CMS_CONFIG_DIR", self.dir.path().join("config"))
            .env("CMS_HOST_IDLE", "60s")
            .env_remove("CMS_NO_HOST")
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .envs(self.api.claude_env(&self.dir.path().join("home")));
        cmd
    }

    /// `cms ARGS --json`, which must succeed, off the async threads.
    async fn json(&self, args: &[&str]) -> Value {
        let mut cmd = self.cms(args);
        cmd.arg("--json");
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "cms {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        support::parse_json(&out)
    }

    fn host_pid(&self) -> u32 {
        let info = std::fs::read_to_string(self.cms_home().join("host.json")).unwrap();
        serde_json::from_str::<Value>(&info).unwrap()["pid"]
            .as_u64()
            .unwrap() as u32
    }
}

/// The sum of a session's recorded turn costs, and its total.
async fn costs(env: &HostEnv, name: &str) -> (f64, f64) {
    let history = env.json(&["history", name]).await;
    let sum = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["cost_usd"].as_f64().unwrap())
        .sum();
    let total = env.json(&["status", name]).await["total_cost_usd"]
        .as_f64()
        .unwrap();
    (sum, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_live_claude_serves_the_shell_and_a_script_through_the_host() {
    let Some(env) = HostEnv::new().await else {
        return;
    };
    let spawned = env.json(&["spawn", "h", "remember the word HERON"]).await;
    assert_eq!(spawned["response"]["text"], "echo: remember the word HERON");
    // Live between commands: the host holds the process.
    let st = env.json(&["status", "h"]).await;
    assert_eq!(st["state"], "idle", "{st}");
    let pid = st["pid"].as_u64().expect("a live process");
    assert_eq!(st["host_kind"], "host");
    for i in 0..2 {
        let msg = format!("follow-up {i}");
        let r = env.json(&["send", "h", &msg]).await;
        assert_eq!(r["response"]["text"], format!("echo: {msg}"));
        assert_eq!(env.json(&["status", "h"]).await["pid"], pid, "no restart");
    }
    // A script drives the same process, and leaves it live: it did not start it.
    let plan = env.work().join("plan.lua");
    std::fs::write(&plan, "return cms.get('h'):send('RECALL').text\n").unwrap();
    let recalled = env.json(&["script", plan.to_str().unwrap()]).await;
    let text = recalled.as_str().unwrap_or_default();
    assert!(
        text.contains("HERON"),
        "the conversation is one: {recalled}"
    );
    let st = env.json(&["status", "h"]).await;
    assert_eq!(
        (st["pid"].as_u64(), st["state"].as_str()),
        (Some(pid), Some("idle"))
    );
    // Four turns, four API calls, and the cost of each adds up to the session's.
    assert_eq!(env.api.message_calls(), 4);
    let (sum, total) = costs(&env, "h").await;
    assert!(
        support::close(sum, total) && total > 0.0,
        "{sum} vs {total}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_takes_its_claude_along_and_the_next_send_resumes() {
    let Some(env) = HostEnv::new().await else {
        return;
    };
    env.json(&["spawn", "k", "remember the word OTTER"]).await;
    env.json(&["send", "k", "and PELICAN"]).await;
    // Claude Code writes its transcript a moment after it answers (2.1.197 more
    // lazily): what a `kill -9` right then loses is the CLI's, not cms's, so wait
    // until the turn is on disk.
    let projects = env.dir.path().join("home/.claude/projects");
    let written = support::eventually(Duration::from_secs(10), || {
        transcript_has(&projects, "PELICAN")
    });
    assert!(written, "the CLI wrote its transcript");
    let host = env.host_pid();
    let below = descendants(host);
    assert!(!below.is_empty(), "the host runs claude");
    // SAFETY: kill(2) on the host this test started.
    unsafe { libc::kill(host as i32, libc::SIGKILL) };
    let killed = Instant::now();
    while below.iter().any(|p| running(*p)) {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "still running 1 s after the host died: {:?}",
            below.iter().filter(|p| running(**p)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The store is intact; the session reads as stopped, and resumes in a new host.
    let st = env.json(&["status", "k"]).await;
    assert_eq!(st["state"], "stopped", "{st}");
    let r = env.json(&["send", "k", "RECALL"]).await;
    let text = r["response"]["text"].as_str().unwrap();
    assert!(text.contains("OTTER") && text.contains("PELICAN"), "{text}");
    assert_ne!(env.host_pid(), host, "a new host");
    let (sum, total) = costs(&env, "k").await;
    assert!(
        support::close(sum, total),
        "exact across the crash: {sum} vs {total}"
    );
}

/// Whether a conversation file under `dir` holds `word`.
fn transcript_has(dir: &Path, word: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            transcript_has(&p, word)
        } else {
            p.extension().is_some_and(|x| x == "jsonl")
                && std::fs::read_to_string(&p).is_ok_and(|t| t.contains(word))
        }
    })
}

/// Every process whose chain of parents reaches `root`.
fn descendants(root: u32) -> Vec<u32> {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.into_iter()
        .filter(|&p| {
            let mut at = p;
            for _ in 0..64 {
                match parent(at) {
                    Some(q) if q == root => return true,
                    Some(q) if q > 1 => at = q,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

/// Whether a process runs (a zombie does not).
fn running(pid: u32) -> bool {
    cms::engine::process::pid_alive(pid) && Path::new(&format!("/proc/{pid}")).exists()
}

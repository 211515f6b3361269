//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fake_api;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The simulator built with the tests.
pub fn sim_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cms-sim"))
}

pub fn cms_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cms"))
}

/// The real Claude Code CLI for end-to-end tests: `CMS_E2E_CLAUDE`, or the copy
/// `.ci/run` installs. None (the test is skipped) unless `CMS_E2E_REQUIRED=1`,
/// where a missing CLI fails the test.
pub fn real_claude() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("CMS_E2E_CLAUDE").map(PathBuf::from),
        Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(".ci/node_modules/@anthropic-ai/claude-code/bin/claude.exe"),
        ),
        Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(".ci/node_modules/@anthropic-ai/claude-code-linux-x64/claude"),
        ),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CMS_E2E_REQUIRED").as_deref() == Ok("1") {
            panic!("CMS_E2E_REQUIRED=1 but the real Claude Code CLI was not found (run `bash .ci/run`, or set CMS_E2E_CLAUDE)");
        }
        eprintln!("skipping: the real Claude Code CLI is not installed (run `bash .ci/run`, or set CMS_E2E_CLAUDE)");
    }
    found
}

/// How many living processes have `marker` in their command line (zombies excluded).
pub fn processes_with(marker: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rfind(')')
                .is_some_and(|i| stat[i + 1..].trim_start().starts_with('Z'));
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            !zombie && String::from_utf8_lossy(&cmdline).contains(marker)
        })
        .count()
}

/// Wait up to `within` for no process to carry `marker`; how many are left.
pub fn processes_left_after(marker: &str, within: std::time::Duration) -> usize {
    let deadline = std::time::Instant::now() + within;
    loop {
        let n = processes_with(marker);
        if n == 0 || std::time::Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A `cms` with its own home, store and working directory, on the simulator.
pub struct Cms {
    pub dir: tempfile::TempDir,
}

impl Default for Cms {
    fn default() -> Self {
        Cms::new()
    }
}

impl Cms {
    pub fn new() -> Cms {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        Cms { dir }
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(cms_bin());
        c.args(args)
            .current_dir(self.work())
            .env("CMS_HOME", self.dir.path().join("cms"))
            .env("CMS_CLAUDE_BIN", sim_bin())
            .env("HOME", self.dir.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        // Without bubblewrap (a developer machine; `tests/run.sh` installs it), guarded
        // Bash runs only when provably harmless: let the simulator tests run commands.
        if cms::engine::os_sandbox::available().is_none() {
            c.env("CMS_ALLOW_UNSANDBOXED_BASH", "1");
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cms {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// [`Cms::json`] with extra environment for the `cms` process.
    pub fn json_with(&self, args: &[&str], env: &[(&str, &str)]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let mut cmd = self.cmd(&all);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "cms {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "cms {args:?} should fail");
        assert_eq!(out.status.code(), Some(1), "cms {args:?}");
        String::from_utf8(out.stderr).unwrap()
    }

    /// Wait until `name` is in a turn, and return its claude child's pid.
    pub fn busy_pid(&self, name: &str) -> i32 {
        for _ in 0..300 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let out = self.run(&["status", "--name", name, "--json"]);
            if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
                if v["state"] == "busy" {
                    if let Some(pid) = v["pid"].as_u64() {
                        return pid as i32;
                    }
                }
            }
        }
        panic!("session {name} never went busy");
    }
}

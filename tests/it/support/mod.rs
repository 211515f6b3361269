//! Helpers shared by the integration tests.

pub mod browser;
pub mod fake_api;
pub mod http;
pub mod real;

use cms::engine::{Guard, SessionOptions, SpawnRequest, ToolCall};
use cms::policy::{Layers, PolicyService};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

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

/// Two amounts in dollars are the same (but for float rounding).
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// The prompt line that makes the simulator (or the fake API) call tool `name` with `input`.
pub fn tool_line(name: &str, input: Value) -> String {
    format!("USE_TOOL {name} {input}")
}

/// A spawn of `name` with `prompt`, working in `work`.
pub fn spawn_req(work: &Path, name: &str, prompt: &str) -> SpawnRequest {
    SpawnRequest {
        name: name.into(),
        prompt: prompt.into(),
        options: SessionOptions {
            work_dir: Some(work.to_path_buf()),
            ..SessionOptions::default()
        },
        ..SpawnRequest::default()
    }
}

/// A policy service on `layers` that gives each decision at most `limit`.
pub fn service(layers: Layers, limit: Duration) -> Arc<PolicyService> {
    PolicyService::start(layers, limit).unwrap().0
}

/// Policy layers from the scripts in `dir` alone.
pub fn layers_in(dir: &Path) -> Layers {
    Layers {
        dirs: vec![dir.to_path_buf()],
        ..Layers::default()
    }
}

/// The guard of a session with `preset` and the safety net on.
pub fn guard(preset: &str) -> Guard {
    Guard {
        preset: Some(preset.into()),
        safety: true,
        ..Guard::default()
    }
}

/// A call of `tool` with `input` from a session working in `cwd`.
pub fn call(cwd: &Path, tool: &str, input: Value) -> ToolCall {
    ToolCall::new("t", tool, input, cwd)
}

/// Write `code` as plugin `name`'s `init.lua` under `dir/plugins/`; its path.
pub fn write_plugin(dir: &Path, name: &str, code: &str) -> PathBuf {
    let folder = dir.join("plugins").join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let file = folder.join("init.lua");
    std::fs::write(&file, code).unwrap();
    file
}

/// The JSON a command printed; a panic showing its stdout and stderr when it is none.
pub fn parse_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `stderr` without the line saying that this command started the session host
/// (printed once, by the first command of a home that runs a turn).
pub fn without_host_notice(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with("cms: started the session host"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Wait up to `within` for `ok` to hold, polling.
pub fn eventually(within: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if ok() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` is alive (a zombie counts as gone).
pub fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty()
        && !stat
            .rfind(')')
            .is_some_and(|i| stat[i + 1..].trim_start().starts_with('Z'))
}

/// Soon after its session ended, process `pid` (its `claude` child) is gone (a
/// zombie not yet reaped by a busy host counts as gone; a live one within 5 s fails).
pub fn assert_gone(pid: i32) {
    assert!(
        eventually(std::time::Duration::from_secs(5), || !alive(pid)),
        "the claude child {pid} is gone"
    );
}

/// A word that no other process on the machine has in its command line: put in the
/// command line of what a test starts, it finds those processes ([`processes_with`]).
pub fn unique_marker() -> String {
    format!("m{}", uuid::Uuid::new_v4().simple())
}

/// How many living processes have `marker` in their command line (zombies excluded).
pub fn processes_with(marker: &str) -> usize {
    living_processes(|cmdline| String::from_utf8_lossy(cmdline).contains(marker))
}

/// How many living processes (zombies excluded) have a command line (NUL-separated
/// words) that `pick` accepts.
pub fn living_processes(pick: impl Fn(&[u8]) -> bool) -> usize {
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
            !zombie && pick(&cmdline)
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
///
/// By default its commands reach the session host (the product's default), unless
/// the test runner's environment has `CMS_TEST_NO_HOST` (`tests/run.sh` runs some
/// modules a second time that way). [`Cms::in_process`] pins a test to `--no-host`.
pub struct Cms {
    pub dir: tempfile::TempDir,
    /// Every command runs with `CMS_NO_HOST=1`.
    no_host: bool,
}

impl Drop for Cms {
    /// The test's host (if one started) stops with the test.
    fn drop(&mut self) {
        if self.dir.path().join("cms/host.json").exists() {
            let _ = self
                .cmd(&["host", "stop"])
                .env_remove("CMS_NO_HOST")
                .output();
        }
    }
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
        Cms {
            dir,
            no_host: std::env::var_os("CMS_TEST_NO_HOST").is_some(),
        }
    }

    /// A `cms` that reaches the session host, for a test of the host itself (None
    /// when the run keeps sessions in process, `CMS_TEST_NO_HOST`: skip the test).
    pub fn hosted() -> Option<Cms> {
        Some(Cms::new()).filter(Cms::host_mode)
    }

    /// A `cms` whose every command keeps its sessions in process (`CMS_NO_HOST=1`):
    /// for a test of what `--no-host` does (a session's process ends with its command).
    pub fn in_process() -> Cms {
        let mut cms = Cms::new();
        cms.no_host = true;
        cms
    }

    /// Whether this `cms`'s commands reach the session host.
    pub fn host_mode(&self) -> bool {
        !self.no_host
    }

    /// The state a session is left in after a command that ran a turn: live (`idle`)
    /// in the host, `stopped` in process.
    pub fn after_command(&self) -> &'static str {
        if self.no_host {
            "stopped"
        } else {
            "idle"
        }
    }

    /// The home's host socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("cms/host.sock")
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
            .env_remove("CMS_NO_HOST")
            // A host this test started ends soon after the test (and at its drop).
            .env("CMS_HOST_IDLE", "20s")
            .stdin(Stdio::null());
        if self.no_host {
            c.env("CMS_NO_HOST", "1");
        }
        // Without bubblewrap (a developer machine; `tests/run.sh` installs it), guarded
        // Bash runs only when provably harmless: let the simulator tests run commands.
        if cms::engine::os_sandbox::available().is_none() {
            c.env("CMS_ALLOW_UNSANDBOXED_BASH", "1");
        }
        c
    }

    /// `cms ARGS` started, its stdout and stderr pipes.
    pub fn spawn_piped(&self, args: &[&str]) -> std::process::Child {
        self.spawn_with_stdin(args, Stdio::null())
    }

    /// [`Cms::spawn_piped`] with a pipe on stdin too.
    pub fn spawn_all_piped(&self, args: &[&str]) -> std::process::Child {
        self.spawn_with_stdin(args, Stdio::piped())
    }

    fn spawn_with_stdin(&self, args: &[&str], stdin: Stdio) -> std::process::Child {
        self.cmd(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// [`Cms::run`] with `input` on its stdin (then closed).
    pub fn run_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self.spawn_all_piped(args);
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
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

    /// `cms delegate --json ARGS`: the JSON it printed, and how it ended.
    pub fn delegate(&self, args: &[&str]) -> (Value, Output) {
        let mut all = vec!["delegate", "--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        (parse_json(&out), out)
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

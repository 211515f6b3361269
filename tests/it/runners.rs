//! Sessions on other machines, over the ssh runner, against two real OpenSSH servers
//! on 127.0.0.1 ("hostA", "hostB"), each with its own host key, a client key and an
//! ssh_config of aliases. The "remote" claude is the simulator (then the real CLI on
//! the fake API), so "remote" processes are on this machine and `/proc` shows them.
//! Skipped, with a message, when sshd is not installed or cannot start.

use crate::support::{self, Cms};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// One sshd on 127.0.0.1, its files in `dir`.
struct Sshd {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Sshd {
    fn start(root: &Path, name: &str) -> Option<Sshd> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("host_key");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .ok()?;
        if !made.success() {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let config = format!(
            "ListenAddress 127.0.0.1\nHostKey {key}\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {root}/authorized_keys\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\n\
             UsePAM no\nPermitRootLogin yes\nLogLevel ERROR\n",
            key = key.display(),
            dir = dir.display(),
            root = root.display(),
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        // sshd wants its privilege separation folder (root only).
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut sshd = Sshd {
            dir,
            port,
            child: None,
        };
        sshd.restart().then_some(sshd)
    }

    /// Start (again) on the same port; whether it listens.
    fn restart(&mut self) -> bool {
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.dir.join("sshd_config"))
            .arg("-p")
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Stop the listener (sessions already connected keep their own sshd process).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Two sshd "hosts", a client key and an ssh_config with the aliases hostA, hostB.
struct Hosts {
    dir: tempfile::TempDir,
    a: Sshd,
    b: Sshd,
    config: PathBuf,
}

impl Hosts {
    fn start() -> Option<Hosts> {
        if !Path::new(SSHD).exists() {
            eprintln!("SKIPPED runners: no {SSHD} (apt-get install openssh-server)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("client_key");
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED runners: ssh-keygen failed");
            return None;
        }
        std::fs::copy(
            key.with_extension("pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        let (Some(a), Some(b)) = (
            Sshd::start(dir.path(), "hostA"),
            Sshd::start(dir.path(), "hostB"),
        ) else {
            eprintln!("SKIPPED runners: sshd did not start on 127.0.0.1");
            return None;
        };
        let user = std::env::var("USER").unwrap_or_else(|_| whoami());
        let mut config = String::new();
        for (alias, port) in [("hostA", a.port), ("hostB", b.port)] {
            config.push_str(&format!(
                "Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  \
                 IdentityFile {key}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  \
                 UserKnownHostsFile /dev/null\n  LogLevel ERROR\n",
                key = key.display()
            ));
        }
        let path = dir.path().join("ssh_config");
        std::fs::write(&path, config).unwrap();
        let hosts = Hosts {
            dir,
            a,
            b,
            config: path,
        };
        // The server must let this user in.
        let probe = Command::new("ssh")
            .args(["-F"])
            .arg(&hosts.config)
            .args(["-o", "BatchMode=yes", "hostB", "echo ok"])
            .output();
        match probe {
            Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "ok" => Some(hosts),
            Ok(o) => {
                eprintln!(
                    "SKIPPED runners: ssh to the test sshd failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED runners: no ssh client: {e}");
                None
            }
        }
    }

    /// `hosts.lua` for these hosts: claude is `claude` on both, the local `work`
    /// folder is `remote/work` there, and HOME is a folder of each host's own.
    fn hosts_lua(&self, claude: &Path, work: &Path, env: &[(&str, String)]) -> String {
        let mut out = String::from("return {\n");
        for name in ["hostA", "hostB"] {
            let remote = self.dir.path().join(name).join("work");
            let home = self.dir.path().join(name).join("home");
            std::fs::create_dir_all(&remote).unwrap();
            std::fs::create_dir_all(&home).unwrap();
            let mut vars = format!("HOME = {:?}", home.display().to_string());
            for (k, v) in env {
                vars.push_str(&format!(", {k} = {v:?}"));
            }
            out.push_str(&format!(
                "  {name} = {{ address = {name:?}, ssh_options = {{ \"-F\", {cfg:?} }},\n    \
                 claude = {claude:?}, work_dir_map = {{ [{work:?}] = {remote:?} }},\n    \
                 env = {{ {vars} }} }},\n",
                cfg = self.config.display().to_string(),
                claude = claude.display().to_string(),
                work = work.display().to_string(),
                remote = remote.display().to_string(),
            ));
        }
        out.push_str("}\n");
        out
    }

    fn remote_work(&self, host: &str) -> PathBuf {
        self.dir.path().join(host).join("work")
    }
}

fn whoami() -> String {
    Command::new("id")
        .arg("-un")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "root".into())
}

/// The simulator under a path holding `marker`, so its processes can be found.
fn marked_sim(dir: &Path, marker: &str) -> PathBuf {
    let d = dir.join(marker);
    std::fs::create_dir_all(&d).unwrap();
    let link = d.join("claude");
    std::os::unix::fs::symlink(support::sim_bin(), &link).unwrap();
    link
}

/// Living processes whose executable path (argv[0]) holds `marker`: the "remote"
/// claude, not the local ssh whose arguments name it.
fn remote_claudes(marker: &str) -> usize {
    support::living_processes(|cmdline| {
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        String::from_utf8_lossy(argv0).contains(marker)
    })
}

fn remote_claudes_after(marker: &str, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let n = remote_claudes(marker);
        if n == 0 || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn user_layer(cms: &Cms) -> PathBuf {
    let d = cms.dir.path().join(".config/cms");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn stored_host(cms: &Cms, name: &str) -> Option<String> {
    let store = cms::engine::Store::open(&cms.dir.path().join("cms")).unwrap();
    store.require(name).unwrap().options.on
}

#[test]
fn a_session_on_host_b_lives_there_from_spawn_to_kill() {
    let Some(mut hosts) = Hosts::start() else {
        return;
    };
    let cms = Cms::new();
    let marker = support::unique_marker();
    let claude = marked_sim(cms.dir.path(), &marker);
    std::fs::write(
        user_layer(&cms).join("hosts.lua"),
        hosts.hosts_lua(&claude, &cms.work(), &[]),
    )
    .unwrap();

    // Spawned on B, it runs in B's folder (the local one mapped), and none of this
    // process's environment crossed but what hosts.lua names.
    let out = cms.ok(&["spawn", "--name", "r", "--prompt", "CWD", "--on", "hostB"]);
    let remote = hosts.remote_work("hostB").display().to_string();
    assert!(out.contains(&remote), "{out}");
    assert_eq!(stored_host(&cms, "r").as_deref(), Some("hostB"));
    assert_eq!(cms.json(&["status", "--name", "r"])["on"], "hostB");
    let out = cms.ok(&["send", "--name", "r", "--message", "ENV CMS_CLAUDE_BIN"]);
    assert!(!out.contains("cms-sim"), "a local variable crossed: {out}");

    // Stopped, its remote process is gone; a send resumes it on B, same conversation.
    cms.ok(&["stop", "--name", "r"]);
    assert_eq!(remote_claudes_after(&marker, Duration::from_secs(5)), 0);
    let out = cms.ok(&["send", "--name", "r", "--message", "RECALL"]);
    assert!(out.contains("ENV CMS_CLAUDE_BIN"), "{out}");
    let out = cms.ok(&["send", "--name", "r", "--message", "CWD"]);
    assert!(out.contains(&remote), "{out}");

    // A fork stays on B.
    let out = cms.ok(&["fork", "--name", "r", "--new-name", "f", "--message", "CWD"]);
    assert!(out.contains(&remote), "{out}");
    assert_eq!(stored_host(&cms, "f").as_deref(), Some("hostB"));
    cms.ok(&["kill", "--name", "f"]);

    // A turn past its time limit that ignores the interrupt: the remote claude is
    // killed, not just the local ssh.
    let t = Instant::now();
    let out = cms.run(&["send", "--name", "r", "--message", "DEAF", "--timeout", "1"]);
    assert!(!out.status.success());
    let left = remote_claudes_after(&marker, Duration::from_secs(10));
    eprintln!(
        "runners: remote processes left after a timeout kill: {left} ({:?})",
        t.elapsed()
    );
    assert_eq!(left, 0);
    let out = cms.ok(&["send", "--name", "r", "--message", "RECALL"]);
    assert!(out.contains("ENV CMS_CLAUDE_BIN"), "{out}");

    // Killed: the remote process is gone too, not just the local ssh.
    let host_mode = std::env::var_os("CMS_TEST_NO_HOST").is_none();
    if host_mode {
        assert!(remote_claudes(&marker) >= 1, "the sessions are live on B");
    }
    let t = Instant::now();
    cms.ok(&["kill", "--name", "r"]);
    let left = remote_claudes_after(&marker, Duration::from_secs(10));
    eprintln!(
        "runners: remote processes left after kill: {left} (in {:?})",
        t.elapsed()
    );
    assert_eq!(left, 0);

    // B unreachable: a clear error naming the host and ssh's words; the session
    // stays on B and resumes there once B is back.
    hosts.b.stop();
    let err = cms.fails(&["send", "--name", "r", "--message", "hello"]);
    assert!(err.contains("hostB"), "{err}");
    assert!(err.to_lowercase().contains("connect"), "{err}");
    assert_eq!(stored_host(&cms, "r").as_deref(), Some("hostB"));
    assert!(hosts.b.restart());
    let out = cms.ok(&["send", "--name", "r", "--message", "RECALL"]);
    assert!(out.contains("ENV CMS_CLAUDE_BIN"), "{out}");
    cms.ok(&["kill", "--name", "r"]);
    assert_eq!(remote_claudes_after(&marker, Duration::from_secs(10)), 0);
    drop(hosts.a.child.take());
}

#[test]
fn an_unknown_host_is_refused_before_anything_starts() {
    let cms = Cms::new();
    std::fs::write(
        user_layer(&cms).join("hosts.lua"),
        "return { gpu = { address = \"gpu\" } }",
    )
    .unwrap();
    let err = cms.fails(&["spawn", "--name", "x", "--prompt", "hi", "--on", "nowhere"]);
    assert!(
        err.contains("nowhere") && err.contains("known: gpu"),
        "{err}"
    );
}

#[test]
fn killing_the_session_host_leaves_no_remote_process() {
    if std::env::var_os("CMS_TEST_NO_HOST").is_some() {
        eprintln!("SKIPPED runners::killing_the_session_host: CMS_TEST_NO_HOST is set");
        return;
    }
    let Some(hosts) = Hosts::start() else {
        return;
    };
    let cms = Cms::new();
    let marker = support::unique_marker();
    let claude = marked_sim(cms.dir.path(), &marker);
    std::fs::write(
        user_layer(&cms).join("hosts.lua"),
        hosts.hosts_lua(&claude, &cms.work(), &[]),
    )
    .unwrap();
    cms.ok(&["spawn", "--name", "a", "--prompt", "hi", "--on", "hostA"]);
    cms.ok(&["spawn", "--name", "b", "--prompt", "hi", "--on", "hostB"]);
    assert_eq!(remote_claudes(&marker), 2);
    // One idle, one in the middle of a turn (which would go on after its stdin closed).
    let mut turn = cms.spawn_piped(&["send", "--name", "b", "--message", "SLOW 60000 still here"]);
    cms.busy_pid("b");
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(cms.dir.path().join("cms/host.json")).unwrap(),
    )
    .unwrap();
    let pid = info["pid"].as_i64().expect("host.json has the host's pid") as i32;
    // SAFETY: kill(2) of the test's own session host.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let t = Instant::now();
    let left = remote_claudes_after(&marker, Duration::from_secs(10));
    eprintln!(
        "runners: remote processes left after kill -9 of the host: {left} (gone in {:?})",
        t.elapsed()
    );
    assert_eq!(left, 0);
    let _ = turn.kill();
    let _ = turn.wait();
}

/// A turn over ssh against a turn here, on the simulator (printed, not asserted).
#[test]
fn a_turn_over_ssh_costs_a_connection_more() {
    let Some(hosts) = Hosts::start() else {
        return;
    };
    let cms = Cms::new();
    let claude = support::sim_bin();
    std::fs::write(
        user_layer(&cms).join("hosts.lua"),
        hosts.hosts_lua(&claude, &cms.work(), &[]),
    )
    .unwrap();
    let time = |args: &[&str]| {
        let t = Instant::now();
        cms.ok(args);
        t.elapsed()
    };
    cms.ok(&["spawn", "--name", "l", "--prompt", "hi"]);
    cms.ok(&["spawn", "--name", "s", "--prompt", "hi", "--on", "hostB"]);
    let n = 10;
    let (mut local, mut ssh) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..n {
        local += time(&["send", "--name", "l", "--message", "hi"]);
        ssh += time(&["send", "--name", "s", "--message", "hi"]);
    }
    cms.ok(&["stop", "--name", "l"]);
    cms.ok(&["stop", "--name", "s"]);
    let cold_local = time(&["send", "--name", "l", "--message", "hi"]);
    let cold_ssh = time(&["send", "--name", "s", "--message", "hi"]);
    eprintln!(
        "runners: sim turn (cms send, live): local {:?}, ssh {:?}; resumed (new process): local {cold_local:?}, ssh {cold_ssh:?}",
        local / n,
        ssh / n
    );
    cms.ok(&["kill", "--name", "l"]);
    cms.ok(&["kill", "--name", "s"]);
}

/// The real Claude Code CLI as the remote claude, against the fake API.
#[tokio::test(flavor = "multi_thread")]
async fn the_real_cli_runs_over_ssh() {
    let Some(claude) = support::real_claude() else {
        eprintln!("SKIPPED runners::the_real_cli_runs_over_ssh: no real Claude Code CLI");
        return;
    };
    let Some(hosts) = tokio::task::spawn_blocking(Hosts::start).await.unwrap() else {
        return;
    };
    let Some(env) = support::real::real_env(Duration::from_secs(120)).await else {
        return;
    };
    let vars: Vec<(&str, String)> = env
        .api
        .claude_env(&env.home)
        .into_iter()
        .filter(|(k, _)| k != "HOME")
        .map(|(k, v)| (leak(k), v))
        .collect();
    let layer = env.dir.path().join("layer");
    std::fs::create_dir_all(&layer).unwrap();
    std::fs::write(
        layer.join("hosts.lua"),
        hosts.hosts_lua(&claude, &env.work, &vars),
    )
    .unwrap();
    // The remote HOME is the CLI's home the fake API set up (its config lives there).
    let text = std::fs::read_to_string(layer.join("hosts.lua")).unwrap();
    let home_b = hosts.dir.path().join("hostB/home").display().to_string();
    std::fs::write(
        layer.join("hosts.lua"),
        text.replace(
            &format!("{home_b:?}"),
            &format!("{:?}", env.home.display().to_string()),
        ),
    )
    .unwrap();
    env.manager
        .set_runner(std::sync::Arc::new(LayerRunner(cms::sandbox::Layers {
            dirs: vec![layer],
            gated: None,
        })));
    let mut req = support::spawn_req(&env.work, "remote", "Say hi");
    req.options.on = Some("hostB".into());
    let t = Instant::now();
    let (rec, r) = env.manager.spawn(req).await.expect("spawn on hostB");
    let first_remote = t.elapsed();
    assert_eq!(rec.options.on.as_deref(), Some("hostB"));
    assert!(!r.is_error, "{r:?}");
    let t = Instant::now();
    let r2 = env.manager.send("remote", "Again", None).await.unwrap();
    let turn_remote = t.elapsed();
    assert!(!r2.is_error, "{r2:?}");

    let t = Instant::now();
    env.manager
        .spawn(support::spawn_req(&env.work, "here", "Say hi"))
        .await
        .unwrap();
    let first_local = t.elapsed();
    let t = Instant::now();
    env.manager.send("here", "Again", None).await.unwrap();
    let turn_local = t.elapsed();
    eprintln!(
        "runners: real CLI + fake API: spawn+first turn local {first_local:?}, ssh {first_remote:?}; \
         next turn local {turn_local:?}, ssh {turn_remote:?}"
    );

    // Stopped and resumed over ssh: the conversation is on B's side.
    env.manager.stop("remote").await.unwrap();
    let r3 = env.manager.send("remote", "Once more", None).await.unwrap();
    assert!(!r3.is_error, "{r3:?}");
    env.manager.kill("remote").await.unwrap();
    env.manager.kill("here").await.unwrap();
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The app's runner with the script layers given (the tests cannot change HOME).
struct LayerRunner(cms::sandbox::Layers);

impl cms::engine::Runner for LayerRunner {
    fn launch(&self, req: &cms::engine::RunRequest) -> cms::engine::Result<cms::engine::Launch> {
        cms::runners::launch(&self.0, req).map_err(|e| cms::engine::EngineError::RunsOn {
            host: req.host.clone().unwrap_or_default(),
            detail: e.to_string(),
        })
    }
}

/// A guarded session on a host: the policy sees the host's folder and name, and
/// judges its Bash commands as where there is no OS sandbox (bubblewrap is this
/// machine's, it does not reach the host).
#[test]
fn a_guarded_session_on_a_host_gets_no_credit_for_the_local_sandbox() {
    use cms::engine::{Decision, Policy, SessionOptions};
    let dir = tempfile::tempdir().unwrap();
    let service = support::service(cms::sandbox::Layers::builtin_only(), Duration::from_secs(2));
    let policy = cms::policy::LuaPolicy(service);
    let options = SessionOptions {
        guard: Some(support::guard("full")),
        on: Some("hostB".into()),
        ..SessionOptions::default()
    };
    let session = policy.session_policy("s", &options).expect("guarded");
    let mut call = support::call(
        dir.path(),
        "Bash",
        serde_json::json!({ "command": "touch made-here" }),
    );
    call.host = Some("hostB".into());
    match session.decide(&call) {
        Decision::Deny { reason, rule, .. } => {
            assert_eq!(rule.as_deref(), Some("no_os_sandbox"), "{reason}");
            assert!(reason.contains("hostB"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // A read is still fine.
    let call = support::call(dir.path(), "Bash", serde_json::json!({ "command": "ls" }));
    assert_eq!(session.decide(&call), Decision::Allow);
}

#[test]
fn a_hosts_max_live_parks_there_and_placement_picks_the_host() {
    let Some(hosts) = Hosts::start() else {
        return;
    };
    let cms = Cms::new();
    let marker = support::unique_marker();
    let claude = marked_sim(cms.dir.path(), &marker);
    let layer = user_layer(&cms);
    let lua = hosts.hosts_lua(&claude, &cms.work(), &[]).replace(
        "  hostB = {",
        "  hostB = { max_live = 1, labels = { \"gpu\" },",
    );
    std::fs::write(layer.join("hosts.lua"), lua).unwrap();

    // hostB holds one live session: a second there parks the first (idle), not a
    // local one, and the first resumes on B (parking the second) at its next send.
    cms.ok(&["spawn", "--name", "b1", "--prompt", "hi", "--on", "hostB"]);
    cms.ok(&["spawn", "--name", "l1", "--prompt", "hi"]);
    cms.ok(&["spawn", "--name", "b2", "--prompt", "hi", "--on", "hostB"]);
    assert_eq!(cms.json(&["status", "--name", "b1"])["state"], "parked");
    assert_ne!(cms.json(&["status", "--name", "l1"])["state"], "parked");
    cms.ok(&["send", "--name", "b1", "--message", "again"]);
    assert_eq!(cms.json(&["status", "--name", "b2"])["state"], "parked");

    // A placement of the user's: spawns that name no host go where it says.
    std::fs::write(
        layer.join("placement.lua"),
        "return function(req)\n  if req.session:find('^p') then return 'hostA' end\nend\n",
    )
    .unwrap();
    cms.ok(&["spawn", "--name", "p1", "--prompt", "hi"]);
    assert_eq!(stored_host(&cms, "p1").as_deref(), Some("hostA"));
    cms.ok(&["spawn", "--name", "q1", "--prompt", "hi"]);
    assert_eq!(stored_host(&cms, "q1"), None);

    // A broken one refuses the spawn, naming its file and line.
    std::fs::write(
        layer.join("placement.lua"),
        "return function(req)\n  return req.nothing.here\nend\n",
    )
    .unwrap();
    let err = cms.fails(&["spawn", "--name", "p2", "--prompt", "hi"]);
    assert!(err.contains("placement.lua:2"), "{err}");
    for n in ["b1", "b2", "l1", "p1", "q1"] {
        cms.run(&["kill", "--name", n]);
    }
    assert_eq!(remote_claudes_after(&marker, Duration::from_secs(10)), 0);
}

#[test]
fn cms_hosts_shows_every_host_with_its_load_and_whether_it_answers() {
    let Some(hosts) = Hosts::start() else {
        return;
    };
    let cms = Cms::new();
    let marker = support::unique_marker();
    let claude = marked_sim(cms.dir.path(), &marker);
    // A third host on a port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lua = hosts
        .hosts_lua(&claude, &cms.work(), &[])
        .replace("  hostB = {", "  hostB = { max_live = 3, labels = { \"gpu\" },")
        .replace(
            "}\n",
            &format!(
                "  gone = {{ address = \"127.0.0.1\", ssh_options = {{ \"-p\", \"{closed}\" }} }},\n}}\n"
            ),
        );
    std::fs::write(user_layer(&cms).join("hosts.lua"), lua).unwrap();
    cms.ok(&["spawn", "--name", "b1", "--prompt", "hi", "--on", "hostB"]);

    let t = Instant::now();
    let v = cms.json(&["hosts"]);
    let took = t.elapsed();
    eprintln!("runners: cms hosts with one unreachable host took {took:?}");
    let rows = v.as_array().unwrap();
    let row = |n: &str| rows.iter().find(|r| r["name"] == n).unwrap().clone();
    assert_eq!(row("local")["runner"], "local");
    assert_eq!(row("hostB")["live"], 1);
    assert_eq!(row("hostB")["max_live"], 3);
    assert_eq!(row("hostB")["labels"][0], "gpu");
    assert_eq!(row("hostB")["reachable"], "ok");
    assert_eq!(row("hostA")["live"], 0);
    let gone = row("gone")["reachable"].as_str().unwrap().to_string();
    assert!(
        gone.starts_with("unreachable: ") && gone.to_lowercase().contains("connect"),
        "{gone}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    let text = cms.ok(&["hosts"]);
    assert!(
        text.contains("REACHABLE") && text.contains("unreachable"),
        "{text}"
    );
    let wide = cms.ok(&["list", "--wide"]);
    assert!(wide.contains("ON") && wide.contains("hostB"), "{wide}");
    cms.ok(&["kill", "--name", "b1"]);
    assert_eq!(remote_claudes_after(&marker, Duration::from_secs(10)), 0);
}

/// A `docker`/`podman`/`kubectl` stand-in in `dir`: it appends its argv (one
/// `CALL` line, then one line per argument) to `dir/NAME.log` and runs here what
/// would run in the container or pod: the rest of the command after `exec -i
/// CONTAINER`, `run [OPTIONS] IMAGE`, or `--`.
fn write_shim(dir: &Path, name: &str) {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join(format!("{name}.log"));
    let script = format!(
        r#"#!/bin/sh
{{ echo CALL; for a in "$@"; do printf '%s\n' "$a"; done; }} >> '{log}'
case "$1" in
  exec)
    shift
    if [ "{name}" = kubectl ]; then
      while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do shift; done
      shift
    else
      while [ "$#" -gt 0 ]; do case "$1" in -*) shift;; *) break;; esac; done
      shift
    fi
    exec "$@";;
  run)
    shift
    while [ "$#" -gt 0 ]; do
      case "$1" in
        --name|-v|-w|-e) shift 2;;
        -*) shift;;
        *) break;;
      esac
    done
    shift
    exec "$@";;
  rm) exit 0;;
esac
exit 2
"#,
        log = log.display()
    );
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `cms ARGS` with `shims` first on PATH; its stdout (it must succeed).
fn ok_with_path(cms: &Cms, shims: &Path, args: &[&str]) -> String {
    let path = format!(
        "{}:{}",
        shims.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = cms.cmd(args).env("PATH", path).output().unwrap();
    assert!(
        out.status.success(),
        "cms {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn docker_podman_and_kubectl_run_through_a_shim() {
    let cms = Cms::new();
    let shims = cms.dir.path().join("shims");
    std::fs::create_dir_all(&shims).unwrap();
    for n in ["docker", "podman", "kubectl"] {
        write_shim(&shims, n);
    }
    let marker = support::unique_marker();
    let claude = marked_sim(cms.dir.path(), &marker);
    let claude = claude.display().to_string();
    let work = cms.work().display().to_string();
    std::fs::write(
        user_layer(&cms).join("hosts.lua"),
        format!(
            "return {{\n  dk = {{ runner = 'docker', address = 'box', claude = {claude:?} }},\n  \
             img = {{ runner = 'docker', image = 'me/claude:1', claude = {claude:?} }},\n  \
             pm = {{ runner = 'docker', program = 'podman', address = 'pbox', claude = {claude:?} }},\n  \
             k8s = {{ runner = 'kubectl', address = 'pod-1', namespace = 'agents', \
             context = 'prod', claude = {claude:?} }},\n}}\n"
        ),
    )
    .unwrap();
    let cases: [(&str, &str, &[&str], &[&str]); 4] = [
        (
            "dk",
            "docker",
            &["exec", "-i", "box", "setsid", "-w", "sh", "-c"],
            &["exec", "box", "sh", "-c"],
        ),
        (
            "img",
            "docker",
            &[
                "run",
                "-i",
                "--rm",
                "--name",
                "cms-s-img",
                "-v",
                "",
                "-w",
                "",
                "me/claude:1",
                "setsid",
            ],
            &["rm", "-f", "cms-s-img"],
        ),
        (
            "pm",
            "podman",
            &["exec", "-i", "pbox", "setsid", "-w", "sh", "-c"],
            &["exec", "pbox", "sh", "-c"],
        ),
        (
            "k8s",
            "kubectl",
            &[
                "exec",
                "-i",
                "pod-1",
                "-n",
                "agents",
                "--context",
                "prod",
                "--",
                "setsid",
            ],
            &[
                "exec",
                "pod-1",
                "-n",
                "agents",
                "--context",
                "prod",
                "--",
                "sh",
                "-c",
            ],
        ),
    ];
    for (host, program, start, end) in cases {
        let name = format!("s-{host}");
        let log = shims.join(format!("{program}.log"));
        let _ = std::fs::remove_file(&log);
        let out = ok_with_path(
            &cms,
            &shims,
            &["spawn", "--name", &name, "--prompt", "CWD", "--on", host],
        );
        assert!(out.contains(&work), "{host}: {out}");
        let out = ok_with_path(
            &cms,
            &shims,
            &["send", "--name", &name, "--message", "RECALL"],
        );
        assert!(out.contains("CWD"), "{host}: {out}");
        assert!(
            remote_claudes(&marker) >= 1 || !cms.host_mode(),
            "{host}: live"
        );
        ok_with_path(&cms, &shims, &["kill", "--name", &name]);
        if host != "img" {
            // The shim ran the group-ending command here: nothing is left.
            assert_eq!(
                remote_claudes_after(&marker, Duration::from_secs(10)),
                0,
                "{host}"
            );
        }
        let text = std::fs::read_to_string(&log).unwrap();
        let calls: Vec<Vec<&str>> = text
            .split("CALL\n")
            .filter(|c| !c.is_empty())
            .map(|c| c.lines().collect())
            .collect();
        eprintln!("runners: {host} via the {program} shim: {calls:?}");
        let first = &calls[0];
        for (i, want) in start.iter().enumerate() {
            if !want.is_empty() {
                assert_eq!(first[i], *want, "{host}: {first:?}");
            }
        }
        if host == "img" {
            assert_eq!(first[6], format!("{work}:{work}"), "{first:?}");
            assert_eq!(first[8], work, "{first:?}");
        }
        let ending = calls
            .iter()
            .find(|c| c.starts_with(end))
            .unwrap_or_else(|| panic!("{host}: no group-ending call in {calls:?}"));
        if host != "img" {
            let line = ending.join(" ");
            assert!(
                line.contains("pkill -KILL -s") && !line.contains("{pgid}"),
                "{line}"
            );
        }
    }
    for n in ["s-dk", "s-img", "s-pm", "s-k8s"] {
        cms.run(&["kill", "--name", n]);
    }
    support::processes_left_after(&marker, Duration::from_secs(10));
}

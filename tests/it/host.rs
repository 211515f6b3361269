//! The session host (`cms serve`) on the simulator: one live session seen by every
//! frontend, clients that come and go (or die) mid-turn, a host killed with `kill -9`,
//! its socket's permissions, a host of another version, its idle exit, `cms host`,
//! and what a daemon must survive (garbage, huge lines, many connections, a race to
//! start it). `--no-host` keeps the old in-process mode.

use crate::support;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Output, Stdio};
use std::time::Duration;
use support::{alive, eventually, Cms};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The running host's status (None: none runs).
fn host_status(cms: &Cms) -> Option<Value> {
    let out = cms.run(&["host", "status", "--json"]);
    if !out.status.success() {
        return None;
    }
    Some(support::parse_json(&out))
}

fn host_pid(cms: &Cms) -> i32 {
    host_status(cms).expect("a host runs")["pid"]
        .as_i64()
        .unwrap() as i32
}

/// The pids of the processes whose parent is `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse::<i32>().ok())
                == Some(pid)
        })
        .collect()
}

fn session(cms: &Cms, name: &str) -> Value {
    cms.json(&["status", "--name", name])
}

/// The spawn, an MCP client's send and a script's send reach one live session (the
/// same claude process), and `cms list` shows it live while no command runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_live_session_is_seen_by_the_cli_mcp_and_a_script() {
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::TokioChildProcess;
    use rmcp::ServiceExt;
    let cms = Cms::new();
    let out = cms.run(&["spawn", "--name", "a", "--prompt", "hello"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cms: started the session host (pid "),
        "the first command says it started the host: {}",
        stderr(&out)
    );
    let rec = session(&cms, "a");
    assert_eq!(rec["state"], "idle", "live after the spawn: {rec}");
    let pid = rec["pid"].as_i64().expect("a live process");
    let host = host_pid(&cms);
    assert_eq!(rec["host_pid"], host, "{rec}");

    // An MCP client.
    let cmd = cms.cmd(&["mcp"]);
    let client =
        ().serve(TokioChildProcess::new(tokio::process::Command::from(cmd)).unwrap())
            .await
            .unwrap();
    let call = |tool: &str, a: Value| {
        let serde_json::Value::Object(a) = a else {
            unreachable!()
        };
        client.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(a))
    };
    let r = call("send_message", json!({"name": "a", "message": "from mcp"}))
        .await
        .unwrap();
    let text: String = r
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    assert_ne!(r.is_error, Some(true), "{text}");
    assert!(text.contains("echo: from mcp"), "{text}");
    let r = call("get_session_status", json!({"name": "a"}))
        .await
        .unwrap();
    let text: String = r
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    let st: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(st["pid"], pid, "MCP sees the same process: {st}");
    client.cancel().await.unwrap();

    // A script.
    std::fs::write(
        cms.work().join("send.lua"),
        "local s = cms.get('a')\nlocal r = s:send('from script')\nreturn { text = r.text, pid = s:status().pid }\n",
    )
    .unwrap();
    let v = tokio::task::spawn_blocking({
        let cmd = cms.cmd(&["script", "send.lua", "--json"]);
        move || {
            let mut cmd = cmd;
            cmd.output().unwrap()
        }
    })
    .await
    .unwrap();
    let v = support::parse_json(&v);
    assert_eq!(v["text"], "echo: from script", "{v}");
    assert_eq!(v["pid"], pid, "the script sees the same process: {v}");

    // No command runs now: the session is live in the host, with all three turns.
    let list = cms.json(&["list"]);
    assert_eq!(list[0]["name"], "a");
    assert_eq!(list[0]["state"], "idle", "{list}");
    assert_eq!(list[0]["pid"], pid, "{list}");
    assert_eq!(list[0]["interaction_count"], 3, "{list}");
    let recall = cms.ok(&["send", "--name", "a", "--message", "RECALL"]);
    assert!(
        recall.contains("hello") && recall.contains("from mcp") && recall.contains("from script"),
        "one conversation: {recall}"
    );
    assert_eq!(session(&cms, "a")["pid"], pid);
}

/// Two clients sending to one session at once: each gets its own answer, served in
/// the order they arrived.
#[test]
fn two_clients_sending_at_once_get_their_own_answers_in_arrival_order() {
    let cms = Cms::new();
    cms.ok(&["spawn", "--name", "a", "--prompt", "start"]);
    let first = cms.spawn_piped(&[
        "send",
        "--name",
        "a",
        "--message",
        "SLOW 1500 one",
        "--json",
    ]);
    cms.busy_pid("a");
    let asked = std::time::Instant::now();
    let second = cms.spawn_piped(&["send", "--name", "a", "--message", "two", "--json"]);
    let two = support::parse_json(&second.wait_with_output().unwrap());
    let two_took = asked.elapsed();
    let one = support::parse_json(&first.wait_with_output().unwrap());
    assert_eq!(one["response"]["text"], "echo: one", "{one}");
    assert_eq!(two["response"]["text"], "echo: two", "{two}");
    // The second waited for the first's 1.5 s turn: it did not overtake it. (The
    // history may list them either way: each turn is recorded when it ends, and the
    // second, instant one can be written a moment before the first.)
    assert!(
        two_took >= Duration::from_millis(1000),
        "the second answer came after {two_took:?}, before the first turn could end"
    );
    let h = cms.json(&["history", "--name", "a"]);
    let mut messages: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    messages.sort();
    assert_eq!(messages, ["SLOW 1500 one", "start", "two"], "{h}");
}

/// `--no-wait` on a session in a turn in the host fails at once and says why.
#[test]
fn no_wait_on_a_session_in_a_turn_fails_at_once() {
    let Some(cms) = Cms::hosted() else {
        return;
    };
    cms.ok(&["spawn", "--name", "x", "--prompt", "start"]);
    let slow = cms.spawn_piped(&["send", "--name", "x", "--message", "SLOW 2000 long"]);
    cms.busy_pid("x");
    let host = host_pid(&cms);
    let err = cms.fails(&["send", "--no-wait", "--name", "x", "--message", "y"]);
    assert!(
        err.contains("is busy") && err.contains(&format!("cms host (pid {host})")),
        "{err}"
    );
    assert!(slow.wait_with_output().unwrap().status.success());
    let h = cms.json(&["history", "--name", "x"]);
    assert_eq!(
        h.as_array().unwrap().len(),
        2,
        "the refused send is no turn: {h}"
    );
}

/// A send that times out in the host leaves the session live, on the same process,
/// ready for the next message.
#[test]
fn a_timed_out_send_leaves_the_session_live_in_the_host() {
    let Some(cms) = Cms::hosted() else {
        return;
    };
    cms.ok(&["spawn", "--name", "t", "--prompt", "before"]);
    let pid = session(&cms, "t")["pid"].clone();
    let err = cms.fails(&[
        "send",
        "--name",
        "t",
        "--message",
        "SLOW 5000 late",
        "--timeout",
        "0.3",
    ]);
    assert!(err.contains("no answer within 0.3s"), "{err}");
    assert!(
        eventually(Duration::from_secs(10), || session(&cms, "t")["state"]
            == "idle"),
        "{}",
        session(&cms, "t")
    );
    recalls_on(&cms, "t", &pid);
}

/// A client killed (SIGKILL) mid-turn does not stop the turn: it finishes in the
/// host and is in the history.
#[test]
fn a_client_killed_mid_turn_does_not_stop_the_turn() {
    let cms = Cms::new();
    cms.ok(&["spawn", "--name", "a", "--prompt", "start"]);
    let mut send = cms.spawn_piped(&["send", "--name", "a", "--message", "SLOW 1000 late"]);
    let pid = cms.busy_pid("a");
    send.kill().unwrap();
    send.wait().unwrap();
    let landed = eventually(Duration::from_secs(10), || {
        let h = cms.json(&["history", "--name", "a"]);
        h.as_array()
            .unwrap()
            .last()
            .is_some_and(|e| e["message"] == "SLOW 1000 late" && e["response"] == "echo: late")
    });
    assert!(landed, "{}", cms.ok(&["history", "--name", "a"]));
    let rec = session(&cms, "a");
    assert_eq!(rec["state"], "idle", "{rec}");
    assert_eq!(rec["pid"], pid, "the same process: {rec}");
}

/// Ctrl-C on `cms send` interrupts the turn it asked for in the host; the turn is
/// recorded as interrupted and the session stays live, on the same process.
#[test]
fn ctrl_c_on_send_interrupts_the_turn_in_the_host() {
    let Some(cms) = Cms::hosted() else {
        return;
    };
    cms.ok(&["spawn", "--name", "h", "--prompt", "before"]);
    let child = cms.spawn_piped(&["send", "--name", "h", "--message", "HANG"]);
    let pid = cms.busy_pid("h");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the turn of session 'h' was interrupted; the session stays live"),
        "{}",
        stderr(&out)
    );
    let idle = eventually(Duration::from_secs(10), || {
        session(&cms, "h")["state"] == "idle"
    });
    assert!(idle, "the turn was interrupted: {}", session(&cms, "h"));
    assert!(alive(pid), "the session's process lives on");
    let h = cms.json(&["history", "--name", "h"]);
    let last = h.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["message"], "HANG", "{h}");
    // Recorded as the CLI's interrupted turn: an error, during execution. (In process
    // the turn's `error` says "interrupted"; through the host the engine records the
    // interrupt's own result, whose one-line error is empty: see the report.)
    assert_eq!(last["is_error"], true, "{last}");
    assert_eq!(last["subtype"], "error_during_execution", "{last}");
    recalls_on(&cms, "h", &json!(pid));
}

/// `kill -9` of the host: within a second no claude child of it is alive, the store
/// is intact, and the next send starts a new host that resumes the conversation.
#[test]
fn kill_9_of_the_host_ends_its_sessions_and_the_next_send_starts_a_new_host() {
    let Some(cms) = Cms::hosted() else {
        return;
    };
    cms.ok(&["spawn", "--name", "a", "--prompt", "remember me"]);
    cms.ok(&["spawn", "--name", "b", "--prompt", "me too"]);
    let host = host_pid(&cms);
    let claude: Vec<i32> = ["a", "b"]
        .iter()
        .map(|n| session(&cms, n)["pid"].as_i64().unwrap() as i32)
        .collect();
    let children = children_of(host);
    assert!(!children.is_empty(), "the host has children");
    // SAFETY: the host is this test's.
    unsafe { libc::kill(host, libc::SIGKILL) };
    let gone = eventually(Duration::from_secs(1), || {
        !alive(host) && claude.iter().all(|p| !alive(*p)) && children.iter().all(|p| !alive(*p))
    });
    assert!(
        gone,
        "left alive a second after kill -9: host {}, claude {:?}, children {:?}",
        alive(host),
        claude.iter().filter(|p| alive(**p)).collect::<Vec<_>>(),
        children.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
    // The engine's `process::pid_alive` counts a zombie as alive, and the dead host and
    // its claude children are reparented to PID 1, which may reap them late (in some
    // containers): until then the store's host_pid/pid read as a live holder. Wait for
    // the reaping (see the report: pid_alive should read /proc/PID/stat).
    let reaped = eventually(Duration::from_secs(30), || {
        std::iter::once(host)
            .chain(claude.iter().copied())
            // SAFETY: existence check only.
            .all(|p| unsafe { libc::kill(p, 0) } != 0)
    });
    assert!(reaped, "the dead host's processes were never reaped");
    // The store is intact.
    let list = cms.json(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert!(cms.socket().exists(), "the killed host left its socket");
    // The next send starts a fresh host (over the stale socket) and resumes.
    let out = cms.run(&["send", "--name", "a", "--message", "RECALL", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("started the session host"),
        "{}",
        stderr(&out)
    );
    let v = support::parse_json(&out);
    assert!(
        v["response"]["text"]
            .as_str()
            .unwrap()
            .contains("remember me"),
        "{v}"
    );
    let new_host = host_pid(&cms);
    assert_ne!(new_host, host);
    assert_eq!(v["session"]["host_pid"], new_host, "{v}");
}

/// The socket is mode 0600, and a peer of another uid is refused by the host's own
/// check (root passes file modes, so root connecting to nobody's host shows it).
#[test]
fn the_socket_is_private_and_a_peer_of_another_uid_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let Some(cms) = Cms::hosted() else {
        return;
    };
    cms.ok(&["spawn", "--name", "a", "--prompt", "x"]);
    let mode = std::fs::metadata(cms.socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the socket is the user's only");
    cms.ok(&["host", "stop"]);

    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping the uid check: it needs root to run a host as another user");
        return;
    }
    let nobody = 65534;
    let other = tempfile::tempdir().unwrap();
    std::fs::set_permissions(other.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = other.path().join("cms");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(nobody), Some(nobody)).unwrap();
    let mut host = std::process::Command::new(support::cms_bin())
        .args(["serve"])
        .current_dir(other.path())
        .env("CMS_HOME", &home)
        .env("HOME", other.path())
        .env("CMS_CLAUDE_BIN", support::sim_bin())
        .env("CMS_HOST_IDLE", "20s")
        .env_remove("CMS_NO_HOST")
        .uid(nobody)
        .gid(nobody)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let socket = home.join("host.sock");
    let listening = eventually(Duration::from_secs(15), || socket.exists());
    if !listening {
        let _ = host.kill();
        let out = host.wait_with_output().unwrap();
        panic!("nobody's host never listened: {}", stderr(&out));
    }
    let out = std::process::Command::new(support::cms_bin())
        .args(["host", "status"])
        .env("CMS_HOME", &home)
        .env("CMS_CLAUDE_BIN", support::sim_bin())
        .env_remove("CMS_NO_HOST")
        .output()
        .unwrap();
    let _ = host.kill();
    let host_out = host.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("refused") && err.contains("uid 0"),
        "a clear refusal: {err}"
    );
    assert!(
        stderr(&host_out).contains("refused a connection from uid 0"),
        "{}",
        stderr(&host_out)
    );
}

/// A fake host of another cms version on the test's socket: it answers `hello` and
/// `status` with `live`, and exits on `shutdown`, as would a real one.
fn fake_host(cms: &Cms, live: &[&str], http: Option<&str>) -> std::thread::JoinHandle<()> {
    std::fs::create_dir_all(cms.dir.path().join("cms")).unwrap();
    let socket = cms.socket();
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    // The pid it reports: a process that exits when the fake host does.
    let mut stand_in = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let info = json!({
        "protocol": 1, "version": "0.0.0-other", "pid": stand_in.id(),
        "home": cms.dir.path().join("cms"), "socket": socket, "started_at": 0,
        "claude_bin": support::sim_bin(), "live": live, "clients": 1, "in_flight": 0,
        "idle_exit_secs": null, "http": http
    });
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let mut writer = stream.try_clone().unwrap();
            let mut shutdown = false;
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let req: Value = serde_json::from_str(&line).unwrap_or_default();
                let answer = match req["op"].as_str() {
                    Some("hello") | Some("status") => info.clone(),
                    Some("shutdown") => {
                        shutdown = true;
                        Value::Null
                    }
                    _ => continue,
                };
                let _ = writeln!(writer, "{}", json!({"id": req["id"], "ok": answer}));
                if shutdown {
                    break;
                }
            }
            if shutdown {
                break;
            }
        }
        drop(listener);
        let _ = std::fs::remove_file(&socket);
        let _ = stand_in.kill();
        let _ = stand_in.wait();
    })
}

/// A host of another version with no live session is replaced; one with live
/// sessions is left alone, with an error naming both versions and the way out.
#[test]
fn a_host_of_another_version_is_replaced_when_idle_and_explained_when_busy() {
    let Some(cms) = Cms::hosted() else {
        return;
    };
    let _fake = fake_host(&cms, &["x"], None);
    let out = cms.run(&["spawn", "--name", "a", "--prompt", "hi"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("version 0.0.0-other")
            && err.contains("and this cms is ")
            && err.contains("cms host restart")
            && err.contains("1 live session(s): x"),
        "{err}"
    );
    // Stop that one through its own protocol, then an idle one.
    cms.ok(&["host", "stop"]);
    assert!(eventually(Duration::from_secs(5), || !cms
        .socket()
        .exists()));

    let fake = fake_host(&cms, &[], None);
    let out = cms.run(&["spawn", "--name", "a", "--prompt", "hi"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("replaced an idle session host of version 0.0.0-other"),
        "{}",
        stderr(&out)
    );
    fake.join().unwrap();
    let st = host_status(&cms).expect("a real host serves now");
    let ours = st["version"].as_str().unwrap();
    assert!(
        ours != "0.0.0-other" && err.contains(&format!("this cms is {ours};")),
        "{st}: {err}"
    );
    assert_eq!(st["live"], json!(["a"]), "{st}");
}

/// A host of another version that serves HTTP is never replaced behind its HTTP
/// clients' back, even with no live session: the error says where it serves.
#[test]
fn a_host_of_another_version_serving_http_is_not_replaced() {
    let Some(cms) = Cms::hosted() else {
        return;
    };
    let _fake = fake_host(&cms, &[], Some("127.0.0.1:7707"));
    let out = cms.run(&["spawn", "--name", "a", "--prompt", "hi"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no live session, serves HTTP on 127.0.0.1:7707")
            && err.contains("cms host restart"),
        "{err}"
    );
    cms.ok(&["host", "stop"]);
}

/// With `CMS_HOST_IDLE=1s` the host exits once its last session stopped and no
/// client is connected; `cms host status` then exits 1.
#[test]
fn the_host_exits_when_idle() {
    let Some(cms) = Cms::hosted() else {
        return;
    };
    let out = cms
        .cmd(&["spawn", "--name", "a", "--prompt", "x"])
        .env("CMS_HOST_IDLE", "1s")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = host_pid(&cms);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(alive(pid), "a live session keeps the host");
    cms.ok(&["stop", "--name", "a"]);
    assert!(
        eventually(Duration::from_secs(10), || !alive(pid)),
        "the host exited once idle"
    );
    let out = cms.run(&["host", "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no cms host runs"));
    assert_eq!(session(&cms, "a")["state"], "stopped");
}

/// `cms host status --json`, `cms host restart` and `cms host stop`: the sessions end
/// stopped and resume with their conversation.
#[test]
fn host_status_restart_and_stop() {
    let Some(cms) = Cms::hosted() else {
        return;
    };
    let out = cms.run(&["host", "status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(support::parse_json(&out), json!({"running": false}));
    cms.ok(&["spawn", "--name", "a", "--prompt", "keep this"]);
    let st = host_status(&cms).unwrap();
    assert_eq!(st["running"], true, "{st}");
    assert_eq!(st["live"], json!(["a"]), "{st}");
    assert_eq!(st["protocol"], 1, "{st}");
    assert_eq!(st["idle_exit_secs"], 20.0, "{st}");
    assert_eq!(st["socket"], cms.socket().display().to_string(), "{st}");
    let old = st["pid"].as_i64().unwrap() as i32;

    let restarted = cms.json(&["host", "restart"]);
    let new = restarted["pid"].as_i64().unwrap() as i32;
    assert_ne!(new, old, "{restarted}");
    assert!(!alive(old), "the old host is gone");
    assert_eq!(restarted["live"], json!([]), "{restarted}");
    assert_eq!(session(&cms, "a")["state"], "stopped");
    let v = cms.json(&["send", "--name", "a", "--message", "RECALL"]);
    assert!(
        v["response"]["text"]
            .as_str()
            .unwrap()
            .contains("keep this"),
        "{v}"
    );
    assert_eq!(v["session"]["host_pid"], new, "{v}");

    let said = cms.json(&["host", "stop"]);
    assert_eq!(said, json!({"stopped": true, "pid": new}));
    assert!(!alive(new));
    let rec = session(&cms, "a");
    assert_eq!(rec["state"], "stopped", "{rec}");
    assert!(rec["pid"].is_null(), "{rec}");
    assert_eq!(
        cms.json(&["host", "stop"]),
        json!({"stopped": false, "running": false})
    );
    assert!(cms
        .ok(&["send", "--name", "a", "--message", "RECALL"])
        .contains("keep this"));
}

/// `--no-host`: the session's process ends with the command, as before the host, and
/// no host is started.
#[test]
fn no_host_sessions_end_with_the_command() {
    let cms = Cms::in_process();
    let out = cms.run(&["spawn", "--name", "a", "--prompt", "x"]);
    assert!(out.status.success());
    assert!(!stderr(&out).contains("session host"), "{}", stderr(&out));
    let rec = session(&cms, "a");
    assert_eq!(rec["state"], "stopped", "{rec}");
    assert!(rec["pid"].is_null(), "{rec}");
    assert!(!cms.socket().exists());
    assert_eq!(cms.run(&["host", "status"]).status.code(), Some(1));
    let out = cms
        .cmd(&["send", "--no-host", "--name", "a", "--message", "RECALL"])
        .env_remove("CMS_NO_HOST")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("recall: x"));
    assert_eq!(session(&cms, "a")["state"], "stopped");
    assert!(!cms.socket().exists(), "--no-host started no host");
}

/// A command that asks for another claude than the running host's is refused.
#[test]
fn a_different_claude_bin_than_the_hosts_is_refused() {
    let Some(cms) = Cms::hosted() else {
        return;
    };
    cms.ok(&["spawn", "--name", "a", "--prompt", "x"]);
    let out = cms
        .cmd(&["spawn", "--name", "b", "--prompt", "x"])
        .env("CMS_CLAUDE_BIN", "/nowhere/claude")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("runs Claude Code as")
            && err.contains("/nowhere/claude")
            && err.contains("--no-host"),
        "{err}"
    );
}

/// Garbage and a 20 MiB line get an error, not a dead host; many connections at
/// once are served.
#[test]
fn garbage_huge_lines_and_many_connections_do_not_kill_the_host() {
    let Some(cms) = Cms::hosted() else {
        return;
    };
    cms.ok(&["spawn", "--name", "a", "--prompt", "x"]);
    let pid = host_pid(&cms);
    let mut conn = UnixStream::connect(cms.socket()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    conn.write_all(b"\x00\xffnot json at all\n").unwrap();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("bad_request"), "{line}");
    line.clear();
    conn.write_all(b"{\"id\":5,\"op\":\"warp\"}\n").unwrap();
    reader.read_line(&mut line).unwrap();
    assert!(
        line.contains("\"id\":5") && line.contains("bad_request"),
        "{line}"
    );
    line.clear();
    conn.write_all(b"{\"id\":6,\"op\":\"status\"}\n").unwrap();
    reader.read_line(&mut line).unwrap();
    assert!(
        line.contains("\"id\":6") && line.contains("\"live\":[\"a\"]"),
        "{line}"
    );
    // 20 MiB without a newline.
    let writer = std::thread::spawn({
        let mut conn = conn.try_clone().unwrap();
        move || {
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..20 {
                if conn.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
    });
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("too_long"), "{line}");
    let _ = writer.join();
    drop(reader);
    drop(conn);
    // Many connections at once.
    let many: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(cms.socket()).unwrap())
        .collect();
    // A subscriber that never reads what it subscribed to.
    let mut deaf = UnixStream::connect(cms.socket()).unwrap();
    deaf.write_all(b"{\"id\":1,\"op\":\"subscribe\"}\n")
        .unwrap();
    let mut st = Value::Null;
    let all_in = eventually(Duration::from_secs(10), || {
        st = host_status(&cms).expect("still serving");
        st["clients"].as_u64().unwrap() >= 200
    });
    assert!(all_in, "every connection is served: {st}");
    assert_eq!(st["pid"], pid);
    drop(many);
    for i in 0..3 {
        assert!(cms
            .ok(&[
                "send",
                "--name",
                "a",
                "--message",
                &format!("still here {i}")
            ])
            .contains("echo: still here"));
    }
    drop(deaf);
    assert_eq!(host_pid(&cms), pid, "the same host throughout");
}

/// Clients that all start a host at the same instant end with one host.
#[test]
fn clients_starting_a_host_at_once_end_with_one_host() {
    let Some(cms) = Cms::hosted() else {
        return;
    };
    let names = ["a", "b", "c", "d"];
    let children: Vec<_> = names
        .iter()
        .map(|n| cms.spawn_piped(&["spawn", "--name", n, "--prompt", "x"]))
        .collect();
    let mut started = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        started += stderr(&out).matches("started the session host").count();
    }
    assert_eq!(started, 1, "one command started the host");
    let st = host_status(&cms).unwrap();
    assert_eq!(st["live"], json!(names), "{st}");
    let hosts: std::collections::HashSet<i64> = names
        .iter()
        .map(|n| session(&cms, n)["host_pid"].as_i64().unwrap())
        .collect();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
}

/// The session still holds its conversation (its first prompt was "before") and
/// answers on the same process `pid`.
fn recalls_on(cms: &Cms, name: &str, pid: &Value) {
    let v = cms.json(&["send", "--name", name, "--message", "RECALL"]);
    assert!(
        v["response"]["text"].as_str().unwrap().contains("before"),
        "{v}"
    );
    assert_eq!(&v["session"]["pid"], pid, "the same process: {v}");
}

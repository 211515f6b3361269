//! Integration: the engine against the simulator, for every command and every fault.

use crate::support;

use cms::engine::{
    Decision, EngineConfig, EngineError, EventKind, Manager, Policy, SessionOptions, SessionState,
    Sessions, SpawnRequest, ToolCall,
};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{close, spawn_req};

struct Env {
    dir: tempfile::TempDir,
    work: PathBuf,
    manager: Arc<Manager>,
}

fn env_with(f: impl FnOnce(&mut EngineConfig)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut cfg = EngineConfig::from_env();
    cfg.claude_bin = support::sim_bin();
    cfg.home = dir.path().join("cms");
    cfg.child_env = vec![("HOME".into(), dir.path().display().to_string())];
    cfg.turn_timeout = Duration::from_secs(30);
    f(&mut cfg);
    let manager = Manager::new(cfg).unwrap();
    Env { dir, work, manager }
}

fn env() -> Env {
    env_with(|_| {})
}

fn pid_gone(pid: u32) -> bool {
    // SAFETY: signal 0 only checks existence; a zombie is reaped by tokio.
    for _ in 0..100 {
        if unsafe { libc::kill(pid as i32, 0) } != 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_options_reach_argv_and_the_prompt_goes_on_stdin() {
    let env = env();
    let mut r = spawn_req(&env.work, "argv", "ARGS");
    r.options = SessionOptions {
        model: Some("haiku".into()),
        work_dir: Some(env.work.clone()),
        permission_mode: Some("acceptEdits".into()),
        allowed_tools: vec!["Read".into(), "Grep".into()],
        system_prompt: Some("Be terse".into()),
        max_budget_usd: Some(1.5),
        agent: Some("reviewer".into()),
        ..SessionOptions::default()
    };
    let (rec, resp) = env.manager.spawn(r).await.unwrap();
    let argv: Vec<String> = serde_json::from_str(&resp.text).unwrap();
    let joined = argv.join(" ");
    for expected in [
        "-p --input-format stream-json --output-format stream-json --verbose",
        "--model haiku",
        "--permission-mode acceptEdits",
        "--allowedTools Read,Grep",
        "--append-system-prompt Be terse",
        "--max-budget-usd 1.5",
        "--agent reviewer",
    ] {
        assert!(
            joined.contains(expected),
            "{expected} missing from {joined}"
        );
    }
    assert!(!joined.contains("ARGS"), "the prompt is not in argv");
    assert_eq!(rec.work_dir, std::fs::canonicalize(&env.work).unwrap());
    // The default model applies when none is given.
    let (rec, _) = env
        .manager
        .spawn(spawn_req(&env.work, "defaults", "hi"))
        .await
        .unwrap();
    assert_eq!(rec.options.model.as_deref(), Some("sonnet"));
    env.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_reuse_the_process_and_costs_are_per_turn() {
    let env = env();
    let m = &env.manager;
    let (_, r1) = m
        .spawn(spawn_req(&env.work, "s", "COST 0.10 one"))
        .await
        .unwrap();
    let pid = m.live("s").unwrap().pid();
    let r2 = m.send("s", "COST 0.15 two", None).await.unwrap();
    let r3 = m.send("s", "COST 0.20 three", None).await.unwrap();
    assert_eq!(m.live("s").unwrap().pid(), pid);
    assert!(close(r1.cost_usd, 0.10) && close(r2.cost_usd, 0.15) && close(r3.cost_usd, 0.20));
    assert!(close(r3.session_cost_usd, 0.45));
    assert_eq!(r3.text, "echo: three");
    // Across a resume the new process starts from 0 and the total stays exact.
    m.stop("s").await.unwrap();
    let r4 = m.send("s", "COST 0.05 four", None).await.unwrap();
    assert_ne!(m.live("s").unwrap().pid(), pid);
    assert!(close(r4.cost_usd, 0.05), "{}", r4.cost_usd);
    assert!(close(r4.session_cost_usd, 0.50));
    assert!(close(m.status("s").unwrap().total_cost_usd, 0.50));
    env.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_to_one_session_each_get_their_own_answer() {
    let env = env();
    let m = env.manager.clone();
    m.spawn(spawn_req(&env.work, "q", "start")).await.unwrap();
    let mut handles = Vec::new();
    for i in 0..6 {
        let m = m.clone();
        handles.push(tokio::spawn(async move {
            m.send("q", &format!("SLOW 30 msg {i}"), None).await
        }));
    }
    for (i, h) in handles.into_iter().enumerate() {
        let r = h.await.unwrap().unwrap();
        assert_eq!(
            r.text,
            format!("echo: msg {i}"),
            "sends are serialised, FIFO"
        );
    }
    assert_eq!(m.status("q").unwrap().interaction_count, 7);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_use_and_tool_result_reach_subscribers_and_the_store() {
    let env = env();
    let m = &env.manager;
    std::fs::write(env.work.join("notes.txt"), "secret 42\n").unwrap();
    let mut events = m.subscribe();
    let (_, r) = m
        .spawn(spawn_req(
            &env.work,
            "tools",
            "USE_TOOL Read {\"file_path\": \"notes.txt\"}",
        ))
        .await
        .unwrap();
    assert_eq!(r.tools_used, vec!["Read"]);
    assert_eq!(r.num_turns, 2);
    let (mut uses, mut results) = (0, 0);
    while let Ok(e) = events.try_recv() {
        match e.kind {
            EventKind::ToolUse { name, .. } => {
                assert_eq!(name, "Read");
                uses += 1
            }
            EventKind::ToolResult { content, .. } => {
                assert!(content.as_str().unwrap().contains("secret 42"));
                results += 1
            }
            _ => {}
        }
    }
    assert_eq!((uses, results), (1, 1));
    m.shutdown().await;
    let kept = m.store().events("tools").unwrap();
    assert!(
        kept.iter()
            .any(|e| e.kind == "tool_use" && e.data["name"] == "Read"),
        "{kept:?}"
    );
}

struct Guard {
    asked: AtomicUsize,
}

impl Policy for Guard {
    fn wants_tool_prompts(&self) -> bool {
        true
    }
    fn decide(&self, call: &ToolCall) -> Decision {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let path = call.input["file_path"].as_str().unwrap_or("");
        if path.ends_with(".env") {
            Decision::Deny {
                reason: "protected path".into(),
                interrupt: false,
                rule: Some("protected_path".into()),
            }
        } else if path.ends_with("rewrite.txt") {
            let mut input = call.input.clone();
            input["content"] = Value::from("REWRITTEN BY POLICY");
            Decision::AllowWith(input)
        } else {
            Decision::Allow
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_prompts_go_through_the_policy() {
    let env = env();
    let m = &env.manager;
    let guard = Arc::new(Guard {
        asked: AtomicUsize::new(0),
    });
    m.set_policy(guard.clone());
    let (_, r) = m
        .spawn(spawn_req(
            &env.work,
            "p",
            "USE_TOOL Write {\"file_path\": \".env\", \"content\": \"x\"}",
        ))
        .await
        .unwrap();
    assert_eq!(r.permission_denials.len(), 1);
    assert!(!env.work.join(".env").exists(), "denied before it ran");
    let r = m
        .send(
            "p",
            "USE_TOOL Write {\"file_path\": \"rewrite.txt\", \"content\": \"original\"}",
            None,
        )
        .await
        .unwrap();
    assert!(r.permission_denials.is_empty());
    assert_eq!(
        std::fs::read_to_string(env.work.join("rewrite.txt")).unwrap(),
        "REWRITTEN BY POLICY"
    );
    // Read needs no permission: the policy is not asked.
    m.send("p", "USE_TOOL Read {\"file_path\": \"rewrite.txt\"}", None)
        .await
        .unwrap();
    assert_eq!(guard.asked.load(Ordering::SeqCst), 2);
    m.shutdown().await;
    let kept = m.store().events("p").unwrap();
    assert!(kept
        .iter()
        .any(|e| e.kind == "permission" && e.data["allowed"] == false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_prompting_policy_default_mode_denies_writes() {
    let env = env();
    let (_, r) = env
        .manager
        .spawn(spawn_req(
            &env.work,
            "d",
            "USE_TOOL Write {\"file_path\": \"a.txt\", \"content\": \"x\"}",
        ))
        .await
        .unwrap();
    assert_eq!(r.permission_denials[0].tool_name, "Write");
    assert!(!env.work.join("a.txt").exists());
    env.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_turn_times_out_is_interrupted_and_the_session_lives_on() {
    let env = env();
    let m = &env.manager;
    m.spawn(spawn_req(&env.work, "t", "hi")).await.unwrap();
    let pid = m.live("t").unwrap().pid();
    let started = Instant::now();
    let err = m
        .send("t", "SLOW 10000 too slow", Some(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(err, EngineError::Timeout { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("the session itself is unharmed and takes the next message"),
        "{err}"
    );
    let r = m.send("t", "next", None).await.unwrap();
    assert_eq!(r.text, "echo: next");
    assert_eq!(m.live("t").unwrap().pid(), pid);
    let h = m.history("t").unwrap();
    assert!(h[1].is_error && h[1].error.as_deref().unwrap().contains("no answer"));
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_ignores_the_interrupt_is_killed_and_resumable() {
    let env = env_with(|c| c.interrupt_grace = Duration::from_millis(300));
    let m = &env.manager;
    m.spawn(spawn_req(&env.work, "deaf", "hi")).await.unwrap();
    let pid = m.live("deaf").unwrap().pid();
    let started = Instant::now();
    let err = m
        .send("deaf", "DEAF", Some(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, EngineError::Timeout { .. }), "{err}");
    assert!(pid_gone(pid), "the child was killed");
    assert_eq!(m.status("deaf").unwrap().state, SessionState::Stopped);
    // The message says the state it left: stopped, resumable (not "killed").
    assert!(
        err.to_string()
            .contains("the session is stopped and resumes on the next send"),
        "{err}"
    );
    // The conversation is still there.
    let r = m.send("deaf", "RECALL", None).await.unwrap();
    assert!(r.text.contains("hi"), "{}", r.text);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_turn_fails_clearly_and_the_next_send_resumes() {
    let env = env();
    let m = &env.manager;
    m.spawn(spawn_req(&env.work, "c", "hello")).await.unwrap();
    let err = m.send("c", "CRASH 3", None).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EngineError::Exited { .. }));
    assert!(msg.contains("code 3") && msg.contains("boom"), "{msg}");
    assert_eq!(err.partial().unwrap().text, "about to crash");
    let rec = m.status("c").unwrap();
    assert_eq!(rec.state, SessionState::Failed);
    assert!(rec.last_error.unwrap().contains("boom"));
    let r = m.send("c", "RECALL", None).await.unwrap();
    assert!(r.text.contains("hello"), "{}", r.text);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_huge_lines_and_api_retries_are_survived() {
    let env = env();
    let m = &env.manager;
    let mut events = m.subscribe();
    let (_, r) = m
        .spawn(spawn_req(&env.work, "g", "GARBAGE still fine"))
        .await
        .unwrap();
    assert_eq!(r.text, "echo: still fine");
    let r = m.send("g", "HUGE 10000000", None).await.unwrap();
    assert_eq!(r.text.len(), 10_000_000);
    let session = m.live("g").unwrap();
    let mut states = session.watch_state();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while states.changed().await.is_ok() {
            seen.push(*states.borrow());
            if seen.contains(&SessionState::Idle) && seen.contains(&SessionState::Retrying) {
                break;
            }
        }
        seen
    });
    let r = m.send("g", "RETRY 3 recovered", None).await.unwrap();
    assert_eq!(r.text, "echo: recovered");
    let seen = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .unwrap()
        .unwrap();
    assert!(seen.contains(&SessionState::Retrying), "{seen:?}");
    let (mut garbage, mut retries) = (0, 0);
    while let Ok(e) = events.try_recv() {
        match e.kind {
            EventKind::Error { message } if message.contains("unreadable") => garbage += 1,
            EventKind::Retry(r) => {
                assert_eq!(r.error_status, Some(529));
                retries += 1
            }
            _ => {}
        }
    }
    assert_eq!((garbage, retries), (1, 3));
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_errors_even_with_subtype_success() {
    let env = env();
    let (_, r) = env
        .manager
        .spawn(spawn_req(&env.work, "e", "API_ERROR 529"))
        .await
        .unwrap();
    assert!(r.is_error);
    assert_eq!(r.subtype, "success");
    assert_eq!(r.api_error_status, Some(529));
    assert!(r.error_summary().contains("529"));
    let rec = env.manager.status("e").unwrap();
    assert!(rec.last_error.unwrap().contains("529"));
    env.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_turns_and_max_budget_are_passed_and_reported() {
    let env = env();
    let m = &env.manager;
    let mut r = spawn_req(&env.work, "turns", "LOOP_TOOL Read {\"file_path\": \"x\"}");
    r.options.max_turns = Some(2);
    let (_, resp) = m.spawn(r).await.unwrap();
    assert_eq!(resp.subtype, "error_max_turns");
    assert!(resp.is_error);
    assert_eq!(resp.num_turns, 3);

    let mut r = spawn_req(&env.work, "budget", "one");
    r.options.max_budget_usd = Some(0.0025);
    m.spawn(r).await.unwrap();
    assert!(!m.send("budget", "two", None).await.unwrap().is_error);
    let third = m.send("budget", "three", None).await.unwrap();
    assert_eq!(third.subtype, "error_max_budget_usd");
    assert!(third.errors[0].contains("maximum budget"));
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_loses_nothing() {
    let env = env();
    let m = &env.manager;
    m.spawn(spawn_req(&env.work, "keep", "original"))
        .await
        .unwrap();
    let err = m
        .spawn(spawn_req(&env.work, "keep", "again"))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::AlreadyExists(_)), "{err}");
    assert_eq!(m.output("keep").unwrap().as_deref(), Some("echo: original"));
    assert!(matches!(
        m.send("nope", "x", None).await,
        Err(EngineError::NotFound(_))
    ));
    assert!(matches!(m.status("nope"), Err(EngineError::NotFound(_))));
    assert!(matches!(
        m.spawn(spawn_req(&env.work, "bad name", "x")).await,
        Err(EngineError::InvalidName(_))
    ));
    let mut r = spawn_req(&env.work, "nodir", "x");
    r.options.work_dir = Some(env.dir.path().join("missing"));
    assert!(m
        .spawn(r)
        .await
        .unwrap_err()
        .to_string()
        .contains("missing"));
    assert!(m.status("nodir").is_err());
    m.shutdown().await;

    let missing = env_with(|c| c.claude_bin = PathBuf::from("/nonexistent/claude"));
    let err = missing
        .manager
        .spawn(spawn_req(&missing.work, "x", "hi"))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::BinaryNotFound { .. }), "{err}");
    assert!(
        matches!(err.remedy(), Some(cms::engine::Remedy::InstallClaude)),
        "{err}"
    );
    assert!(missing.manager.status("x").is_err(), "no half-made record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_a_conversation_the_cli_does_not_know_says_why() {
    let env = env();
    let m = &env.manager;
    m.spawn(spawn_req(&env.work, "lost", "hello"))
        .await
        .unwrap();
    m.stop("lost").await.unwrap();
    // The conversation files are gone (another HOME, another machine, ...).
    std::fs::remove_dir_all(env.dir.path().join(".claude")).unwrap();
    let err = m.send("lost", "again", None).await;
    let msg = match err {
        Ok(r) => {
            assert!(r.is_error);
            r.error_summary()
        }
        Err(e) => e.to_string(),
    };
    assert!(msg.contains("No conversation found"), "{msg}");
    // Where Claude Code looked, before anything else: no empty response.
    let looked = cms::engine::manager::conversation_path(
        &[("HOME".into(), env.dir.path().display().to_string())],
        &std::fs::canonicalize(&env.work).unwrap(),
        m.status("lost")
            .unwrap()
            .claude_session_id
            .as_deref()
            .unwrap(),
    );
    assert!(looked.starts_with(env.dir.path().join(".claude/projects")));
    assert!(msg.contains(&looked.display().to_string()), "{msg}");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_stop_kill_delete() {
    let env = env();
    let m = &env.manager;
    m.spawn(spawn_req(&env.work, "life", "hello"))
        .await
        .unwrap();
    let pid = m.live("life").unwrap().pid();
    assert_eq!(m.pause("life").await.unwrap().state, SessionState::Paused);
    assert!(matches!(
        m.send("life", "x", None).await,
        Err(EngineError::Paused(_))
    ));
    assert_eq!(
        m.live("life").unwrap().pid(),
        pid,
        "pause keeps the process"
    );
    let (_, r) = m.resume("life", Some("back"), None).await.unwrap();
    assert_eq!(r.unwrap().text, "echo: back");
    assert_eq!(
        m.live("life").unwrap().pid(),
        pid,
        "resume of a live pause: no restart"
    );

    assert_eq!(m.kill("life").await.unwrap().state, SessionState::Killed);
    assert!(pid_gone(pid));
    let r = m.send("life", "RECALL", None).await.unwrap();
    assert!(
        r.text.contains("hello") && r.text.contains("back"),
        "{}",
        r.text
    );
    let pid2 = m.live("life").unwrap().pid();
    assert_eq!(m.stop("life").await.unwrap().state, SessionState::Stopped);
    assert!(pid_gone(pid2));

    m.delete("life").await.unwrap();
    assert!(matches!(m.status("life"), Err(EngineError::NotFound(_))));
    assert!(m.store().history("life").unwrap().is_empty());
    assert!(matches!(
        m.delete("life").await,
        Err(EngineError::NotFound(_))
    ));
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_now_or_on_first_send() {
    let env = env();
    let m = &env.manager;
    let (parent, _) = m
        .spawn(spawn_req(&env.work, "a", "parent words"))
        .await
        .unwrap();
    let (f, r) = m
        .fork("a", "b", Some("RECALL"), SessionOptions::default(), None)
        .await
        .unwrap();
    assert!(r.unwrap().text.contains("parent words"));
    assert_ne!(f.claude_session_id, parent.claude_session_id);
    assert_eq!(f.forked_from.as_deref(), Some("a"));
    // Without a message the fork is recorded with its id and runs on its first send.
    let (lazy, r) = m
        .fork("a", "c", None, SessionOptions::default(), None)
        .await
        .unwrap();
    assert!(r.is_none());
    let planned = lazy.claude_session_id.clone().unwrap();
    let r = m.send("c", "RECALL", None).await.unwrap();
    assert_eq!(r.session_id, planned);
    assert!(r.text.contains("parent words"));
    assert!(m.status("c").unwrap().fork_parent_id.is_none());
    assert!(matches!(
        m.fork("a", "b", None, SessionOptions::default(), None)
            .await,
        Err(EngineError::AlreadyExists(_))
    ));
    assert!(matches!(
        m.fork("missing", "d", None, SessionOptions::default(), None)
            .await,
        Err(EngineError::NotFound(_))
    ));
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_runs_in_parallel_under_a_limit_and_one_failure_stops_nothing() {
    let env = env();
    let m = &env.manager;
    let specs: Vec<SpawnRequest> = (0..5)
        .map(|i| {
            let prompt = if i == 2 {
                "CRASH 4".to_string()
            } else {
                format!("SLOW 300 task {i}")
            };
            spawn_req(&env.work, &format!("b{i}"), &prompt)
        })
        .collect();
    let started = Instant::now();
    let mut reports = 0;
    let outcomes = m
        .batch(specs, 2, &mut |p: cms::engine::manager::BatchProgress<
            '_,
        >| {
            reports += 1;
            assert_eq!(p.total, 5);
        })
        .await;
    let elapsed = started.elapsed();
    assert_eq!(reports, 5);
    let names: Vec<&str> = outcomes.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, vec!["b0", "b1", "b2", "b3", "b4"], "input order");
    assert_eq!(outcomes.iter().filter(|o| o.ok).count(), 4);
    assert!(outcomes[2].error.as_deref().unwrap().contains("code 4"));
    assert_eq!(outcomes[4].response.as_ref().unwrap().text, "echo: task 4");
    // 4 slow entries two at a time take at least two rounds, and far less than serial.
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1200 + 2000), "{elapsed:?}");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_only_old_idle_sessions() {
    let env = env();
    let m = &env.manager;
    m.spawn(spawn_req(&env.work, "old", "x")).await.unwrap();
    m.spawn(spawn_req(&env.work, "new", "x")).await.unwrap();
    m.spawn(spawn_req(&env.work, "old-but-live", "x"))
        .await
        .unwrap();
    m.stop("old").await.unwrap();
    m.stop("new").await.unwrap();
    let ten_days_ago = cms::engine::events::now_ms() - 10 * 86_400_000;
    m.store().set_updated_at("old", ten_days_ago).unwrap();
    m.store()
        .set_updated_at("old-but-live", ten_days_ago)
        .unwrap();
    let removed = m.cleanup(7.0).unwrap();
    assert_eq!(removed, vec!["old"]);
    assert!(m.status("new").is_ok() && m.status("old-but-live").is_ok());
    assert!(m.cleanup(-1.0).is_err());
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_never_outlive_their_manager() {
    let env = env();
    let m = env.manager.clone();
    m.spawn(spawn_req(&env.work, "x", "hi")).await.unwrap();
    let pid = m.live("x").unwrap().pid();
    // A turn in flight, then every handle dropped without a stop.
    let busy = {
        let m = m.clone();
        tokio::spawn(async move { m.send("x", "HANG", None).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    busy.abort();
    drop(env);
    drop(m);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        pid_gone(pid),
        "the child was killed when the manager went away"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_is_kept_and_shown_when_the_child_fails() {
    let env = env();
    let m = &env.manager;
    m.spawn(spawn_req(
        &env.work,
        "err",
        "STDERR warming up the flux capacitor",
    ))
    .await
    .unwrap();
    let err = m.send("err", "CRASH 9", None).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("flux capacitor") && msg.contains("boom"),
        "{msg}"
    );
    m.shutdown().await;
}

/// The two CLI generations count `total_cost_usd` differently (per process; per
/// conversation from 2.1.332 on). Through spawn → send → stop → resume → fork, every
/// turn must cost one turn on both, and a fork is charged only its own turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_turn_costs_one_turn_on_both_cli_generations() {
    for scope in ["process", "conversation"] {
        let env = env_with(|c| {
            c.child_env
                .push(("CMS_SIM_COST_SCOPE".into(), scope.into()))
        });
        let m = &env.manager;
        let mut costs = Vec::new();
        let (_, r) = m.spawn(spawn_req(&env.work, "c", "one")).await.unwrap();
        costs.push(r.cost_usd);
        costs.push(m.send("c", "two", None).await.unwrap().cost_usd);
        m.stop("c").await.unwrap();
        let (_, r) = m.resume("c", Some("three"), None).await.unwrap();
        costs.push(r.unwrap().cost_usd);
        let baseline = m.live("c").unwrap().info().cost_baseline.unwrap();
        if scope == "conversation" {
            // The count carried the two earlier turns; cms started from exactly there.
            assert_eq!(format!("{:?}", baseline.scope), "Conversation");
            assert!(close(baseline.usd, 0.002), "{baseline:?}");
        } else {
            assert!(close(baseline.usd, 0.0), "{baseline:?}");
        }
        costs.push(m.send("c", "four", None).await.unwrap().cost_usd);
        m.stop("c").await.unwrap();
        let (_, r) = m
            .fork("c", "f", Some("five"), SessionOptions::default(), None)
            .await
            .unwrap();
        costs.push(r.unwrap().cost_usd);
        m.stop("f").await.unwrap();
        costs.push(m.send("f", "six", None).await.unwrap().cost_usd);
        for (i, c) in costs.iter().enumerate() {
            assert!(close(*c, 0.001), "{scope}: turn {} cost {c}", i + 1);
        }
        assert!(
            close(m.status("c").unwrap().total_cost_usd, 0.004),
            "{scope}"
        );
        let fork = m.status("f").unwrap();
        assert!(close(fork.total_cost_usd, 0.002), "{scope}: {fork:?}");
        let history: f64 = m.history("c").unwrap().iter().map(|h| h.cost_usd).sum();
        assert!(close(history, 0.004), "{scope}");
        m.shutdown().await;
    }
}

/// A session's budget is for its life: a resumed process gets what is left of it, and a
/// spent budget takes no more turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_spans_every_process_of_a_session() {
    for scope in ["process", "conversation"] {
        let env = env_with(|c| {
            c.child_env
                .push(("CMS_SIM_COST_SCOPE".into(), scope.into()))
        });
        let m = &env.manager;
        let mut r = spawn_req(&env.work, "b", "one");
        r.options.max_budget_usd = Some(0.0025);
        m.spawn(r).await.unwrap();
        assert!(!m.send("b", "two", None).await.unwrap().is_error);
        m.stop("b").await.unwrap();
        // 0.0005 is left: the resumed process stops after its first API call.
        let third = m.send("b", "three", None).await.unwrap();
        assert_eq!(third.subtype, "error_max_budget_usd", "{scope}");
        assert!(third.errors[0].contains("0.0005"), "{:?}", third.errors);
        let err = m.send("b", "four", None).await.unwrap_err();
        assert!(matches!(err, EngineError::BudgetSpent { .. }), "{err}");
        assert!(err.to_string().contains("spent its budget"), "{err}");
        m.stop("b").await.unwrap();
        let err = m.send("b", "five", None).await.unwrap_err();
        assert!(matches!(err, EngineError::BudgetSpent { .. }), "{err}");
        assert!(close(m.status("b").unwrap().total_cost_usd, 0.003));
        // Forking does not renew a budget: a spent one refuses, a fork gets what is left.
        let err = m
            .fork("b", "b2", Some("x"), SessionOptions::default(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::BudgetSpent { .. }), "{err}");
        let mut r = spawn_req(&env.work, "c", "one");
        r.options.max_budget_usd = Some(0.0035);
        m.spawn(r).await.unwrap();
        let (fork, _) = m
            .fork("c", "c2", None, SessionOptions::default(), None)
            .await
            .unwrap();
        assert!(close(fork.options.max_budget_usd.unwrap(), 0.0025));
        m.shutdown().await;
    }
}

/// The CLI's API retries are visible while they happen and named in the final error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_retries_are_counted_and_named_in_the_error() {
    let env = env();
    let m = &env.manager;
    let (_, r) = m
        .spawn(spawn_req(&env.work, "r", "RETRY 3 API_ERROR 529"))
        .await
        .unwrap();
    assert!(r.is_error);
    assert_eq!(r.api_retries, 3);
    assert_eq!(r.last_retry_status, Some(529));
    let summary = r.error_summary();
    assert!(
        summary.contains("API error 529") && summary.contains("after 3 API retries"),
        "{summary}"
    );
    let stored = m.status("r").unwrap();
    assert!(stored.last_error.unwrap().contains("after 3 API retries"));
    assert!(
        stored.retry.is_none(),
        "no retry in progress once the turn ended"
    );
    // A timeout while retrying says so.
    let err = m
        .send(
            "r",
            "RETRY 2 SLOW 5000 late",
            Some(Duration::from_millis(700)),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("after 2 API retries, last status 529"),
        "{err}"
    );
    m.shutdown().await;
}

/// A stdout line over the 64 MiB cap may have been the turn's answer: the turn fails at
/// once (not at its timeout) and the session stays resumable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_over_the_cap_fails_the_turn_at_once() {
    let env = env_with(|c| c.turn_timeout = Duration::from_secs(120));
    let m = &env.manager;
    m.spawn(spawn_req(&env.work, "big", "before"))
        .await
        .unwrap();
    let started = Instant::now();
    let err = m.send("big", "HUGE 70000000", None).await.unwrap_err();
    assert!(matches!(err, EngineError::LineTooLong { .. }), "{err}");
    assert!(err.to_string().contains("64 MiB"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "failed at once"
    );
    let r = m.send("big", "RECALL", None).await.unwrap();
    assert!(r.text.contains("before"), "{}", r.text);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn has_process_says_whether_there_is_anything_to_kill() {
    let env = env();
    let m = &env.manager;
    m.spawn(spawn_req(&env.work, "k", "hi")).await.unwrap();
    assert!(m.has_process("k").unwrap());
    m.stop("k").await.unwrap();
    assert!(!m.has_process("k").unwrap());
    assert!(matches!(
        m.has_process("nope"),
        Err(EngineError::NotFound(_))
    ));
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupting_a_session_with_no_process_says_what_to_do() {
    let env = env();
    let m = &env.manager;
    m.spawn(spawn_req(&env.work, "i", "hi")).await.unwrap();
    m.stop("i").await.unwrap();
    let err = m.interrupt("i").await.unwrap_err();
    assert!(matches!(err, EngineError::NotLive(_)), "{err}");
    assert!(
        err.to_string().contains("has no running process")
            && !err.to_string().contains("in this process"),
        "{err}"
    );
    assert_eq!(err.remedy(), Some(cms::engine::Remedy::ShowStatus("i")));
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_whose_caller_goes_away_is_recorded_as_interrupted() {
    let env = env();
    let m = &env.manager;
    m.spawn(spawn_req(&env.work, "gone", "hi")).await.unwrap();
    let abandoned =
        tokio::time::timeout(Duration::from_millis(300), m.send("gone", "HANG", None)).await;
    assert!(abandoned.is_err(), "the send was still waiting");
    let h = m.history("gone").unwrap();
    assert_eq!(h.len(), 2, "{h:?}");
    let last = &h[1];
    assert_eq!(last.message, "HANG");
    assert!(last.is_error);
    assert!(
        last.error
            .as_deref()
            .unwrap_or("")
            .starts_with("interrupted"),
        "{last:?}"
    );
    m.kill_all().await;
    assert_eq!(m.status("gone").unwrap().state, SessionState::Stopped);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_lists_first_and_removes_only_what_is_still_idle() {
    let env = env();
    let m = &env.manager;
    m.spawn(spawn_req(&env.work, "a", "x")).await.unwrap();
    m.spawn(spawn_req(&env.work, "b", "x")).await.unwrap();
    m.stop("a").await.unwrap();
    m.stop("b").await.unwrap();
    let ten_days_ago = cms::engine::events::now_ms() - 10 * 86_400_000;
    m.store().set_updated_at("a", ten_days_ago).unwrap();
    m.store().set_updated_at("b", ten_days_ago).unwrap();
    let idle: Vec<String> = m.idle(7.0).unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(idle.len(), 2, "{idle:?}");
    assert!(m.status("a").is_ok(), "listing removes nothing");
    // Used since it was listed: kept.
    m.send("b", "again", None).await.unwrap();
    let removed = m.remove_idle(&idle, 7.0).unwrap();
    assert_eq!(removed, vec!["a"]);
    assert!(m.status("b").is_ok());
    assert!(m.idle(-1.0).is_err());
    m.shutdown().await;
}

#[test]
fn a_home_that_does_not_exist_is_not_made_by_reading() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::from_env();
    cfg.home = dir.path().join("nowhere");
    assert!(Manager::open_existing(cfg.clone()).unwrap().is_none());
    assert!(!cfg.home.exists(), "nothing was created");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    cfg.home = file.clone();
    let err = Manager::open_existing(cfg.clone()).err().unwrap();
    assert!(matches!(err, EngineError::HomeIsFile(_)), "{err}");
    assert!(err.to_string().contains("is a file"), "{err}");
    assert!(matches!(Manager::new(cfg), Err(EngineError::HomeIsFile(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_names_are_refused() {
    let env = env();
    for bad in [".", ".."] {
        let err = env
            .manager
            .spawn(spawn_req(&env.work, bad, "x"))
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::InvalidName(_)), "{err}");
    }
    assert!(!env.dir.path().join("cms/locks/...lock").exists());
}

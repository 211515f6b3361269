//! Human approvals on the simulator: a tool call the policy answers with "ask" waits
//! (the turn paused, nothing run) until a person decides, in process and through
//! the host; a deadline denies it (fails closed); "always" approves the tool for the
//! rest of the session; who decided is kept with the session's events.

use crate::support;

use cms::engine::{
    ApprovalVerdict, Decision, EngineConfig, Manager, Policy, SessionState, ToolCall,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::spawn_req;

/// Asks about every Write, with a deadline of `timeout`.
struct AskWrites {
    timeout: Option<Duration>,
}

impl Policy for AskWrites {
    fn wants_tool_prompts(&self) -> bool {
        true
    }
    fn decide(&self, call: &ToolCall) -> Decision {
        if call.tool_name == "Write" {
            Decision::Ask {
                reason: "a write".into(),
                timeout: self.timeout,
            }
        } else {
            Decision::Allow
        }
    }
}

fn manager(dir: &std::path::Path, timeout: Option<Duration>) -> Arc<Manager> {
    let mut cfg = EngineConfig::from_env();
    cfg.claude_bin = support::sim_bin();
    cfg.home = dir.join("cms");
    cfg.child_env = vec![("HOME".into(), dir.display().to_string())];
    cfg.turn_timeout = Duration::from_secs(30);
    let m = Manager::new(cfg).unwrap();
    m.set_policy(Arc::new(AskWrites { timeout }));
    m
}

fn write(file: &str) -> String {
    format!("USE_TOOL Write {{\"file_path\": \"{file}\", \"content\": \"ok\"}}")
}

/// Wait until the session has a call waiting; its approvals then.
async fn waiting(m: &Manager, name: &str) -> Vec<cms::engine::Approval> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = m.approvals();
        if !all.is_empty() {
            assert_eq!(m.status(name).unwrap().state, SessionState::WaitingApproval);
            return all;
        }
        assert!(Instant::now() < deadline, "no call waited for approval");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn verdict(name: &str, allow: bool, always: bool) -> ApprovalVerdict {
    ApprovalVerdict {
        session: name.into(),
        id: None,
        allow,
        reason: (!allow).then(|| "not now".into()),
        by: "test".into(),
        always,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asked_call_waits_for_a_person_and_runs_only_when_approved() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let m = manager(dir.path(), None);
    let mut events = m.subscribe();
    let turn = {
        let m = m.clone();
        let req = spawn_req(&work, "w", &write("a.txt"));
        tokio::spawn(async move { m.spawn(req).await })
    };
    let pending = waiting(&m, "w").await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].tool, "Write");
    assert_eq!(pending[0].summary(), format!("Write {}", "a.txt"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !work.join("a.txt").exists(),
        "nothing runs before the decision"
    );
    assert!(!turn.is_finished(), "the turn is paused");
    let decided = m.decide(verdict("w", true, false)).await.unwrap();
    assert_eq!(decided.id, pending[0].id);
    let (_, r) = turn.await.unwrap().unwrap();
    assert!(r.permission_denials.is_empty(), "{r:?}");
    assert_eq!(std::fs::read_to_string(work.join("a.txt")).unwrap(), "ok");
    assert!(m.approvals().is_empty());
    // Denied with a reason: the model is told who and why; nothing is written.
    let turn = {
        let m = m.clone();
        tokio::spawn(async move { m.send("w", &write("b.txt"), None).await })
    };
    waiting(&m, "w").await;
    m.decide(verdict("w", false, false)).await.unwrap();
    let r = turn.await.unwrap().unwrap();
    assert_eq!(r.permission_denials.len(), 1);
    assert!(!work.join("b.txt").exists());
    // Nothing waits now: a decision names the problem.
    let none = m.decide(verdict("w", true, false)).await.unwrap_err();
    assert!(none.to_string().contains("no tool call waiting"), "{none}");
    // The events say what was asked and who decided.
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(serde_json::to_value(&e.kind).unwrap());
    }
    let decided: Vec<_> = seen.iter().filter(|e| e["event"] == "decided").collect();
    assert_eq!(decided.len(), 2, "{seen:?}");
    assert_eq!(decided[0]["allowed"], true);
    assert_eq!(decided[0]["by"], "test");
    assert_eq!(decided[1]["allowed"], false);
    m.shutdown().await;
    let kept = m.store().events("w").unwrap();
    assert!(kept
        .iter()
        .any(|e| e.kind == "decided" && e.data["by"] == "test"));
    assert!(kept.iter().any(|e| e.kind == "approval"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_deciding_denies_the_call_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let m = manager(dir.path(), Some(Duration::from_millis(300)));
    let started = Instant::now();
    let (_, r) = m
        .spawn(spawn_req(&work, "d", &write("late.txt")))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.permission_denials.len(), 1, "{r:?}");
    assert!(!work.join("late.txt").exists(), "fails closed");
    m.shutdown().await;
    let kept = m.store().events("d").unwrap();
    let by_deadline = kept
        .iter()
        .find(|e| e.kind == "decided")
        .expect("the deadline decided");
    assert_eq!(by_deadline.data["by"], "deadline");
    assert!(by_deadline.data["reason"]
        .as_str()
        .unwrap()
        .contains("nobody approved"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_for_session_approves_that_tool_without_asking_again() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let m = manager(dir.path(), None);
    let turn = {
        let m = m.clone();
        let req = spawn_req(&work, "al", &write("one.txt"));
        tokio::spawn(async move { m.spawn(req).await })
    };
    waiting(&m, "al").await;
    m.decide(verdict("al", true, true)).await.unwrap();
    turn.await.unwrap().unwrap();
    // The next Write runs without a question.
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        m.send("al", &write("two.txt"), None),
    )
    .await
    .expect("not asked again")
    .unwrap();
    assert!(r.permission_denials.is_empty());
    assert!(work.join("two.txt").exists());
    m.shutdown().await;
}

/// Through the host, a process inside a guarded session (its Bash runs `cms`, even
/// with `CMS_GUARD` dropped from its environment) can neither approve a tool call
/// nor start a session less guarded than itself: the host knows its process tree.
#[test]
fn a_guarded_session_can_neither_approve_nor_start_an_unguarded_session() {
    let Some(cms) = support::Cms::hosted() else {
        return;
    };
    let bin = support::cms_bin().display().to_string();
    let task = format!(
        "USE_TOOL Bash {{\"command\": \"env -u CMS_GUARD {bin} approve g > out.txt 2>&1; \
         env -u CMS_GUARD {bin} spawn esc --stop hi >> out.txt 2>&1; true\"}}"
    );
    let (v, _) = cms.delegate(&["--name", "g", "--task", &task, "--preset", "supervised"]);
    assert_eq!(v["status"], "completed", "{v}");
    let out = std::fs::read_to_string(cms.work().join("out.txt")).unwrap();
    assert!(
        out.contains("cms refused: approving a tool call")
            && out.contains("inside guarded session 'g'"),
        "{out}"
    );
    assert!(out.contains("cms refused: starting 'esc'"), "{out}");
    assert!(
        !cms.run(&["status", "esc"]).status.success(),
        "no such session"
    );
}

/// A script's `approval` handler answers the call of the turn the script itself
/// waits for (handlers run while the script waits), and only for its own sessions.
#[test]
fn a_script_handler_approves_its_own_sessions_call_while_it_waits() {
    let cms = support::Cms::new();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("x.txt");
    let plan = cms.work().join("plan.lua");
    std::fs::write(
        &plan,
        format!(
            r#"local asked = 0
cms.on("approval", function(e) asked = asked + 1; return "allow" end)
local d = cms.delegate{{ name = "h", preset = "supervised",
  task = 'USE_TOOL Write {{"file_path": "{}", "content": "ok"}}' }}
return {{ status = d.status, asked = asked }}
"#,
            target.display()
        ),
    )
    .unwrap();
    let v = cms.json(&["script", plan.to_str().unwrap()]);
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["asked"], 1, "{v}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "ok");
    let logs = cms.ok(&["logs", "h"]);
    assert!(logs.contains("approved by lua"), "{logs}");
}

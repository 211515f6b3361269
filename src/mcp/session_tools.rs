//! The MCP tools over one session each: spawn, send, resume, pause, fork, stop,
//! kill, status, output, list, history, delete. Each reads its arguments, asks the
//! gate where a guarded caller needs it, calls the engine and answers in the one
//! JSON shape ([`crate::views`]).

use super::server::{err, CmsServer};
use super::tools::{self, parse};
use crate::engine::{SessionOptions, SpawnSpec};
use crate::views::{record_json, turn_json_compact as turn_json};
use serde_json::{json, Value};

use crate::engine::approval::MAY_APPROVE_ENV;

impl CmsServer {
    pub(super) async fn spawn_session(&self, args: Value) -> Result<Value, String> {
        let m = &self.inner.manager;
        let spec: SpawnSpec = parse("spawn_session", &args)?;
        let req = self.gate_session(spec.into_request(false).map_err(err)?)?;
        let (rec, r) = m.spawn(req).await.map_err(err)?;
        Ok(turn_json(&rec, Some(&r)))
    }

    pub(super) async fn send_message(&self, args: Value) -> Result<Value, String> {
        let m = &self.inner.manager;
        let a: tools::SendArgs = parse("send_message", &args)?;
        self.gate_steer(&a.name)?;
        let r = m
            .send(
                &a.name,
                &a.message,
                crate::engine::seconds(a.timeout).map_err(err)?,
            )
            .await
            .map_err(err)?;
        Ok(turn_json(&m.status(&a.name).map_err(err)?, Some(&r)))
    }

    pub(super) async fn resume_session(&self, args: Value) -> Result<Value, String> {
        let m = &self.inner.manager;
        let a: tools::ResumeArgs = parse("resume_session", &args)?;
        self.gate_steer(&a.name)?;
        let (rec, r) = m
            .resume(&a.name, a.message.as_deref(), None)
            .await
            .map_err(err)?;
        Ok(turn_json(&rec, r.as_ref()))
    }

    pub(super) async fn list_pending_approvals(&self) -> Result<Value, String> {
        let all = self.inner.manager.approvals().await.map_err(err)?;
        Ok(json!({ "approvals": all }))
    }

    /// A model may always refuse a call; it may let one run only where the user said
    /// so, and never when it is itself a guarded session (that would widen its own
    /// guard).
    pub(super) async fn decide_approval(&self, args: Value) -> Result<Value, String> {
        let a: tools::DecideArgs = parse("decide_approval", &args)?;
        if a.allow {
            if self.parent.is_some() {
                return Err("cms refused: a guarded session cannot approve tool calls".into());
            }
            if std::env::var(MAY_APPROVE_ENV).as_deref() != Ok("1") {
                return Err(format!(
                    "cms refused: approving a tool call over MCP is off; a person approves with \
                     `cms approve {}` (or the user sets {MAY_APPROVE_ENV}=1 in this MCP server's \
                     environment to let its client approve). Denying always works.",
                    a.name
                ));
            }
        }
        let decided = self
            .inner
            .manager
            .decide(crate::engine::ApprovalVerdict {
                session: a.name.clone(),
                id: a.id,
                allow: a.allow,
                reason: a.reason,
                by: "mcp".into(),
                always: a.always_for_session && a.allow,
            })
            .await
            .map_err(err)?;
        Ok(json!({ "session": a.name, "id": decided.id, "tool": decided.tool, "allowed": a.allow }))
    }

    pub(super) async fn pause_session(&self, args: Value) -> Result<Value, String> {
        let m = &self.inner.manager;
        let a: tools::NameArgs = parse("pause_session", &args)?;
        Ok(record_json(&m.pause(&a.name).await.map_err(err)?))
    }

    pub(super) async fn fork_session(&self, args: Value) -> Result<Value, String> {
        let m = &self.inner.manager;
        let a: tools::ForkArgs = parse("fork_session", &args)?;
        self.gate_steer(&a.name)?;
        let overrides = SessionOptions {
            model: a.model,
            ..SessionOptions::default()
        };
        let (rec, r) = m
            .fork(&a.name, &a.new_name, a.message.as_deref(), overrides, None)
            .await
            .map_err(err)?;
        Ok(turn_json(&rec, r.as_ref()))
    }

    pub(super) async fn stop_session(&self, args: Value) -> Result<Value, String> {
        let m = &self.inner.manager;
        let a: tools::NameArgs = parse("stop_session", &args)?;
        Ok(record_json(&m.stop(&a.name).await.map_err(err)?))
    }

    pub(super) async fn kill_session(&self, args: Value) -> Result<Value, String> {
        let m = &self.inner.manager;
        let a: tools::NameArgs = parse("kill_session", &args)?;
        Ok(record_json(&m.kill(&a.name).await.map_err(err)?))
    }

    pub(super) async fn get_session_status(&self, args: Value) -> Result<Value, String> {
        let m = &self.inner.manager;
        let a: tools::NameArgs = parse("get_session_status", &args)?;
        let task = self
            .inner
            .background
            .lock()
            .ok()
            .and_then(|b| b.get(&a.name).cloned());
        let mut v = match (m.status(&a.name), &task) {
            (Ok(rec), _) => record_json(&rec),
            // Background work that has not created its session yet.
            (Err(crate::engine::EngineError::NotFound(_)), Some(_)) => {
                json!({ "name": a.name, "state": "starting" })
            }
            (Err(e), _) => return Err(err(e)),
        };
        if let Some(task) = task {
            v["background"] = task;
        }
        Ok(v)
    }

    pub(super) async fn get_last_output(&self, args: Value) -> Result<Value, String> {
        let m = &self.inner.manager;
        let a: tools::NameArgs = parse("get_last_output", &args)?;
        Ok(json!({ "name": a.name, "output": m.output(&a.name).map_err(err)? }))
    }

    pub(super) async fn list_sessions(&self, args: Value) -> Result<Value, String> {
        let m = &self.inner.manager;
        let a: tools::ListArgs = parse("list_sessions", &args)?;
        let recs = m.list().map_err(err)?;
        let list: Vec<Value> = recs
            .iter()
            .filter(|r| a.status.is_none_or(|s| r.state == s))
            .map(record_json)
            .collect();
        Ok(json!({ "server_version": env!("CARGO_PKG_VERSION"), "sessions": list }))
    }

    pub(super) async fn get_history(&self, args: Value) -> Result<Value, String> {
        let m = &self.inner.manager;
        let a: tools::HistoryArgs = parse("get_history", &args)?;
        let mut h = m.history(&a.name).map_err(err)?;
        if let Some(n) = a.limit {
            let skip = h.len().saturating_sub(n);
            h.drain(..skip);
        }
        Ok(json!({ "name": a.name, "history": crate::views::history_json(&h) }))
    }

    pub(super) async fn delete_session(&self, args: Value) -> Result<Value, String> {
        let m = &self.inner.manager;
        let a: tools::NameArgs = parse("delete_session", &args)?;
        m.delete(&a.name).await.map_err(err)?;
        Ok(json!({ "name": a.name, "deleted": true }))
    }
}

//! The MCP tools for longer work: delegation (`delegate_task`, `continue_task`,
//! `finish_task`, `abort_task`) and `batch_spawn`, which can run in the background
//! and report progress.

use super::server::{err, CmsServer};
use super::tools::{self, parse};
use crate::engine::manager::BatchProgress;
use crate::engine::{EventKind, SpawnRequest};
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::{RequestContext, RoleServer};
use serde_json::{json, Value};
use std::time::Duration;

impl CmsServer {
    pub(super) async fn delegate_task(
        &self,
        mut args: Value,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Value, String> {
        let background = take_bool(&mut args, "background");
        let opts = self.gate_delegate(parse("delegate_task", &args)?)?;
        let session = opts.name.clone();
        let lua = self.inner.lua.clone();
        self.run_long(&session, background, ctx, async move {
            lua.delegate(opts).await.map(|r| json!(r))
        })
        .await
    }

    pub(super) async fn continue_task(
        &self,
        args: Value,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Value, String> {
        let a: tools::ContinueArgs = parse("continue_task", &args)?;
        self.gate_steer(&a.name)?;
        let lua = self.inner.lua.clone();
        let (n, msg) = (a.name.clone(), a.message);
        self.run_long(&a.name, a.background, ctx, async move {
            lua.continue_task(n, msg).await.map(|r| json!(r))
        })
        .await
    }

    /// `finish_task` (stop the session gracefully) and `abort_task` (kill it now).
    pub(super) async fn end_task(&self, tool: &str, args: Value) -> Result<Value, String> {
        let m = &self.inner.manager;
        let a: tools::NameArgs = parse(tool, &args)?;
        let ended = if tool == "abort_task" {
            crate::delegate::abort(m.as_ref(), &a.name).await
        } else {
            crate::delegate::finish(m.as_ref(), &a.name).await
        };
        ended.map(|r| json!(r)).map_err(|e| e.to_string())
    }

    pub(super) async fn batch_spawn(
        &self,
        args: Value,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Value, String> {
        let m = &self.inner.manager;
        let a: tools::BatchArgs = parse("batch_spawn", &args)?;
        crate::engine::manager::check_batch(&a.sessions).map_err(err)?;
        let reqs = a
            .sessions
            .into_iter()
            .map(|s| s.into_request(true))
            .collect::<Result<Vec<SpawnRequest>, _>>()
            .map_err(err)?
            .into_iter()
            .map(|r| self.gate_session(r))
            .collect::<Result<Vec<SpawnRequest>, _>>()?;
        let names: Vec<String> = reqs.iter().map(|r| r.name.clone()).collect();
        let (manager, token, peer) = (m.clone(), progress_token(ctx), ctx.peer.clone());
        let concurrency = m.config().batch_concurrency;
        let work = async move {
            let total = reqs.len();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
            let notifier = token.map(|token| {
                tokio::spawn(async move {
                    while let Some((done, name)) = rx.recv().await {
                        let p = ProgressNotificationParam::new(token.clone(), done as f64)
                            .with_total(total as f64)
                            .with_message(format!("{name} done"));
                        let _ = peer.notify_progress(p).await;
                    }
                })
            });
            let outcomes = manager
                .batch(reqs, concurrency, &mut |p: BatchProgress<'_>| {
                    let _ = tx.send((p.done, p.outcome.name.to_string()));
                })
                .await;
            drop(tx);
            if let Some(n) = notifier {
                let _ = n.await;
            }
            Ok(crate::views::batch_json_compact(&outcomes))
        };
        if a.background {
            for n in &names {
                self.remember(n, json!({ "status": "running", "tool": "batch_spawn" }));
            }
            let me = self.clone();
            tokio::spawn(async move {
                let result: Result<Value, String> = work.await;
                if let Ok(Value::Array(items)) = &result {
                    for item in items {
                        if let Some(n) = item["name"].as_str() {
                            me.remember(
                                n,
                                json!({ "status": "done", "tool": "batch_spawn", "result": item }),
                            );
                        }
                    }
                }
            });
            Ok(
                json!({ "status": "started", "background": true, "sessions": names, "poll": "get_session_status" }),
            )
        } else {
            work.await
        }
    }

    pub(super) fn remember(&self, name: &str, v: Value) {
        if let Ok(mut b) = self.inner.background.lock() {
            b.insert(name.to_string(), v);
        }
    }

    /// Run long work (delegate, continue): in the background when asked (answer at
    /// once; the result appears in `get_session_status`), else now, with progress
    /// notifications for the session's tool uses and turns if the client asked.
    pub(super) async fn run_long(
        &self,
        session: &str,
        background: bool,
        ctx: &RequestContext<RoleServer>,
        work: impl std::future::Future<Output = Result<Value, String>> + Send + 'static,
    ) -> Result<Value, String> {
        if background {
            self.remember(session, json!({ "status": "running" }));
            let (me, name) = (self.clone(), session.to_string());
            tokio::spawn(async move {
                let v = match work.await {
                    Ok(v) => json!({ "status": "done", "result": v }),
                    Err(e) => json!({ "status": "error", "error": e }),
                };
                me.remember(&name, v);
            });
            return Ok(
                json!({ "name": session, "status": "started", "background": true, "poll": "get_session_status" }),
            );
        }
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
        let progress = progress_token(ctx).map(|token| {
            let mut events = self.inner.manager.subscribe();
            let (peer, name) = (ctx.peer.clone(), session.to_string());
            tokio::spawn(async move {
                let mut n = 0.0;
                let mut finishing = false;
                loop {
                    let event = if finishing {
                        // The work is done: send what is already queued, then stop.
                        match events.try_recv() {
                            Ok(e) => e,
                            Err(_) => break,
                        }
                    } else {
                        tokio::select! {
                            e = events.recv() => match e {
                                Ok(e) => e,
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                                Err(_) => break,
                            },
                            _ = &mut done_rx => {
                                finishing = true;
                                continue;
                            }
                        }
                    };
                    if event.session != name {
                        continue;
                    }
                    let message = match &event.kind {
                        EventKind::ToolUse { name, .. } => format!("using {name}"),
                        EventKind::Result { cost_usd, .. } => format!("turn done (${cost_usd:.4})"),
                        EventKind::Violation { message, .. } => format!("safety: {message}"),
                        _ => continue,
                    };
                    n += 1.0;
                    let p = ProgressNotificationParam::new(token.clone(), n).with_message(message);
                    let _ = peer.notify_progress(p).await;
                }
            })
        });
        let result = work.await;
        let _ = done_tx.send(());
        if let Some(p) = progress {
            // Progress goes out before the result (clients drop late progress).
            let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
        }
        result
    }
}

pub(super) fn progress_token(ctx: &RequestContext<RoleServer>) -> Option<ProgressToken> {
    ctx.meta.get_progress_token()
}

pub(super) fn take_bool(args: &mut Value, key: &str) -> bool {
    args.as_object_mut()
        .and_then(|m| m.remove(key))
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

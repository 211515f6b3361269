//! One delegated task's state while a strategy drives it, and the `task` object the
//! strategy holds (`task:send`, `task:check`, `task:review`, ...).

use super::check::run_check;
use super::result::ends_session;
use super::{CheckRecord, DelegateOptions, DeniedCall, ReviewRecord, ViolationView};
use crate::engine::{
    EngineError, EventKind, Guard, Response, SessionEvent, SessionOptions, SessionState, Sessions,
    SpawnRequest,
};
use crate::policy::PolicyService;
use crate::sandbox::convert;
use mlua::{Function, UserData, UserDataFields, UserDataMethods, Value};
use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Everything a strategy's `task` object needs; shared between Rust and Lua.
pub(super) struct TaskState {
    pub(super) name: String,
    pub(super) prompt: String,
    pub(super) preset: String,
    pub(super) strategy: String,
    pub(super) options: DelegateOptions,
    pub(super) check_fn: Option<Function>,
    pub(super) work_dir: PathBuf,
    /// The spawn of the first send; None once the session exists.
    pub(super) spawn: RefCell<Option<SpawnRequest>>,
    pub(super) timeout: Option<Duration>,
    pub(super) manager: Arc<dyn Sessions>,
    pub(super) events: RefCell<broadcast::Receiver<SessionEvent>>,
    pub(super) responses: RefCell<Vec<Response>>,
    pub(super) retries: Cell<u32>,
    /// The history kind of the first send (`delegate`, or `continue`).
    pub(super) first_kind: &'static str,
    pub(super) error: RefCell<Option<String>>,
    pub(super) ended: Cell<bool>,
    pub(super) checks: RefCell<Vec<CheckRecord>>,
    pub(super) reviews: RefCell<Vec<ReviewRecord>>,
    pub(super) violations: RefCell<Vec<ViolationView>>,
    pub(super) denied: RefCell<Vec<DeniedCall>>,
}

/// What differs between a new delegation and a `continue`.
pub(super) struct TaskSetup {
    pub(super) prompt: String,
    pub(super) preset: String,
    pub(super) strategy: String,
    pub(super) work_dir: PathBuf,
    pub(super) timeout: Option<Duration>,
    pub(super) spawn: Option<SpawnRequest>,
    pub(super) check_fn: Option<Function>,
    pub(super) first_kind: &'static str,
}

impl TaskState {
    pub(super) fn new(
        manager: &Arc<dyn Sessions>,
        options: DelegateOptions,
        setup: TaskSetup,
    ) -> Rc<TaskState> {
        Rc::new(TaskState {
            name: options.name.clone(),
            prompt: setup.prompt,
            preset: setup.preset,
            strategy: setup.strategy,
            check_fn: setup.check_fn,
            work_dir: setup.work_dir,
            spawn: RefCell::new(setup.spawn),
            timeout: setup.timeout,
            events: RefCell::new(manager.subscribe()),
            manager: manager.clone(),
            options,
            responses: RefCell::default(),
            retries: Cell::new(0),
            first_kind: setup.first_kind,
            error: RefCell::default(),
            ended: Cell::new(false),
            checks: RefCell::default(),
            reviews: RefCell::default(),
            violations: RefCell::default(),
            denied: RefCell::default(),
        })
    }

    /// Take in the events of this task's session since the last look.
    pub(super) fn collect_events(&self) {
        let mut rx = self.events.borrow_mut();
        loop {
            match rx.try_recv() {
                Ok(e) if e.session == self.name => match e.kind {
                    EventKind::Violation {
                        rule,
                        message,
                        action,
                        tool,
                    } => {
                        if ends_session(&action) {
                            self.ended.set(true);
                        }
                        self.violations.borrow_mut().push(ViolationView {
                            rule,
                            message,
                            action,
                            tool,
                            timestamp: e.at_ms,
                        });
                    }
                    EventKind::Permission {
                        tool,
                        allowed: false,
                        reason,
                    } => self.denied.borrow_mut().push(DeniedCall {
                        tool,
                        reason: reason.unwrap_or_default(),
                    }),
                    _ => {}
                },
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    tracing::warn!("delegate {}: {n} events were missed", self.name);
                }
                Err(_) => return,
            }
        }
    }

    pub(super) async fn send(&self, text: &str, kind: Option<&str>) -> Response {
        let first = self.responses.borrow().is_empty();
        let kind = match kind {
            Some(k) => k,
            None if first => self.first_kind,
            None => "correction",
        };
        let spawn = self.spawn.borrow_mut().take();
        let result = match spawn {
            Some(mut req) => {
                req.prompt = text.to_string();
                self.manager.spawn(req).await.map(|(_, r)| r)
            }
            None => {
                self.manager
                    .send_as(&self.name, text, self.timeout, kind)
                    .await
            }
        };
        if !first {
            self.retries.set(self.retries.get() + 1);
        }
        self.collect_events();
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                if matches!(
                    e,
                    EngineError::PolicyStopped { .. } | EngineError::Killed { .. }
                ) {
                    self.ended.set(true);
                }
                let mut r = e.partial().cloned().unwrap_or_default();
                r.is_error = true;
                if r.subtype.is_empty() {
                    r.subtype = "error_during_execution".into();
                }
                *self.error.borrow_mut() = Some(e.to_string());
                r.errors.push(e.to_string());
                r
            }
        };
        if let Ok(rec) = self.manager.status(&self.name) {
            if matches!(rec.state, SessionState::Killed | SessionState::Failed) {
                self.ended.set(true);
            }
        }
        self.responses.borrow_mut().push(r.clone());
        r
    }

    pub(super) async fn check(&self, last: Value) -> mlua::Result<(bool, String)> {
        let n = self.checks.borrow().len() + 1;
        let what = match (&self.check_fn, &self.options.check) {
            (Some(_), _) => "the check function".to_string(),
            (None, Some(cmd)) => format!("`{cmd}`"),
            (None, None) => "no check".to_string(),
        };
        super::report(&format!("{}: check {n}: running {what}", self.name));
        let (passed, output) = if let Some(f) = &self.check_fn {
            let (ok, out): (Value, Option<String>) = f.call_async(last).await?;
            (ok.as_boolean().unwrap_or(false), out.unwrap_or_default())
        } else if let Some(cmd) = &self.options.check {
            run_check(
                cmd,
                &self.work_dir,
                self.timeout
                    .unwrap_or(crate::engine::config::DEFAULT_TURN_TIMEOUT),
            )
            .await
        } else {
            (true, "no check configured".to_string())
        };
        let last_line = output
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        super::report(&format!(
            "{}: check {n}: {}{}",
            self.name,
            if passed { "passed" } else { "failed" },
            if passed || last_line.is_empty() {
                String::new()
            } else {
                format!(" ({})", last_line.chars().take(120).collect::<String>())
            }
        ));
        self.checks.borrow_mut().push(CheckRecord {
            passed,
            output: output.clone(),
        });
        Ok((passed, output))
    }

    pub(super) async fn review(&self, prompt: &str, policy: &PolicyService) -> Response {
        let n = self.reviews.borrow().len() + 1;
        let name = format!("{}-review-{n}", self.name);
        super::report(&format!(
            "{}: review {n}: session '{name}' reads the work",
            self.name
        ));
        let preset = match policy.preset("review") {
            Ok(p) => p,
            Err(e) => {
                return Response {
                    is_error: true,
                    text: String::new(),
                    errors: vec![e.to_string()],
                    ..Response::default()
                }
            }
        };
        let guard = Guard {
            preset: Some("review".into()),
            safety: true,
            max_cost_usd: self.options.max_cost,
            max_turns: self.options.max_turns,
            timeout_secs: self.options.timeout,
            delegated: false,
            strategy: None,
        };
        let req = SpawnRequest {
            name: name.clone(),
            prompt: prompt.to_string(),
            options: SessionOptions {
                model: self
                    .options
                    .review_model
                    .clone()
                    .or_else(|| self.options.model.clone()),
                work_dir: Some(self.work_dir.clone()),
                permission_mode: Some(preset.permission_mode),
                allowed_tools: preset.allowed_tools,
                disallowed_tools: preset.disallowed_tools,
                guard: Some(guard),
                ..SessionOptions::default()
            },
            timeout: self.timeout,
            stop_after: true,
            kind: Some("review".into()),
            ..SpawnRequest::default()
        };
        let r = match self.manager.spawn(req).await {
            Ok((_, r)) => r,
            Err(e) => Response {
                is_error: true,
                errors: vec![e.to_string()],
                ..e.partial().cloned().unwrap_or_default()
            },
        };
        self.reviews.borrow_mut().push(ReviewRecord {
            session: name,
            response: r.text.clone(),
            cost: r.cost_usd,
        });
        r
    }
}

/// The `task` object strategies get.
pub(super) struct TaskHandle {
    pub(super) state: Rc<TaskState>,
    pub(super) policy: Arc<PolicyService>,
}

impl UserData for TaskHandle {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("name", |_, t| Ok(t.state.name.clone()));
        fields.add_field_method_get("prompt", |_, t| Ok(t.state.prompt.clone()));
        fields.add_field_method_get("preset", |_, t| Ok(t.state.preset.clone()));
        fields.add_field_method_get("strategy", |_, t| Ok(t.state.strategy.clone()));
        fields.add_field_method_get("work_dir", |_, t| {
            Ok(t.state.work_dir.display().to_string())
        });
        fields.add_field_method_get("options", |lua, t| convert::to_lua(lua, &t.state.options));
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_async_method(
            "send",
            |lua, t, (text, kind): (String, Option<String>)| async move {
                let r = t.state.send(&text, kind.as_deref()).await;
                convert::to_lua(&lua, &crate::views::turn_view(&r))
            },
        );
        methods.add_async_method("check", |_, t, last: Value| async move {
            t.state.check(last).await
        });
        methods.add_async_method("review", |lua, t, prompt: String| async move {
            let r = t.state.review(&prompt, &t.policy).await;
            convert::to_lua(&lua, &crate::views::turn_view(&r))
        });
        methods.add_method("refusals", |lua, t, ()| {
            t.state.collect_events();
            convert::to_lua(lua, &*t.state.denied.borrow())
        });
        methods.add_method("ended", |_, t, ()| {
            t.state.collect_events();
            Ok(t.state.ended.get())
        });
    }
}

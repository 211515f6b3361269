//! Delegation: a task handed to a guarded session (preset + safety net) and driven
//! by a strategy, a Lua function from `scripts/strategies/` (layered, reloaded when
//! its file changes). `cms delegate`, `cms continue`, `finish`, `abort`,
//! `cms.delegate{}` and the MCP tools all come here, so they behave the same.
//!
//! The result is the seed's (`status`, `response`, `cost`, `turns`, `duration`,
//! `sessionId`, `name`, `canContinue`, `toolsUsed`, `safety`, `error`) plus the
//! denials made before execution, the checks and reviews a strategy ran, and the
//! session's total cost. A delegation whose last check did not pass is
//! `check_failed`, never a success, whatever strategy ran it.

use crate::engine::{
    EngineError, EventKind, Guard, Manager, Response, SessionEvent, SessionOptions, SessionState,
    SpawnRequest,
};
use crate::lua::convert;
use crate::lua::host::describe;
use crate::policy::{PolicyError, PolicyService};
use mlua::{
    Function, Lua, LuaSerdeExt, MultiValue, Table, UserData, UserDataFields, UserDataMethods, Value,
};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// The options of a delegation (the seed's, plus strategy, timeout and check).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DelegateOptions {
    pub name: String,
    pub task: String,
    #[serde(default)]
    pub model: Option<String>,
    /// `read-only`, `review`, `edit` (default), `full`, `plan`.
    #[serde(default)]
    pub preset: Option<String>,
    /// Session cost limit in USD (default: `safety.lua`'s, $2.00).
    #[serde(default)]
    pub max_cost: Option<f64>,
    /// Agent-turn limit (default 50).
    #[serde(default)]
    pub max_turns: Option<u32>,
    /// Seconds one interaction may take (default: `safety.lua`'s, 3600).
    #[serde(default)]
    pub timeout: Option<f64>,
    /// False: no limits and no protected paths (the preset still applies).
    #[serde(default = "yes")]
    pub safety: bool,
    /// Put before the task.
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    #[serde(default)]
    pub system_prompt: Option<String>,
    #[serde(default)]
    pub agent: Option<String>,
    /// `single` (default), `correction_loop`, `review`, or one of yours.
    #[serde(default)]
    pub strategy: Option<String>,
    /// A shell command for `correction_loop` (exit 0 passes).
    #[serde(default)]
    pub check: Option<String>,
    /// Attempts for `correction_loop`, review rounds for `review`.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// The reviewer's model for `review` (default: the task's).
    #[serde(default)]
    pub review_model: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("strategy '{name}' failed: {message}")]
    Strategy { name: String, message: String },
}

/// A delegation's outcome, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DelegateResult {
    /// `completed`, `needs_input`, `check_failed`, `failed`, `cost_exceeded`,
    /// `turns_exceeded`.
    pub status: String,
    pub response: String,
    /// The cost of this call (all its turns, retries and corrections).
    pub cost: f64,
    pub turns: u32,
    /// Wall time of this call in ms.
    pub duration: u64,
    pub session_id: Option<String>,
    pub name: String,
    pub can_continue: bool,
    pub tools_used: Vec<String>,
    /// None with `--no-safety`.
    pub safety: Option<SafetyReport>,
    pub error: Option<String>,
    /// Tool calls refused before they ran, with the reason the model was given.
    pub denied_before_execution: Vec<DeniedCall>,
    /// `permission_denials` of this call's turns (tool and input).
    pub permission_denials: Vec<serde_json::Value>,
    /// Follow-ups the strategy sent (`retry`, `correction`).
    pub retries: u32,
    /// The session's cost over its whole life.
    pub total_cost: f64,
    pub preset: String,
    pub strategy: String,
    pub checks: Vec<CheckRecord>,
    pub reviews: Vec<ReviewRecord>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SafetyReport {
    pub total_violations: usize,
    pub violations: Vec<ViolationView>,
    pub limits: LimitsView,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViolationView {
    #[serde(rename = "type")]
    pub rule: String,
    pub message: String,
    /// `denied`, `warned`, `stopped`, `killed`.
    pub action: String,
    pub tool: Option<String>,
    pub timestamp: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitsView {
    pub max_cost_usd: Option<f64>,
    pub max_turns: Option<u32>,
    pub timeout_secs: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeniedCall {
    pub tool: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckRecord {
    pub passed: bool,
    pub output: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReviewRecord {
    pub session: String,
    pub response: String,
    pub cost: f64,
}

/// `finish` and `abort`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndResult {
    pub name: String,
    /// `finished` or `aborted`.
    pub status: String,
    pub total_cost: f64,
    pub total_turns: u32,
}

/// Everything a strategy's `task` object needs; shared between Rust and Lua.
struct TaskState {
    name: String,
    prompt: String,
    preset: String,
    strategy: String,
    options: DelegateOptions,
    check_fn: Option<Function>,
    work_dir: PathBuf,
    /// The spawn of the first send; None once the session exists.
    spawn: RefCell<Option<SpawnRequest>>,
    timeout: Option<Duration>,
    manager: Arc<Manager>,
    events: RefCell<broadcast::Receiver<SessionEvent>>,
    responses: RefCell<Vec<Response>>,
    retries: Cell<u32>,
    /// The history kind of the first send (`delegate`, or `continue`).
    first_kind: &'static str,
    error: RefCell<Option<String>>,
    ended: Cell<bool>,
    checks: RefCell<Vec<CheckRecord>>,
    reviews: RefCell<Vec<ReviewRecord>>,
    violations: RefCell<Vec<ViolationView>>,
    denied: RefCell<Vec<DeniedCall>>,
}

/// What differs between a new delegation and a `continue`.
struct TaskSetup {
    prompt: String,
    preset: String,
    strategy: String,
    work_dir: PathBuf,
    timeout: Option<Duration>,
    spawn: Option<SpawnRequest>,
    check_fn: Option<Function>,
    first_kind: &'static str,
}

impl TaskState {
    fn new(manager: &Arc<Manager>, options: DelegateOptions, setup: TaskSetup) -> Rc<TaskState> {
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
    fn collect_events(&self) {
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

    async fn send(&self, text: &str, kind: Option<&str>) -> Response {
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

    async fn check(&self, last: Value) -> mlua::Result<(bool, String)> {
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
        self.checks.borrow_mut().push(CheckRecord {
            passed,
            output: output.clone(),
        });
        Ok((passed, output))
    }

    async fn review(&self, prompt: &str, policy: &PolicyService) -> Response {
        let n = self.reviews.borrow().len() + 1;
        let name = format!("{}-review-{n}", self.name);
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

/// Run a check command in the working directory: exit 0 passes. Its output (the
/// last 8 KB of stdout and stderr) goes back to the session when it fails.
async fn run_check(cmd: &str, dir: &std::path::Path, limit: Duration) -> (bool, String) {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(limit, child).await {
        Err(_) => (
            false,
            format!("the check `{cmd}` took longer than {}s", limit.as_secs()),
        ),
        Ok(Err(e)) => (false, format!("the check `{cmd}` could not run: {e}")),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            if text.len() > 8192 {
                let cut = text.len() - 8192;
                let cut = (cut..text.len())
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(cut);
                text = format!("...{}", &text[cut..]);
            }
            let code = out
                .status
                .code()
                .map_or("a signal".to_string(), |c| c.to_string());
            (
                out.status.success(),
                format!("`{cmd}` exited with {code}\n{}", text.trim_end()),
            )
        }
    }
}

/// The `task` object strategies get.
struct TaskHandle {
    state: Rc<TaskState>,
    policy: Arc<PolicyService>,
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
                convert::response(&lua, &r)
            },
        );
        methods.add_async_method("check", |_, t, last: Value| async move {
            t.state.check(last).await
        });
        methods.add_async_method("review", |lua, t, prompt: String| async move {
            let r = t.state.review(&prompt, &t.policy).await;
            convert::response(&lua, &r)
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

/// Strategies compiled in this Lua state, by name: the source they came from and
/// the function, so an unchanged file is not compiled again and a broken edit
/// falls back to the last good one.
#[derive(Default)]
struct StrategyCache(HashMap<String, (String, Function)>);

fn load_strategy(lua: &Lua, policy: &PolicyService, name: &str) -> Result<Function, DelegateError> {
    let Some(src) = policy.layers().find(&format!("strategies/{name}.lua")) else {
        // A plugin's strategy, when the host loaded plugins.
        let plugins = lua.app_data_ref::<crate::plugins::PluginSet>();
        if let Some(f) = plugins.as_ref().and_then(|p| p.strategy(name)) {
            return Ok(f);
        }
        let mut known = policy.layers().strategies();
        if let Some(p) = plugins {
            known.extend(p.strategies.iter().map(|(n, _)| n.clone()));
        }
        known.sort();
        return Err(DelegateError::Invalid(format!(
            "unknown strategy '{name}' (known: {})",
            known.join(", ")
        )));
    };
    if lua.app_data_ref::<StrategyCache>().is_none() {
        lua.set_app_data(StrategyCache::default());
    }
    if let Some(cache) = lua.app_data_ref::<StrategyCache>() {
        if let Some((code, f)) = cache.0.get(name) {
            if *code == src.code {
                return Ok(f.clone());
            }
        }
    }
    // A strategy reads files but never writes or deletes one; text only, and its top
    // level must finish in time.
    let env = crate::lua::host::confined_env(lua).map_err(|e| DelegateError::Strategy {
        name: name.to_string(),
        message: describe(&e),
    })?;
    let loaded = crate::lua::limits::load_limited(lua, || {
        lua.load(src.code.as_str())
            .set_name(src.chunk_name())
            .set_mode(mlua::ChunkMode::Text)
            .set_environment(env)
            .call::<Value>(())
    })
    .and_then(|v| match v {
        Value::Function(f) => Ok(f),
        _ => Err(mlua::Error::runtime(format!(
            "{} must return a function(task)",
            src.origin
        ))),
    });
    match loaded {
        Ok(f) => {
            if let Some(mut cache) = lua.app_data_mut::<StrategyCache>() {
                cache.0.insert(name.to_string(), (src.code, f.clone()));
            }
            Ok(f)
        }
        Err(e) => {
            let message = describe(&e);
            let last = lua
                .app_data_ref::<StrategyCache>()
                .and_then(|c| c.0.get(name).map(|(_, f)| f.clone()));
            match last {
                Some(f) => {
                    tracing::error!(
                        "strategy not reloaded (the last good version stays): {message}"
                    );
                    Ok(f)
                }
                None => Err(DelegateError::Strategy {
                    name: name.into(),
                    message,
                }),
            }
        }
    }
}

/// Start a delegation: spawn a guarded session and run the strategy.
/// Guarded work starts only on a policy that loaded; a broken edit whose last
/// good version is in force is said on stderr each time.
fn policy_in_force(policy: &PolicyService) -> Result<(), DelegateError> {
    policy.ready()?;
    for e in policy.stale() {
        tracing::warn!(
            "a policy file was edited and does not load; its last good version is in force until it is fixed: {e}"
        );
    }
    Ok(())
}

pub async fn delegate(
    lua: &Lua,
    manager: &Arc<Manager>,
    policy: &Arc<PolicyService>,
    opts: DelegateOptions,
    check_fn: Option<Function>,
) -> Result<DelegateResult, DelegateError> {
    if opts.task.trim().is_empty() {
        return Err(DelegateError::Invalid("the task is empty".into()));
    }
    policy_in_force(policy)?;
    for (what, v) in [("max_cost", opts.max_cost), ("timeout", opts.timeout)] {
        if let Some(v) = v {
            if !(v.is_finite() && v > 0.0) {
                return Err(DelegateError::Invalid(format!(
                    "{what} must be a number above 0, got {v}"
                )));
            }
        }
    }
    // A name may be reused only by a finished delegation.
    if let Ok(rec) = manager.status(&opts.name) {
        let delegated = rec.options.guard.as_ref().is_some_and(|g| g.delegated);
        let finished = matches!(
            rec.state,
            SessionState::Stopped | SessionState::Killed | SessionState::Failed
        );
        if !(delegated && finished) {
            return Err(DelegateError::Invalid(format!(
                "session '{}' already exists (use `cms continue --name {0}` to send it more, or pick another name)",
                opts.name
            )));
        }
        manager.delete(&opts.name).await?;
    }
    let mut opts = opts;
    // Started from inside a guarded session: at least as guarded as it.
    if let Some(parent) = crate::policy::isolation::inherited() {
        let mut ask = crate::policy::spawn_gate::SpawnAsk {
            name: opts.name.clone(),
            kind: "delegate".into(),
            preset: Some(opts.preset.clone().unwrap_or_else(|| "edit".into())),
            safety: opts.safety,
            ..Default::default()
        };
        crate::policy::spawn_gate::floor(&mut ask, &parent);
        opts.preset = ask.preset;
        opts.safety = ask.safety;
    }
    let preset_name = opts.preset.clone().unwrap_or_else(|| "edit".into());
    let preset = policy.preset(&preset_name)?;
    let defaults = policy.limits();
    let strategy = opts.strategy.clone().unwrap_or_else(|| "single".into());
    let function = load_strategy(lua, policy, &strategy)?;
    let guard = Guard {
        preset: Some(preset_name.clone()),
        safety: opts.safety,
        max_cost_usd: opts.max_cost.or(defaults.max_cost),
        max_turns: opts.max_turns.or(defaults.max_turns),
        timeout_secs: opts.timeout.or(defaults.timeout),
        delegated: true,
        strategy: Some(strategy.clone()),
    };
    let work_dir = match &opts.work_dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()
            .map_err(|e| DelegateError::Invalid(format!("no working directory: {e}")))?,
    };
    let prompt = match &opts.context {
        Some(c) if !c.trim().is_empty() => format!("{c}\n\n{}", opts.task),
        _ => opts.task.clone(),
    };
    let timeout = guard.timeout_secs.map(Duration::from_secs_f64);
    let spawn = SpawnRequest {
        name: opts.name.clone(),
        prompt: String::new(),
        options: SessionOptions {
            model: opts.model.clone(),
            work_dir: Some(work_dir.clone()),
            permission_mode: Some(preset.permission_mode.clone()),
            allowed_tools: preset.allowed_tools.clone(),
            disallowed_tools: preset.disallowed_tools.clone(),
            system_prompt: opts.system_prompt.clone(),
            // The CLI's own hard cap per process, behind the net's session-wide limit.
            max_budget_usd: if opts.safety {
                guard.max_cost_usd
            } else {
                None
            },
            agent: opts.agent.clone(),
            guard: Some(guard.clone()),
            ..SessionOptions::default()
        },
        timeout,
        kind: Some("delegate".into()),
        // `continue` runs the strategy again with these (check command, attempts, ...).
        meta: serde_json::to_value(DelegateOptions {
            task: String::new(),
            ..opts.clone()
        })
        .ok(),
        ..SpawnRequest::default()
    };
    let state = TaskState::new(
        manager,
        opts,
        TaskSetup {
            prompt,
            preset: preset_name,
            strategy,
            work_dir,
            timeout,
            spawn: Some(spawn),
            check_fn,
            first_kind: "delegate",
        },
    );
    run(lua, policy, state, function, &guard).await
}

/// Send more to a delegated session: the same strategy runs with the message, under
/// the same guard (limits count the session's whole life, across restarts) and the
/// same check: the saved command, or `check_fn` (a Lua check function cannot be
/// saved, so `d:continue` passes the one `cms.delegate` was given).
pub async fn continue_task(
    lua: &Lua,
    manager: &Arc<Manager>,
    policy: &Arc<PolicyService>,
    name: &str,
    message: &str,
    check_fn: Option<Function>,
) -> Result<DelegateResult, DelegateError> {
    if message.trim().is_empty() {
        return Err(DelegateError::Invalid("the message is empty".into()));
    }
    policy_in_force(policy)?;
    let rec = manager.status(name)?;
    let guard = delegated_guard(name, &rec.options)?;
    if let Some(v) = ending_violation(manager, name) {
        return Err(DelegateError::Invalid(format!(
            "the safety net ended '{name}' ({v}); it cannot continue. Delegate again under a new name with higher limits."
        )));
    }
    let strategy = guard.strategy.clone().unwrap_or_else(|| "single".into());
    let function = load_strategy(lua, policy, &strategy)?;
    let work_dir = rec.work_dir.clone();
    let saved: DelegateOptions = rec
        .meta
        .clone()
        .and_then(|m| serde_json::from_value(m).ok())
        .unwrap_or_default();
    let opts = DelegateOptions {
        name: name.into(),
        task: message.into(),
        model: rec.options.model.clone(),
        preset: guard.preset.clone(),
        max_cost: guard.max_cost_usd,
        max_turns: guard.max_turns,
        timeout: guard.timeout_secs,
        safety: guard.safety,
        work_dir: Some(work_dir.clone()),
        strategy: Some(strategy.clone()),
        ..saved
    };
    let state = TaskState::new(
        manager,
        opts,
        TaskSetup {
            prompt: message.into(),
            preset: guard.preset.clone().unwrap_or_default(),
            strategy,
            work_dir,
            timeout: guard.timeout_secs.map(Duration::from_secs_f64),
            spawn: None,
            check_fn,
            first_kind: "continue",
        },
    );
    run(lua, policy, state, function, &guard).await
}

/// Stop a delegated session gracefully (resumable with `continue`).
pub async fn finish(manager: &Manager, name: &str) -> Result<EndResult, DelegateError> {
    let rec = manager.status(name)?;
    delegated_guard(name, &rec.options)?;
    let rec = manager.stop(name).await?;
    Ok(EndResult {
        name: rec.name,
        status: "finished".into(),
        total_cost: rec.total_cost_usd,
        total_turns: rec.total_turns,
    })
}

/// Kill a delegated session now.
pub async fn abort(manager: &Manager, name: &str) -> Result<EndResult, DelegateError> {
    let rec = manager.status(name)?;
    delegated_guard(name, &rec.options)?;
    let rec = manager.kill(name).await?;
    Ok(EndResult {
        name: rec.name,
        status: "aborted".into(),
        total_cost: rec.total_cost_usd,
        total_turns: rec.total_turns,
    })
}

fn delegated_guard(name: &str, options: &SessionOptions) -> Result<Guard, DelegateError> {
    match &options.guard {
        Some(g) if g.delegated => Ok(g.clone()),
        _ => Err(DelegateError::Invalid(format!(
            "'{name}' is not a delegated session (use `cms send`, or `cms delegate` to start one)"
        ))),
    }
}

/// Whether a violation's action ended the session.
fn ends_session(action: &str) -> bool {
    action == "killed" || action == "stopped"
}

/// What a delegation call came to, for its status.
struct Outcome<'a> {
    cost_exceeded: bool,
    turns_exceeded: bool,
    /// The last turn's `result` subtype.
    subtype: &'a str,
    failed: bool,
    /// The last turn still had permission denials.
    denials_left: bool,
    /// The last check the strategy ran did not pass.
    check_failed: bool,
    /// A status the strategy returned (`needs_input`, `check_failed`, `failed`,
    /// `completed`).
    strategy_says: Option<&'a str>,
}

/// The status, in this order: the safety net's or the CLI's limits, a failure, a
/// check that did not pass (a strategy cannot call that `completed`), something
/// the caller must answer, else completed.
fn derive_status(o: &Outcome) -> &'static str {
    if o.cost_exceeded || o.subtype == "error_max_budget_usd" {
        "cost_exceeded"
    } else if o.turns_exceeded || o.subtype == "error_max_turns" {
        "turns_exceeded"
    } else if o.failed || o.strategy_says == Some("failed") {
        "failed"
    } else if o.check_failed || o.strategy_says == Some("check_failed") {
        "check_failed"
    } else if o.denials_left || o.strategy_says == Some("needs_input") {
        "needs_input"
    } else {
        "completed"
    }
}

/// The message of the violation that ended the session, if the net ended it.
fn ending_violation(manager: &Manager, name: &str) -> Option<String> {
    let events = manager.store().events(name).ok()?;
    let last_violation = events.iter().rev().find(|e| e.kind == "violation")?;
    let action = last_violation.data["action"].as_str()?;
    let rule = last_violation.data["rule"].as_str().unwrap_or("");
    if ends_session(action) && rule != "policy_error" {
        last_violation.data["message"].as_str().map(String::from)
    } else {
        None
    }
}

async fn run(
    lua: &Lua,
    policy: &Arc<PolicyService>,
    state: Rc<TaskState>,
    function: Function,
    guard: &Guard,
) -> Result<DelegateResult, DelegateError> {
    let started = Instant::now();
    let cost_before = state
        .manager
        .status(&state.name)
        .map(|r| r.total_cost_usd)
        .unwrap_or(0.0);
    let task = lua
        .create_userdata(TaskHandle {
            state: state.clone(),
            policy: policy.clone(),
        })
        .map_err(|e| DelegateError::Invalid(e.to_string()))?;
    let thread = lua
        .create_thread(function)
        .map_err(|e| DelegateError::Invalid(e.to_string()))?;
    let outcome: mlua::Result<MultiValue> = thread.into_async(task).await;
    state.collect_events();
    let (override_status, strategy_error) = match outcome {
        Ok(values) => {
            let status = values
                .get(1)
                .and_then(|v| v.as_string().map(|s| s.to_string_lossy()));
            (status, None)
        }
        Err(e) => (None, Some(describe(&e))),
    };
    let responses = state.responses.borrow().clone();
    let last = responses.last();
    let violations = state.violations.borrow().clone();
    let ended_by = |rule: &str| {
        violations
            .iter()
            .any(|v| v.rule == rule && ends_session(&v.action))
    };
    let error = strategy_error
        .map(|m| format!("strategy '{}' failed: {m}", state.strategy))
        .or_else(|| state.error.borrow().clone())
        .or_else(|| last.filter(|r| r.is_error).map(|r| r.error_summary()))
        .or_else(|| {
            last.is_none()
                .then(|| "the strategy sent nothing".to_string())
        });
    let checks = state.checks.borrow().clone();
    let status = derive_status(&Outcome {
        cost_exceeded: ended_by("cost_exceeded"),
        turns_exceeded: ended_by("turns_exceeded"),
        subtype: last.map(|r| r.subtype.as_str()).unwrap_or(""),
        failed: error.is_some(),
        denials_left: last.is_some_and(|r| !r.permission_denials.is_empty()),
        check_failed: checks.last().is_some_and(|c| !c.passed),
        strategy_says: override_status.as_deref(),
    });
    let error = match status {
        "check_failed" => Some(check_failed_message(&state.name, &checks)),
        _ => error,
    };
    let mut tools: Vec<String> = Vec::new();
    for r in responses.iter() {
        for t in &r.tools_used {
            if !tools.contains(t) {
                tools.push(t.clone());
            }
        }
    }
    let killed_by_net = violations.iter().any(|v| ends_session(&v.action));
    if violations.iter().any(|v| v.action == "killed") {
        // Make sure the process is gone and the store says so.
        let _ = state.manager.kill(&state.name).await;
    }
    let rec = state.manager.status(&state.name).ok();
    let resumable = rec.as_ref().is_some_and(|r| r.claude_session_id.is_some());
    let total_cost = rec.as_ref().map_or(0.0, |r| r.total_cost_usd);
    Ok(DelegateResult {
        status: status.into(),
        response: last.map(|r| r.text.clone()).unwrap_or_default(),
        cost: (total_cost - cost_before).max(0.0)
            + state.reviews.borrow().iter().map(|r| r.cost).sum::<f64>(),
        turns: responses.iter().map(|r| r.num_turns).sum(),
        duration: started.elapsed().as_millis() as u64,
        session_id: rec.as_ref().and_then(|r| r.claude_session_id.clone()),
        name: state.name.clone(),
        can_continue: resumable
            && !killed_by_net
            && !matches!(status, "cost_exceeded" | "turns_exceeded"),
        tools_used: tools,
        safety: guard.safety.then(|| SafetyReport {
            total_violations: violations.len(),
            violations: violations.clone(),
            limits: LimitsView {
                max_cost_usd: guard.max_cost_usd,
                max_turns: guard.max_turns,
                timeout_secs: guard.timeout_secs,
            },
        }),
        error,
        denied_before_execution: state.denied.borrow().clone(),
        permission_denials: responses
            .iter()
            .flat_map(|r| r.permission_denials.iter())
            .map(|d| serde_json::json!({ "tool": d.tool_name, "input": d.tool_input }))
            .collect(),
        retries: state.retries.get(),
        total_cost,
        preset: state.preset.clone(),
        strategy: state.strategy.clone(),
        checks,
        reviews: state.reviews.borrow().clone(),
    })
}

/// The error of a `check_failed` delegation: how many checks ran, the last one's
/// first lines, and what to do.
fn check_failed_message(name: &str, checks: &[CheckRecord]) -> String {
    let last = checks
        .last()
        .map(|c| c.output.trim())
        .filter(|o| !o.is_empty())
        .map(|o| {
            let head: Vec<&str> = o.lines().take(3).collect();
            format!(": {}", head.join(" | "))
        })
        .unwrap_or_default();
    format!(
        "the check did not pass after {} attempt(s){last}. Send a correction with \
         `cms continue --name {name} --message ...` (or continue_task); the check runs again",
        checks.len()
    )
}

/// `cms.delegate{...}` options from Lua: a `check` may be a function.
pub fn options_from_lua(lua: &Lua, v: Value) -> mlua::Result<(DelegateOptions, Option<Function>)> {
    let mut check_fn = None;
    if let Value::Table(t) = &v {
        if let Value::Function(f) = t.get::<Value>("check")? {
            check_fn = Some(f);
            let copy: Table = lua.create_table()?;
            for pair in t.pairs::<Value, Value>() {
                let (k, val) = pair?;
                if k.as_string().is_some_and(|s| s == "check") {
                    continue;
                }
                copy.set(k, val)?;
            }
            return Ok((
                convert::opts(lua, "cms.delegate", Value::Table(copy))?,
                check_fn,
            ));
        }
    }
    let opts: DelegateOptions = lua.from_value(v).map_err(|e| {
        mlua::Error::runtime(format!(
            "cms.delegate: {}",
            e.to_string().trim_start_matches("deserialize error: ")
        ))
    })?;
    Ok((opts, check_fn))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> Outcome<'static> {
        Outcome {
            cost_exceeded: false,
            turns_exceeded: false,
            subtype: "success",
            failed: false,
            denials_left: false,
            check_failed: false,
            strategy_says: None,
        }
    }

    #[test]
    fn statuses_come_in_the_documented_order() {
        assert_eq!(derive_status(&outcome()), "completed");
        let limits_first = Outcome {
            cost_exceeded: true,
            turns_exceeded: true,
            failed: true,
            ..outcome()
        };
        assert_eq!(derive_status(&limits_first), "cost_exceeded");
        assert_eq!(
            derive_status(&Outcome {
                subtype: "error_max_budget_usd",
                ..outcome()
            }),
            "cost_exceeded"
        );
        assert_eq!(
            derive_status(&Outcome {
                turns_exceeded: true,
                failed: true,
                ..outcome()
            }),
            "turns_exceeded"
        );
        assert_eq!(
            derive_status(&Outcome {
                subtype: "error_max_turns",
                ..outcome()
            }),
            "turns_exceeded"
        );
        assert_eq!(
            derive_status(&Outcome {
                failed: true,
                denials_left: true,
                ..outcome()
            }),
            "failed"
        );
        assert_eq!(
            derive_status(&Outcome {
                strategy_says: Some("failed"),
                ..outcome()
            }),
            "failed"
        );
        assert_eq!(
            derive_status(&Outcome {
                denials_left: true,
                ..outcome()
            }),
            "needs_input"
        );
        assert_eq!(
            derive_status(&Outcome {
                strategy_says: Some("needs_input"),
                ..outcome()
            }),
            "needs_input"
        );
        assert_eq!(
            derive_status(&Outcome {
                strategy_says: Some("completed"),
                ..outcome()
            }),
            "completed"
        );
    }

    #[test]
    fn a_check_that_did_not_pass_is_check_failed_whatever_the_strategy_says() {
        let failed_check = Outcome {
            check_failed: true,
            ..outcome()
        };
        assert_eq!(derive_status(&failed_check), "check_failed");
        for says in ["completed", "needs_input"] {
            assert_eq!(
                derive_status(&Outcome {
                    strategy_says: Some(says),
                    ..failed_check
                }),
                "check_failed",
                "{says}"
            );
        }
        assert_eq!(
            derive_status(&Outcome {
                strategy_says: Some("check_failed"),
                ..outcome()
            }),
            "check_failed"
        );
        // Limits and failures come first; a refusal left over does not hide the check.
        assert_eq!(
            derive_status(&Outcome {
                failed: true,
                ..failed_check
            }),
            "failed"
        );
        assert_eq!(
            derive_status(&Outcome {
                cost_exceeded: true,
                ..failed_check
            }),
            "cost_exceeded"
        );
        assert_eq!(
            derive_status(&Outcome {
                denials_left: true,
                ..failed_check
            }),
            "check_failed"
        );
    }
}

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

mod check;
mod options;
mod result;
mod strategy;
mod task;

pub use options::{options_from_lua, DelegateOptions};
pub use result::{
    CheckRecord, DelegateResult, DeniedCall, EndResult, LimitsView, ReviewRecord, SafetyReport,
    ViolationView,
};
pub use strategy::{strategy_sliced, STRATEGY_SLICE};

use crate::engine::{EngineError, Guard, SessionOptions, SessionState, Sessions, SpawnRequest};
use crate::policy::{PolicyError, PolicyService};
use result::ending_violation;
use strategy::{drive, load_strategy, policy_in_force};
use task::{TaskSetup, TaskState};

use mlua::{Function, Lua};

use std::sync::Arc;
use std::time::Duration;

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

/// Where a delegation tells of its rounds (a check run and its outcome, a review)
/// as they happen: the CLI shows them on a terminal; nothing is told otherwise.
type Reporter = Box<dyn Fn(&str) + Send + Sync>;
static REPORTER: std::sync::RwLock<Option<Reporter>> = std::sync::RwLock::new(None);

/// Tell `f` of each round of the delegations this process runs.
pub fn on_progress(f: impl Fn(&str) + Send + Sync + 'static) {
    if let Ok(mut r) = REPORTER.write() {
        *r = Some(Box::new(f));
    }
}

/// Tell the reporter, if there is one.
pub(crate) fn report(line: &str) {
    if let Ok(r) = REPORTER.read() {
        if let Some(f) = r.as_ref() {
            f(line);
        }
    }
}

/// Start a delegation: spawn a guarded session and run the strategy.
pub async fn delegate(
    lua: &Lua,
    manager: &Arc<dyn Sessions>,
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
                "session '{}' already exists: continue it instead (`cms continue --name {0}`, the \
                 continue_task tool, or d:continue in Lua), or pick another name",
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
    drive(lua, policy, state, function, &guard).await
}

/// Send more to a delegated session: the same strategy runs with the message, under
/// the same guard (limits count the session's whole life, across restarts) and the
/// same check: the saved command, or `check_fn` (a Lua check function cannot be
/// saved, so `d:continue` passes the one `cms.delegate` was given).
pub async fn continue_task(
    lua: &Lua,
    manager: &Arc<dyn Sessions>,
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
    if let Some(v) = ending_violation(manager.as_ref(), name) {
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
    drive(lua, policy, state, function, &guard).await
}

/// Stop a delegated session gracefully (resumable with `continue`).
pub async fn finish(manager: &dyn Sessions, name: &str) -> Result<EndResult, DelegateError> {
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
pub async fn abort(manager: &dyn Sessions, name: &str) -> Result<EndResult, DelegateError> {
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
            "'{name}' is not a delegated session: send to it directly (`cms send`, send_message, \
             s:send), or delegate a new task"
        ))),
    }
}

//! Strategies: Lua functions from `scripts/strategies/` or a plugin, loaded into the
//! caller's Lua state, cached by source, and run with their Lua slices time-limited.

use super::result::{check_failed_message, derive_status, ends_session, StatusInputs};
use super::task::{TaskHandle, TaskState};
use super::{DelegateError, DelegateResult, LimitsView, SafetyReport};
use crate::engine::Guard;
use crate::policy::PolicyService;
use crate::sandbox::error_text;
use mlua::{Function, Lua, MultiValue, Value};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a delegation strategy's Lua code may run between two waits.
pub const STRATEGY_SLICE: Duration = Duration::from_secs(5);

/// Run a delegation (its strategy's Lua code) with each slice between two waits
/// limited to [`STRATEGY_SLICE`], so a strategy that spins is stopped.
pub async fn strategy_sliced<T>(
    lua: &Lua,
    fut: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let message = format!(
        "stopped: the strategy ran {}s without waiting (an endless loop?)",
        STRATEGY_SLICE.as_secs()
    );
    crate::sandbox::limits::sliced(lua, STRATEGY_SLICE, message, async { Ok(fut.await) })
        .await
        .map_err(|e| error_text(&e))
        .and_then(|r| r)
}

/// Strategies compiled in this Lua state, by name: the source they came from and
/// the function, so an unchanged file is not compiled again and a broken edit
/// falls back to the last good one.
#[derive(Default)]
pub(super) struct StrategyCache(HashMap<String, (String, Function)>);

pub(super) fn load_strategy(
    lua: &Lua,
    policy: &PolicyService,
    name: &str,
) -> Result<Function, DelegateError> {
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
    let env = crate::sandbox::state::confined_env(lua).map_err(|e| DelegateError::Strategy {
        name: name.to_string(),
        message: error_text(&e),
    })?;
    let loaded = crate::sandbox::limits::load_limited(lua, || {
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
            let message = error_text(&e);
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

/// Guarded work starts only on a policy that loaded; a broken edit whose last
/// good version is in force is said on stderr each time.
pub(super) fn policy_in_force(policy: &PolicyService) -> Result<(), DelegateError> {
    policy.ready()?;
    for e in policy.stale() {
        tracing::warn!(
            "a policy file was edited and does not load; its last good version is in force until it is fixed: {e}"
        );
    }
    Ok(())
}

pub(super) async fn drive(
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
        Err(e) => (None, Some(error_text(&e))),
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
    let status = derive_status(&StatusInputs {
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

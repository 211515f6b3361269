//! The options of a delegation, from the CLI, MCP and Lua alike.

use crate::sandbox::convert;
use mlua::{Function, Lua, LuaSerdeExt, Table, Value};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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

pub(super) fn yes() -> bool {
    true
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

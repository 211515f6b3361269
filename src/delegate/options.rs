//! The options of a delegation, from the CLI, MCP and Lua alike.

use crate::engine::spec::positive_f64;
use crate::sandbox::convert;
use mlua::{Function, Lua, LuaSerdeExt, Table, Value};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The options of a delegation (the seed's, plus strategy, timeout, check and the
/// reviewer's model): the one definition of `cms delegate`'s flags (clap), the
/// `cms.delegate{...}` table (serde), the MCP `delegate_task` input schema (schemars)
/// and the LuaLS class `cms.DelegateOptions` (generated from that schema). A field's
/// doc comment is its help text on every face.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct DelegateOptions {
    /// Session name (1-64 of A-Z a-z 0-9 . _ -).
    #[arg(long)]
    pub name: String,
    /// What to do (on the command line, `-` reads it from stdin).
    #[arg(long)]
    pub task: String,
    /// Model: sonnet, opus, haiku, or a model id [default: sonnet].
    #[arg(long)]
    #[serde(default)]
    pub model: Option<String>,
    /// Permission preset: read-only, review, edit, full, plan, or one of presets.lua
    /// [default: edit].
    #[arg(long)]
    #[serde(default)]
    pub preset: Option<String>,
    /// Cost limit in USD over the session's life [default: safety.lua's, 2.00].
    #[arg(long, value_parser = positive_f64)]
    #[serde(default)]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub max_cost: Option<f64>,
    /// Agent-turn limit over the session's life [default: safety.lua's, 50].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_turns: Option<u32>,
    /// Seconds one interaction (a turn, a check) may take [default: safety.lua's, 3600].
    #[arg(long, value_parser = positive_f64)]
    #[serde(default)]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub timeout: Option<f64>,
    /// The safety net: limits and protected paths; false turns it off (the preset still
    /// applies) [default: true].
    #[arg(
        long = "no-safety",
        action = clap::ArgAction::SetFalse,
        help = "No safety net: no limits and no protected paths (the preset still applies)"
    )]
    #[serde(default = "yes")]
    pub safety: bool,
    /// Extra context put before the task [default: none].
    #[arg(long)]
    #[serde(default)]
    pub context: Option<String>,
    /// Working directory [default: the current directory].
    #[arg(long)]
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// Text appended to Claude Code's system prompt [default: none].
    #[arg(long)]
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Use a specific agent [default: none].
    #[arg(long)]
    #[serde(default)]
    pub agent: Option<String>,
    /// single, correction_loop, review, or a strategy of yours [default: single].
    #[arg(long)]
    #[serde(default)]
    pub strategy: Option<String>,
    /// For correction_loop: a shell command that must exit 0, e.g. "cargo test" (in Lua,
    /// also a function) [default: none].
    #[arg(long)]
    #[serde(default)]
    pub check: Option<String>,
    /// Attempts for correction_loop, review rounds for review [default: 3 and 2].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_attempts: Option<u32>,
    /// The reviewer's model for review [default: the task's].
    #[arg(long)]
    #[serde(default)]
    pub review_model: Option<String>,
}

pub(super) fn yes() -> bool {
    true
}

/// The defaults of every face: the safety net on (it is off only when asked).
impl Default for DelegateOptions {
    fn default() -> Self {
        DelegateOptions {
            name: String::new(),
            task: String::new(),
            model: None,
            preset: None,
            max_cost: None,
            max_turns: None,
            timeout: None,
            safety: yes(),
            context: None,
            work_dir: None,
            system_prompt: None,
            agent: None,
            strategy: None,
            check: None,
            max_attempts: None,
            review_model: None,
        }
    }
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
    #[test]
    fn the_safety_net_is_on_unless_asked_off() {
        assert!(super::DelegateOptions::default().safety);
        let v: super::DelegateOptions =
            serde_json::from_value(serde_json::json!({ "name": "a", "task": "t" })).unwrap();
        assert!(v.safety);
    }
}

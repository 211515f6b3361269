//! Engine values as Lua tables, and Lua option tables as engine values.

use crate::engine::{Interaction, Response, SessionRecord};
use mlua::{Lua, LuaSerdeExt, Table, Value};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How values go to Lua: `None` becomes nil, never a `null` sentinel.
pub fn to_lua<T: Serialize>(lua: &Lua, v: &T) -> mlua::Result<Value> {
    lua.to_value_with(
        v,
        mlua::SerializeOptions::new()
            .serialize_none_to_null(false)
            .serialize_unit_to_null(false),
    )
}

/// A turn's response as scripts see it.
#[derive(Serialize)]
pub struct ResponseView<'a> {
    pub text: &'a str,
    /// This turn's own cost in USD.
    pub cost: f64,
    /// The session's total cost in USD, this turn included.
    pub session_cost: f64,
    pub turns: u32,
    pub tools: &'a [String],
    pub denials: Vec<DenialView<'a>>,
    pub duration_ms: u64,
    pub session_id: &'a str,
    pub subtype: &'a str,
    pub is_error: bool,
    pub error: Option<String>,
}

#[derive(Serialize)]
pub struct DenialView<'a> {
    pub tool: &'a str,
    pub input: &'a serde_json::Value,
}

pub fn response(lua: &Lua, r: &Response) -> mlua::Result<Value> {
    to_lua(
        lua,
        &ResponseView {
            text: &r.text,
            cost: r.cost_usd,
            session_cost: r.session_cost_usd,
            turns: r.num_turns,
            tools: &r.tools_used,
            denials: r
                .permission_denials
                .iter()
                .map(|d| DenialView {
                    tool: &d.tool_name,
                    input: &d.tool_input,
                })
                .collect(),
            duration_ms: r.duration_ms,
            session_id: &r.session_id,
            subtype: &r.subtype,
            is_error: r.is_error,
            error: r.is_error.then(|| r.error_summary()),
        },
    )
}

/// A session's status as scripts see it.
#[derive(Serialize)]
pub struct StatusView<'a> {
    pub name: &'a str,
    pub id: Option<&'a str>,
    pub state: &'a str,
    pub model: Option<&'a str>,
    pub work_dir: String,
    pub forked_from: Option<&'a str>,
    pub cost: f64,
    pub turns: u32,
    pub interactions: u32,
    pub last_error: Option<&'a str>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub fn status(lua: &Lua, r: &SessionRecord) -> mlua::Result<Value> {
    to_lua(
        lua,
        &StatusView {
            name: &r.name,
            id: r.claude_session_id.as_deref(),
            state: r.state.as_str(),
            model: r.options.model.as_deref(),
            work_dir: r.work_dir.display().to_string(),
            forked_from: r.forked_from.as_deref(),
            cost: r.total_cost_usd,
            turns: r.total_turns,
            interactions: r.interaction_count,
            last_error: r.last_error.as_deref(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        },
    )
}

pub fn history(lua: &Lua, items: &[Interaction]) -> mlua::Result<Value> {
    to_lua(lua, &items)
}

/// The options of `s:fork{...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkOpts {
    pub name: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub system_prompt: Option<String>,
    #[serde(default)]
    pub timeout: Option<f64>,
}

/// The options of `s:send(text, {...})`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendOpts {
    #[serde(default)]
    pub timeout: Option<f64>,
}

/// A timeout in seconds, checked by the engine.
pub fn seconds(t: Option<f64>) -> mlua::Result<Option<Duration>> {
    crate::engine::seconds(t).map_err(|e| mlua::Error::runtime(e.to_string()))
}

/// Read an options table, naming the function in the error.
pub fn opts<T: serde::de::DeserializeOwned>(lua: &Lua, what: &str, v: Value) -> mlua::Result<T> {
    lua.from_value(v).map_err(|e| {
        let text = e.to_string();
        let text = text
            .strip_prefix("deserialize error: ")
            .unwrap_or(&text)
            .to_string();
        mlua::Error::runtime(format!("{what}: {text}"))
    })
}

/// Mark a table as a list, so that an empty one becomes `[]` in JSON, not `{}`.
pub fn array(lua: &Lua, t: Table) -> Table {
    t.set_metatable(Some(lua.array_metatable()));
    t
}

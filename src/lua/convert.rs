//! Engine values as Lua tables, and the option tables of session methods.

pub use crate::sandbox::convert::{array, opts, seconds, to_lua};

use crate::engine::{Interaction, Response, SessionRecord};
use crate::views;
use mlua::{Lua, Value};
use serde::Deserialize;

/// A turn as scripts see it: the same shape as everywhere ([`crate::views`]).
pub fn response(lua: &Lua, r: &Response) -> mlua::Result<Value> {
    to_lua(lua, &views::turn_view(r))
}

/// A session's status as scripts see it.
pub fn status(lua: &Lua, r: &SessionRecord) -> mlua::Result<Value> {
    to_lua(lua, &views::record_view(r))
}

/// A session's history as scripts see it.
pub fn history(lua: &Lua, items: &[Interaction]) -> mlua::Result<Value> {
    let list: Vec<_> = items.iter().map(views::history_view).collect();
    to_lua(lua, &list)
}

/// The options of `s:fork{...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkOpts {
    pub name: String,
    /// Leave the fork live in the session host when the script ends.
    #[serde(default)]
    pub keep: bool,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub system_prompt: Option<String>,
    #[serde(default)]
    pub timeout: Option<f64>,
}

/// The options of `cms.decide{...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideOpts {
    pub session: String,
    #[serde(default)]
    pub id: Option<String>,
    pub allow: bool,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub always: bool,
}

/// The options of `s:send(text, {...})`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendOpts {
    #[serde(default)]
    pub timeout: Option<f64>,
}

//! Values between Rust and Lua, the same way in every state: `None` is nil (never a
//! `null` sentinel), lists stay lists in JSON, and a bad options table is an error
//! that names the function it was given to.

use mlua::{Lua, LuaSerdeExt, Table, Value};
use serde::Serialize;
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

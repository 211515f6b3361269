//! The LuaLS description of the `cms` API (`---@meta`), kept in the repository at
//! `scripts/types/cms.lua` and printed by `cms lua-types`.
//!
//! The parts that are lists kept elsewhere are generated, not written: the option
//! classes `cms.SpawnOptions` and `cms.DelegateOptions` come from the input schemas
//! of [`SpawnSpec`] and [`DelegateOptions`] (the MCP schemas), and the aliases
//! `cms.PermissionMode` and `cms.SessionState` from their enums. In the file they
//! stand between `-- generated: NAME` and `-- end generated` lines; [`cms_meta`]
//! writes them afresh, and a test checks that the file holds what it writes
//! (`CMS_UPDATE_STUBS=1 cargo test --lib stubs` rewrites it).
//!
//! [`module_names`] reads the names of the `cms` module from a live state (for REPL
//! completion, and for the test that the stubs describe each of them).

use crate::delegate::DelegateOptions;
use crate::engine::spec::input_schema;
use crate::engine::{PermissionMode, SessionState, SpawnSpec};
use serde_json::{Map, Value};

/// The stub file as it is in the repository.
pub const CMS_META: &str = include_str!("../../scripts/types/cms.lua");

const BEGIN: &str = "-- generated: ";
const END: &str = "-- end generated";

/// The stub file with its generated parts written afresh from the Rust types.
pub fn cms_meta() -> String {
    let mut out = String::with_capacity(CMS_META.len() + 1024);
    let mut lines = CMS_META.lines();
    while let Some(line) = lines.next() {
        out.push_str(line);
        out.push('\n');
        let Some(name) = line.strip_prefix(BEGIN) else {
            continue;
        };
        out.push_str(&generated(name.trim()));
        for skipped in lines.by_ref() {
            if skipped.trim_end() == END {
                out.push_str(END);
                out.push('\n');
                break;
            }
        }
    }
    out
}

/// The names of the generated parts, in the order of the file.
pub const GENERATED: &[&str] = &[
    "cms.PermissionMode",
    "cms.SessionState",
    "cms.SpawnOptions",
    "cms.DelegateOptions",
];

/// One generated part (its lines, without the markers).
fn generated(name: &str) -> String {
    match name {
        "cms.PermissionMode" => alias(name, PermissionMode::names()),
        "cms.SessionState" => alias(name, SessionState::ALL.iter().map(|s| s.as_str()).collect()),
        "cms.SpawnOptions" => class(
            name,
            "Options of `cms.spawn` (and of `cms spawn`, a batch entry, MCP `spawn_session`).",
            &input_schema::<SpawnSpec>(),
            &order::<SpawnSpec>(),
        ),
        "cms.DelegateOptions" => class(
            name,
            "Options of `cms.delegate` (and of `cms delegate`, MCP `delegate_task`).",
            &input_schema::<DelegateOptions>(),
            &order::<DelegateOptions>(),
        ),
        _ => format!("-- (cms knows no generated part named {name})\n"),
    }
}

/// The fields of a clap-derived options type, in the order they are declared.
fn order<T: clap::Args>() -> Vec<String> {
    T::augment_args(clap::Command::new("x"))
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect()
}

fn alias(name: &str, values: Vec<&str>) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
    format!("---@alias {name} {}\n", quoted.join("|"))
}

/// Lua types a field has in Lua only (a function for `check`), or that name the
/// usual values of an open list (presets are the user's to add to).
fn lua_override(class: &str, field: &str) -> Option<&'static str> {
    match (class, field) {
        ("cms.DelegateOptions", "check") => Some("string|fun(r: cms.Response): boolean, string?"),
        ("cms.DelegateOptions", "preset") => {
            Some("\"read-only\"|\"review\"|\"edit\"|\"full\"|\"plan\"|string")
        }
        _ => None,
    }
}

fn class(name: &str, doc: &str, schema: &Map<String, Value>, order: &[String]) -> String {
    let empty = Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut keys: Vec<&String> = order.iter().filter(|k| props.contains_key(*k)).collect();
    keys.extend(props.keys().filter(|k| !order.contains(k)));
    let mut out = format!("---{doc}\n---@class {name}\n");
    for key in keys {
        let p = &props[key];
        let ty = lua_override(name, key)
            .map(String::from)
            .unwrap_or_else(|| lua_type(p));
        let optional = if required.contains(&key.as_str()) {
            ""
        } else {
            "?"
        };
        let text = p
            .get("description")
            .and_then(Value::as_str)
            .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        out.push_str(format!("---@field {key}{optional} {ty} {text}").trim_end());
        out.push('\n');
    }
    out
}

/// The LuaLS type of a JSON schema.
fn lua_type(s: &Value) -> String {
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        let names: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
        if names == PermissionMode::names() {
            return "cms.PermissionMode".into();
        }
        if names == SessionState::ALL.map(|s| s.as_str()) {
            return "cms.SessionState".into();
        }
        let quoted: Vec<String> = names.iter().map(|v| format!("\"{v}\"")).collect();
        return quoted.join("|");
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array) {
            let types: Vec<String> = alts.iter().map(lua_type).collect();
            return types.join("|");
        }
    }
    match s.get("type").and_then(Value::as_str) {
        Some("string") => "string".into(),
        Some("integer") => "integer".into(),
        Some("number") => "number".into(),
        Some("boolean") => "boolean".into(),
        Some("array") => {
            let item = s.get("items").map(lua_type).unwrap_or_else(|| "any".into());
            if item.contains('|') {
                format!("({item})[]")
            } else {
                format!("{item}[]")
            }
        }
        Some("object") => "table".into(),
        _ => "any".into(),
    }
}

/// Every name of the `cms` table in `lua`, as `cms.x` and `cms.x.y` (a nested table
/// of functions, like `cms.json`, is listed and so are its names), sorted.
pub fn module_names(lua: &mlua::Lua) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(cms) = lua.globals().get::<mlua::Table>("cms") {
        walk(&cms, "cms", &mut out, 0);
    }
    out.sort();
    out
}

fn walk(t: &mlua::Table, prefix: &str, out: &mut Vec<String>, depth: usize) {
    for (k, v) in t.pairs::<mlua::Value, mlua::Value>().flatten() {
        let Some(k) = k.as_string().map(|s| s.to_string_lossy()) else {
            continue;
        };
        let name = format!("{prefix}.{k}");
        if let mlua::Value::Table(inner) = &v {
            if depth < 3 && is_namespace(inner) {
                walk(inner, &name, out, depth + 1);
            }
        }
        out.push(name);
    }
}

/// A table of named functions (`cms.json`), not data (`cms.args`).
fn is_namespace(t: &mlua::Table) -> bool {
    t.pairs::<mlua::Value, mlua::Value>()
        .flatten()
        .any(|(k, v)| {
            k.is_string() && matches!(v, mlua::Value::Function(_) | mlua::Value::Table(_))
        })
}

/// The `cms.*` names the stub file describes: `function cms.x(`, `cms.x = {}` and
/// the `---@field`s of the class `cms`.
pub fn stub_names(meta: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_cms_class = false;
    for line in meta.lines() {
        let line = line.trim_end();
        if line.starts_with("---@class ") {
            in_cms_class = line == "---@class cms";
            continue;
        }
        if in_cms_class {
            if let Some(rest) = line.strip_prefix("---@field ") {
                let field = rest.split_whitespace().next().unwrap_or("");
                out.push(format!("cms.{}", field.trim_end_matches('?')));
                continue;
            }
            in_cms_class = line.starts_with("---");
        }
        if let Some(rest) = line.strip_prefix("function cms.") {
            if let Some(name) = rest.split('(').next() {
                out.push(format!("cms.{name}"));
            }
        } else if let Some(rest) = line.strip_prefix("cms.") {
            if let Some((name, value)) = rest.split_once('=') {
                if value.trim() == "{}" {
                    out.push(format!("cms.{}", name.trim()));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stub file holds what the Rust types give (run with `CMS_UPDATE_STUBS=1`
    /// to write it).
    #[test]
    fn the_stub_file_is_current() {
        let fresh = cms_meta();
        for name in GENERATED {
            assert!(
                CMS_META.contains(&format!("{BEGIN}{name}\n")),
                "scripts/types/cms.lua has no `{BEGIN}{name}` part"
            );
        }
        if fresh != CMS_META {
            if std::env::var_os("CMS_UPDATE_STUBS").is_some() {
                let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/types/cms.lua");
                std::fs::write(path, &fresh).unwrap();
                return;
            }
            let diff: Vec<String> = fresh
                .lines()
                .zip(CMS_META.lines())
                .filter(|(a, b)| a != b)
                .take(5)
                .map(|(a, b)| format!("  file: {b}\n  type: {a}"))
                .collect();
            panic!(
                "scripts/types/cms.lua is out of date with the Rust types; run \
                 `CMS_UPDATE_STUBS=1 cargo test --lib stubs`. First differences:\n{}",
                diff.join("\n")
            );
        }
    }

    #[test]
    fn types_from_schemas() {
        assert_eq!(
            lua_type(
                &serde_json::json!({"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]})
            ),
            "string[]|string"
        );
        assert_eq!(
            lua_type(&serde_json::json!({"enum": PermissionMode::names()})),
            "cms.PermissionMode"
        );
        let spawn = generated("cms.SpawnOptions");
        assert!(
            spawn.contains("---@field name string Session name"),
            "{spawn}"
        );
        assert!(
            spawn.contains("---@field permission_mode? cms.PermissionMode "),
            "{spawn}"
        );
        assert!(spawn.contains("---@field add_dirs? string[] "), "{spawn}");
    }

    #[test]
    fn stub_names_are_read() {
        let meta = "---@class cms\n---@field version string\n---@field args string[] x\ncms = {}\n\
                    ---@class cms.X\n---@field nope string\nfunction cms.spawn(opts) end\n\
                    cms.json = {}\nfunction cms.json.encode(v) end\n";
        assert_eq!(
            stub_names(meta),
            [
                "cms.args",
                "cms.json",
                "cms.json.encode",
                "cms.spawn",
                "cms.version"
            ]
        );
    }
}

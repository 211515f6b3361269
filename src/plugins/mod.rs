//! Plugins: folders `plugins/NAME/init.lua` returning
//! `{ name, version, description, tools, policies, strategies }`. Found in the
//! shipped set (embedded in the binary), then `~/.config/cms/plugins/`, then
//! `./.cms/plugins/` (a later folder of the same name replaces an earlier one).
//!
//! Tools become MCP tools (`cms mcp`); policies run in the safety net before its own
//! rules; strategies join `scripts/strategies/` for `delegate`. A plugin that fails
//! to load is left out with a message naming its file and line; the rest go on.

use crate::sandbox::error_text;
use crate::sandbox::limits::load_limited;
use crate::sandbox::scripts::{Layers, Source};
use mlua::{Function, Lua, LuaSerdeExt, Table, Value};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;

/// The plugins shipped with cms (`plugins/` in the repository).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "git-guard",
        include_str!("../../plugins/git-guard/init.lua"),
    ),
    (
        "session-report",
        include_str!("../../plugins/session-report/init.lua"),
    ),
];

/// Every plugin's `init.lua`, by folder name, latest layer winning; sorted by name.
pub fn discover(layers: &Layers) -> Vec<(String, Source)> {
    let mut found: Vec<(String, Source)> = BUILTIN
        .iter()
        .map(|(name, code)| {
            (
                name.to_string(),
                Source {
                    origin: format!("builtin:plugins/{name}/init.lua"),
                    code: code.to_string(),
                },
            )
        })
        .collect();
    for dir in &layers.dirs {
        let Ok(entries) = std::fs::read_dir(dir.join("plugins")) else {
            continue;
        };
        let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for path in names {
            let init = path.join("init.lua");
            // The project's plugins load only when trusted.
            let Some(code) = layers.read(dir, &init) else {
                continue;
            };
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let src = Source {
                origin: init.display().to_string(),
                code,
            };
            match found.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = src,
                None => found.push((name, src)),
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// A tool a plugin adds.
#[derive(Clone)]
pub struct PluginTool {
    pub plugin: String,
    pub name: String,
    pub description: String,
    pub input_schema: serde_json::Value,
    pub handler: Function,
}

/// A loaded plugin, as `cms plugins list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub origin: String,
    pub tools: Vec<String>,
    pub policies: Vec<String>,
    pub strategies: Vec<String>,
}

/// The plugins loaded in one Lua state.
#[derive(Default, Clone)]
pub struct PluginSet {
    pub plugins: Vec<PluginInfo>,
    pub tools: Vec<PluginTool>,
    pub strategies: Vec<(String, Function)>,
    /// `origin:line: message` of each plugin left out.
    pub errors: Vec<String>,
}

impl PluginSet {
    pub fn strategy(&self, name: &str) -> Option<Function> {
        self.strategies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
    }
}

/// Load the plugins into `lua` (which has the `cms` module). Each that fails is
/// reported and left out.
pub fn load(lua: &Lua, sources: &[(String, Source)]) -> PluginSet {
    let mut set = PluginSet::default();
    for (folder, src) in sources {
        match load_one(lua, folder, src) {
            Ok((info, tools, strategies)) => {
                if let Some(clash) = tools
                    .iter()
                    .find(|t| set.tools.iter().any(|o| o.name == t.name))
                {
                    set.errors.push(format!(
                        "{}: plugin '{}' left out: tool '{}' is already defined by another plugin",
                        src.origin, info.name, clash.name
                    ));
                    continue;
                }
                set.tools.extend(tools);
                set.strategies.extend(strategies);
                set.plugins.push(info);
            }
            Err(e) => set.errors.push(e),
        }
    }
    set
}

type Loaded = (PluginInfo, Vec<PluginTool>, Vec<(String, Function)>);

/// Run a plugin's `init.lua` under the load limit. One that never finished loading
/// is remembered (by origin and text) and not run again in this process: each Lua
/// state that loads plugins would otherwise pay the whole limit for it.
fn run_init(lua: &Lua, src: &Source, env: mlua::Table) -> Result<Value, String> {
    let key = (src.origin.clone(), hash(&src.code));
    let stuck = STUCK.lock().map(|s| s.get(&key).cloned()).unwrap_or(None);
    if let Some(message) = stuck {
        return Err(message);
    }
    load_limited(lua, || {
        lua.load(src.code.as_str())
            .set_name(src.chunk_name())
            .set_mode(mlua::ChunkMode::Text)
            .set_environment(env)
            .call(())
    })
    .map_err(|e| {
        let message = error_text(&e);
        if message.contains(crate::sandbox::limits::LOAD_STOPPED) {
            if let Ok(mut s) = STUCK.lock() {
                s.insert(key, message.clone());
            }
        }
        message
    })
}

/// `init.lua` files that hit the load limit: (origin, hash of the text) → error.
static STUCK: std::sync::LazyLock<Mutex<HashMap<(String, u64), String>>> =
    std::sync::LazyLock::new(|| Mutex::new(HashMap::new()));

fn hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

fn load_one(lua: &Lua, folder: &str, src: &Source) -> Result<Loaded, String> {
    let bad = |what: String| format!("{}: plugin '{folder}' left out: {what}", src.origin);
    // A plugin reads files but never writes or deletes one, even in a script's state.
    let env = crate::sandbox::state::confined_env(lua)
        .map_err(|e| format!("plugin '{folder}' left out: {}", error_text(&e)))?;
    let value: Value =
        run_init(lua, src, env).map_err(|e| format!("plugin '{folder}' left out: {e}"))?;
    let Value::Table(t) = value else {
        return Err(bad(
            "init.lua must return a table { name, version, tools, ... }".into(),
        ));
    };
    let get_str = |k: &str| t.get::<Option<String>>(k).ok().flatten();
    let name = get_str("name").unwrap_or_else(|| folder.to_string());
    let mut info = PluginInfo {
        name: name.clone(),
        version: get_str("version").unwrap_or_else(|| "0".into()),
        description: get_str("description").unwrap_or_default(),
        origin: src.origin.clone(),
        tools: Vec::new(),
        policies: Vec::new(),
        strategies: Vec::new(),
    };
    let mut tools = Vec::new();
    if let Some(list) = t
        .get::<Option<Table>>("tools")
        .map_err(|e| bad(e.to_string()))?
    {
        for (i, item) in list.sequence_values::<Table>().enumerate() {
            let item = item.map_err(|_| bad(format!("tools[{}] must be a table", i + 1)))?;
            let tool_name: String = item
                .get::<Option<String>>("name")
                .ok()
                .flatten()
                .ok_or_else(|| bad(format!("tools[{}] has no name", i + 1)))?;
            if !tool_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                || tool_name.is_empty()
            {
                return Err(bad(format!(
                    "tool name '{tool_name}' must be letters, digits, _ or -"
                )));
            }
            let handler: Function = item
                .get::<Option<Function>>("handler")
                .ok()
                .flatten()
                .ok_or_else(|| bad(format!("tool '{tool_name}' has no handler function")))?;
            let schema = match item
                .get::<Value>("input_schema")
                .map_err(|e| bad(e.to_string()))?
            {
                Value::Nil => serde_json::json!({ "type": "object" }),
                v => lua
                    .from_value::<serde_json::Value>(v)
                    .map_err(|e| bad(format!("tool '{tool_name}': input_schema: {e}")))?,
            };
            let schema = match schema {
                serde_json::Value::Object(mut m) => {
                    m.entry("type").or_insert_with(|| "object".into());
                    // An empty Lua table reads as an array: make `properties` an object.
                    if m.get("properties")
                        .is_some_and(|p| p.as_array().is_some_and(|a| a.is_empty()))
                    {
                        m.insert("properties".into(), serde_json::json!({}));
                    }
                    serde_json::Value::Object(m)
                }
                _ => {
                    return Err(bad(format!(
                        "tool '{tool_name}': input_schema must be a table"
                    )))
                }
            };
            info.tools.push(tool_name.clone());
            tools.push(PluginTool {
                plugin: name.clone(),
                name: tool_name,
                description: item
                    .get::<Option<String>>("description")
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
                input_schema: schema,
                handler,
            });
        }
    }
    if let Some(list) = t
        .get::<Option<Table>>("policies")
        .map_err(|e| bad(e.to_string()))?
    {
        for item in list.sequence_values::<Table>() {
            let item = item.map_err(|_| bad("policies must be a list of tables".into()))?;
            if !matches!(item.get::<Value>("on_tool_use"), Ok(Value::Function(_))) {
                return Err(bad("each policy needs on_tool_use(tool, ctx)".into()));
            }
            info.policies.push(
                item.get::<Option<String>>("name")
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| name.clone()),
            );
        }
    }
    let mut strategies = Vec::new();
    if let Some(map) = t
        .get::<Option<Table>>("strategies")
        .map_err(|e| bad(e.to_string()))?
    {
        for pair in map.pairs::<String, Function>() {
            let (sname, f) =
                pair.map_err(|_| bad("strategies must map names to functions".into()))?;
            info.strategies.push(sname.clone());
            strategies.push((sname, f));
        }
    }
    Ok((info, tools, strategies))
}

/// Plugin policies, for the policy service's Lua state: each plugin policy's
/// `on_tool_use` as `(name, file, function)`.
pub fn policies(lua: &Lua, sources: &[(String, Source)]) -> Vec<(String, String, Function)> {
    let mut out = Vec::new();
    for (folder, src) in sources {
        let Ok(env) = crate::sandbox::state::confined_env(lua) else {
            continue;
        };
        let Ok(Value::Table(t)) = run_init(lua, src, env) else {
            continue;
        };
        let Ok(Some(list)) = t.get::<Option<Table>>("policies") else {
            continue;
        };
        for item in list.sequence_values::<Table>().flatten() {
            if let Ok(Value::Function(f)) = item.get::<Value>("on_tool_use") {
                let name = item
                    .get::<Option<String>>("name")
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| folder.clone());
                out.push((name, src.origin.clone(), f));
            }
        }
    }
    out
}

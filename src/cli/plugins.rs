//! `cms plugins list`, `cms plugins check` and `cms plugins run`.

use super::args::PluginsCommand;
use super::out::{self, errln, outln};
use crate::app::{exit, App};
use crate::engine::EngineConfig;
use crate::lua::worker::{LuaWorker, ToolInfo};
use crate::lua::{HostOptions, LuaHost};
use crate::plugins;
use crate::policy::Layers;
use serde_json::{json, Map, Value};

pub fn run(cmd: PluginsCommand, cfg: EngineConfig, json: bool) -> i32 {
    if let PluginsCommand::Run {
        plugin,
        tool,
        args,
        json_args,
    } = cmd
    {
        return run_tool(cfg, &plugin, &tool, &args, json_args.as_deref(), json);
    }
    let app = match App::start(cfg) {
        Ok(app) => app,
        Err(e) => return exit::fail(e),
    };
    let handle = app.handle();
    let _inside = handle.enter();
    let host = match LuaHost::new(app.sessions().clone(), HostOptions::default()) {
        Ok(h) => h,
        Err(e) => return exit::fail(format!("cannot start Lua: {e}")),
    };
    let layers = Layers::standard(&std::env::current_dir().unwrap_or_default());
    for u in layers.untrusted() {
        errln!("cms: {u}");
    }
    let set = plugins::load(host.lua(), &plugins::discover(&layers));
    if json {
        let _ = outln!(
            "{}",
            serde_json::to_string_pretty(&json!({ "plugins": set.plugins, "errors": set.errors }))
                .unwrap_or_default()
        );
    } else {
        if matches!(cmd, PluginsCommand::List) {
            for p in &set.plugins {
                if p.description.trim().is_empty() {
                    let _ = outln!("{} {}", p.name, p.version);
                } else {
                    let _ = outln!("{} {} — {}", p.name, p.version, p.description);
                }
                let _ = outln!("  from {}", p.origin);
                for (what, list) in [
                    ("tools", &p.tools),
                    ("policies", &p.policies),
                    ("strategies", &p.strategies),
                ] {
                    if !list.is_empty() {
                        let _ = outln!("  {what}: {}", list.join(", "));
                    }
                }
            }
        } else {
            let _ = outln!("{} plugin(s) load", set.plugins.len());
        }
        for e in &set.errors {
            errln!("Error: {e}");
        }
    }
    if set.errors.is_empty() {
        0
    } else {
        1
    }
}

/// `cms plugins run PLUGIN TOOL`: the tool called through the MCP server's Lua
/// worker (a fresh Lua state with only its plugin, the same time limit, the same
/// trust rules: an untrusted project plugin is not loaded, so not run).
fn run_tool(
    cfg: EngineConfig,
    plugin: &str,
    tool: &str,
    pairs: &[String],
    json_args: Option<&str>,
    json: bool,
) -> i32 {
    let mut args = match json_args {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(other) => {
                return out::fail(
                    json,
                    format!("--json-args must be a JSON object, not {other}"),
                )
            }
            Err(e) => return out::fail(json, format!("--json-args is not valid JSON: {e}")),
        },
    };
    let app = match App::start(cfg) {
        Ok(app) => app,
        Err(e) => return out::fail(json, e),
    };
    let cwd = std::env::current_dir().unwrap_or_default();
    let attached = match app.guard(&cwd) {
        Ok(a) => a,
        Err(e) => return out::fail(json, e),
    };
    let untrusted = attached.service.layers().untrusted();
    for u in &untrusted {
        errln!("cms: {u}");
    }
    let service = attached.service.clone();
    let started =
        app.block_on(async { LuaWorker::start(app.handle(), app.sessions().clone(), service) });
    let (worker, tools, errors) = match started {
        Ok(w) => w,
        Err(e) => return out::fail(json, e),
    };
    let Some(info) = tools.iter().find(|t| t.plugin == plugin && t.name == tool) else {
        let failed = errors
            .iter()
            .find(|e| e.contains(&format!("plugin '{plugin}'")));
        let mine: Vec<&str> = tools
            .iter()
            .filter(|t| t.plugin == plugin)
            .map(|t| t.name.as_str())
            .collect();
        // A project plugin of that folder name that is not trusted is not run.
        let held = untrusted.iter().find(|u| {
            u.file
                .parent()
                .is_some_and(|d| d.file_name().is_some_and(|n| n == plugin))
        });
        let why = match (failed, held) {
            (_, Some(u)) if mine.is_empty() => format!(
                "plugin '{plugin}' is not run: {} is not trusted as it is (`cms trust {}` after reading it)",
                u.file.display(),
                u.project.display()
            ),
            (Some(e), _) => format!("plugin '{plugin}' did not load: {e}"),
            (None, _) if mine.is_empty() => {
                let mut known: Vec<&str> = tools.iter().map(|t| t.plugin.as_str()).collect();
                known.dedup();
                format!(
                    "no plugin '{plugin}' with tools (plugins with tools: {}); `cms plugins list` shows what loads",
                    known.join(", ")
                )
            }
            (None, _) => format!(
                "plugin '{plugin}' has no tool '{tool}' (its tools: {})",
                mine.join(", ")
            ),
        };
        return out::fail(json, why);
    };
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            return out::fail(json, format!("--arg {pair}: expected KEY=VALUE"));
        };
        args.insert(k.to_string(), arg_value(info, k, v));
    }
    let call = worker.call_tool(tool.to_string(), Value::Object(args));
    let Some(result) = app.run_until_signal(call) else {
        return exit::interrupted(&format!("plugin {plugin} tool {tool}"));
    };
    drop(attached);
    match result {
        Ok(v) => {
            let text = match (&v, json) {
                (Value::String(s), false) => s.clone(),
                _ => serde_json::to_string_pretty(&v).unwrap_or_default(),
            };
            let _ = outln!("{text}");
            0
        }
        Err(e) => out::fail(json, e),
    }
}

/// A `--arg` value as the tool's schema types it: a number, boolean, object or
/// array property reads VALUE as JSON; anything else is the string.
fn arg_value(info: &ToolInfo, key: &str, value: &str) -> Value {
    let typed = info.input_schema["properties"][key]["type"]
        .as_str()
        .is_some_and(|t| t != "string");
    match serde_json::from_str::<Value>(value) {
        Ok(v) if typed && !v.is_string() => v,
        _ => Value::String(value.to_string()),
    }
}

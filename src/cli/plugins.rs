//! `cms plugins list` and `cms plugins check`.

use super::args::PluginsCommand;
use super::out::{errln, outln};
use crate::engine::{EngineConfig, Manager};
use crate::lua::{HostOptions, LuaHost};
use crate::plugins;
use crate::policy::Layers;
use serde_json::json;

pub fn run(cmd: PluginsCommand, cfg: EngineConfig, json: bool) -> i32 {
    let rt = match super::commands::init_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("Error: {e}");
            return 1;
        }
    };
    let _guard = rt.enter();
    let manager = match Manager::new(cfg) {
        Ok(m) => m,
        Err(e) => {
            errln!("Error: {e}");
            return 1;
        }
    };
    let host = match LuaHost::new(manager, HostOptions::default()) {
        Ok(h) => h,
        Err(e) => {
            errln!("Error: cannot start Lua: {e}");
            return 1;
        }
    };
    let layers = Layers::standard(&std::env::current_dir().unwrap_or_default());
    for u in layers.untrusted() {
        eprintln!("cms: {u}");
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
                let _ = outln!("{} {} — {}", p.name, p.version, p.description);
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

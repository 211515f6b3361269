//! `cms plugins list` and `cms plugins check`.

use super::args::PluginsCommand;
use super::out::{errln, outln};
use crate::app::{exit, App};
use crate::engine::EngineConfig;
use crate::lua::{HostOptions, LuaHost};
use crate::plugins;
use crate::policy::Layers;
use serde_json::json;

pub fn run(cmd: PluginsCommand, cfg: EngineConfig, json: bool) -> i32 {
    let app = match App::start(cfg) {
        Ok(app) => app,
        Err(e) => return exit::fail(e),
    };
    let handle = app.handle();
    let _inside = handle.enter();
    let host = match LuaHost::new(app.manager().clone(), HostOptions::default()) {
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

//! The `cms` table: `cms.spawn`, `cms.get`, `cms.list`, `cms.parallel`, `cms.on`,
//! `cms.off`, `cms.sleep`, `cms.log`, `cms.json.encode/decode`, `cms.args`,
//! `cms.version`. Documented for editors in `scripts/types/cms.lua`.

use crate::engine::{EventKind, Manager, SpawnSpec};
use crate::lua::convert;
use crate::lua::host::{dispatch_events, ensure_subscribed, Handler, HostShared};
use crate::lua::session::{engine_err, handle};
use futures_util::future::join_all;
use mlua::{Function, Lua, MultiValue, Table, Value};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Install `cms` as a global and as `require("cms")`.
pub fn install(
    lua: &Lua,
    manager: Arc<Manager>,
    shared: Rc<HostShared>,
    args: Vec<String>,
) -> mlua::Result<Table> {
    let cms = lua.create_table()?;
    cms.set("args", convert::array(lua, lua.create_sequence_from(args)?))?;

    let (m, sh) = (manager.clone(), shared.clone());
    cms.set(
        "spawn",
        lua.create_async_function(move |lua, opts: Value| {
            let (m, sh) = (m.clone(), sh.clone());
            async move {
                let spec: SpawnSpec = convert::opts(&lua, "cms.spawn", opts)?;
                let req = spec.into_request(false).map_err(engine_err)?;
                let result = m.spawn(req).await;
                dispatch_events(&lua, &sh);
                let (rec, r) = result.map_err(engine_err)?;
                handle(&lua, rec.name, m, sh, Some(r))
            }
        })?,
    )?;

    let (m, sh) = (manager.clone(), shared.clone());
    cms.set(
        "get",
        lua.create_function(move |lua, name: String| match m.status(&name) {
            Ok(_) => handle(lua, name, m.clone(), sh.clone(), None),
            Err(crate::engine::EngineError::NotFound(_)) => Ok(Value::Nil),
            Err(e) => Err(engine_err(e)),
        })?,
    )?;

    let m = manager.clone();
    cms.set(
        "list",
        lua.create_function(move |lua, ()| {
            let recs = m.list().map_err(engine_err)?;
            let out = convert::array(lua, lua.create_table()?);
            for (i, r) in recs.iter().enumerate() {
                out.raw_set(i + 1, convert::status(lua, r)?)?;
            }
            Ok(out)
        })?,
    )?;

    cms.set("parallel", lua.create_async_function(parallel)?)?;

    let (m, sh) = (manager.clone(), shared.clone());
    cms.set(
        "on",
        lua.create_function(move |_, (event, func): (String, Function)| {
            if event != "*" && !EventKind::NAMES.contains(&event.as_str()) {
                return Err(mlua::Error::runtime(format!(
                    "cms.on: unknown event '{event}' (one of: {}, or * for all)",
                    EventKind::NAMES.join(", ")
                )));
            }
            ensure_subscribed(&m, &sh);
            let id = sh.next_handler.get();
            sh.next_handler.set(id + 1);
            sh.handlers.borrow_mut().push(Handler { id, event, func });
            Ok(id)
        })?,
    )?;

    let sh = shared.clone();
    cms.set(
        "off",
        lua.create_function(move |_, id: u64| {
            let mut handlers = sh.handlers.borrow_mut();
            let before = handlers.len();
            handlers.retain(|h| h.id != id);
            Ok(handlers.len() < before)
        })?,
    )?;

    let sh = shared.clone();
    cms.set(
        "sleep",
        lua.create_async_function(move |lua, secs: f64| {
            let sh = sh.clone();
            async move {
                if !(secs.is_finite() && secs >= 0.0) {
                    return Err(mlua::Error::runtime(format!(
                        "cms.sleep: expected seconds (0 or more), got {secs}"
                    )));
                }
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                dispatch_events(&lua, &sh);
                Ok(())
            }
        })?,
    )?;

    let (m, sh) = (manager.clone(), shared.clone());
    cms.set(
        "delegate",
        lua.create_async_function(move |lua, opts: Value| {
            let (m, sh) = (m.clone(), sh.clone());
            async move {
                let policy = sh.policy.clone().ok_or_else(|| {
                    mlua::Error::runtime(
                        "cms.delegate is not available here (no safety policy is loaded)",
                    )
                })?;
                let (opts, check) = crate::lua::delegate::options_from_lua(&lua, opts)?;
                let result =
                    crate::lua::delegate::delegate(&lua, &m, &policy, opts, check.clone()).await;
                dispatch_events(&lua, &sh);
                let result = result.map_err(|e| mlua::Error::runtime(e.to_string()))?;
                delegation(&lua, m, sh, result, check)
            }
        })?,
    )?;

    install_pure(lua, &cms)?;
    crate::lua::helpers::install(lua, &cms)?;

    lua.globals().set("cms", cms.clone())?;
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.set("cms", cms.clone())?;
    Ok(cms)
}

/// The parts of `cms` that need no engine (`cms.log`, `cms.json`, `cms.version`):
/// shared with the policy service's Lua state.
pub fn install_pure(lua: &Lua, cms: &Table) -> mlua::Result<()> {
    cms.set("version", env!("CARGO_PKG_VERSION"))?;
    cms.set("log", lua.create_function(log)?)?;

    let json = lua.create_table()?;
    json.set(
        "encode",
        lua.create_function(|lua, (v, pretty): (Value, Option<bool>)| {
            // A table shared many times over is written out each time: the text can
            // be far bigger than the table, so it is held to the memory limit.
            let mut out = crate::lua::limits::Bounded::new(lua);
            let written = if pretty.unwrap_or(false) {
                serde_json::to_writer_pretty(&mut out, &v)
            } else {
                serde_json::to_writer(&mut out, &v)
            };
            if let Some(e) = out.overflowed() {
                return Err(e);
            }
            written.map_err(|e| mlua::Error::runtime(format!("cms.json.encode: {e}")))?;
            lua.create_string(&out.bytes)
        })?,
    )?;
    json.set(
        "decode",
        lua.create_function(|lua, text: mlua::String| {
            // The parsed value takes up to ~16 bytes of Rust memory per byte of text.
            crate::lua::limits::reserve(lua, text.as_bytes().len().saturating_mul(16))?;
            let v: serde_json::Value = serde_json::from_slice(&text.as_bytes())
                .map_err(|e| mlua::Error::runtime(format!("cms.json.decode: invalid JSON: {e}")))?;
            convert::to_lua(lua, &v)
        })?,
    )?;
    cms.set("json", json)?;

    Ok(())
}

/// `cms.parallel{f1, f2, ...}`: run the functions as concurrent coroutines; return
/// their first results in order. If any failed, raise one error naming each failed
/// function by its index, after all have finished.
async fn parallel(lua: Lua, fns: Vec<Function>) -> mlua::Result<Table> {
    let mut runs = Vec::with_capacity(fns.len());
    for f in fns {
        let thread = lua.create_thread(f)?;
        runs.push(thread.into_async::<MultiValue>(()));
    }
    let results = join_all(runs).await;
    let total = results.len();
    let out = convert::array(&lua, lua.create_table()?);
    let mut failures = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(values) => out.raw_set(i + 1, values.into_iter().next().unwrap_or(Value::Nil))?,
            Err(e) => failures.push(format!(
                "#{}: {}",
                i + 1,
                first_line(&crate::lua::host::describe(&e))
            )),
        }
    }
    if failures.is_empty() {
        Ok(out)
    } else {
        Err(mlua::Error::runtime(format!(
            "cms.parallel: {} of {} functions failed\n  {}",
            failures.len(),
            total,
            failures.join("\n  ")
        )))
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// `cms.log(message)` at info, or `cms.log(level, message)`.
fn log(_: &Lua, args: MultiValue) -> mlua::Result<()> {
    let parts: Vec<String> = args
        .iter()
        .map(|v| match v {
            Value::String(s) => s.to_string_lossy(),
            other => format!("{other:?}"),
        })
        .collect();
    let levels = ["trace", "debug", "info", "warn", "error"];
    let (level, text) = match parts.split_first() {
        Some((first, rest)) if !rest.is_empty() && levels.contains(&first.as_str()) => {
            (first.as_str(), rest.join(" "))
        }
        _ => ("info", parts.join(" ")),
    };
    match level {
        "trace" => tracing::trace!(target: "lua", "{text}"),
        "debug" => tracing::debug!(target: "lua", "{text}"),
        "warn" => tracing::warn!(target: "lua", "{text}"),
        "error" => tracing::error!(target: "lua", "{text}"),
        _ => tracing::info!(target: "lua", "{text}"),
    }
    Ok(())
}

/// The object `cms.delegate` returns: the result's fields, plus `d:continue(msg)`,
/// `d:finish()` and `d:abort()`. `d:continue` keeps the check function
/// `cms.delegate` was given.
fn delegation(
    lua: &Lua,
    manager: Arc<Manager>,
    shared: Rc<HostShared>,
    result: crate::lua::delegate::DelegateResult,
    check: Option<mlua::Function>,
) -> mlua::Result<Value> {
    let t = match convert::to_lua(lua, &result)? {
        Value::Table(t) => t,
        _ => return Err(mlua::Error::runtime("cannot convert the delegation result")),
    };
    let name = result.name.clone();
    // Methods live in the metatable, so the result itself stays plain data (JSON).
    let methods = lua.create_table()?;
    let (m, sh, n) = (manager.clone(), shared.clone(), name.clone());
    methods.set(
        "continue",
        lua.create_async_function(move |lua, (_self, message): (Value, String)| {
            let (m, sh, n, check) = (m.clone(), sh.clone(), n.clone(), check.clone());
            async move {
                let policy = sh
                    .policy
                    .clone()
                    .ok_or_else(|| mlua::Error::runtime("no safety policy is loaded"))?;
                let r = crate::lua::delegate::continue_task(
                    &lua,
                    &m,
                    &policy,
                    &n,
                    &message,
                    check.clone(),
                )
                .await;
                dispatch_events(&lua, &sh);
                let r = r.map_err(|e| mlua::Error::runtime(e.to_string()))?;
                delegation(&lua, m, sh, r, check)
            }
        })?,
    )?;
    let (m, n) = (manager.clone(), name.clone());
    methods.set(
        "finish",
        lua.create_async_function(move |lua, _self: Value| {
            let (m, n) = (m.clone(), n.clone());
            async move {
                let r = crate::lua::delegate::finish(&m, &n)
                    .await
                    .map_err(|e| mlua::Error::runtime(e.to_string()))?;
                convert::to_lua(&lua, &r)
            }
        })?,
    )?;
    let (m, n) = (manager, name);
    methods.set(
        "abort",
        lua.create_async_function(move |lua, _self: Value| {
            let (m, n) = (m.clone(), n.clone());
            async move {
                let r = crate::lua::delegate::abort(&m, &n)
                    .await
                    .map_err(|e| mlua::Error::runtime(e.to_string()))?;
                convert::to_lua(&lua, &r)
            }
        })?,
    )?;
    let meta = lua.create_table()?;
    meta.set("__index", methods)?;
    t.set_metatable(Some(meta));
    Ok(Value::Table(t))
}

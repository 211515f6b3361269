//! The `cms` table: `cms.spawn` (`replace = true` deletes a session of that name
//! first), `cms.get_or_spawn`, `cms.get`, `cms.list`, `cms.parallel`, `cms.on`,
//! `cms.off`, `cms.sleep`, `cms.approvals`, `cms.decide`, `cms.log`,
//! `cms.json.encode/decode`, `cms.args`,
//! `cms.version`. Documented for editors in `scripts/types/cms.lua`.

use crate::engine::{EventKind, Sessions, SpawnSpec};
use crate::lua::convert;
use crate::lua::events::{
    dispatch_events, ensure_subscribed, started, touch, while_dispatching, Handler, HostShared,
};
use crate::lua::session::{engine_err, handle};
use futures_util::future::join_all;
use mlua::{Function, Lua, MultiValue, Table, Value};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Install `cms` as a global and as `require("cms")`.
pub fn install(
    lua: &Lua,
    manager: Arc<dyn Sessions>,
    shared: Rc<HostShared>,
    args: Vec<String>,
) -> mlua::Result<Table> {
    // The base table (`cms.json`, `cms.path`, ...) is there already: see `sandbox::state`.
    let cms: Table = lua.globals().get("cms")?;
    cms.set("args", convert::array(lua, lua.create_sequence_from(args)?))?;

    let (m, sh) = (manager.clone(), shared.clone());
    cms.set(
        "spawn",
        lua.create_async_function(move |lua, opts: Value| {
            let (m, sh) = (m.clone(), sh.clone());
            async move {
                // `replace` is the Lua API's own: not a spawn option of every face.
                let (opts, replace) = without_flag(&lua, opts, "replace")?;
                let (opts, keep) = without_flag(&lua, opts, "keep")?;
                let spec: SpawnSpec = convert::opts(&lua, "cms.spawn", opts)?;
                if replace && m.status(&spec.name).is_ok() {
                    m.delete_to_replace(&spec.name).await.map_err(engine_err)?;
                }
                spawn(lua, m, sh, spec, keep).await
            }
        })?,
    )?;

    let (m, sh) = (manager.clone(), shared.clone());
    cms.set(
        "get_or_spawn",
        lua.create_async_function(move |lua, opts: Value| {
            let (m, sh) = (m.clone(), sh.clone());
            async move {
                let (opts, keep) = without_flag(&lua, opts, "keep")?;
                let spec: SpawnSpec = convert::opts(&lua, "cms.get_or_spawn", opts)?;
                match m.status(&spec.name) {
                    // As it is: its options stay its own, and a send resumes it.
                    Ok(rec) => handle(&lua, rec.name, m, sh, None),
                    Err(crate::engine::EngineError::NotFound(_)) => {
                        spawn(lua, m, sh, spec, keep).await
                    }
                    Err(e) => Err(engine_err(e)),
                }
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

    let m = manager.clone();
    cms.set(
        "approvals",
        lua.create_async_function(move |lua, ()| {
            let m = m.clone();
            async move {
                let all = m.approvals().await.map_err(engine_err)?;
                let out = convert::array(&lua, lua.create_table()?);
                for (i, a) in all.iter().enumerate() {
                    out.raw_set(i + 1, crate::sandbox::convert::to_lua(&lua, a)?)?;
                }
                Ok(out)
            }
        })?,
    )?;

    let (m, sh) = (manager.clone(), shared.clone());
    cms.set(
        "decide",
        lua.create_async_function(move |lua, opts: Value| {
            let (m, sh) = (m.clone(), sh.clone());
            async move {
                let d: convert::DecideOpts = convert::opts(&lua, "cms.decide", opts)?;
                if d.allow && !sh.may_approve {
                    return Err(mlua::Error::runtime(format!(
                        "cms.decide: this Lua (run for an MCP client) may not approve tool calls; \
                         a person approves with `cms approve {}`, or the user sets {}=1 for that \
                         MCP server",
                        d.session,
                        crate::engine::approval::MAY_APPROVE_ENV
                    )));
                }
                let a = m
                    .decide(crate::engine::ApprovalVerdict {
                        session: d.session,
                        id: d.id,
                        allow: d.allow,
                        reason: d.reason,
                        by: "lua".into(),
                        always: d.always,
                    })
                    .await
                    .map_err(engine_err)?;
                crate::sandbox::convert::to_lua(&lua, &a)
            }
        })?,
    )?;

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
            ensure_subscribed(m.as_ref(), &sh);
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
                let (opts, check) = crate::delegate::options_from_lua(&lua, opts)?;
                touch(&sh, &opts.name);
                let result = while_dispatching(
                    &lua,
                    &sh,
                    crate::delegate::delegate(&lua, &m, &policy, opts, check.clone()),
                )
                .await;
                dispatch_events(&lua, &sh);
                let result = result.map_err(|e| mlua::Error::runtime(e.to_string()))?;
                started(&sh, &result.name, false);
                delegation(&lua, m, sh, result, check)
            }
        })?,
    )?;

    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.set("cms", cms.clone())?;
    Ok(cms)
}

async fn spawn(
    lua: Lua,
    m: Arc<dyn Sessions>,
    sh: Rc<HostShared>,
    spec: SpawnSpec,
    keep: bool,
) -> mlua::Result<Value> {
    let req = spec.into_request(false).map_err(engine_err)?;
    touch(&sh, &req.name);
    let result = while_dispatching(&lua, &sh, m.spawn(req)).await;
    dispatch_events(&lua, &sh);
    let (rec, r) = result.map_err(engine_err)?;
    started(&sh, &rec.name, keep);
    handle(&lua, rec.name, m, sh, Some(r))
}

/// An options table without `key` (a copy: the caller's table is left as it was,
/// so a plan can pass it again), and whether `key` was true.
fn without_flag(lua: &Lua, opts: Value, key: &str) -> mlua::Result<(Value, bool)> {
    let Value::Table(t) = opts else {
        return Ok((opts, false));
    };
    let flag = match t.raw_get::<Value>(key)? {
        Value::Nil => return Ok((Value::Table(t), false)),
        Value::Boolean(b) => b,
        other => {
            return Err(mlua::Error::runtime(format!(
                "cms.spawn: {key} must be true or false, not a {}",
                other.type_name()
            )))
        }
    };
    let copy = lua.create_table()?;
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        if !matches!(&k, Value::String(s) if s.as_bytes() == key.as_bytes()) {
            copy.raw_set(k, v)?;
        }
    }
    Ok((Value::Table(copy), flag))
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
                first_line(&crate::sandbox::error_text(&e))
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

/// The object `cms.delegate` returns: the result's fields, plus `d:continue(msg)`,
/// `d:finish()` and `d:abort()`. `d:continue` keeps the check function
/// `cms.delegate` was given.
fn delegation(
    lua: &Lua,
    manager: Arc<dyn Sessions>,
    shared: Rc<HostShared>,
    result: crate::delegate::DelegateResult,
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
                let r = while_dispatching(
                    &lua,
                    &sh,
                    crate::delegate::continue_task(&lua, &m, &policy, &n, &message, check.clone()),
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
                let r = crate::delegate::finish(m.as_ref(), &n)
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
                let r = crate::delegate::abort(m.as_ref(), &n)
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

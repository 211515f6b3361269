//! The policy service: one thread with its own Lua state running the safety policy,
//! the protected-path rules and the presets (`scripts/`, layered by [`Layers`]).
//! Sessions ask it before a tool runs and after events; [`PolicyService::reload`]
//! (called by the file watcher) swaps in edited scripts, and a broken edit leaves the
//! last good version in force.
//!
//! Lua states are single-threaded, so the engine's sessions (on the runtime's worker
//! threads) reach this one through a channel; a decision is a round trip of a few
//! tens of microseconds.

use crate::engine::events::EventKind;
use crate::engine::{
    Decision, Guard, Policy, Progress, SessionEvent, SessionOptions, ToolCall, Verdict, Violation,
};
use crate::lua::host::{call_limited, describe, restrict};
use crate::policy::scripts::{Layers, Source};
use mlua::{Function, Lua, LuaOptions, LuaSerdeExt, MultiValue, StdLib, Table, Value};
use serde::{Deserialize, Serialize};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Lua modules a reload refreshes.
const MODULES: &[&str] = &["safety", "protected_paths", "presets"];

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A script failed to load: `file:line: message`.
    #[error("{0}")]
    Load(String),
    #[error("unknown preset '{name}' (known: {known})")]
    UnknownPreset { name: String, known: String },
    #[error("the policy service has stopped")]
    Gone,
}

/// A permission preset as `presets.lua` defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub permission_mode: String,
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    #[serde(default)]
    pub disallowed_tools: Vec<String>,
}

/// The default limits of `safety.lua` (`M.limits`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub max_cost: Option<f64>,
    pub max_turns: Option<u32>,
    pub timeout: Option<f64>,
}

impl Limits {
    /// The seed's defaults: $2.00, 50 turns, 5 minutes per interaction.
    pub const SEED: Limits = Limits {
        max_cost: Some(2.0),
        max_turns: Some(50),
        timeout: Some(300.0),
    };
}

/// What a (re)load did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    /// Counts successful loads; a decision made after a reload sees this generation.
    pub generation: u64,
    /// `file:line: message` of each script that failed (its last good version stays).
    pub errors: Vec<String>,
    /// The files in force, by module.
    pub origins: Vec<String>,
}

enum Job {
    Decide(Box<(ToolCall, Guard)>, SyncSender<Decision>),
    Event(Box<(SessionEvent, Guard, Progress)>, SyncSender<Verdict>),
    Preset(String, SyncSender<Result<Preset, PolicyError>>),
    Limits(SyncSender<Limits>),
    Reload(SyncSender<ReloadReport>),
}

pub struct PolicyService {
    tx: Mutex<Sender<Job>>,
    layers: Layers,
    limit: Duration,
    last: Mutex<ReloadReport>,
}

impl PolicyService {
    /// Start the service thread and load the scripts. A user script that fails to
    /// load is reported (in the returned report) and the built-in one is used.
    pub fn start(
        layers: Layers,
        limit: Duration,
    ) -> Result<(Arc<PolicyService>, ReloadReport), PolicyError> {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let worker_layers = layers.clone();
        std::thread::Builder::new()
            .name("cms-policy".into())
            .spawn(move || worker(worker_layers, limit, rx, ready_tx))
            .map_err(|e| PolicyError::Load(format!("cannot start the policy thread: {e}")))?;
        let report = ready_rx.recv().map_err(|_| PolicyError::Gone)??;
        for e in &report.errors {
            tracing::error!("policy script not loaded (the built-in one is used): {e}");
        }
        let service = Arc::new(PolicyService {
            tx: Mutex::new(tx),
            layers,
            limit,
            last: Mutex::new(report.clone()),
        });
        Ok((service, report))
    }

    pub fn layers(&self) -> &Layers {
        &self.layers
    }

    fn ask<T>(&self, make: impl FnOnce(SyncSender<T>) -> Job) -> Option<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx.lock().ok()?.send(make(tx)).ok()?;
        rx.recv_timeout(self.limit + Duration::from_secs(2)).ok()
    }

    /// Decide a tool call of a guarded session. Fails closed.
    pub fn decide(&self, call: &ToolCall, guard: &Guard) -> Decision {
        self.ask(|tx| Job::Decide(Box::new((call.clone(), guard.clone())), tx))
            .unwrap_or_else(|| fail_closed("the policy service did not answer"))
    }

    /// Look at an event of a guarded session.
    pub fn on_event(&self, event: &SessionEvent, guard: &Guard, progress: &Progress) -> Verdict {
        self.ask(|tx| {
            Job::Event(
                Box::new((event.clone(), guard.clone(), progress.clone())),
                tx,
            )
        })
        .unwrap_or(Verdict::Continue)
    }

    pub fn preset(&self, name: &str) -> Result<Preset, PolicyError> {
        self.ask(|tx| Job::Preset(name.to_string(), tx))
            .ok_or(PolicyError::Gone)?
    }

    /// The default limits of the safety policy.
    pub fn limits(&self) -> Limits {
        self.ask(Job::Limits).unwrap_or_default()
    }

    /// Reload every script; report what failed (those keep their last good version).
    pub fn reload(&self) -> ReloadReport {
        let report = self.ask(Job::Reload).unwrap_or_default();
        for e in &report.errors {
            tracing::error!("policy script not reloaded (the last good version stays): {e}");
        }
        if let Ok(mut last) = self.last.lock() {
            *last = report.clone();
        }
        report
    }

    /// The last load's report.
    pub fn status(&self) -> ReloadReport {
        self.last.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl std::fmt::Debug for PolicyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyService")
            .field("layers", &self.layers)
            .finish()
    }
}

fn fail_closed(why: &str) -> Decision {
    Decision::Deny {
        reason: format!("cms safety policy error, so the call is denied: {why}"),
        interrupt: false,
        rule: Some("policy_error".into()),
    }
}

/// The policy to install on a [`crate::engine::Manager`]: sessions with a [`Guard`]
/// get the Lua safety net; others are left to the CLI's permission mode.
pub struct LuaPolicy(pub Arc<PolicyService>);

impl Policy for LuaPolicy {
    fn decide(&self, _call: &ToolCall) -> Decision {
        Decision::Allow
    }

    fn session_policy(&self, _name: &str, options: &SessionOptions) -> Option<Arc<dyn Policy>> {
        let guard = options.guard.clone()?;
        Some(Arc::new(GuardedSession {
            service: self.0.clone(),
            guard,
        }))
    }
}

/// One guarded session's policy: its guard, answered by the service.
pub struct GuardedSession {
    service: Arc<PolicyService>,
    guard: Guard,
}

impl Policy for GuardedSession {
    fn wants_tool_prompts(&self) -> bool {
        true
    }

    fn decide(&self, call: &ToolCall) -> Decision {
        self.service.decide(call, &self.guard)
    }

    fn on_event(&self, event: &SessionEvent, progress: &Progress) -> Verdict {
        // Cost and turns change on these; text deltas and the rest stay off the channel.
        let relevant = matches!(
            event.kind,
            EventKind::ToolUse { .. } | EventKind::Result { .. }
        );
        if !relevant || !self.guard.safety {
            return Verdict::Continue;
        }
        self.service.on_event(event, &self.guard, progress)
    }
}

// ---------------------------------------------------------------------------
// The service thread.

struct Worker {
    lua: Lua,
    layers: Layers,
    limit: Duration,
    safety: Option<Table>,
    presets: Option<Table>,
    origins: Vec<String>,
    generation: u64,
}

fn worker(
    layers: Layers,
    limit: Duration,
    rx: Receiver<Job>,
    ready: SyncSender<Result<ReloadReport, PolicyError>>,
) {
    let mut w = match Worker::new(layers, limit) {
        Ok(w) => w,
        Err(e) => {
            let _ = ready.send(Err(PolicyError::Load(describe(&e))));
            return;
        }
    };
    let mut report = w.load();
    if !report.errors.is_empty() {
        // Nothing good loaded yet from the user's files: fall back to the built-ins.
        let user_layers = std::mem::replace(&mut w.layers, Layers::builtin_only());
        let builtin = w.load();
        w.layers = user_layers;
        if !builtin.errors.is_empty() {
            let _ = ready.send(Err(PolicyError::Load(builtin.errors.join("\n"))));
            return;
        }
        report.generation = builtin.generation;
        report.origins = builtin.origins;
    }
    let _ = ready.send(Ok(report));
    while let Ok(job) = rx.recv() {
        match job {
            Job::Decide(b, reply) => {
                let (call, guard) = *b;
                let _ = reply.send(w.decide(&call, &guard));
            }
            Job::Event(b, reply) => {
                let (event, guard, progress) = *b;
                let _ = reply.send(w.on_event(&event, &guard, &progress));
            }
            Job::Preset(name, reply) => {
                let _ = reply.send(w.preset(&name));
            }
            Job::Limits(reply) => {
                let _ = reply.send(w.limits());
            }
            Job::Reload(reply) => {
                let _ = reply.send(w.load());
            }
        }
    }
}

impl Worker {
    fn new(layers: Layers, limit: Duration) -> mlua::Result<Worker> {
        let libs = StdLib::COROUTINE
            | StdLib::TABLE
            | StdLib::STRING
            | StdLib::UTF8
            | StdLib::MATH
            | StdLib::PACKAGE
            | StdLib::OS
            | StdLib::IO;
        let lua = Lua::new_with(libs, LuaOptions::new())?;
        lua.set_memory_limit(64 * 1024 * 1024)?;
        restrict(&lua, false)?;
        let cms = lua.create_table()?;
        crate::lua::helpers::install(&lua, &cms)?;
        crate::lua::api::install_pure(&lua, &cms)?;
        lua.globals().set("cms", cms)?;
        Ok(Worker {
            lua,
            layers,
            limit,
            safety: None,
            presets: None,
            origins: Vec::new(),
            generation: 0,
        })
    }

    /// Load `name` (`safety`, `strategies.single`) from the layers, as `require` does.
    fn require(&self, name: &str) -> mlua::Result<Value> {
        load_module(&self.lua, &self.layers, name)
    }

    /// (Re)load every module. A module that fails keeps its last good version.
    fn load(&mut self) -> ReloadReport {
        install_searcher(&self.lua, &self.layers).ok();
        if let Ok(loaded) = self
            .lua
            .globals()
            .get::<Table>("package")
            .and_then(|p| p.get::<Table>("loaded"))
        {
            for m in MODULES {
                let _ = loaded.set(*m, Value::Nil);
            }
        }
        let mut errors = Vec::new();
        match self.require("safety").and_then(|v| check_safety(&v)) {
            Ok(t) => self.safety = Some(t),
            Err(e) => errors.push(describe(&e)),
        }
        match self
            .require("presets")
            .and_then(|v| check_presets(&self.lua, &v))
        {
            Ok(t) => self.presets = Some(t),
            Err(e) => errors.push(describe(&e)),
        }
        self.origins = MODULES
            .iter()
            .filter_map(|m| self.layers.find(&format!("{m}.lua")).map(|s| s.origin))
            .collect();
        if errors.is_empty() {
            self.generation += 1;
        }
        ReloadReport {
            generation: self.generation,
            errors,
            origins: self.origins.clone(),
        }
    }

    /// `M.limits` of the safety policy; a limit it leaves out keeps the seed's
    /// default, so no limit is dropped by omission.
    fn limits(&self) -> Limits {
        let set: Limits = self
            .safety
            .as_ref()
            .and_then(|s| s.get::<Value>("limits").ok())
            .and_then(|v| self.lua.from_value(v).ok())
            .unwrap_or_default();
        Limits {
            max_cost: set.max_cost.or(Limits::SEED.max_cost),
            max_turns: set.max_turns.or(Limits::SEED.max_turns),
            timeout: set.timeout.or(Limits::SEED.timeout),
        }
    }

    fn preset_table(&self, name: &str) -> Option<Table> {
        self.presets
            .as_ref()?
            .get::<Option<Table>>(name)
            .ok()
            .flatten()
    }

    fn preset(&self, name: &str) -> Result<Preset, PolicyError> {
        let Some(t) = self.preset_table(name) else {
            let mut known: Vec<String> = self
                .presets
                .as_ref()
                .map(|p| {
                    p.pairs::<String, Value>()
                        .filter_map(|kv| kv.ok().map(|(k, _)| k))
                        .collect()
                })
                .unwrap_or_default();
            known.sort();
            return Err(PolicyError::UnknownPreset {
                name: name.into(),
                known: known.join(", "),
            });
        };
        let _ = t.set("name", name);
        let mut p: Preset = self
            .lua
            .from_value(Value::Table(t))
            .map_err(|e| PolicyError::Load(format!("preset '{name}' is malformed: {e}")))?;
        p.name = name.into();
        Ok(p)
    }

    fn ctx(
        &self,
        session: &str,
        cwd: &str,
        guard: &Guard,
        progress: &Progress,
    ) -> mlua::Result<Table> {
        let lua = &self.lua;
        let ctx = lua.create_table()?;
        ctx.set("session", session)?;
        ctx.set("cwd", cwd)?;
        ctx.set("safety", guard.safety)?;
        if let Some(name) = &guard.preset {
            if let Some(p) = self.preset_table(name) {
                p.set("name", name.as_str())?;
                ctx.set("preset", p)?;
            }
        }
        let defaults = self.limits();
        let limits = lua.create_table()?;
        limits.set("max_cost", guard.max_cost_usd.or(defaults.max_cost))?;
        limits.set("max_turns", guard.max_turns.or(defaults.max_turns))?;
        limits.set("timeout", guard.timeout_secs.or(defaults.timeout))?;
        ctx.set("limits", limits)?;
        ctx.set("cost", progress.cost_usd)?;
        ctx.set("turns", progress.turns)?;
        ctx.set("elapsed", progress.turn_elapsed.as_secs_f64())?;
        Ok(ctx)
    }

    fn decide(&self, call: &ToolCall, guard: &Guard) -> Decision {
        let Some(safety) = &self.safety else {
            return fail_closed("no safety policy is loaded");
        };
        let run = || -> mlua::Result<Decision> {
            let f: Function = safety.get("on_tool_use")?;
            let tool = self.lua.create_table()?;
            tool.set("name", call.tool_name.as_str())?;
            tool.set("input", self.lua.to_value(&call.input)?)?;
            let ctx = self.ctx(&call.session, &call.cwd, guard, &call.progress)?;
            let out: MultiValue = call_limited(&self.lua, self.limit, &f, (tool, ctx))?;
            let mut it = out.into_iter();
            let verb = it.next().unwrap_or(Value::Nil);
            match verb.as_string().map(|s| s.to_string_lossy()).as_deref() {
                Some("allow") => match it.next() {
                    Some(v @ Value::Table(_)) => Ok(Decision::AllowWith(self.lua.from_value(v)?)),
                    _ => Ok(Decision::Allow),
                },
                Some("deny") => {
                    let reason = it
                        .next()
                        .and_then(|v| v.as_string().map(|s| s.to_string_lossy()))
                        .unwrap_or_else(|| {
                            format!("denied by the cms safety policy ({})", call.tool_name)
                        });
                    let rule = it
                        .next()
                        .and_then(|v| v.as_string().map(|s| s.to_string_lossy()));
                    Ok(Decision::Deny {
                        reason,
                        interrupt: false,
                        rule,
                    })
                }
                _ => Err(mlua::Error::runtime(format!(
                    "on_tool_use returned {verb:?}; it must return \"allow\" or \"deny\""
                ))),
            }
        };
        run().unwrap_or_else(|e| fail_closed(&describe(&e)))
    }

    fn on_event(&self, event: &SessionEvent, guard: &Guard, progress: &Progress) -> Verdict {
        let Some(safety) = &self.safety else {
            return Verdict::Continue;
        };
        let run = || -> mlua::Result<Verdict> {
            let Some(f) = safety.get::<Option<Function>>("on_event")? else {
                return Ok(Verdict::Continue);
            };
            let ev = crate::lua::convert::to_lua(&self.lua, event)?;
            let ctx = self.ctx(&event.session, "", guard, progress)?;
            let out: MultiValue = call_limited(&self.lua, self.limit, &f, (ev, ctx))?;
            let mut it = out.into_iter();
            let verb = it
                .next()
                .and_then(|v| v.as_string().map(|s| s.to_string_lossy()));
            let message = it
                .next()
                .and_then(|v| v.as_string().map(|s| s.to_string_lossy()))
                .unwrap_or_default();
            let rule = it
                .next()
                .and_then(|v| v.as_string().map(|s| s.to_string_lossy()))
                .unwrap_or_else(|| "policy".into());
            let v = Violation { rule, message };
            Ok(match verb.as_deref() {
                None | Some("continue") => Verdict::Continue,
                Some("warn") => Verdict::Warn(v),
                Some("stop") => Verdict::Stop(v),
                Some("kill") => Verdict::Kill(v),
                Some(other) => return Err(mlua::Error::runtime(format!(
                    "on_event returned \"{other}\"; expected nil, \"warn\", \"stop\" or \"kill\""
                ))),
            })
        };
        run().unwrap_or_else(|e| {
            Verdict::Warn(Violation {
                rule: "policy_error".into(),
                message: format!("the safety policy's on_event failed: {}", describe(&e)),
            })
        })
    }
}

/// Make `require` find modules in the layers (`require("protected_paths")` loads
/// the project's copy when there is one).
fn install_searcher(lua: &Lua, layers: &Layers) -> mlua::Result<()> {
    let package: Table = lua.globals().get("package")?;
    let searchers: Table = package.get("searchers")?;
    let layers = layers.clone();
    let searcher = lua.create_function(move |lua, name: String| {
        let rel = format!("{}.lua", name.replace('.', "/"));
        match layers.find(&rel) {
            Some(src) => {
                let f = lua
                    .load(src.code.as_str())
                    .set_name(src.chunk_name())
                    .into_function()?;
                Ok((
                    Value::Function(f),
                    Value::String(lua.create_string(&src.origin)?),
                ))
            }
            None => Ok((
                Value::String(lua.create_string(format!("\n\tno cms script '{rel}'"))?),
                Value::Nil,
            )),
        }
    })?;
    // Slot 2: after the preload searcher, before the file searcher.
    searchers.raw_insert(2, searcher)?;
    // Keep just one cms searcher however often this runs.
    while searchers.raw_len() > 3 {
        searchers.raw_remove(3)?;
    }
    Ok(())
}

/// `require(name)` through the layers.
pub fn load_module(lua: &Lua, _layers: &Layers, name: &str) -> mlua::Result<Value> {
    let require: Function = lua.globals().get("require")?;
    require.call::<Value>(name)
}

fn check_safety(v: &Value) -> mlua::Result<Table> {
    match v {
        Value::Table(t) if matches!(t.get::<Value>("on_tool_use")?, Value::Function(_)) => {
            Ok(t.clone())
        }
        _ => Err(mlua::Error::runtime(
            "safety.lua must return a table with a function on_tool_use(tool, ctx)",
        )),
    }
}

fn check_presets(lua: &Lua, v: &Value) -> mlua::Result<Table> {
    let Value::Table(t) = v else {
        return Err(mlua::Error::runtime(
            "presets.lua must return a table of presets",
        ));
    };
    for pair in t.pairs::<String, Value>() {
        let (name, p) = pair?;
        let preset: Result<Preset, _> = lua.from_value({
            if let Value::Table(pt) = &p {
                pt.set("name", name.as_str())?;
            }
            p
        });
        let preset = preset.map_err(|e| mlua::Error::runtime(format!("preset '{name}': {e}")))?;
        if ![
            "default",
            "acceptEdits",
            "plan",
            "dontAsk",
            "bypassPermissions",
            "auto",
        ]
        .contains(&preset.permission_mode.as_str())
        {
            return Err(mlua::Error::runtime(format!(
                "preset '{name}': unknown permission_mode '{}'",
                preset.permission_mode
            )));
        }
    }
    Ok(t.clone())
}

/// Validate one script file without running a session: it loads, and returns what
/// its kind must return. The kind comes from the file name (`safety.lua`,
/// `protected_paths.lua`, `presets.lua`, `strategies/NAME.lua`, or any other module).
pub fn check_file(path: &std::path::Path) -> Result<String, String> {
    let code = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let src = Source {
        origin: path.display().to_string(),
        code,
    };
    let started = Instant::now();
    let w = Worker::new(
        Layers::standard(&std::env::current_dir().unwrap_or_default()),
        Duration::from_secs(2),
    )
    .map_err(|e| describe(&e))?;
    install_searcher(&w.lua, &w.layers).map_err(|e| describe(&e))?;
    let value: Value = w
        .lua
        .load(src.code.as_str())
        .set_name(src.chunk_name())
        .call(())
        .map_err(|e| describe(&e))?;
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let in_strategies = path
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|d| d == "strategies");
    let kind = match file.as_str() {
        "safety.lua" => {
            check_safety(&value).map_err(|e| describe(&e))?;
            "safety policy"
        }
        "presets.lua" => {
            check_presets(&w.lua, &value).map_err(|e| describe(&e))?;
            "presets"
        }
        "protected_paths.lua" => {
            let ok = matches!(&value, Value::Table(t) if t.get::<Value>("violation").is_ok_and(|v| v.is_function()));
            if !ok {
                return Err(
                    "protected_paths.lua must return a table with a function violation(tool, cwd)"
                        .into(),
                );
            }
            "protected paths"
        }
        _ if in_strategies => {
            if !value.is_function() {
                return Err(format!("{file} must return a function(task) (a strategy)"));
            }
            "strategy"
        }
        _ => "module",
    };
    Ok(format!(
        "{}: ok ({kind}, loaded in {:.1} ms)",
        path.display(),
        started.elapsed().as_secs_f64() * 1000.0
    ))
}

//! The policy service: the safety policy, the protected-path rules and the presets
//! (`scripts/`, layered by [`Layers`]) as Lua. Sessions ask it before a tool runs
//! and after events; [`PolicyService::reload`] (called by the file watcher) swaps
//! in edited scripts, and a broken edit leaves the last good version in force.
//!
//! The scripts in force are a validated *snapshot* of sources. Lua states are
//! single-threaded, so each thread that asks (the runtime's worker threads, where
//! sessions run) keeps its own state built from the current snapshot and rebuilds
//! it when the snapshot changes: a decision is a plain function call, with no
//! hop to another thread.

use crate::engine::events::EventKind;
use crate::engine::{
    Decision, Guard, Policy, Progress, SessionEvent, SessionOptions, ToolCall, Verdict, Violation,
};
use crate::sandbox::error_text;
use crate::sandbox::limits::call_limited;
use crate::sandbox::limits::load_limited;
use crate::sandbox::scripts::{Layers, Source};
use mlua::{Function, Lua, LuaSerdeExt, MultiValue, Table, Value};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
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
    /// The defaults: the seed's $2.00 and 50 turns, and the engine's turn timeout
    /// (60 minutes, not the seed's 5) per interaction.
    pub const SEED: Limits = Limits {
        max_cost: Some(2.0),
        max_turns: Some(50),
        timeout: Some(crate::engine::config::DEFAULT_TURN_TIMEOUT_SECS as f64),
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

/// The scripts in force: one source per module, known to load.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    generation: u64,
    modules: HashMap<String, Source>,
    /// Plugins (`plugins/NAME/init.lua`), whose `policies` run before safety.lua's.
    plugins: Vec<(String, Source)>,
}

impl Snapshot {
    fn from_layers(layers: &Layers) -> Snapshot {
        let modules = MODULES
            .iter()
            .filter_map(|m| {
                layers
                    .find(&format!("{m}.lua"))
                    .map(|src| (m.to_string(), src))
            })
            .collect();
        Snapshot {
            generation: 0,
            modules,
            plugins: crate::plugins::discover(layers),
        }
    }

    fn origins(&self) -> Vec<String> {
        MODULES
            .iter()
            .filter_map(|m| self.modules.get(*m).map(|s| s.origin.clone()))
            .collect()
    }
}

static NEXT_SERVICE: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's Lua state for each service, by service id.
    static WORKERS: RefCell<HashMap<u64, Worker>> = RefCell::new(HashMap::new());
}

pub struct PolicyService {
    id: u64,
    layers: Layers,
    limit: Duration,
    good: RwLock<Arc<Snapshot>>,
    reloading: Mutex<()>,
    health: RwLock<Health>,
}

/// Whether every layer in force loaded.
#[derive(Debug, Clone, Default)]
struct Health {
    /// `file:line: message` of layer files that never loaded in this process: no
    /// version of them is in force, so guarded work is refused until they load.
    unloaded: Vec<String>,
    /// Errors of a broken edit: the last good version stays in force meanwhile.
    stale: Vec<String>,
}

impl PolicyService {
    /// Load the scripts. A user script that fails to load is reported (in the
    /// returned report); no version of it is in force, so until it loads guarded
    /// work is refused ([`PolicyService::ready`]) and every decision denies, naming
    /// the file and line (fail closed: the user's stricter rules never silently vanish).
    pub fn start(
        layers: Layers,
        limit: Duration,
    ) -> Result<(Arc<PolicyService>, ReloadReport), PolicyError> {
        for u in layers.untrusted() {
            tracing::warn!("{u}");
        }
        let builtin = Snapshot::from_layers(&Layers::builtin_only());
        let (mut snapshot, errors) = settle(
            &layers,
            Snapshot::from_layers(&layers),
            &builtin,
            false,
            limit,
        )
        .map_err(|e| PolicyError::Load(e.join("\n")))?;
        snapshot.generation = 1;
        for e in &errors {
            tracing::error!(
                "policy script not loaded, so guarded work is refused until it loads: {e}"
            );
        }
        let report = ReloadReport {
            generation: 1,
            errors: errors.clone(),
            origins: snapshot.origins(),
        };
        let service = Arc::new(PolicyService {
            id: NEXT_SERVICE.fetch_add(1, Ordering::Relaxed),
            layers,
            limit,
            good: RwLock::new(Arc::new(snapshot)),
            reloading: Mutex::new(()),
            health: RwLock::new(Health {
                unloaded: errors.clone(),
                stale: Vec::new(),
            }),
        });
        Ok((service, report))
    }

    pub fn layers(&self) -> &Layers {
        &self.layers
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.good.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// Run `f` with this thread's Lua state for the current snapshot.
    fn with_worker<T>(&self, f: impl FnOnce(&Worker) -> T) -> Result<T, String> {
        let snap = self.snapshot();
        WORKERS.with(|cell| {
            let mut workers = cell
                .try_borrow_mut()
                .map_err(|_| "the policy was called from inside itself".to_string())?;
            let stale = workers
                .get(&self.id)
                .is_none_or(|w| w.generation != snap.generation);
            if stale {
                let w = Worker::build(&self.layers, &snap, self.limit).map_err(|e| e.join("; "))?;
                workers.insert(self.id, w);
            }
            let w = workers.get(&self.id).ok_or("no policy state")?;
            Ok(f(w))
        })
    }

    fn health(&self) -> Health {
        self.health.read().map(|h| h.clone()).unwrap_or_default()
    }

    /// Whether guarded work may start: an error naming each layer file that does
    /// not load (`file:line: message`) and what to do, when one does not.
    pub fn ready(&self) -> Result<(), PolicyError> {
        let h = self.health();
        if h.unloaded.is_empty() {
            return Ok(());
        }
        Err(PolicyError::Load(format!(
            "a safety policy file in force does not load, so guarded work is refused until it does:\n  {}\nfix it (check with `cms policy check FILE`) or move it away",
            h.unloaded.join("\n  ")
        )))
    }

    /// Errors of a broken edit while its last good version stays in force (empty
    /// when every file in force is the one on disk).
    pub fn stale(&self) -> Vec<String> {
        self.health().stale
    }

    /// Decide a tool call of a guarded session. Fails closed.
    pub fn decide(&self, call: &ToolCall, guard: &Guard) -> Decision {
        let h = self.health();
        if !h.unloaded.is_empty() {
            return fail_closed(&format!(
                "a policy file does not load ({}); fix it, then try again",
                h.unloaded.join("; ")
            ));
        }
        if !h.stale.is_empty() {
            tracing::warn!(
                "a policy file was edited and does not load; its last good version is in force until it is fixed: {}",
                h.stale.join("; ")
            );
        }
        if guard.safety {
            // cms's, Claude Code's and git's own files: whatever the preset or scripts.
            let cwd = std::path::Path::new(&call.cwd);
            if let Some(why) =
                crate::policy::self_protect::violation(&call.tool_name, &call.input, cwd)
            {
                return Decision::Deny {
                    reason: why,
                    interrupt: false,
                    rule: Some("protected_path".into()),
                };
            }
        }
        self.with_worker(|w| w.decide(call, guard))
            .unwrap_or_else(|e| fail_closed(&e))
    }

    /// Look at an event of a guarded session.
    pub fn on_event(&self, event: &SessionEvent, guard: &Guard, progress: &Progress) -> Verdict {
        self.with_worker(|w| w.on_event(event, guard, progress))
            .unwrap_or(Verdict::Continue)
    }

    pub fn preset(&self, name: &str) -> Result<Preset, PolicyError> {
        self.with_worker(|w| w.preset(name))
            .map_err(PolicyError::Load)?
    }

    /// Ask `on_spawn(spec, ctx)` of the safety policy about a new session: None
    /// (no opinion, or no such function), the request as it may start (allowed,
    /// perhaps lowered), or why it is refused. Fails closed.
    pub fn on_spawn(
        &self,
        ask: &crate::policy::spawn_gate::SpawnAsk,
        caller: crate::policy::spawn_gate::Caller,
        parent: Option<&Guard>,
    ) -> Result<Option<crate::policy::spawn_gate::SpawnAsk>, String> {
        self.ready().map_err(|e| e.to_string())?;
        let run = |w: &Worker| -> mlua::Result<Result<Option<_>, String>> {
            let Some(f) = w.safety.get::<Option<Function>>("on_spawn")? else {
                return Ok(Ok(None));
            };
            let who = format!("on_spawn of {}", w.safety_origin);
            let ctx = w.lua.create_table()?;
            ctx.set("caller", w.lua.to_value(&caller)?)?;
            if let Some(p) = parent {
                ctx.set("parent", w.lua.to_value(p)?)?;
            }
            let spec = w.lua.to_value(ask)?;
            let out: MultiValue = call_limited(&w.lua, w.limit, &f, (spec, ctx))?;
            let mut it = out.into_iter();
            Ok(match it.next().unwrap_or(Value::Nil) {
                Value::Nil => Ok(None),
                Value::String(v) if v.as_bytes() == b"allow" => match it.next() {
                    Some(t @ Value::Table(_)) => Ok(Some(w.lua.from_value(t).map_err(|e| {
                        mlua::Error::runtime(format!("{who} returned a spec cms cannot read: {e}"))
                    })?)),
                    _ => Ok(Some(ask.clone())),
                },
                Value::String(v) if v.as_bytes() == b"deny" => {
                    let why = match it.next() {
                        Some(Value::String(r)) => r.to_string_lossy(),
                        _ => "no reason given".into(),
                    };
                    Err(format!("refused by {who}: {why}"))
                }
                other => Err(format!(
                    "{who} returned {}, which cms does not know; only nil, \"allow\" and \"deny\" are answers",
                    show(&other)
                )),
            })
        };
        match self.with_worker(|w| run(w)) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(format!(
                "the safety policy's on_spawn failed, so the session is refused: {}",
                error_text(&e)
            )),
            Err(e) => Err(e),
        }
    }

    /// The entries of `protected_paths.lua` in force (`M.paths`), for the OS layer.
    pub fn protected_entries(&self) -> Vec<String> {
        self.with_worker(|w| {
            let require: Function = w.lua.globals().get("require")?;
            let m: Table = require.call("protected_paths")?;
            m.get::<Vec<String>>("paths")
        })
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default()
    }

    /// The default limits of the safety policy.
    pub fn limits(&self) -> Limits {
        self.with_worker(|w| w.limits).unwrap_or(Limits::SEED)
    }

    /// Reload every script; report what failed (those keep their last good version).
    pub fn reload(&self) -> ReloadReport {
        let _one_at_a_time = self.reloading.lock();
        let current = self.snapshot();
        let settled = settle(
            &self.layers,
            Snapshot::from_layers(&self.layers),
            &current,
            true,
            self.limit,
        );
        // The current snapshot is known good, so settling always yields one.
        let (mut next, errors) = settled.unwrap_or_else(|e| ((*current).clone(), e));
        let changed = next.modules != current.modules || next.plugins != current.plugins;
        next.generation = if changed {
            current.generation + 1
        } else {
            current.generation
        };
        for e in &errors {
            tracing::error!("policy script not reloaded (the last good version stays): {e}");
        }
        let report = ReloadReport {
            generation: next.generation,
            errors: errors.clone(),
            origins: next.origins(),
        };
        if changed {
            if let Ok(mut g) = self.good.write() {
                *g = Arc::new(next);
            }
        }
        if let Ok(mut h) = self.health.write() {
            if errors.is_empty() {
                *h = Health::default();
            } else if !h.unloaded.is_empty() {
                h.unloaded = errors.clone();
            } else {
                h.stale = errors.clone();
            }
        }
        report
    }
}

/// Load `candidate`; if it fails, put back the `fallback` source of each module
/// whose file the errors name, and try again; failing that, use `fallback` (checked
/// unless it is known to be good). Returns what to use and the candidate's errors.
fn settle(
    layers: &Layers,
    candidate: Snapshot,
    fallback: &Snapshot,
    fallback_is_good: bool,
    limit: Duration,
) -> Result<(Snapshot, Vec<String>), Vec<String>> {
    let errors = match validate(layers, &candidate, limit) {
        Ok(()) => return Ok((candidate, Vec::new())),
        Err(e) => e,
    };
    let mut repaired = candidate.clone();
    for m in MODULES {
        if let Some(src) = candidate.modules.get(*m) {
            if errors.iter().any(|e| e.contains(&src.origin)) {
                match fallback.modules.get(*m) {
                    Some(old) => repaired.modules.insert(m.to_string(), old.clone()),
                    None => repaired.modules.remove(*m),
                };
            }
        }
    }
    if validate(layers, &repaired, limit).is_ok() {
        return Ok((repaired, errors));
    }
    if !fallback_is_good {
        validate(layers, fallback, limit)?;
    }
    Ok((fallback.clone(), errors))
}

fn validate(layers: &Layers, snap: &Snapshot, limit: Duration) -> Result<(), Vec<String>> {
    Worker::build(layers, snap, limit).map(|_| ())
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
            os_layer: guard.safety && crate::engine::os_sandbox::available().is_some(),
            guard,
        }))
    }
}

/// Set to `1` to let guarded sessions run Bash commands the shell reader cannot
/// prove harmless where there is no OS sandbox (bubblewrap) to hold protected paths.
pub const UNSANDBOXED_BASH_ENV: &str = "CMS_ALLOW_UNSANDBOXED_BASH";

/// One guarded session's policy: its guard, answered by the service.
pub struct GuardedSession {
    service: Arc<PolicyService>,
    guard: Guard,
    /// Whether its shell commands run in the OS sandbox.
    os_layer: bool,
}

impl Policy for GuardedSession {
    fn wants_tool_prompts(&self) -> bool {
        true
    }

    fn decide(&self, call: &ToolCall) -> Decision {
        let decision = self.service.decide(call, &self.guard);
        if self.guard.safety
            && !self.os_layer
            && call.tool_name == "Bash"
            && matches!(decision, Decision::Allow | Decision::AllowWith(_))
            && std::env::var(UNSANDBOXED_BASH_ENV).as_deref() != Ok("1")
        {
            let command = call.input["command"].as_str().unwrap_or_default();
            if !crate::policy::self_protect::harmless(command) {
                return Decision::Deny {
                    reason: format!(
                        "Bash command refused: there is no OS sandbox here (bubblewrap is missing or cannot make mounts), so only commands that provably only read may run; install bubblewrap, or let the user set {UNSANDBOXED_BASH_ENV}=1 to accept the risk"
                    ),
                    interrupt: false,
                    rule: Some("no_os_sandbox".into()),
                };
            }
        }
        decision
    }

    fn launch(
        &self,
        home: &std::path::Path,
        cwd: &std::path::Path,
        args: &mut crate::wire::ClaudeArgs,
        env: &mut Vec<(String, String)>,
    ) {
        let sandbox = self
            .os_layer
            .then(|| crate::engine::os_sandbox::SandboxSpec {
                work_dir: cwd.to_path_buf(),
                entries: self.service.protected_entries(),
                roots: crate::policy::isolation::roots(env),
                script_dir: home.join("sandbox"),
            });
        crate::policy::isolation::apply(&self.guard, sandbox.as_ref(), args, env);
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
// One Lua state with the scripts of a snapshot loaded.

struct Worker {
    lua: Lua,
    limit: Duration,
    safety: Table,
    presets: Table,
    limits: Limits,
    /// `(name, file, on_tool_use)` of each plugin policy, asked first.
    plugin_policies: Vec<(String, String, Function)>,
    /// The file `safety.lua` came from (named when it answers nonsense).
    safety_origin: String,
    generation: u64,
}

impl Worker {
    /// A Lua state with the snapshot's scripts loaded, or the `file:line` errors.
    fn build(layers: &Layers, snap: &Snapshot, limit: Duration) -> Result<Worker, Vec<String>> {
        let one = |e: mlua::Error| vec![error_text(&e)];
        let lua = base_lua().map_err(one)?;
        // Decisions make many short-lived tables: the generational collector keeps
        // their cost (and the p99) low.
        lua.gc_gen(0, 0);
        install_searcher(&lua, layers, &snap.modules).map_err(one)?;
        let require = |name: &str| -> mlua::Result<Value> {
            let require: Function = lua.globals().get("require")?;
            load_limited(&lua, || require.call::<Value>(name))
        };
        let mut errors = Vec::new();
        let safety = require("safety")
            .and_then(|v| check_safety(&v))
            .map_err(|e| errors.push(error_text(&e)))
            .ok();
        let presets = require("presets")
            .and_then(|v| check_presets(&lua, &v))
            .map_err(|e| errors.push(error_text(&e)))
            .ok();
        let (Some(safety), Some(presets)) = (safety, presets) else {
            return Err(errors);
        };
        let plugin_policies = crate::plugins::policies(&lua, &snap.plugins);
        let safety_origin = snap
            .modules
            .get("safety")
            .map(|s| s.origin.clone())
            .unwrap_or_else(|| "builtin:safety.lua".into());
        let mut w = Worker {
            safety_origin,
            lua,
            limit,
            safety,
            presets,
            limits: Limits::SEED,
            plugin_policies,
            generation: snap.generation,
        };
        w.limits = w.read_limits();
        Ok(w)
    }

    /// `M.limits` of the safety policy; a limit it leaves out keeps the seed's
    /// default, so no limit is dropped by omission.
    fn read_limits(&self) -> Limits {
        let set: Limits = self
            .safety
            .get::<Value>("limits")
            .ok()
            .and_then(|v| self.lua.from_value(v).ok())
            .unwrap_or_default();
        Limits {
            max_cost: set.max_cost.or(Limits::SEED.max_cost),
            max_turns: set.max_turns.or(Limits::SEED.max_turns),
            timeout: set.timeout.or(Limits::SEED.timeout),
        }
    }

    fn preset_table(&self, name: &str) -> Option<Table> {
        self.presets.get::<Option<Table>>(name).ok().flatten()
    }

    fn preset(&self, name: &str) -> Result<Preset, PolicyError> {
        let Some(t) = self.preset_table(name) else {
            let mut known: Vec<String> = self
                .presets
                .pairs::<String, Value>()
                .filter_map(|kv| kv.ok().map(|(k, _)| k))
                .collect();
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
        let defaults = self.limits;
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
        let safety = &self.safety;
        let run = || -> mlua::Result<Decision> {
            let f: Function = safety.get("on_tool_use")?;
            let tool = self.lua.create_table()?;
            tool.set("name", call.tool_name.as_str())?;
            tool.set("input", self.lua.to_value(&call.input)?)?;
            let ctx = self.ctx(&call.session, &call.cwd, guard, &call.progress)?;
            if guard.safety {
                for (name, origin, policy) in &self.plugin_policies {
                    let out: MultiValue =
                        call_limited(&self.lua, self.limit, policy, (tool.clone(), ctx.clone()))
                            .map_err(|e| {
                                mlua::Error::runtime(format!(
                                    "plugin policy '{name}' ({origin}): {}",
                                    error_text(&e)
                                ))
                            })?;
                    let who = format!("plugin policy '{name}' ({origin})");
                    match verdict(&self.lua, out, &who, call, Some(name))? {
                        // No opinion, or no objection: the next policy decides.
                        None | Some(Decision::Allow) | Some(Decision::AllowWith(_)) => {}
                        Some(deny) => return Ok(deny),
                    }
                }
            }
            let out: MultiValue = call_limited(&self.lua, self.limit, &f, (tool, ctx))?;
            let who = format!("on_tool_use of {}", self.safety_origin);
            // The safety policy has the last word: no opinion is not an answer.
            verdict(&self.lua, out, &who, call, None)?.ok_or_else(|| {
                mlua::Error::runtime(format!(
                    "{who} returned nil; it must return \"allow\" or \"deny\""
                ))
            })
        };
        run().unwrap_or_else(|e| fail_closed(&error_text(&e)))
    }

    fn on_event(&self, event: &SessionEvent, guard: &Guard, progress: &Progress) -> Verdict {
        let safety = &self.safety;
        let run = || -> mlua::Result<Verdict> {
            let Some(f) = safety.get::<Option<Function>>("on_event")? else {
                return Ok(Verdict::Continue);
            };
            let ev = crate::sandbox::convert::to_lua(&self.lua, event)?;
            let ctx = self.ctx(&event.session, "", guard, progress)?;
            let out: MultiValue = call_limited(&self.lua, self.limit, &f, (ev, ctx))?;
            let mut it = out.into_iter();
            let verb = match it.next() {
                None | Some(Value::Nil) => None,
                Some(Value::String(s)) => Some(s.to_string_lossy()),
                Some(other) => Some(show(&other)),
            };
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
                Some(other) => {
                    return Err(mlua::Error::runtime(format!(
                        "on_event of {} returned \"{other}\"; expected nil, \"warn\", \"stop\" or \"kill\"",
                        self.safety_origin
                    )))
                }
            })
        };
        // Fail closed: a limit check that cannot run stops the session.
        run().unwrap_or_else(|e| {
            Verdict::Stop(Violation {
                rule: "policy_error".into(),
                message: format!(
                    "the safety policy's on_event failed, so the session is stopped: {}",
                    error_text(&e)
                ),
            })
        })
    }
}

/// Read a policy's answer: nil is no opinion (`None`); `"allow"` [, input] and
/// `"deny"`, reason [, rule] are answers; anything else (`"Deny"`, `"bogus"`, a
/// number) is an error naming `who` and the value, so the call is denied.
fn verdict(
    lua: &Lua,
    out: MultiValue,
    who: &str,
    call: &ToolCall,
    default_rule: Option<&String>,
) -> mlua::Result<Option<Decision>> {
    let mut it = out.into_iter();
    let verb = it.next().unwrap_or(Value::Nil);
    let text = |v: Option<Value>| match v {
        Some(Value::String(s)) => Some(s.to_string_lossy()),
        _ => None,
    };
    match &verb {
        Value::Nil => Ok(None),
        Value::String(s) if s.as_bytes() == b"allow" => match it.next() {
            Some(v @ Value::Table(_)) => Ok(Some(Decision::AllowWith(lua.from_value(v)?))),
            None | Some(Value::Nil) => Ok(Some(Decision::Allow)),
            Some(other) => Err(mlua::Error::runtime(format!(
                "{who} returned \"allow\" with {} as the changed input; it must be a table",
                show(&other)
            ))),
        },
        Value::String(s) if s.as_bytes() == b"deny" => {
            let reason = text(it.next()).unwrap_or_else(|| match default_rule {
                Some(name) => format!("denied by the {name} policy"),
                None => format!("denied by the cms safety policy ({})", call.tool_name),
            });
            let rule = text(it.next()).or_else(|| default_rule.cloned());
            Ok(Some(Decision::Deny {
                reason,
                interrupt: false,
                rule,
            }))
        }
        other => Err(mlua::Error::runtime(format!(
            "{who} returned {}, which cms does not know; only nil, \"allow\" and \"deny\" are answers",
            show(other)
        ))),
    }
}

/// A Lua value as a person reads it in a message.
fn show(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{:?}", s.to_string_lossy()),
        other => format!("a {}", other.type_name()),
    }
}

/// A sandboxed Lua state with the pure parts of `cms` (`cms.path`, `cms.shell`,
/// `cms.json`, `cms.log`): what policies are written with.
fn base_lua() -> mlua::Result<Lua> {
    // Policies read files (through `cms.path`, `io.open(path)`); they never write one.
    crate::sandbox::new_state(crate::sandbox::StateOptions {
        allow_unsafe: false,
        memory_limit: 64 * 1024 * 1024,
        confine_files: true,
    })
}

/// Make `require` find cms modules: the snapshot's sources first (the versions in
/// force), then the layers (a helper module of yours in `.cms/`).
fn install_searcher(
    lua: &Lua,
    layers: &Layers,
    modules: &HashMap<String, Source>,
) -> mlua::Result<()> {
    let package: Table = lua.globals().get("package")?;
    let searchers: Table = package.get("searchers")?;
    let layers = layers.clone();
    let modules = modules.clone();
    let searcher = lua.create_function(move |lua, name: String| {
        let rel = format!("{}.lua", name.replace('.', "/"));
        match modules.get(&name).cloned().or_else(|| layers.find(&rel)) {
            Some(src) => {
                let f = lua
                    .load(src.code.as_str())
                    .set_name(src.chunk_name())
                    .set_mode(mlua::ChunkMode::Text)
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
    Ok(())
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
    let layers = Layers::standard(&std::env::current_dir().unwrap_or_default());
    let lua = base_lua().map_err(|e| error_text(&e))?;
    install_searcher(&lua, &layers, &HashMap::new()).map_err(|e| error_text(&e))?;
    let value: Value = load_limited(&lua, || {
        lua.load(src.code.as_str())
            .set_name(src.chunk_name())
            .set_mode(mlua::ChunkMode::Text)
            .call(())
    })
    .map_err(|e| error_text(&e))?;
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
            check_safety(&value).map_err(|e| error_text(&e))?;
            "safety policy"
        }
        "presets.lua" => {
            check_presets(&lua, &value).map_err(|e| error_text(&e))?;
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

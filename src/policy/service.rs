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

use super::script_state::{show, ScriptState};
use super::snapshot::{fail_closed, Limits, PolicyError, Preset, ReloadReport, Snapshot, MODULES};
use crate::engine::{Decision, Guard, Progress, SessionEvent, ToolCall, Verdict};
use crate::sandbox::error_text;
use crate::sandbox::limits::call_limited;
use crate::sandbox::scripts::Layers;
use mlua::{Function, LuaSerdeExt, MultiValue, Table, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub(super) static NEXT_SERVICE: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's Lua state for each service, by service id.
    static STATES: RefCell<HashMap<u64, ScriptState>> = RefCell::new(HashMap::new());
}

pub struct PolicyService {
    pub(super) id: u64,
    pub(super) layers: Layers,
    pub(super) limit: Duration,
    pub(super) good: RwLock<Arc<Snapshot>>,
    pub(super) reloading: Mutex<()>,
    pub(super) health: RwLock<Health>,
}

/// Whether every layer in force loaded.
#[derive(Debug, Clone, Default)]
pub(super) struct Health {
    /// `file:line: message` of layer files that never loaded in this process: no
    /// version of them is in force, so guarded work is refused until they load.
    pub(super) unloaded: Vec<String>,
    /// Errors of a broken edit: the last good version stays in force meanwhile.
    pub(super) stale: Vec<String>,
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

    pub(super) fn snapshot(&self) -> Arc<Snapshot> {
        self.good.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// Run `f` with this thread's Lua state for the current snapshot.
    pub(super) fn with_state<T>(&self, f: impl FnOnce(&ScriptState) -> T) -> Result<T, String> {
        let snap = self.snapshot();
        STATES.with(|cell| {
            let mut workers = cell
                .try_borrow_mut()
                .map_err(|_| "the policy was called from inside itself".to_string())?;
            let stale = workers
                .get(&self.id)
                .is_none_or(|w| w.generation != snap.generation);
            if stale {
                let w = ScriptState::build(&self.layers, &snap, self.limit)
                    .map_err(|e| e.join("; "))?;
                workers.insert(self.id, w);
            }
            let w = workers.get(&self.id).ok_or("no policy state")?;
            Ok(f(w))
        })
    }

    pub(super) fn health(&self) -> Health {
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
        self.with_state(|w| w.decide(call, guard))
            .unwrap_or_else(|e| fail_closed(&e))
    }

    /// Look at an event of a guarded session.
    pub fn on_event(&self, event: &SessionEvent, guard: &Guard, progress: &Progress) -> Verdict {
        self.with_state(|w| w.on_event(event, guard, progress))
            .unwrap_or(Verdict::Continue)
    }

    pub fn preset(&self, name: &str) -> Result<Preset, PolicyError> {
        self.with_state(|w| w.preset(name))
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
        let run = |w: &ScriptState| -> mlua::Result<Result<Option<_>, String>> {
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
        match self.with_state(|w| run(w)) {
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
        self.with_state(|w| {
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
        self.with_state(|w| w.limits).unwrap_or(Limits::SEED)
    }

    /// The host's caps and budgets (`M.host` of the safety policy), as the engine
    /// takes them.
    pub fn capacity(&self) -> crate::engine::Capacity {
        self.with_state(|w| w.host).unwrap_or_default().capacity()
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
pub(super) fn settle(
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

pub(super) fn validate(
    layers: &Layers,
    snap: &Snapshot,
    limit: Duration,
) -> Result<(), Vec<String>> {
    ScriptState::build(layers, snap, limit).map(|_| ())
}

impl std::fmt::Debug for PolicyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyService")
            .field("layers", &self.layers)
            .finish()
    }
}

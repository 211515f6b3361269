//! Safety in Lua: the policy service that decides guarded sessions' tool calls and
//! watches their limits, and what surrounds it.
//!
//! - [`service`]: the scripts in force (a validated snapshot), reloads, presets, limits;
//! - `script_state`: the per-thread Lua state that answers, under a time limit;
//! - [`door`]: the engine's [`crate::engine::Policy`] for guarded sessions (fails closed);
//! - [`projects`]: the host's door, one policy service per project;
//! - [`self_protect`]: what no guarded session may change, checked before any Lua;
//! - [`isolation`]: Claude Code's own settings, hooks and MCP servers kept out of guarded sessions;
//! - [`spawn_gate`]: the MCP ceiling, and the floor a guarded parent passes on;
//! - [`watch`]: hot reload when a script changes.

pub mod door;
pub mod isolation;
pub mod projects;
mod script_state;
pub mod self_protect;
pub mod service;
mod snapshot;
pub mod spawn_gate;
pub mod watch;

pub use crate::sandbox::Layers;
pub use door::{GuardedSession, LuaPolicy};
pub use script_state::{check_file, ScriptKind};
pub use service::PolicyService;
pub use snapshot::{HostCaps, Limits, PolicyError, Preset, ReloadReport};

use crate::engine::Manager;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Longest a policy hook may run before the call it decides is denied.
pub const DECISION_LIMIT: Duration = Duration::from_millis(250);

/// Told about every reload of the scripts.
type ReloadListener = Box<dyn Fn(&ReloadReport) + Send>;

/// A running policy service, watched for edits while this lives.
pub struct Attached {
    pub service: Arc<PolicyService>,
    pub watcher: Option<watch::ScriptWatcher>,
    listeners: Arc<std::sync::Mutex<Vec<ReloadListener>>>,
}

impl Attached {
    /// Call `f` after each reload (the MCP server tells its clients that plugin
    /// tools changed).
    pub fn on_reload(&self, f: impl Fn(&ReloadReport) + Send + 'static) {
        if let Ok(mut l) = self.listeners.lock() {
            l.push(Box::new(f));
        }
    }
}

/// Load the layered scripts for a host working in `cwd`, install them as the
/// manager's policy, and reload them when their files change.
pub fn attach(manager: &Manager, cwd: &Path) -> Result<Attached, PolicyError> {
    attach_layers(manager, Layers::standard(cwd))
}

/// [`attach`] with the script layers given (tests, hosts with their own folders).
pub fn attach_layers(manager: &Manager, layers: Layers) -> Result<Attached, PolicyError> {
    let attached = load_layers(layers)?;
    install(manager, &attached);
    Ok(attached)
}

/// The session host's policy: `attached` (loaded for the host's folder `dir`) for
/// sessions working there, and each other project's own scripts for its sessions.
/// The caps and budgets of `M.host` come from `attached`, now and after each reload.
pub fn install_per_project(manager: &Manager, dir: &Path, attached: Attached) {
    install_capacity(manager, &attached);
    manager.set_policy(Arc::new(projects::ProjectPolicies::new(dir, attached)));
}

/// Make `attached` the manager's policy: its guarded sessions answer to it, and the
/// caps and budgets of `M.host` hold for all its sessions, now and after each reload.
pub fn install(manager: &Manager, attached: &Attached) {
    manager.set_policy(Arc::new(LuaPolicy(attached.service.clone())));
    install_capacity(manager, attached);
}

/// The caps and budgets of `attached`'s `M.host` on the manager, again after each reload.
fn install_capacity(manager: &Manager, attached: &Attached) {
    manager.set_capacity(attached.service.capacity());
    let set = manager.capacity_setter();
    let service = attached.service.clone();
    attached.on_reload(move |_| set(service.capacity()));
}

/// Load the layered scripts for work in `cwd` and reload them when their files
/// change, without installing them anywhere (a client of the host reads presets and
/// strategies from them; the host enforces its own).
pub fn load(cwd: &Path) -> Result<Attached, PolicyError> {
    load_layers(Layers::standard(cwd))
}

/// [`load`] with the script layers given.
pub fn load_layers(layers: Layers) -> Result<Attached, PolicyError> {
    let (service, _) = PolicyService::start(layers, DECISION_LIMIT)?;
    for e in service.stale() {
        tracing::warn!("policy file not in force: {e}");
    }
    let listeners: Arc<std::sync::Mutex<Vec<ReloadListener>>> = Arc::default();
    let told = listeners.clone();
    let on_reload = move |report: &ReloadReport| {
        if let Ok(l) = told.lock() {
            l.iter().for_each(|f| f(report));
        }
    };
    let watcher = match watch::watch(service.clone(), on_reload) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("script changes will not be picked up (cannot watch: {e})");
            None
        }
    };
    Ok(Attached {
        service,
        watcher,
        listeners,
    })
}

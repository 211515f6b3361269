//! What the policy scripts in force are made of: the validated snapshot of their
//! sources, the presets and limits read from them, the report of a reload, and the
//! decision every error turns into (deny: the policy fails closed).

use crate::engine::Decision;
use crate::sandbox::scripts::{Layers, Source};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The Lua modules a reload refreshes.
pub(super) const MODULES: &[&str] = &["safety", "protected_paths", "presets"];

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

/// The host's caps and budgets of `safety.lua` (`M.host`): across every session of
/// the manager the policy is installed on. `None`: no limit (`max_live`: sized from
/// memory, see [`crate::engine::capacity::default_max_live`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostCaps {
    pub max_live: Option<u32>,
    pub max_turns: Option<u32>,
    pub daily_usd: Option<f64>,
    pub total_usd: Option<f64>,
}

impl HostCaps {
    /// The keys of `M.host`.
    pub const KEYS: [&'static str; 4] = ["max_live", "max_turns", "daily_usd", "total_usd"];

    /// The engine's capacity: `max_live` left out is sized from memory.
    pub fn capacity(&self) -> crate::engine::Capacity {
        crate::engine::Capacity {
            max_live: Some(
                self.max_live
                    .map_or_else(crate::engine::capacity::default_max_live, |n| n as usize),
            ),
            max_turns: self.max_turns.map(|n| n as usize),
            daily_usd: self.daily_usd,
            total_usd: self.total_usd,
        }
    }
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
pub(super) struct Snapshot {
    pub(super) generation: u64,
    pub(super) modules: HashMap<String, Source>,
    /// Plugins (`plugins/NAME/init.lua`), whose `policies` run before safety.lua's.
    pub(super) plugins: Vec<(String, Source)>,
}

impl Snapshot {
    pub(super) fn from_layers(layers: &Layers) -> Snapshot {
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

    pub(super) fn origins(&self) -> Vec<String> {
        MODULES
            .iter()
            .filter_map(|m| self.modules.get(*m).map(|s| s.origin.clone()))
            .collect()
    }
}

/// The decision when the policy itself failed: deny, saying why.
pub(super) fn fail_closed(why: &str) -> Decision {
    Decision::Deny {
        reason: format!("cms safety policy error, so the call is denied: {why}"),
        interrupt: false,
        rule: Some("policy_error".into()),
    }
}

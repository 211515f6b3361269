//! What an MCP caller may start and steer: the spawn gate of [`crate::policy`]
//! applied to sessions and delegations asked for over MCP, and the rule that a
//! guarded caller steers only sessions at least as guarded.

use super::server::CmsServer;
use crate::delegate::DelegateOptions;
use crate::engine::SpawnRequest;
use crate::policy::spawn_gate::{self, Caller, SpawnAsk};

impl CmsServer {
    pub(super) fn caller(&self) -> Caller {
        if self.parent.is_some() {
            Caller::Session
        } else {
            Caller::Mcp
        }
    }

    /// A session asked for over MCP: guarded (or refused) as the spawn gate says.
    pub(super) fn gate_session(&self, mut req: SpawnRequest) -> Result<SpawnRequest, String> {
        spawn_gate::admit_session(
            self.inner.policy.as_deref(),
            &mut req,
            self.caller(),
            self.parent.as_ref(),
        )?;
        Ok(req)
    }

    /// Inside a guarded session, only sessions at least as guarded may be steered.
    pub(super) fn gate_steer(&self, target: &str) -> Result<(), String> {
        let Some(parent) = self.parent.as_ref() else {
            return Ok(());
        };
        let rec = self
            .inner
            .manager
            .status(target)
            .map_err(|e| e.to_string())?;
        match spawn_gate::may_steer(rec.options.guard.as_ref(), parent) {
            None => Ok(()),
            Some(why) => Err(format!("cms refused to steer '{target}': {why}")),
        }
    }

    /// A delegation asked for over MCP: within the ceiling and the parent's floor.
    pub(super) fn gate_delegate(
        &self,
        mut opts: DelegateOptions,
    ) -> Result<DelegateOptions, String> {
        let ask = SpawnAsk {
            name: opts.name.clone(),
            kind: "delegate".into(),
            permission_mode: None,
            allowed_tools: Vec::new(),
            preset: Some(opts.preset.clone().unwrap_or_else(|| "edit".into())),
            safety: opts.safety,
            ..SpawnAsk::default()
        };
        let ask = spawn_gate::decide(
            self.inner.policy.as_deref(),
            ask,
            self.caller(),
            self.parent.as_ref(),
        )
        .map_err(|e| format!("cms refused to delegate '{}': {e}", opts.name))?;
        opts.preset = ask.preset;
        opts.safety = ask.safety;
        Ok(opts)
    }
}

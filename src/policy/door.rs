//! The engine's door to the policy: [`LuaPolicy`], installed on the manager, puts
//! guarded sessions behind the Lua safety net ([`GuardedSession`]); every error on
//! the way fails closed.

use super::service::PolicyService;
use crate::engine::events::EventKind;
use crate::engine::{
    Decision, Guard, Policy, Progress, SessionEvent, SessionOptions, ToolCall, Verdict,
};
use std::sync::Arc;

/// The policy to install on a [`crate::engine::Manager`]: sessions with a [`Guard`]
/// get the Lua safety net; others are left to the CLI's permission mode.
pub struct LuaPolicy(pub Arc<PolicyService>);

impl Policy for LuaPolicy {
    fn decide(&self, _call: &ToolCall) -> Decision {
        Decision::Allow
    }

    fn session_policy(&self, _name: &str, options: &SessionOptions) -> Option<Arc<dyn Policy>> {
        let guard = options.guard.clone()?;
        let mut session = GuardedSession::new(self.0.clone(), guard);
        // The OS sandbox is this machine's: a session on another host runs without it,
        // so its Bash commands are judged as where there is none.
        if options.on.is_some() {
            session.os_layer = false;
        }
        Some(Arc::new(session))
    }
}

/// The file tools and the input fields naming the path they change (as
/// `protected_paths.lua`'s `M.file_tools`).
const FILE_TOOLS: &[(&str, &str)] = &[
    ("Write", "file_path"),
    ("Edit", "file_path"),
    ("MultiEdit", "file_path"),
    ("NotebookEdit", "notebook_path"),
];

/// For a session on `host`: a file tool's path that this machine cannot resolve
/// there (a symlink on the way, a folder it cannot stat) is judged protected, since
/// where it really points is unknown.
fn unresolvable_on_host(call: &ToolCall, host: &str) -> Option<Decision> {
    let field = FILE_TOOLS
        .iter()
        .find(|(t, _)| *t == call.tool_name)
        .map(|(_, f)| *f)?;
    let mut paths: Vec<&str> = call.input[field].as_str().into_iter().collect();
    if let Some(edits) = call.input["edits"].as_array() {
        paths.extend(edits.iter().filter_map(|e| e["file_path"].as_str()));
    }
    let cwd = std::path::Path::new(&call.cwd);
    paths.into_iter().find_map(|p| {
        crate::sandbox::paths::plain_on_host(p, cwd)
            .err()
            .map(|why| Decision::Deny {
                reason: format!(
                    "{p} is treated as protected: the session runs on host '{host}' and cms cannot tell where it points there ({why}); {} may not change it",
                    call.tool_name
                ),
                interrupt: false,
                rule: Some("protected_path".into()),
            })
    })
}

/// Set to `1` to let guarded sessions run Bash commands the shell reader cannot
/// prove harmless where there is no OS sandbox (bubblewrap) to hold protected paths.
pub const UNSANDBOXED_BASH_ENV: &str = "CMS_ALLOW_UNSANDBOXED_BASH";

/// One guarded session's policy: its guard, answered by the service.
pub struct GuardedSession {
    pub(super) service: Arc<PolicyService>,
    pub(super) guard: Guard,
    /// Whether its shell commands run in the OS sandbox.
    pub(super) os_layer: bool,
}

impl GuardedSession {
    /// `guard` answered by `service`; its shell commands run in the OS sandbox when
    /// the safety net is on and one is available.
    pub fn new(service: Arc<PolicyService>, guard: Guard) -> GuardedSession {
        GuardedSession {
            service,
            os_layer: guard.safety && crate::engine::os_sandbox::available().is_some(),
            guard,
        }
    }
}

impl Policy for GuardedSession {
    fn wants_tool_prompts(&self) -> bool {
        true
    }

    fn decide(&self, call: &ToolCall) -> Decision {
        let decision = self.service.decide(call, &self.guard);
        if let (Some(host), true) = (&call.host, self.guard.safety) {
            if matches!(decision, Decision::Allow | Decision::AllowWith(_)) {
                if let Some(deny) = unresolvable_on_host(call, host) {
                    return deny;
                }
            }
        }
        if self.guard.safety
            && !self.os_layer
            && call.tool_name == "Bash"
            && matches!(decision, Decision::Allow | Decision::AllowWith(_))
            && std::env::var(UNSANDBOXED_BASH_ENV).as_deref() != Ok("1")
        {
            let command = call.input["command"].as_str().unwrap_or_default();
            if !crate::policy::self_protect::harmless(command) {
                let reason = match &call.host {
                    Some(host) => format!(
                        "Bash command refused: the session runs on host '{host}', where cms's OS sandbox does not reach, so only commands that provably only read may run; let the user set {UNSANDBOXED_BASH_ENV}=1 to accept the risk"
                    ),
                    None => format!(
                        "Bash command refused: there is no OS sandbox here (bubblewrap is missing or cannot make mounts), so only commands that provably only read may run; install bubblewrap, or let the user set {UNSANDBOXED_BASH_ENV}=1 to accept the risk"
                    ),
                };
                return Decision::Deny {
                    reason,
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

//! The session host's policy: one policy service per project, so a guarded session
//! answers to the scripts of the folder it works in (the user's layer and that
//! folder's trusted `.cms/`), whichever folder the host was started from.
//!
//! In process, a command loads the scripts of the folder it runs in; the host serves
//! every folder at once, so it loads each project's scripts the first time a guarded
//! session works there, watches them for edits, and keeps them. A project whose
//! scripts do not load gets a policy that denies every tool call (fails closed).

use super::door::GuardedSession;
use super::{load, Attached};
use crate::engine::{Decision, Policy, SessionOptions, ToolCall};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Per-project policy services, made on first use.
pub struct ProjectPolicies {
    /// Where a session with no work dir works (the host's folder).
    default_dir: PathBuf,
    projects: Mutex<HashMap<PathBuf, Arc<Attached>>>,
}

impl ProjectPolicies {
    /// Start with the scripts already loaded for `dir` (the host's folder).
    pub fn new(dir: &Path, attached: Attached) -> ProjectPolicies {
        let mut projects = HashMap::new();
        projects.insert(dir.to_path_buf(), Arc::new(attached));
        ProjectPolicies {
            default_dir: dir.to_path_buf(),
            projects: Mutex::new(projects),
        }
    }

    /// The policy service of the project at `dir`, loaded (and watched) on first use.
    fn project(&self, dir: &Path) -> Result<Arc<Attached>, String> {
        let mut projects = self.projects.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = projects.get(dir) {
            return Ok(a.clone());
        }
        let attached = Arc::new(load(dir).map_err(|e| e.to_string())?);
        tracing::info!("loaded the safety policy of {}", dir.display());
        projects.insert(dir.to_path_buf(), attached.clone());
        Ok(attached)
    }

    /// How many projects have their policy loaded.
    pub fn loaded(&self) -> usize {
        self.projects.lock().map(|p| p.len()).unwrap_or(0)
    }
}

impl Policy for ProjectPolicies {
    fn decide(&self, _call: &ToolCall) -> Decision {
        Decision::Allow
    }

    fn session_policy(&self, _name: &str, options: &SessionOptions) -> Option<Arc<dyn Policy>> {
        let guard = options.guard.clone()?;
        let dir = options.work_dir.as_deref().unwrap_or(&self.default_dir);
        match self.project(dir) {
            Ok(attached) => Some(Arc::new(GuardedSession::new(
                attached.service.clone(),
                guard,
            ))),
            Err(e) => Some(Arc::new(Refuse(format!(
                "the safety policy of {} does not load ({e}); fix it (`cms policy check`) and \
                 resume the session",
                dir.display()
            )))),
        }
    }
}

/// A guarded session whose policy cannot load: every tool call is denied.
struct Refuse(String);

impl Policy for Refuse {
    fn wants_tool_prompts(&self) -> bool {
        true
    }

    fn decide(&self, _call: &ToolCall) -> Decision {
        Decision::Deny {
            reason: self.0.clone(),
            interrupt: false,
            rule: Some("policy_error".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Guard;

    #[test]
    fn each_project_gets_its_own_service_and_a_refusal_denies_every_call() {
        let host_dir = tempfile::tempdir().unwrap();
        let broken = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(broken.path().join(".cms")).unwrap();
        let base = load(host_dir.path()).expect("the built-in scripts load");
        let projects = ProjectPolicies::new(host_dir.path(), base);
        let guarded = |dir: &Path| SessionOptions {
            work_dir: Some(dir.to_path_buf()),
            guard: Some(Guard {
                safety: true,
                ..Guard::default()
            }),
            ..SessionOptions::default()
        };
        // An unguarded session is left to the CLI's permission mode.
        assert!(projects
            .session_policy("u", &SessionOptions::default())
            .is_none());
        let p = projects
            .session_policy("a", &guarded(host_dir.path()))
            .expect("guarded");
        let call = ToolCall::new(
            "a",
            "Read",
            serde_json::json!({"file_path": "x"}),
            host_dir.path(),
        );
        assert_eq!(
            p.decide(&call),
            Decision::Allow,
            "the built-in policy reads"
        );
        // An untrusted project's scripts are not read: its policy is the built-in one.
        let other = projects
            .session_policy("b", &guarded(broken.path()))
            .expect("guarded");
        assert_eq!(projects.loaded(), 2, "one service per project");
        let call = ToolCall::new(
            "b",
            "Read",
            serde_json::json!({"file_path": "x"}),
            broken.path(),
        );
        assert_eq!(other.decide(&call), Decision::Allow);
        let refuse = Refuse("no".into());
        assert!(matches!(refuse.decide(&call), Decision::Deny { .. }));
    }
}

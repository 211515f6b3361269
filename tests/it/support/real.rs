//! The end-to-end tests' setting: the engine on the real Claude Code CLI, which runs
//! offline against a [`FakeApi`], in a temporary folder of its own.

use super::fake_api::FakeApi;
use cms::engine::{EngineConfig, Manager};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub struct RealEnv {
    /// Holds `project/` (the work dir), `home/` (the CLI's HOME), `cms-home/`.
    pub dir: tempfile::TempDir,
    pub work: PathBuf,
    pub home: PathBuf,
    pub api: FakeApi,
    pub manager: Arc<Manager>,
}

impl Drop for RealEnv {
    /// A host a test's `cms` commands started stops with the test.
    fn drop(&mut self) {
        let home = self.dir.path().join("cms-home");
        if home.join("host.json").exists() {
            let _ = std::process::Command::new(super::cms_bin())
                .args(["host", "stop"])
                .env("CMS_HOME", &home)
                .output();
        }
    }
}

/// A manager on the real CLI whose turns may take `turn_timeout`; None (the test
/// is skipped) when the CLI is not installed, see [`super::real_claude`].
pub async fn real_env(turn_timeout: Duration) -> Option<RealEnv> {
    let claude = super::real_claude()?;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("project");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    let api = FakeApi::start().await;
    let mut cfg = EngineConfig::from_env();
    cfg.claude_bin = claude;
    cfg.home = dir.path().join("cms-home");
    cfg.turn_timeout = turn_timeout;
    cfg.child_env = api.claude_env(&home);
    let manager = Manager::new(cfg).unwrap();
    Some(RealEnv {
        dir,
        work,
        home,
        api,
        manager,
    })
}

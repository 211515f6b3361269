//! A `cms serve` started by a benchmark, and a copy of the built `cms` of this
//! benchmark's version for it (the host benchmarks of issues 13 and 14).

use cms::engine::EngineConfig;
use cms::host::{Endpoint, HostClient};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A copy of the built `cms` whose version matches this benchmark's.
///
/// A client refuses a host of another version, and a version includes the
/// modification time of the executable (`cms::host::version`): the host's is `cms`'s,
/// this client's is this benchmark's. The copy carries this benchmark's time.
pub fn same_version_cms(bin: &Path) -> PathBuf {
    std::fs::create_dir_all(bin).unwrap();
    let copy = bin.join("cms");
    std::fs::copy(env!("CARGO_BIN_EXE_cms"), &copy).unwrap();
    let me = std::env::current_exe().unwrap();
    let built = std::fs::metadata(me).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(&copy)
        .unwrap()
        .set_modified(built)
        .unwrap();
    copy
}

/// A `cms serve` started by this benchmark (a child of it, so its pid is known).
pub struct Host {
    pub child: std::process::Child,
    pub cfg: EngineConfig,
    pub client: Arc<HostClient>,
}

impl Host {
    /// Start `cms serve` for the home `dir/cms-home` on `claude`, in `dir`, with the
    /// user's config in `dir/config/cms`, and connect to it.
    pub async fn start(cms: &Path, claude: &Path, dir: &Path, env: &[(String, String)]) -> Host {
        let home = dir.join("cms-home");
        let config = dir.join("config");
        std::fs::create_dir_all(config.join("cms")).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        let log = std::fs::File::create(dir.join("host.log")).unwrap();
        let mut cmd = std::process::Command::new(cms);
        cmd.arg("serve")
            .current_dir(dir)
            .env("CMS_HOST_IDLE", "never")
            .env_remove("CMS_NO_HOST")
            .env("CMS_HOME", &home)
            .env("CMS_CLAUDE_BIN", claude)
            .env("HOME", dir)
            .env("XDG_CONFIG_HOME", &config)
            .env("CMS_CONFIG_DIR", config.join("cms"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = cmd.spawn().unwrap();
        let mut cfg = EngineConfig::from_env();
        cfg.home = home.clone();
        cfg.claude_bin = claude.to_path_buf();
        let socket = Endpoint::for_home(&home).socket;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("host.log")).unwrap_or_default();
                panic!("cms serve exited at start ({status}): {log}");
            }
            assert!(Instant::now() < deadline, "cms serve did not listen");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let client = loop {
            if let Some((client, _)) = cms::host::connect(&cfg, "bench", false).await.unwrap() {
                break client;
            }
            assert!(Instant::now() < deadline, "cms serve did not answer");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        Host { child, cfg, client }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop the host (its sessions stop) and wait for it.
    pub async fn stop(mut self) {
        let _ = cms::host::stop(&self.cfg).await;
        let _ = self.child.wait();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

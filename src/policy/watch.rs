//! Hot reload: watch the script folders of the layers and reload the policy
//! service when a file in them changes. Folders that do not exist yet are watched
//! for through their parent, so creating `.cms/` while a host runs works too.

use crate::policy::PolicyService;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// How long to wait for a burst of file events (an editor's save) to settle.
const SETTLE: Duration = Duration::from_millis(25);

/// Watches while alive; drop it to stop.
pub struct ScriptWatcher {
    _watcher: Arc<std::sync::Mutex<RecommendedWatcher>>,
}

/// Start watching the service's layers. Each change reloads the service (errors are
/// logged with `file:line`, and the last good scripts stay in force); `on_reload`
/// is told about every reload (tests and the MCP server use it).
pub fn watch(
    service: Arc<PolicyService>,
    on_reload: impl Fn(&crate::policy::ReloadReport) + Send + 'static,
) -> notify::Result<ScriptWatcher> {
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let watcher = Arc::new(std::sync::Mutex::new(notify::recommended_watcher(tx)?));
    let dirs = service.layers().dirs.clone();
    arm(&watcher, &dirs);
    let w = watcher.clone();
    std::thread::Builder::new()
        .name("cms-watch".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut relevant = is_relevant(&first, &dirs);
                // Let the burst settle, then reload once.
                while let Ok(more) = rx.recv_timeout(SETTLE) {
                    relevant |= is_relevant(&more, &dirs);
                }
                if !relevant {
                    continue;
                }
                arm(&w, &dirs);
                let report = service.reload();
                tracing::info!(generation = report.generation, "policy scripts reloaded");
                on_reload(&report);
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(ScriptWatcher { _watcher: watcher })
}

fn is_relevant(event: &notify::Result<notify::Event>, dirs: &[PathBuf]) -> bool {
    match event {
        Ok(e) => {
            !e.kind.is_access()
                && e.paths.iter().any(|p| {
                    dirs.iter().any(|d| p.starts_with(d) || d.starts_with(p))
                        && (p.extension().is_some_and(|x| x == "lua") || p.is_dir() || !p.exists())
                })
        }
        Err(_) => false,
    }
}

/// Watch each folder that exists (recursively), and the parent of each that does
/// not (to see it appear). Watching a path twice is harmless.
fn arm(watcher: &std::sync::Mutex<RecommendedWatcher>, dirs: &[PathBuf]) {
    let Ok(mut w) = watcher.lock() else { return };
    for d in dirs {
        if d.is_dir() {
            let _ = w.watch(d, RecursiveMode::Recursive);
        } else if let Some(parent) = existing_parent(d) {
            let _ = w.watch(&parent, RecursiveMode::NonRecursive);
        }
    }
}

fn existing_parent(p: &Path) -> Option<PathBuf> {
    let mut cur = p.parent()?;
    loop {
        if cur.is_dir() {
            return Some(cur.to_path_buf());
        }
        cur = cur.parent()?;
    }
}

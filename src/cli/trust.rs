//! `cms trust [DIR]`, `cms trust --list`, `cms untrust [DIR]`: which projects'
//! own scripts and plugins (`DIR/.cms`) count. See [`crate::sandbox::trust`].

use super::args::{TrustArgs, UntrustArgs};
use super::out::{self, outln};
use crate::sandbox::trust;
use serde_json::json;
use std::path::{Path, PathBuf};

fn dir_or_cwd(dir: &Option<PathBuf>) -> PathBuf {
    dir.clone()
        .unwrap_or_else(|| std::env::current_dir().unwrap_or_default())
}

pub fn run_trust(a: &TrustArgs, home: &Path, json: bool) -> i32 {
    if a.list {
        return match trust::TrustStore::load(home) {
            Ok(store) => {
                if json {
                    let _ = outln!("{}", json!({ "trusted": store.folders }));
                } else if store.folders.is_empty() {
                    let _ = outln!("no project scripts are trusted");
                } else {
                    for (folder, files) in &store.folders {
                        let _ = outln!("{}", folder.display());
                        for f in files.keys() {
                            let _ = outln!("  {f}");
                        }
                    }
                }
                0
            }
            Err(e) => out::fail(json, e),
        };
    }
    let dir = dir_or_cwd(&a.dir);
    match trust::trust(home, &dir) {
        Ok((folder, files)) => {
            if json {
                let _ = outln!("{}", json!({ "trusted": folder, "files": files }));
            } else {
                let _ = outln!(
                    "trusted {} ({} files, as they are now; a later change needs `cms trust` again)",
                    folder.display(),
                    files.len()
                );
                for f in files {
                    let _ = outln!("  {f}");
                }
            }
            0
        }
        Err(e) => out::fail(json, e),
    }
}

pub fn run_untrust(a: &UntrustArgs, home: &Path, json: bool) -> i32 {
    let dir = dir_or_cwd(&a.dir);
    match trust::untrust(home, &dir) {
        Ok(was) => {
            if json {
                let _ = outln!("{}", json!({ "untrusted": dir, "was_trusted": was }));
            } else if was {
                let _ = outln!("{}/.cms is no longer trusted", dir.display());
            } else {
                let _ = outln!("{}/.cms was not trusted", dir.display());
            }
            0
        }
        Err(e) => out::fail(json, e),
    }
}

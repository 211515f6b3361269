//! `cms trust [DIR]`, `cms trust --list`, `cms untrust [DIR]`: which projects'
//! own scripts and plugins (`DIR/.cms`) count. See [`crate::sandbox::trust`].

use super::args::{TrustArgs, UntrustArgs};
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
                    println!("{}", json!({ "trusted": store.folders }));
                } else if store.folders.is_empty() {
                    println!("no project scripts are trusted");
                } else {
                    for (folder, files) in &store.folders {
                        println!("{}", folder.display());
                        for f in files.keys() {
                            println!("  {f}");
                        }
                    }
                }
                0
            }
            Err(e) => fail(&e.to_string()),
        };
    }
    let dir = dir_or_cwd(&a.dir);
    match trust::trust(home, &dir) {
        Ok((folder, files)) => {
            if json {
                println!("{}", json!({ "trusted": folder, "files": files }));
            } else {
                println!(
                    "trusted {} ({} files, as they are now; a later change needs `cms trust` again)",
                    folder.display(),
                    files.len()
                );
                for f in files {
                    println!("  {f}");
                }
            }
            0
        }
        Err(e) => fail(&e.to_string()),
    }
}

pub fn run_untrust(a: &UntrustArgs, home: &Path, json: bool) -> i32 {
    let dir = dir_or_cwd(&a.dir);
    match trust::untrust(home, &dir) {
        Ok(was) => {
            if json {
                println!("{}", json!({ "untrusted": dir, "wasTrusted": was }));
            } else if was {
                println!("{}/.cms is no longer trusted", dir.display());
            } else {
                println!("{}/.cms was not trusted", dir.display());
            }
            0
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(msg: &str) -> i32 {
    eprintln!("Error: {msg}");
    1
}

//! Trust in a project's own scripts and plugins (`./.cms/`). A cloned repository
//! must not decide the policy that guards work in it, nor add MCP tools: its files
//! count only once the user trusts them with `cms trust [DIR]`, which records each
//! file's SHA-256 digest in `$CMS_HOME/trust.json`. A file that is not recorded, or
//! changed since (by a person or a session), is not loaded. The user's own config
//! dir and the built-in scripts need no trust.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Most files one trusted folder may hold (a `.cms/` is a handful of scripts).
const MAX_FILES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{0} has no .cms folder: nothing to trust")]
    NoScripts(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON ({source}); move it away to start over")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// `$CMS_HOME/trust.json`: per trusted `.cms` folder, each file's digest.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrustStore {
    /// `/abs/project/.cms` → (`safety.lua` → hex SHA-256).
    pub folders: BTreeMap<PathBuf, BTreeMap<String, String>>,
}

/// One file of a `.cms` folder that is not loaded, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Untrusted {
    pub file: PathBuf,
    /// True: trusted once, changed since; false: never trusted.
    pub changed: bool,
    /// The project folder to pass to `cms trust`.
    pub project: PathBuf,
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = if self.changed {
            "changed since it was trusted"
        } else {
            "not trusted"
        };
        write!(
            f,
            "{} is ignored: {why}; if you have read it and want it, run `cms trust {}`",
            self.file.display(),
            self.project.display()
        )
    }
}

/// The digest of some bytes, as lower-case hex.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where the trust records live for a cms home.
pub fn store_path(home: &Path) -> PathBuf {
    home.join("trust.json")
}

/// The cms home from the environment (`$CMS_HOME`, else `~/.claude-multi-session`).
pub fn default_home() -> PathBuf {
    crate::engine::EngineConfig::from_env().home
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

impl TrustStore {
    pub fn load(home: &Path) -> Result<TrustStore, TrustError> {
        let path = store_path(home);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| TrustError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TrustStore::default()),
            Err(source) => Err(TrustError::Read { path, source }),
        }
    }

    fn save(&self, home: &Path) -> Result<(), TrustError> {
        let path = store_path(home);
        let err = |source| TrustError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(home).map_err(err)?;
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }

    /// Whether `file` (inside `folder`, a `.cms` dir) with these contents is trusted.
    pub fn allows(&self, folder: &Path, file: &Path, contents: &[u8]) -> bool {
        let folder = canonical(folder);
        let Some(files) = self.folders.get(&folder) else {
            return false;
        };
        let Ok(rel) = canonical(file).strip_prefix(&folder).map(Path::to_path_buf) else {
            return false;
        };
        files.get(&rel.to_string_lossy().into_owned()) == Some(&digest(contents))
    }
}

/// Every regular file under `folder`, relative, with its digest.
fn digests(folder: &Path) -> Result<BTreeMap<String, String>, TrustError> {
    let mut out = BTreeMap::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| TrustError::Read {
            path: dir.clone(),
            source,
        })?;
        for e in entries.flatten() {
            let path = e.path();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() && out.len() < MAX_FILES {
                let bytes = std::fs::read(&path).map_err(|source| TrustError::Read {
                    path: path.clone(),
                    source,
                })?;
                if let Ok(rel) = path.strip_prefix(folder) {
                    out.insert(rel.to_string_lossy().into_owned(), digest(&bytes));
                }
            }
        }
    }
    Ok(out)
}

/// `cms trust DIR`: record every file of `DIR/.cms` as it is now. Returns the
/// folder and its files.
pub fn trust(home: &Path, project: &Path) -> Result<(PathBuf, Vec<String>), TrustError> {
    let folder = canonical(&project.join(".cms"));
    if !folder.is_dir() {
        return Err(TrustError::NoScripts(project.to_path_buf()));
    }
    let files = digests(&folder)?;
    let names = files.keys().cloned().collect();
    let mut store = TrustStore::load(home)?;
    store.folders.insert(folder.clone(), files);
    store.save(home)?;
    Ok((folder, names))
}

/// `cms untrust DIR`: forget `DIR/.cms`. Returns whether it was trusted.
pub fn untrust(home: &Path, project: &Path) -> Result<bool, TrustError> {
    let folder = canonical(&project.join(".cms"));
    let mut store = TrustStore::load(home)?;
    let was = store.folders.remove(&folder).is_some()
        || store.folders.remove(&project.join(".cms")).is_some();
    store.save(home)?;
    Ok(was)
}

/// Files of the `.cms` folder `folder` that are not loaded (not trusted, or changed).
pub fn untrusted(home: &Path, folder: &Path) -> Vec<Untrusted> {
    if !folder.is_dir() {
        return Vec::new();
    }
    let store = TrustStore::load(home).unwrap_or_default();
    let recorded = store.folders.get(&canonical(folder));
    let project = folder
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| folder.to_path_buf());
    let Ok(now) = digests(folder) else {
        return Vec::new();
    };
    now.into_iter()
        .filter(|(rel, _)| rel.ends_with(".lua"))
        .filter_map(|(rel, d)| {
            let known = recorded.and_then(|r| r.get(&rel));
            (known != Some(&d)).then(|| Untrusted {
                file: folder.join(&rel),
                changed: known.is_some(),
                project: project.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_files_load_until_they_change() {
        let home = tempfile::tempdir().unwrap();
        let project = tempfile::tempdir().unwrap();
        let folder = project.path().join(".cms");
        std::fs::create_dir_all(folder.join("plugins/x")).unwrap();
        std::fs::write(folder.join("safety.lua"), "return 1").unwrap();
        std::fs::write(folder.join("plugins/x/init.lua"), "return {}").unwrap();
        assert_eq!(untrusted(home.path(), &folder).len(), 2);
        let (_, files) = trust(home.path(), project.path()).unwrap();
        assert_eq!(files.len(), 2);
        let store = TrustStore::load(home.path()).unwrap();
        assert!(store.allows(&folder, &folder.join("safety.lua"), b"return 1"));
        assert!(!store.allows(&folder, &folder.join("safety.lua"), b"return 2"));
        assert!(untrusted(home.path(), &folder).is_empty());
        std::fs::write(folder.join("safety.lua"), "return 2").unwrap();
        let left = untrusted(home.path(), &folder);
        assert_eq!(left.len(), 1);
        assert!(left[0].changed);
        assert!(left[0].to_string().contains("cms trust"), "{}", left[0]);
        assert!(untrust(home.path(), project.path()).unwrap());
        assert_eq!(untrusted(home.path(), &folder).len(), 2);
    }
}

//! The shipped Lua scripts (embedded in the binary) and the user's overrides, in
//! layers: built-in, then `~/.config/cms/` (or `$CMS_CONFIG_DIR`), then `.cms/` in
//! the working directory. A file in a later layer replaces the same file in an
//! earlier one. The project's layer counts only as far as the user trusts it
//! ([`crate::sandbox::trust`]).

use std::path::{Path, PathBuf};

/// The scripts built into cms (`scripts/` in the repository).
pub const BUILTIN: &[(&str, &str)] = &[
    ("safety.lua", include_str!("../../scripts/safety.lua")),
    (
        "protected_paths.lua",
        include_str!("../../scripts/protected_paths.lua"),
    ),
    ("presets.lua", include_str!("../../scripts/presets.lua")),
    ("notify.lua", include_str!("../../scripts/notify.lua")),
    (
        "strategies/single.lua",
        include_str!("../../scripts/strategies/single.lua"),
    ),
    (
        "strategies/correction_loop.lua",
        include_str!("../../scripts/strategies/correction_loop.lua"),
    ),
    (
        "strategies/review.lua",
        include_str!("../../scripts/strategies/review.lua"),
    ),
    ("hosts.lua", include_str!("../../scripts/hosts.lua")),
    ("placement.lua", include_str!("../../scripts/placement.lua")),
    (
        "runners/local.lua",
        include_str!("../../scripts/runners/local.lua"),
    ),
    (
        "runners/ssh.lua",
        include_str!("../../scripts/runners/ssh.lua"),
    ),
    (
        "runners/docker.lua",
        include_str!("../../scripts/runners/docker.lua"),
    ),
    (
        "runners/kubectl.lua",
        include_str!("../../scripts/runners/kubectl.lua"),
    ),
];

/// One script's text and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The file (`/home/me/.config/cms/safety.lua`) or `builtin:safety.lua`.
    pub origin: String,
    pub code: String,
}

impl Source {
    /// The Lua chunk name, so errors read `origin:line: message`.
    pub fn chunk_name(&self) -> String {
        format!("@{}", self.origin)
    }
}

/// The user's own layer: `$CMS_CONFIG_DIR`, else `$XDG_CONFIG_HOME/cms`, else
/// `~/.config/cms`.
pub fn user_dir() -> Option<PathBuf> {
    std::env::var_os("CMS_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CONFIG_HOME").map(|d| PathBuf::from(d).join("cms")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/cms")))
}

/// The built-in script at `rel` (`safety.lua`, `strategies/single.lua`).
pub fn builtin(rel: &str) -> Option<Source> {
    BUILTIN
        .iter()
        .find(|(name, _)| *name == rel)
        .map(|(name, code)| Source {
            origin: format!("builtin:{name}"),
            code: (*code).to_string(),
        })
}

/// Where scripts are looked for, earliest layer first (the built-in set comes
/// before all of these).
#[derive(Debug, Clone, Default)]
pub struct Layers {
    pub dirs: Vec<PathBuf>,
    /// The layer whose files load only when trusted (the project's `.cms`), and
    /// the cms home holding the trust records.
    pub gated: Option<Gate>,
}

/// A layer that needs trust.
#[derive(Debug, Clone)]
pub struct Gate {
    pub folder: PathBuf,
    pub home: PathBuf,
}

impl Layers {
    /// The user's folder and the project's, for a host working in `cwd`.
    pub fn standard(cwd: &Path) -> Layers {
        let mut dirs: Vec<PathBuf> = user_dir().into_iter().collect();
        let project = cwd.join(".cms");
        dirs.push(project.clone());
        Layers {
            dirs,
            gated: Some(Gate {
                folder: project,
                home: crate::sandbox::trust::default_home(),
            }),
        }
    }

    /// The built-in scripts and the user's own (`~/.config/cms/`): what a project may
    /// not decide (whom the host notifies).
    pub fn user_only() -> Layers {
        Layers {
            dirs: user_dir().into_iter().collect(),
            gated: None,
        }
    }

    /// Only the built-in scripts.
    pub fn builtin_only() -> Layers {
        Layers::default()
    }

    /// The text of `path` in the layer `dir`, if it exists and (in the project's
    /// layer) is trusted as it is now.
    pub fn read(&self, dir: &Path, path: &Path) -> Option<String> {
        let bytes = std::fs::read(path).ok()?;
        if let Some(gate) = self.gated.as_ref().filter(|g| g.folder == dir) {
            let store = crate::sandbox::trust::TrustStore::load(&gate.home).unwrap_or_default();
            if !store.allows(&gate.folder, path, &bytes) {
                tracing::debug!("{} not loaded: not trusted", path.display());
                return None;
            }
        }
        String::from_utf8(bytes).ok()
    }

    /// Files of the project's layer that are not loaded because they are not
    /// trusted (or changed since), each with the command that trusts them.
    pub fn untrusted(&self) -> Vec<crate::sandbox::trust::Untrusted> {
        match &self.gated {
            Some(g) => crate::sandbox::trust::untrusted(&g.home, &g.folder),
            None => Vec::new(),
        }
    }

    /// The script at `rel` (`safety.lua`, `strategies/single.lua`) from the latest
    /// layer that has it.
    pub fn find(&self, rel: &str) -> Option<Source> {
        for dir in self.dirs.iter().rev() {
            let path = dir.join(rel);
            if let Some(code) = self.read(dir, &path) {
                return Some(Source {
                    origin: path.display().to_string(),
                    code,
                });
            }
        }
        builtin(rel)
    }

    /// Names of every strategy in any layer (`single`, `review`, ...), sorted.
    pub fn strategies(&self) -> Vec<String> {
        let mut names: Vec<String> = BUILTIN
            .iter()
            .filter_map(|(n, _)| {
                n.strip_prefix("strategies/")?
                    .strip_suffix(".lua")
                    .map(String::from)
            })
            .collect();
        for dir in &self.dirs {
            if let Ok(entries) = std::fs::read_dir(dir.join("strategies")) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if self.read(dir, &e.path()).is_none() {
                        continue;
                    }
                    if let Some(stem) = name.strip_suffix(".lua") {
                        names.push(stem.to_string());
                    }
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_layers_win_and_builtins_fill_in() {
        let user = tempfile::tempdir().unwrap();
        let project = tempfile::tempdir().unwrap();
        std::fs::write(user.path().join("safety.lua"), "return 'user'").unwrap();
        std::fs::write(project.path().join("safety.lua"), "return 'project'").unwrap();
        std::fs::write(user.path().join("presets.lua"), "return 'user presets'").unwrap();
        std::fs::create_dir_all(project.path().join("strategies")).unwrap();
        std::fs::write(
            project.path().join("strategies/mine.lua"),
            "return function() end",
        )
        .unwrap();
        let layers = Layers {
            dirs: vec![user.path().into(), project.path().into()],
            ..Layers::default()
        };
        assert_eq!(layers.find("safety.lua").unwrap().code, "return 'project'");
        assert_eq!(
            layers.find("presets.lua").unwrap().code,
            "return 'user presets'"
        );
        let builtin = layers.find("protected_paths.lua").unwrap();
        assert_eq!(builtin.origin, "builtin:protected_paths.lua");
        assert!(layers.find("nope.lua").is_none());
        assert_eq!(
            layers.strategies(),
            vec!["correction_loop", "mine", "review", "single"]
        );
    }
}

//! Where a path really points. Protected-path rules match what [`resolve`] returns,
//! so `src/../.env`, `/abs/project/.env`, `~/project/.env` and a symlink to `.env`
//! all end up as the same `.env`.

use std::path::{Component, Path, PathBuf};

/// Most symlinks followed while resolving one path (as Linux's `ELOOP` limit).
const MAX_LINKS: usize = 40;

/// The absolute path `path` names when used from `cwd`: `~` expanded, joined to
/// `cwd` when relative, every existing symlink followed, `.` and `..` resolved.
/// Parts that do not exist yet are taken as written, so a file about to be created
/// resolves too.
pub fn resolve(path: &str, cwd: &Path) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let expanded = match path.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => match &home {
            Some(h) => h.join(rest.trim_start_matches('/')),
            None => PathBuf::from(path),
        },
        _ => PathBuf::from(path),
    };
    let full = if expanded.is_absolute() {
        expanded
    } else {
        cwd.join(expanded)
    };
    let mut pending: Vec<PathBuf> = full
        .components()
        .rev()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut out = PathBuf::from("/");
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.components().next() {
            Some(Component::RootDir) | Some(Component::Prefix(_)) => out = PathBuf::from("/"),
            Some(Component::CurDir) | None => {}
            Some(Component::ParentDir) => {
                out.pop();
            }
            Some(Component::Normal(name)) => {
                let candidate = out.join(name);
                let is_link = std::fs::symlink_metadata(&candidate)
                    .map(|m| m.file_type().is_symlink())
                    .unwrap_or(false);
                if is_link && links < MAX_LINKS {
                    links += 1;
                    if let Ok(target) = std::fs::read_link(&candidate) {
                        if target.is_absolute() {
                            out = PathBuf::from("/");
                        }
                        pending.extend(
                            target
                                .components()
                                .rev()
                                .map(|c| PathBuf::from(c.as_os_str())),
                        );
                        continue;
                    }
                }
                out = candidate;
            }
        }
    }
    out
}

/// `path` relative to `cwd` (both resolved), or None when it lies outside.
pub fn relative(path: &str, cwd: &Path) -> Option<String> {
    locate(path, cwd).0
}

/// `path` relative to `cwd` when inside it, and its absolute resolved form. The
/// working directory's own resolution is remembered per thread (policies ask about
/// the same one again and again).
pub fn locate(path: &str, cwd: &Path) -> (Option<String>, PathBuf) {
    thread_local! {
        static BASE: std::cell::RefCell<Option<(PathBuf, PathBuf)>> = const { std::cell::RefCell::new(None) };
    }
    let base = BASE.with(|b| {
        let mut b = b.borrow_mut();
        match &*b {
            Some((dir, resolved)) if dir == cwd => resolved.clone(),
            _ => {
                let resolved = resolve(".", cwd);
                *b = Some((cwd.to_path_buf(), resolved.clone()));
                resolved
            }
        }
    });
    // Relative paths start from the resolved base: the same answer, fewer lookups.
    let full = if Path::new(path).is_absolute() || path.starts_with('~') {
        resolve(path, cwd)
    } else {
        resolve_under(path, &base)
    };
    let rel = full
        .strip_prefix(&base)
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    (rel, full)
}

/// [`resolve`] of a relative path under a directory that is already resolved: only
/// the path's own parts are looked up.
fn resolve_under(path: &str, base: &Path) -> PathBuf {
    let mut out = base.to_path_buf();
    let mut rest = Path::new(path).components();
    while let Some(c) = rest.next() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                let candidate = out.join(name);
                let is_link = std::fs::symlink_metadata(&candidate)
                    .map(|m| m.file_type().is_symlink())
                    .unwrap_or(false);
                if is_link {
                    // Hand the rest to the full walk, which follows links.
                    let remaining: PathBuf = std::iter::once(c).chain(rest).collect();
                    return resolve(&out.join(remaining).to_string_lossy(), base);
                }
                out = candidate;
            }
            _ => return resolve(path, base),
        }
    }
    out
}

/// For a session on another host, where this machine's files say nothing about the
/// host's: `path` (from `cwd`, the host's folder) taken as written, when this machine
/// can vouch for every step of it; otherwise why not. Every folder on the way must
/// be stat-able here and none may be a symlink, and the last part may be missing (a
/// file about to be made) but not a symlink. `~` (the host's home) cannot be known
/// here. The protected-path check judges a path refused here as protected.
pub fn plain_on_host(path: &str, cwd: &Path) -> Result<PathBuf, String> {
    if path.starts_with('~') {
        return Err("`~` is the host's home, which cms cannot see from here".into());
    }
    let joined = if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        cwd.join(path)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
        }
    }
    let mut at = PathBuf::from("/");
    let parts: Vec<_> = out.components().skip(1).collect();
    for (i, c) in parts.iter().enumerate() {
        at.push(c);
        let last = i + 1 == parts.len();
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symlink, whose target on the host cms cannot check",
                    at.display()
                ))
            }
            Ok(_) => {}
            Err(_) if last => {}
            Err(_) => {
                return Err(format!(
                    "{} cannot be looked at from here (it is on the host)",
                    at.display()
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_relative_and_absolute_paths_meet() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().join("proj");
        std::fs::create_dir_all(cwd.join("src")).unwrap();
        let real = resolve(".env", &cwd);
        assert_eq!(real, resolve(".", &cwd).join(".env"));
        assert_eq!(resolve("src/../.env", &cwd), real);
        assert_eq!(resolve("./src/./../.env", &cwd), real);
        assert_eq!(resolve(&real.display().to_string(), Path::new("/")), real);
        assert_eq!(resolve("src/../../proj/.env", &cwd), real);
        assert_eq!(relative("src/../.env", &cwd).as_deref(), Some(".env"));
        assert_eq!(relative("../elsewhere", &cwd), None);
        assert_eq!(
            resolve("/../../etc/passwd", &cwd),
            PathBuf::from("/etc/passwd")
        );
    }

    #[test]
    fn on_another_host_only_plain_paths_pass() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().join("proj");
        std::fs::create_dir_all(cwd.join("src")).unwrap();
        std::os::unix::fs::symlink(".env", cwd.join("innocent.txt")).unwrap();
        std::os::unix::fs::symlink(cwd.join("src"), cwd.join("link")).unwrap();
        assert!(plain_on_host("src/new.rs", &cwd).is_ok());
        assert!(plain_on_host("src/../a.txt", &cwd).is_ok());
        let e = plain_on_host("innocent.txt", &cwd).unwrap_err();
        assert!(e.contains("symlink"), "{e}");
        assert!(plain_on_host("link/x.rs", &cwd).is_err());
        assert!(plain_on_host("nowhere/x.rs", &cwd).is_err());
        assert!(plain_on_host("x", Path::new("/srv/not/here")).is_err());
        assert!(plain_on_host("~/.bashrc", &cwd).is_err());
    }

    #[test]
    fn symlinks_are_followed_even_to_files_not_yet_made() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().join("proj");
        std::fs::create_dir_all(cwd.join(".git")).unwrap();
        std::os::unix::fs::symlink(".env", cwd.join("innocent.txt")).unwrap();
        std::os::unix::fs::symlink(".git", cwd.join("docs")).unwrap();
        std::os::unix::fs::symlink(cwd.join("docs"), cwd.join("chain")).unwrap();
        assert_eq!(relative("innocent.txt", &cwd).as_deref(), Some(".env"));
        assert_eq!(
            relative("docs/config", &cwd).as_deref(),
            Some(".git/config")
        );
        assert_eq!(
            relative("chain/hooks/pre-commit", &cwd).as_deref(),
            Some(".git/hooks/pre-commit")
        );
        // A loop does not hang.
        std::os::unix::fs::symlink("loop2", cwd.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", cwd.join("loop2")).unwrap();
        let _ = resolve("loop1/x", &cwd);
    }
}

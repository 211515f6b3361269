//! Where a home's host is found: its socket, its lock, its info file and its log.
//!
//! Everything lives in `$CMS_HOME`, except a socket whose path would be too long for
//! a Unix socket address (about 100 bytes): that one goes to a private folder of the
//! user's (`$XDG_RUNTIME_DIR`, else `/tmp/cms-UID`, mode 0700), named after the home.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The longest socket path used as is (`sun_path` holds 108 bytes with its NUL).
const LONGEST_SOCKET_PATH: usize = 100;

/// The files of one home's host.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub home: PathBuf,
    pub socket: PathBuf,
    /// Held (flock) by the running host: one host per home.
    pub lock: PathBuf,
    /// Held while a client starts a host, so two clients start one.
    pub start_lock: PathBuf,
    /// [`HostFile`]: who runs, since when.
    pub info: PathBuf,
    /// stderr of a host started in the background.
    pub log: PathBuf,
}

/// What the running host writes about itself into `host.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostFile {
    pub pid: u32,
    pub version: String,
    pub protocol: u32,
    pub socket: PathBuf,
    pub started_at: i64,
}

impl Endpoint {
    pub fn for_home(home: &Path) -> Endpoint {
        let in_home = home.join("host.sock");
        let socket = if in_home.as_os_str().len() <= LONGEST_SOCKET_PATH {
            in_home
        } else {
            let digest = Sha256::digest(home.as_os_str().as_encoded_bytes());
            let tag: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            private_dir().join(format!("cms-{tag}.sock"))
        };
        Endpoint {
            home: home.to_path_buf(),
            socket,
            lock: home.join("host.lock"),
            start_lock: home.join("host-start.lock"),
            info: home.join("host.json"),
            log: home.join("host.log"),
        }
    }

    /// When the socket is outside the home (a long home path): its folder must be this
    /// user's own and closed to others, or another user could put a socket there first.
    pub fn check_private(&self) -> Result<(), String> {
        let Some(dir) = self.socket.parent().filter(|d| !d.starts_with(&self.home)) else {
            return Ok(());
        };
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me || meta.mode() & 0o077 != 0 {
            return Err(format!(
                "the folder of the cms host's socket, {}, is not this user's own closed folder \
                 (owner uid {}, mode {:o}); remove it, or set XDG_RUNTIME_DIR, or use a shorter \
                 CMS_HOME",
                dir.display(),
                meta.uid(),
                meta.mode() & 0o777
            ));
        }
        Ok(())
    }

    /// The running host's info file, if one is there.
    pub fn read_info(&self) -> Option<HostFile> {
        let text = std::fs::read_to_string(&self.info).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// A folder only this user can enter, for sockets whose home path is too long.
fn private_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let dir = std::env::temp_dir().join(format!("cms-{uid}"));
    let _ = std::fs::create_dir_all(&dir);
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_in_the_home_unless_the_path_is_too_long() {
        let short = Endpoint::for_home(Path::new("/tmp/h"));
        assert_eq!(short.socket, Path::new("/tmp/h/host.sock"));
        let long_home = PathBuf::from(format!("/tmp/{}", "d".repeat(120)));
        let long = Endpoint::for_home(&long_home);
        assert!(long.socket.as_os_str().len() <= LONGEST_SOCKET_PATH + 20);
        assert!(!long.socket.starts_with(&long_home));
        assert_eq!(long.socket, Endpoint::for_home(&long_home).socket, "stable");
        assert_eq!(long.check_private(), Ok(()), "a folder of this user's own");
        assert_eq!(
            short.check_private(),
            Ok(()),
            "in the home: nothing to check"
        );
        let other = Endpoint::for_home(&long_home.join("x"));
        assert_ne!(long.socket, other.socket, "one socket per home");
    }
}

//! The bearer token of the host's HTTP face (`cms serve --http`): 256 random bits,
//! made on first use and kept in `$CMS_HOME/http-token`, mode 0600. Whoever holds it
//! may do over HTTP what this user may do with `cms`, so the file must stay private:
//! one that others can read is refused, not used.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The token file of a home.
pub fn path(home: &Path) -> PathBuf {
    home.join("http-token")
}

/// The home's token, made now if there is none.
pub fn get_or_make(home: &Path) -> Result<String, String> {
    match read(home)? {
        Some(t) => Ok(t),
        None => make(home),
    }
}

/// The home's token (None: none was made yet).
pub fn read(home: &Path) -> Result<Option<String>, String> {
    let file = path(home);
    let meta = match std::fs::metadata(&file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me || meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} is readable by others or not yours (mode {:o}); the HTTP token must be private: \
             remove the file (a new token is made) or `chmod 600` it",
            file.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    let mut text = String::new();
    std::fs::File::open(&file)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let token = text.trim().to_string();
    if token.len() < 32 {
        return Err(format!(
            "{} holds no usable token (under 32 characters); remove it and a new one is made",
            file.display()
        ));
    }
    Ok(Some(token))
}

/// Make a new token file; when another process made one first, that one wins.
fn make(home: &Path) -> Result<String, String> {
    std::fs::create_dir_all(home).map_err(|e| format!("cannot create {}: {e}", home.display()))?;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read random bytes for the HTTP token: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let file = path(home);
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file);
    match created {
        Ok(mut f) => {
            f.write_all(format!("{token}\n").as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(home)?.ok_or_else(|| format!("{} vanished while it was made", file.display()))
        }
        Err(e) => Err(format!("cannot create {}: {e}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_made_once_private_and_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = get_or_make(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(get_or_make(dir.path()).unwrap(), first);
        assert_ne!(
            get_or_make(tempfile::tempdir().unwrap().path()).unwrap(),
            first
        );
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        get_or_make(dir.path()).unwrap();
        let file = path(dir.path());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = get_or_make(dir.path()).unwrap_err();
        assert!(
            err.contains("readable by others") && err.contains("chmod 600"),
            "{err}"
        );
    }
}

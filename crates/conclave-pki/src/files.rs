//! Files that hold keys and certificates: written atomically (temporary file, fsync, rename),
//! with the mode given (0600 for secrets), so none is ever seen half-written or readable by
//! others.

use std::path::Path;

use crate::PkiError;

pub(crate) fn file_err(path: &Path, e: impl std::fmt::Display) -> PkiError {
    PkiError::File {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Writes a file atomically (temporary file, fsync, rename) with the given mode: key files and
/// certificates are never seen half-written.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| file_err(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| file_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_err(path, e))
}

/// A new secret (a master key, a private key, a bearer token), mode 0600, in a directory created
/// if missing: written in full and made durable under a temporary name of its own (random), then
/// linked to `path`, which must not exist (an existing secret is never replaced: its loss could
/// lose data), and the directory synced so the name is durable too. Where the file system has
/// no hard links, the secret is written in place with an exclusive create instead.
///
/// Errors: [`PkiError::File`] naming the path, for an existing file ("File exists") or any
/// I/O failure; nothing is left at `path` then.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    use aws_lc_rs::rand::SecureRandom as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
            dir
        }
        None => Path::new("."),
    };
    let create = |at: &Path| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(at)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| file_err(path, "no randomness for a temporary name"))?;
    let tmp = path.with_extension(format!(
        "new-{}",
        nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    create(&tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        file_err(&tmp, e)
    })?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        // No hard links here (some network and FUSE file systems): an exclusive create of the
        // final name still never replaces a secret; a crash mid-write leaves a file to remove.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::Unsupported | std::io::ErrorKind::PermissionDenied
            ) && !path.exists() =>
        {
            create(path).map_err(|e| file_err(path, e))?;
        }
        Err(e) => return Err(file_err(path, e)),
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| file_err(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_secret_is_private_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("master.key");
        write_secret(&path, b"first").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = write_secret(&path, b"second").unwrap_err();
        assert!(e.to_string().contains("master.key"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        // Nothing but the secret is left in its directory.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        write_file(&path, b"replaced", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"replaced");
    }
}

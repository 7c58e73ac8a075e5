//! A string that must not reach logs: a password, a token.
//!
//! [`Secret`] has a redacting `Debug` and no `Display`, so a struct holding one can derive
//! `Debug` and be logged whole without leaking it. Read the value with [`Secret::expose`]
//! only where it is used (compared, sent to a backend). A secret read from a file that
//! SIGHUP may rotate is a [`SecretFile`]: readers take the current value once per use (an
//! `AUTH`, a backend login), the reloader swaps it whole.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;

/// A secret string; `Debug` prints `Secret(<redacted>)`, and there is no `Display`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself. Call it where the value is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Reads a secret file for `flag`: the whole file, less one trailing newline (`\n` or
/// `\r\n`); leading and inner whitespace is part of the secret.
///
/// # Errors
/// The file cannot be read, is not UTF-8, or holds an empty secret; the message names the
/// flag and the file, never the contents.
pub fn read_file(path: &Path, flag: &str) -> anyhow::Result<Secret> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))?;
    let value = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    anyhow::ensure!(
        !value.is_empty(),
        "{flag} {}: the file holds no password",
        path.display()
    );
    Ok(Secret::new(value.to_string()))
}

/// A secret that SIGHUP may replace: read from a file ([`SecretFile::reload`] re-reads it)
/// or given inline (then it never changes). `Debug` shows the flag and file, never the
/// value.
///
/// Readers call [`SecretFile::current`] once per use and never keep it: a rotation takes
/// effect at the next use (the next `AUTH`, the next backend login), and what was
/// authenticated with the old value stays authenticated.
pub struct SecretFile {
    /// The flag and file it came from; `None` for an inline secret.
    file: Option<(String, PathBuf)>,
    current: ArcSwap<Secret>,
}

impl SecretFile {
    /// A secret given inline (a flag, the environment): reload leaves it as it is.
    pub fn fixed(secret: Secret) -> Arc<SecretFile> {
        Arc::new(SecretFile {
            file: None,
            current: ArcSwap::from_pointee(secret),
        })
    }

    /// Reads `path` (named by `flag` in messages), as [`read_file`].
    ///
    /// # Errors
    /// As [`read_file`].
    pub fn load(path: &Path, flag: &str) -> anyhow::Result<Arc<SecretFile>> {
        let secret = read_file(path, flag)?;
        Ok(Arc::new(SecretFile {
            file: Some((flag.to_string(), path.to_path_buf())),
            current: ArcSwap::from_pointee(secret),
        }))
    }

    /// The secret now. Cheap (one atomic load and a reference count); do not hold it
    /// across an `.await` longer than the use needs.
    pub fn current(&self) -> Arc<Secret> {
        self.current.load_full()
    }

    /// The flag that named the file (`None` for an inline secret).
    pub fn flag(&self) -> Option<&str> {
        self.file.as_ref().map(|(f, _)| f.as_str())
    }

    /// Re-reads the file; returns whether the secret changed. An inline secret never
    /// changes. A file that cannot be read or is empty leaves the current secret in place.
    ///
    /// # Errors
    /// As [`read_file`].
    pub fn reload(&self) -> anyhow::Result<bool> {
        let Some((flag, path)) = &self.file else {
            return Ok(false);
        };
        let next = read_file(path, flag)?;
        if *self.current.load().as_ref() == next {
            return Ok(false);
        }
        self.current.store(Arc::new(next));
        Ok(true)
    }
}

impl fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some((flag, path)) => write!(f, "SecretFile({flag} {}, <redacted>)", path.display()),
            None => f.write_str("SecretFile(inline, <redacted>)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_rotates_and_a_bad_file_keeps_the_old_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "one\n").unwrap();
        let s = SecretFile::load(&path, "--password-file").unwrap();
        assert_eq!(s.current().expose(), "one");
        assert!(!s.reload().unwrap(), "same contents: unchanged");
        std::fs::write(&path, "two\r\n").unwrap();
        assert!(s.reload().unwrap());
        assert_eq!(s.current().expose(), "two");
        std::fs::write(&path, "\n").unwrap();
        let err = s.reload().unwrap_err();
        assert!(format!("{err:#}").contains("--password-file"), "{err:#}");
        assert_eq!(s.current().expose(), "two");
        std::fs::remove_file(&path).unwrap();
        assert!(s.reload().is_err());
        assert_eq!(s.current().expose(), "two");
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("two") && shown.contains("--password-file"),
            "{shown}"
        );
        let inline = SecretFile::fixed(Secret::new("x".into()));
        assert!(!inline.reload().unwrap());
        assert_eq!(inline.current().expose(), "x");
    }

    #[test]
    fn debug_redacts_and_expose_returns_the_value() {
        #[derive(Debug)]
        #[allow(dead_code)] // read only through Debug
        struct Holder {
            token: Secret,
        }
        let h = Holder {
            token: Secret::new("hunter2".into()),
        };
        let shown = format!("{h:?} {h:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
        assert_eq!(h.token.expose(), "hunter2");
    }
}

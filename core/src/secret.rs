//! A string that must not reach logs: a password, a token.
//!
//! [`Secret`] has a redacting `Debug` and no `Display`, so a struct holding one can derive
//! `Debug` and be logged whole without leaking it. Read the value with [`Secret::expose`]
//! only where it is used (compared, sent to a backend).

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

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

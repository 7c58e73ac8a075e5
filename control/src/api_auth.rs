//! Who may read what from control's API.
//!
//! A proxy proves itself with `Authorization: Bearer <token>`. Each token comes from a file
//! (`--token-file`, the top-level `token_file`, or one `[[api.tokens]]` entry) and may be
//! scoped to some tables:
//!
//! ```toml
//! [[api.tokens]]
//! file = "secrets/dns.token"   # relative to control.toml's directory
//! tables = ["dns", "lvs"]      # absent: every table and every /v1 endpoint
//! ```
//!
//! A scoped token reads only `/v1/tables/{its kinds}`; `/v1/state`, `/v1/problems` and
//! `/v1/subscribers` need an unscoped one. No token or a wrong one is 401; a right token
//! outside its scope is 403. With no token configured the API is open, which control allows
//! only on a loopback `--listen` ([`check_config`]).
//!
//! Tokens are compared as SHA-256 digests, byte by byte without early exit, and every
//! configured token is compared on every request, so the time an answer takes says neither
//! where a guess differs nor which token it was closest to.
//!
//! Apart from tokens, the `mysql` table carries backend passwords: served over plain HTTP it
//! goes only to loopback peers unless the operator allows it ([`plaintext_allowed`]).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ocean_core::secret::Secret;
use ocean_core::table::TableKind;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Where the unscoped token of `--token-file` comes from, as named in errors.
pub const ORIGIN_TOKEN_FLAG: &str = "--token-file";
/// Where the unscoped token of the top-level `token_file` key comes from.
pub const ORIGIN_TOKEN_FILE_KEY: &str = "token_file";

/// `[api]` in control.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiFile {
    /// Bearer tokens for `/v1/`, each optionally limited to some tables.
    #[serde(default)]
    pub tokens: Vec<TokenFile>,
}

/// One `[[api.tokens]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// The file holding the token (one line; a trailing newline is ignored). Relative to the
    /// config file's directory.
    pub file: PathBuf,
    /// The table kinds this token may read (`dns`, `redis`, `memcached`, `mysql`, `lvs`).
    /// Absent: every table and every `/v1/` endpoint.
    pub tables: Option<Vec<String>>,
}

/// A token setting that cannot be used; names the field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TokenError {
    pub field: String,
    pub message: String,
}

impl TokenError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        TokenError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// One configured bearer token.
#[derive(Clone)]
pub struct ApiToken {
    /// Where it was configured (`--token-file`, `token_file`, `api.tokens[0]`): for errors.
    pub origin: String,
    /// The tables it may read; `None`: every table and every `/v1/` endpoint.
    pub tables: Option<Vec<TableKind>>,
    digest: [u8; 32],
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("origin", &self.origin)
            .field("tables", &self.tables)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl ApiToken {
    /// A token; surrounding whitespace is not part of it.
    ///
    /// # Errors
    /// When the token is empty.
    pub fn new(
        origin: impl Into<String>,
        token: &Secret,
        tables: Option<Vec<TableKind>>,
    ) -> Result<Self, TokenError> {
        let origin = origin.into();
        let t = token.expose().trim();
        if t.is_empty() {
            return Err(TokenError::new(origin, "the token is empty"));
        }
        Ok(ApiToken {
            origin,
            tables,
            digest: Sha256::digest(t.as_bytes()).into(),
        })
    }

    /// Reads a token file.
    ///
    /// # Errors
    /// When the file cannot be read or is empty; the error names `origin` and the file.
    pub fn from_file(
        origin: impl Into<String>,
        path: &Path,
        tables: Option<Vec<TableKind>>,
    ) -> Result<Self, TokenError> {
        let origin = origin.into();
        let text = std::fs::read_to_string(path)
            .map_err(|e| TokenError::new(&origin, format!("{}: {e}", path.display())))?;
        if text.trim().is_empty() {
            return Err(TokenError::new(
                &origin,
                format!("{}: the file is empty", path.display()),
            ));
        }
        ApiToken::new(origin, &Secret::new(text), tables)
    }

    /// May this token read `resource`?
    fn covers(&self, resource: Resource) -> bool {
        match (&self.tables, resource) {
            (None, _) => true,
            (Some(kinds), Resource::Table(k)) => kinds.contains(&k),
            (Some(_), Resource::Api) => false,
        }
    }
}

/// Same origin, same scope, same token: what a reload compares to say whether the tokens
/// changed. Not for checking a request ([`check`] compares in constant time).
impl PartialEq for ApiToken {
    fn eq(&self, other: &Self) -> bool {
        self.origin == other.origin && self.tables == other.tables && self.digest == other.digest
    }
}

impl ApiFile {
    /// The tokens of `[[api.tokens]]`; files are relative to `base`.
    ///
    /// # Errors
    /// An unreadable or empty file, or an unknown table kind; names the entry's field.
    pub fn load(&self, base: &Path) -> Result<Vec<ApiToken>, TokenError> {
        self.tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let entry = format!("api.tokens[{i}]");
                let tables = match &t.tables {
                    None => None,
                    Some(names) => Some(parse_tables(&format!("{entry}.tables"), names)?),
                };
                ApiToken::from_file(format!("{entry}.file"), &base.join(&t.file), tables)
            })
            .collect()
    }
}

/// Table kinds by name.
///
/// # Errors
/// An unknown kind, or an empty list (a token that may read nothing is a mistake).
pub fn parse_tables(field: &str, names: &[String]) -> Result<Vec<TableKind>, TokenError> {
    if names.is_empty() {
        return Err(TokenError::new(
            field,
            "empty: leave `tables` out for a token that reads every table",
        ));
    }
    let mut kinds = Vec::with_capacity(names.len());
    for n in names {
        let k = n.parse::<TableKind>().map_err(|_| {
            TokenError::new(
                field,
                format!("unknown table kind {n:?} (dns, redis, memcached, mysql, lvs)"),
            )
        })?;
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    Ok(kinds)
}

/// Checks the token settings against the listen address, before binding.
///
/// # Errors
/// No token while listening off loopback (anyone on the network could read every table,
/// passwords included); or one token configured twice (its scope would be ambiguous).
pub fn check_config(tokens: &[ApiToken], listen: SocketAddr) -> Result<(), TokenError> {
    if tokens.is_empty() && !is_loopback(listen.ip()) {
        return Err(TokenError::new(
            "--token-file or [[api.tokens]]",
            format!(
                "control listens on {listen}, off loopback, and no API token is configured; \
                 give --token-file FILE or [[api.tokens]] in control.toml \
                 (or listen on 127.0.0.1)"
            ),
        ));
    }
    for (i, a) in tokens.iter().enumerate() {
        if let Some(b) = tokens.iter().skip(i + 1).find(|b| b.digest == a.digest) {
            return Err(TokenError::new(
                &b.origin,
                format!("the same token as {}; give each token once", a.origin),
            ));
        }
    }
    Ok(())
}

/// What a `/v1/` request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `/v1/tables/{kind}`.
    Table(TableKind),
    /// `/v1/state`, `/v1/problems`, `/v1/subscribers`, or a table kind that does not exist.
    Api,
}

impl Resource {
    /// The resource of a request path.
    pub fn of_path(path: &str) -> Resource {
        path.strip_prefix("/v1/tables/")
            .and_then(|k| k.parse::<TableKind>().ok())
            .map_or(Resource::Api, Resource::Table)
    }

    /// The metrics label: the table kind, or `api`.
    pub fn label(self) -> &'static str {
        match self {
            Resource::Table(k) => k.as_str(),
            Resource::Api => "api",
        }
    }
}

/// The answer to one request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No token is configured: the API is open (loopback only, see [`check_config`]).
    Open,
    /// A configured token matched and covers the resource.
    Granted,
    /// No token, or one that matches none configured: 401.
    Unauthorized,
    /// A right token outside its scope: 403. The tables it may read.
    Forbidden { may_read: Vec<TableKind> },
}

/// Checks the `Authorization` header of a request for `resource`.
///
/// Every configured token is compared, all 32 digest bytes each, whatever the result.
pub fn check(tokens: &[ApiToken], authorization: Option<&str>, resource: Resource) -> Access {
    if tokens.is_empty() {
        return Access::Open;
    }
    let given = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim();
    let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
    // Collected first, so no comparison is skipped once one matched.
    let hits: Vec<bool> = tokens.iter().map(|t| ct_eq(&t.digest, &digest)).collect();
    let matched = tokens
        .iter()
        .zip(hits)
        .find_map(|(t, hit)| hit.then_some(t));
    match matched {
        None => Access::Unauthorized,
        Some(t) if t.covers(resource) => Access::Granted,
        Some(t) => Access::Forbidden {
            may_read: t.tables.clone().unwrap_or_default(),
        },
    }
}

/// Equality of two digests in time independent of where they differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The body of a 403 for a token outside its scope.
pub fn forbidden_message(resource: Resource, may_read: &[TableKind]) -> String {
    let kinds: Vec<&str> = may_read.iter().map(|k| k.as_str()).collect();
    let scope = format!("this token may read only the tables {}", kinds.join(", "));
    match resource {
        Resource::Table(k) => format!("{scope}; not {k}\n"),
        Resource::Api => {
            format!("{scope}; this endpoint needs a token without `tables` (unscoped)\n")
        }
    }
}

/// May `resource` go to `peer` over this listener? Only the `mysql` table is restricted:
/// it carries backend passwords, which travel in clear without TLS. Loopback peers are
/// always fine; others need TLS, or the operator's `--allow-plaintext-secrets`.
pub fn plaintext_allowed(
    resource: Resource,
    tls: bool,
    allow_plaintext_secrets: bool,
    peer: Option<IpAddr>,
) -> bool {
    resource != Resource::Table(TableKind::Mysql)
        || tls
        || allow_plaintext_secrets
        || peer.is_some_and(is_loopback)
}

/// The 403 body when [`plaintext_allowed`] says no.
pub const PLAINTEXT_MESSAGE: &str =
    "the mysql table carries backend passwords and control serves plain HTTP: \
configure --tls-cert/--tls-key (or, knowing the risk, --allow-plaintext-secrets)\n";

/// Loopback, including IPv4 loopback mapped into IPv6 (`::ffff:127.0.0.1`).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(origin: &str, value: &str, tables: Option<&[TableKind]>) -> ApiToken {
        ApiToken::new(
            origin,
            &Secret::new(value.into()),
            tables.map(<[_]>::to_vec),
        )
        .unwrap()
    }

    fn bearer(t: &str) -> String {
        format!("Bearer {t}")
    }

    #[test]
    fn open_without_tokens() {
        assert_eq!(check(&[], None, Resource::Api), Access::Open);
    }

    #[test]
    fn scoped_tokens_read_their_tables_only() {
        let tokens = [
            token("all", "root-token", None),
            token("dns", "dns-token", Some(&[TableKind::Dns, TableKind::Lvs])),
            token("mysql", "mysql-token", Some(&[TableKind::Mysql])),
        ];
        let dns = Resource::Table(TableKind::Dns);
        let lvs = Resource::Table(TableKind::Lvs);
        let mysql = Resource::Table(TableKind::Mysql);
        let h = bearer("dns-token");
        assert_eq!(check(&tokens, Some(&h), dns), Access::Granted);
        assert_eq!(check(&tokens, Some(&h), lvs), Access::Granted);
        let forbidden = Access::Forbidden {
            may_read: vec![TableKind::Dns, TableKind::Lvs],
        };
        assert_eq!(check(&tokens, Some(&h), mysql), forbidden);
        assert_eq!(check(&tokens, Some(&h), Resource::Api), forbidden);
        // The last token matches too: every token is looked at.
        let h = bearer("mysql-token");
        assert_eq!(check(&tokens, Some(&h), mysql), Access::Granted);
        assert!(matches!(
            check(&tokens, Some(&h), dns),
            Access::Forbidden { .. }
        ));
        // Unscoped reads everything.
        let h = bearer("root-token");
        for r in [dns, mysql, Resource::Api] {
            assert_eq!(check(&tokens, Some(&h), r), Access::Granted);
        }
    }

    #[test]
    fn missing_wrong_or_malformed_credentials_are_unauthorized() {
        let tokens = [
            token("a", "abc", None),
            token("b", "xyz", Some(&[TableKind::Dns])),
        ];
        let dns = Resource::Table(TableKind::Dns);
        for h in [
            None,
            Some("".to_string()),
            Some("Bearer".into()),
            Some("Bearer ".into()),
            Some("Bearer ab".into()),
            Some("Bearer abcd".into()),
            Some("Basic abc".into()),
            Some("abc".into()),
        ] {
            assert_eq!(
                check(&tokens, h.as_deref(), dns),
                Access::Unauthorized,
                "{h:?}"
            );
        }
        // Whitespace around the token in the file is not part of it.
        let t = [token("a", "  abc\n", None)];
        assert_eq!(check(&t, Some("Bearer abc"), dns), Access::Granted);
    }

    #[test]
    fn digest_compare_is_exact() {
        let a: [u8; 32] = Sha256::digest(b"a").into();
        let mut b = a;
        assert!(ct_eq(&a, &b));
        b[31] ^= 1;
        assert!(!ct_eq(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!ct_eq(&a, &b));
    }

    #[test]
    fn forbidden_message_names_the_scope() {
        let m = forbidden_message(
            Resource::Table(TableKind::Mysql),
            &[TableKind::Dns, TableKind::Lvs],
        );
        assert!(m.contains("dns, lvs") && m.contains("not mysql"), "{m}");
        let m = forbidden_message(Resource::Api, &[TableKind::Dns]);
        assert!(m.contains("unscoped"), "{m}");
    }

    #[test]
    fn resources_from_paths() {
        assert_eq!(
            Resource::of_path("/v1/tables/mysql"),
            Resource::Table(TableKind::Mysql)
        );
        assert_eq!(Resource::of_path("/v1/tables/nope"), Resource::Api);
        assert_eq!(Resource::of_path("/v1/state"), Resource::Api);
        assert_eq!(Resource::of_path("/v1/tables/dns/x"), Resource::Api);
    }

    #[test]
    fn config_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty.token"), "\n").unwrap();
        std::fs::write(dir.path().join("dns.token"), "t1\n").unwrap();
        std::fs::write(dir.path().join("dup.token"), "t1").unwrap();
        let load = |toml_text: &str| -> Result<Vec<ApiToken>, TokenError> {
            #[derive(Deserialize)]
            struct Top {
                api: ApiFile,
            }
            let top: Top = toml::from_str(toml_text).unwrap();
            top.api.load(dir.path())
        };
        let e = load("[[api.tokens]]\nfile = \"empty.token\"\n").unwrap_err();
        assert_eq!(e.field, "api.tokens[0].file");
        assert!(e.message.contains("empty"), "{e}");
        let e = load("[[api.tokens]]\nfile = \"nope.token\"\n").unwrap_err();
        assert_eq!(e.field, "api.tokens[0].file");
        assert!(e.message.contains("nope.token"), "{e}");
        let e = load(
            "[[api.tokens]]\nfile = \"dns.token\"\n[[api.tokens]]\nfile = \"dns.token\"\ntables = [\"dns\", \"pgsql\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.field, "api.tokens[1].tables");
        assert!(e.message.contains("pgsql"), "{e}");
        let e = load("[[api.tokens]]\nfile = \"dns.token\"\ntables = []\n").unwrap_err();
        assert_eq!(e.field, "api.tokens[0].tables");
        let bad: Result<ApiFile, _> = toml::from_str("tokens = [{ file = \"x\", tabels = [] }]");
        assert!(bad.unwrap_err().to_string().contains("tabels"));

        let ok =
            load("[[api.tokens]]\nfile = \"dns.token\"\ntables = [\"dns\", \"lvs\", \"dns\"]\n")
                .unwrap();
        assert_eq!(ok[0].tables, Some(vec![TableKind::Dns, TableKind::Lvs]));
        assert_eq!(ok[0].origin, "api.tokens[0].file");
        let shown = format!("{:?}", ok);
        assert!(!shown.contains("t1"), "{shown}");

        let dup = load(
            "[[api.tokens]]\nfile = \"dns.token\"\n[[api.tokens]]\nfile = \"dup.token\"\ntables = [\"dns\"]\n",
        )
        .unwrap();
        let lo = SocketAddr::from(([127, 0, 0, 1], 7070));
        let e = check_config(&dup, lo).unwrap_err();
        assert_eq!(e.field, "api.tokens[1].file");
        assert!(e.message.contains("api.tokens[0].file"), "{e}");
    }

    #[test]
    fn a_token_is_required_off_loopback() {
        let t = [token("--token-file", "x", None)];
        for addr in ["127.0.0.1:7070", "[::1]:7070", "127.0.0.2:0"] {
            let a: SocketAddr = addr.parse().unwrap();
            check_config(&[], a).unwrap();
            check_config(&t, a).unwrap();
        }
        for addr in ["0.0.0.0:7070", "[::]:7070", "10.1.2.3:7070"] {
            let a: SocketAddr = addr.parse().unwrap();
            let e = check_config(&[], a).unwrap_err().to_string();
            assert!(
                e.contains("--token-file") && e.contains("[[api.tokens]]"),
                "{e}"
            );
            check_config(&t, a).unwrap();
        }
    }

    #[test]
    fn mysql_in_clear_only_to_loopback_peers() {
        let mysql = Resource::Table(TableKind::Mysql);
        let dns = Resource::Table(TableKind::Dns);
        let remote: Option<IpAddr> = Some("10.0.0.5".parse().unwrap());
        let local: Option<IpAddr> = Some("127.0.0.1".parse().unwrap());
        let mapped: Option<IpAddr> = Some("::ffff:127.0.0.1".parse().unwrap());
        assert!(!plaintext_allowed(mysql, false, false, remote));
        assert!(!plaintext_allowed(mysql, false, false, None));
        assert!(plaintext_allowed(mysql, false, false, local));
        assert!(plaintext_allowed(mysql, false, false, mapped));
        assert!(plaintext_allowed(mysql, true, false, remote));
        assert!(plaintext_allowed(mysql, false, true, remote));
        assert!(plaintext_allowed(dns, false, false, remote));
    }
}

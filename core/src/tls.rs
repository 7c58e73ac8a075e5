//! PEM files into rustls: a server's certificate chain and key, a client's trusted CAs.
//!
//! One concern: read and check the files an operator names with a flag, and say which flag
//! and which file when something is wrong. A server's certificate is a [`ServerCert`]: a
//! rustls certificate resolver that SIGHUP can point at new files without touching the
//! sockets or the handshakes in progress. Sockets and handshakes belong to the daemon. PEM is read with rustls-pki-types' own reader ([`PemObject`]); the crypto
//! provider is ring, the one every TLS user in the binary shares.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file and the flag (or config field) that named it, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct PemFile<'a> {
    /// How the operator named the file: `--tls-cert`, `--control-ca`, `tls.cert`.
    pub flag: &'a str,
    pub path: &'a Path,
}

impl<'a> PemFile<'a> {
    pub fn new(flag: &'a str, path: &'a Path) -> Self {
        PemFile { flag, path }
    }
}

/// A TLS file that cannot be used; the message names the flag and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {}: {message}", path.display())]
    File {
        flag: String,
        path: PathBuf,
        message: String,
    },
    /// The key is not the certificate's; `files` names both flags and files.
    #[error("{files}: {source}")]
    KeyMismatch {
        files: String,
        source: rustls::Error,
    },
    #[error("TLS protocol versions: {0}")]
    Versions(rustls::Error),
}

impl TlsError {
    fn file(f: PemFile<'_>, message: impl Into<String>) -> Self {
        TlsError::File {
            flag: f.flag.to_string(),
            path: f.path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// The crypto provider every Ocean TLS config is built with (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file, in order (a server's chain: leaf first).
///
/// # Errors
/// When the file cannot be read, is not PEM, or holds no certificate.
pub fn cert_chain(f: PemFile<'_>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(f.path)
        .map_err(|e| TlsError::file(f, pem_message(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::file(f, format!("not PEM certificates: {}", pem_message(&e))))?;
    if certs.is_empty() {
        return Err(TlsError::file(
            f,
            "no certificate (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
///
/// # Errors
/// When the file cannot be read, is not PEM, or holds no private key.
pub fn private_key(f: PemFile<'_>) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(f.path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::file(
            f,
            "no private key (expected -----BEGIN PRIVATE KEY----- or an RSA/EC key)",
        ),
        e => TlsError::file(f, pem_message(&e)),
    })
}

/// A server certificate chain and key, re-read on [`ServerCert::reload`]: handshakes take
/// whatever is current, connections already up keep the certificate they were served.
#[derive(Debug)]
pub struct ServerCert {
    cert_flag: String,
    cert: PathBuf,
    key_flag: String,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl ServerCert {
    /// Reads and checks the pair.
    ///
    /// # Errors
    /// When a file cannot be used or the key is not the certificate's.
    pub fn load(cert: PemFile<'_>, key: PemFile<'_>) -> Result<Arc<ServerCert>, TlsError> {
        let current = certified_key(cert, key)?;
        Ok(Arc::new(ServerCert {
            cert_flag: cert.flag.to_string(),
            cert: cert.path.to_path_buf(),
            key_flag: key.flag.to_string(),
            key: key.path.to_path_buf(),
            current: ArcSwap::from_pointee(current),
        }))
    }

    /// Re-reads the files; returns whether the certificate changed. A pair that cannot be
    /// used leaves the current one in place.
    ///
    /// # Errors
    /// As [`ServerCert::load`].
    pub fn reload(&self) -> Result<bool, TlsError> {
        let next = certified_key(
            PemFile::new(&self.cert_flag, &self.cert),
            PemFile::new(&self.key_flag, &self.key),
        )?;
        let changed = next.cert != self.current.load().cert;
        if changed {
            self.current.store(Arc::new(next));
        }
        Ok(changed)
    }

    /// The end-entity certificate served now (DER).
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current.load().cert.first().cloned()
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn certified_key(cert: PemFile<'_>, key: PemFile<'_>) -> Result<CertifiedKey, TlsError> {
    let chain = cert_chain(cert)?;
    let private = private_key(key)?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|source| TlsError::KeyMismatch {
        files: format!(
            "{} {} and {} {}",
            cert.flag,
            cert.path.display(),
            key.flag,
            key.path.display()
        ),
        source,
    })
}

/// A server config (no client certificates) serving `cert`. The caller sets ALPN and
/// anything else its protocol needs.
///
/// # Errors
/// When the safe default protocol versions cannot be had from the provider.
pub fn server_config(cert: Arc<ServerCert>) -> Result<rustls::ServerConfig, TlsError> {
    Ok(rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Versions)?
        .with_no_client_auth()
        .with_cert_resolver(cert))
}

/// The CA certificates of a PEM file as a root store, for a client that trusts only them.
///
/// # Errors
/// When the file cannot be read, holds no certificate, or one is not a usable CA.
pub fn root_store(ca: PemFile<'_>) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in cert_chain(ca)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::file(ca, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

fn pem_message(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        // The io::Error alone says "No such file or directory"; the path is in TlsError.
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn loads_a_matching_pair_and_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let cert = write(dir.path(), "c.pem", &ca.cert.pem());
        let key = write(dir.path(), "k.pem", &ca.key_pair.serialize_pem());
        let served = ServerCert::load(
            PemFile::new("--tls-cert", &cert),
            PemFile::new("--tls-key", &key),
        )
        .unwrap();
        server_config(served).unwrap();
        assert_eq!(root_store(PemFile::new("--ca", &cert)).unwrap().len(), 1);
    }

    #[test]
    fn errors_name_the_flag_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["a".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b".into()]).unwrap();
        let cert = write(dir.path(), "a.pem", &a.cert.pem());
        let other_key = write(dir.path(), "b.key", &b.key_pair.serialize_pem());
        let junk = write(dir.path(), "junk.pem", "hello\n");
        let missing = dir.path().join("missing.pem");

        let e = cert_chain(PemFile::new("--tls-cert", &missing)).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("--tls-cert ") && s.contains("missing.pem"),
            "{s}"
        );

        let s = cert_chain(PemFile::new("--control-ca", &junk))
            .unwrap_err()
            .to_string();
        assert!(
            s.contains("--control-ca") && s.contains("junk.pem") && s.contains("no certificate"),
            "{s}"
        );

        let s = private_key(PemFile::new("--tls-key", &cert))
            .unwrap_err()
            .to_string();
        assert!(
            s.contains("--tls-key") && s.contains("no private key"),
            "{s}"
        );

        let s = ServerCert::load(
            PemFile::new("--tls-cert", &cert),
            PemFile::new("--tls-key", &other_key),
        )
        .unwrap_err()
        .to_string();
        assert!(
            s.contains("--tls-cert") && s.contains("--tls-key") && s.contains("b.key"),
            "{s}"
        );
    }

    #[test]
    fn reload_swaps_a_good_pair_and_keeps_the_old_on_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["a".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b".into()]).unwrap();
        let cert = write(dir.path(), "c.pem", &a.cert.pem());
        let key = write(dir.path(), "k.pem", &a.key_pair.serialize_pem());
        let served = ServerCert::load(
            PemFile::new("--tls-cert", &cert),
            PemFile::new("--tls-key", &key),
        )
        .unwrap();
        assert!(!served.reload().unwrap(), "same files: unchanged");

        // Half a rotation (new cert, old key) is refused and the old pair keeps serving.
        write(dir.path(), "c.pem", &b.cert.pem());
        assert!(served.reload().is_err());
        assert_eq!(served.leaf().unwrap().as_ref(), a.cert.der().as_ref());

        write(dir.path(), "k.pem", &b.key_pair.serialize_pem());
        assert!(served.reload().unwrap());
        assert_eq!(served.leaf().unwrap().as_ref(), b.cert.der().as_ref());
    }
}

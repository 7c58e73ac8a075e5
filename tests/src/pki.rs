//! A throwaway PKI for TLS tests: a CA and a server certificate for 127.0.0.1 signed by it,
//! written as PEM files in a temp dir (rcgen, at test time: nothing secret is checked in).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::Result;

/// The files of [`Pki::generate`]; the directory goes when this is dropped.
pub struct Pki {
    dir: tempfile::TempDir,
    /// The CA certificate: what clients trust (`--control-ca`, `curl --cacert`).
    pub ca: PathBuf,
    /// The server's certificate (SANs: IP 127.0.0.1 and `localhost`), signed by the CA.
    pub cert: PathBuf,
    /// The server certificate's private key.
    pub key: PathBuf,
}

impl Pki {
    /// Generates a CA and a server certificate for 127.0.0.1.
    ///
    /// # Errors
    /// When key generation or writing the files fails.
    pub fn generate() -> Result<Pki> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        let dir = tempfile::tempdir()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ocean test CA");
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("ca.pem"), ca_cert.pem())?;
        std::fs::write(p("cert.pem"), cert.pem())?;
        std::fs::write(p("key.pem"), key.serialize_pem())?;
        Ok(Pki {
            ca: p("ca.pem"),
            cert: p("cert.pem"),
            key: p("key.pem"),
            dir,
        })
    }

    /// The temp dir holding the files (a place for more test files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

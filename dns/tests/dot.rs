//! DNS over TLS (issue 14): `kdig +tls` (knot-dnsutils) gets the same answers as over UDP and
//! TCP for every record kind the zone serves; a client that speaks plain DNS or nothing at
//! all to the TLS port is closed without hurting the others; a reload serves a rotated
//! certificate to new handshakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{start_dns_with, OURS_ADDR};
use ocean_tests::pki::Pki;
use serde_json::json;
use tokio::io::AsyncReadExt;

/// What kdig printed, reduced to what must not depend on the transport.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: String,
    /// The answer and authority sections, one record per line, TTLs included, sorted
    /// (records of a name are rotated from one answer to the next).
    records: Vec<String>,
}

/// Runs kdig; `Err` with its output when it got no answer.
fn kdig(
    port: u16,
    transport: &[&str],
    name: &str,
    qtype: &str,
) -> Result<(Answer, String), String> {
    let out = Command::new("kdig")
        .args(["@127.0.0.1", "-p", &port.to_string()])
        .args(transport)
        .args(["+timeout=3", "+retry=0", name, qtype])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run kdig ({e}): install the Debian package knot-dnsutils")
        });
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let Some(status) = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
    else {
        return Err(text);
    };
    let mut records = Vec::new();
    let mut in_section = false;
    for line in text.lines() {
        if line.starts_with(";; ANSWER SECTION:") || line.starts_with(";; AUTHORITY SECTION:") {
            in_section = true;
        } else if line.trim().is_empty() || line.starts_with(";;") {
            in_section = false;
        } else if in_section {
            records.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    records.sort();
    Ok((
        Answer {
            status: status.trim().to_string(),
            records,
        },
        text,
    ))
}

fn tls_args(ca: &Path) -> Vec<String> {
    vec![
        format!("+tls-ca={}", ca.display()),
        "+tls-hostname=localhost".into(),
    ]
}

fn zone() -> serde_json::Value {
    json!({
        "domain": "mesos",
        "ttl": 60,
        "soa": {"mname": "ns1.mesos.", "rname": "root.ns1.mesos.", "refresh_s": 60, "retry_s": 600, "expire_s": 86400},
        "names": {
            "web-shop.marathon.mesos.": {"a": [OURS_ADDR.to_string()]},
            "api.marathon.mesos.": {"a": ["10.0.3.1", "10.0.3.2"], "aaaa": ["fd00::3"]},
            "_api._tcp.marathon.mesos.": {"srv": [
                {"priority": 0, "weight": 1, "port": 31001, "target": "api-t1.marathon.mesos."},
                {"priority": 0, "weight": 1, "port": 31002, "target": "api-t2.marathon.mesos."}
            ]},
            "api-t1.marathon.mesos.": {"a": ["10.0.3.1"]},
            "api-t2.marathon.mesos.": {"a": ["10.0.3.2"]}
        }
    })
}

async fn start(pki: &Pki) -> common::Dns {
    let (cert, key) = (pki.cert.clone(), pki.key.clone());
    start_dns_with(zone(), move |c| {
        c.tls = Some(ocean_dns::config::DotConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert,
            key,
        });
        c.tcp_idle_timeout = Duration::from_secs(1);
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdig_over_tls_gets_the_udp_and_tcp_answers_for_every_record_kind() {
    let pki = Pki::generate().unwrap();
    let dns = start(&pki).await;
    let tls_port = dns.running.tls_addr.expect("tls listener").port();
    let tls = tls_args(&pki.ca);
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let cases = [
        ("web-shop.marathon.mesos.", "A", "NOERROR"),
        ("api.marathon.mesos.", "A", "NOERROR"),
        ("api.marathon.mesos.", "AAAA", "NOERROR"),
        ("_api._tcp.marathon.mesos.", "SRV", "NOERROR"),
        ("mesos.", "SOA", "NOERROR"),
        ("mesos.", "NS", "NOERROR"),
        ("web-shop.marathon.mesos.", "TXT", "NOERROR"),
        ("nobody.marathon.mesos.", "A", "NXDOMAIN"),
    ];
    for (name, qtype, rcode) in cases {
        let (udp, _) = kdig(dns.port(), &["+notcp"], name, qtype).unwrap();
        let (tcp, _) = kdig(dns.port(), &["+tcp"], name, qtype).unwrap();
        let (over_tls, text) = kdig(tls_port, &tls, name, qtype)
            .unwrap_or_else(|text| panic!("{name} {qtype}: no answer over TLS:\n{text}"));
        assert!(text.contains(";; TLS session"), "not over TLS:\n{text}");
        assert_eq!(udp.status, rcode, "{name} {qtype}: {udp:?}");
        assert_eq!(over_tls, udp, "{name} {qtype}: TLS and UDP differ");
        assert_eq!(tcp, udp, "{name} {qtype}: TCP and UDP differ");
    }
    // The answers are the zone's, not just equal to each other.
    let (a, _) = kdig(tls_port, &tls, "web-shop.marathon.mesos.", "A").unwrap();
    assert_eq!(
        a.records,
        [format!("web-shop.marathon.mesos. 60 IN A {OURS_ADDR}")]
    );
    let (srv, _) = kdig(tls_port, &tls, "_api._tcp.marathon.mesos.", "SRV").unwrap();
    assert_eq!(srv.records.len(), 2, "{srv:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_or_silent_clients_on_the_tls_port_are_closed_and_others_served() {
    let pki = Pki::generate().unwrap();
    let dns = start(&pki).await;
    let tls_addr = dns.running.tls_addr.unwrap();
    let tls = tls_args(&pki.ca);
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();

    // Plain DNS over TCP to the TLS port: no answer, the connection is closed.
    let plain = kdig(tls_addr.port(), &["+tcp"], "web-shop.marathon.mesos.", "A");
    assert!(
        plain.is_err(),
        "plain TCP answered on the TLS port: {plain:?}"
    );

    // A client that connects and says nothing is closed after the idle timeout (1 s).
    let mut silent = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("a silent client was not closed within 5 s")
        .unwrap_or(0);
    assert_eq!(
        n, 0,
        "the server sent bytes to a client that never said hello"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );

    // A client that does not trust our certificate fails its handshake.
    let other = Pki::generate().unwrap();
    let untrusted = tls_args(&other.ca);
    let untrusted: Vec<&str> = untrusted.iter().map(String::as_str).collect();
    assert!(kdig(tls_addr.port(), &untrusted, "web-shop.marathon.mesos.", "A").is_err());

    // Everyone else is still served, over TLS and UDP.
    let (a, _) = kdig(tls_addr.port(), &tls, "web-shop.marathon.mesos.", "A").unwrap();
    assert_eq!(a.status, "NOERROR");
    let (a, _) = kdig(dns.port(), &["+notcp"], "web-shop.marathon.mesos.", "A").unwrap();
    assert_eq!(a.status, "NOERROR");

    let http = dns.running.http_addr.unwrap();
    for reason in ["error", "timeout"] {
        let line = common::metric_line(
            http,
            &format!("ocean_dns_tls_handshake_failures_total{{reason=\"{reason}\"}}"),
        )
        .await
        .unwrap();
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 1.0, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_the_rotated_certificate_to_new_handshakes() {
    let pki = Pki::generate().unwrap();
    let dns = start(&pki).await;
    let port = dns.running.tls_addr.unwrap().port();
    let old = tls_args(&pki.ca);
    let old: Vec<&str> = old.iter().map(String::as_str).collect();
    assert!(kdig(port, &old, "web-shop.marathon.mesos.", "A").is_ok());

    // The operator writes a certificate from another CA over the files, then reloads.
    let next = Pki::generate().unwrap();
    std::fs::copy(&next.cert, &pki.cert).unwrap();
    std::fs::copy(&next.key, &pki.key).unwrap();
    ocean_core::reload::trigger();
    let new = tls_args(&next.ca);
    let new: Vec<&str> = new.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while kdig(port, &new, "web-shop.marathon.mesos.", "A").is_err() {
        assert!(
            Instant::now() < deadline,
            "the rotated certificate is not served 5 s after the reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        kdig(port, &old, "web-shop.marathon.mesos.", "A").is_err(),
        "the old certificate is still served"
    );

    // A key that does not match keeps the running pair.
    std::fs::copy(&pki.ca, &pki.cert).unwrap();
    ocean_core::reload::trigger();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(kdig(port, &new, "web-shop.marathon.mesos.", "A").is_ok());
}

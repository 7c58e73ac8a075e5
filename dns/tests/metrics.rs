//! `/metrics` people can use (issue 13): answer and forward latency are Prometheus
//! histograms with microsecond buckets, and every metric has `# HELP`. (The DNS server has
//! no per-backend series: its upstream resolvers are flags, not table entries.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ocean_core::metrics::undescribed;
use ocean_core::subscriber::SubscriberConfig;
use ocean_dns::server::start;
use serde_json::json;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// `GET /metrics` on the HTTP API.
async fn scrape(http: SocketAddr) -> reqwest::Result<String> {
    reqwest::get(format!("http://{http}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await
}

/// A query for `name` (absolute, dotted) type A with id `id`, recursion desired.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// An upstream resolver that answers every query with its own question (QR set, NOERROR).
async fn fake_upstream() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let mut reply = buf[..n].to_vec();
            if reply.len() > 3 {
                reply[2] |= 0x80;
                reply[3] = 0x80;
            }
            // A lost reply only makes the forwarder retry.
            let _ = sock.send_to(&reply, from).await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_and_forward_histograms_and_help() {
    ocean_core::http::init_tls();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dns.json");
    let table = json!({
        "domain": "mesos",
        "ttl": 60,
        "soa": {"mname": "ns1.mesos.", "rname": "root.ns1.mesos.", "refresh_s": 60, "retry_s": 600, "expire_s": 86400},
        "names": {"nginx.marathon.mesos.": {"a": ["10.0.0.1"]}}
    });
    std::fs::write(&file, serde_json::to_vec(&table).unwrap()).unwrap();
    let mut config = ocean_dns::Config::new(SubscriberConfig {
        table_file: Some(file),
        file_poll: Duration::from_millis(50),
        ..Default::default()
    });
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.http = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.udp_workers = 1;
    config.resolvers = vec![fake_upstream().await];
    let cancel = CancellationToken::new();
    let running = start(config, cancel.clone()).await.unwrap();
    let http = running.http_addr.unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(running.dns_addr).await.unwrap();

    // Until the zone is served: then 128 more answers (the server times one in 64), and
    // one forwarded query.
    let mut buf = [0u8; 1500];
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut id = 0u16;
    while answered < 128 {
        assert!(Instant::now() < deadline, "the zone is never served");
        id = id.wrapping_add(1);
        client
            .send(&query(id, "nginx.marathon.mesos."))
            .await
            .unwrap();
        let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        // NOERROR with one answer record.
        if n > 12 && buf[3] & 0x0f == 0 && buf[7] == 1 {
            answered += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    client.send(&query(9999, "example.com.")).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
        .await
        .expect("a forwarded answer")
        .unwrap();
    assert_eq!(&buf[..2], &9999u16.to_be_bytes(), "{:?}", &buf[..n]);

    // The workers flush their counters when idle.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(http).await.unwrap();
        if text.contains("ocean_dns_answer_seconds_count")
            && text.contains("ocean_dns_forward_seconds_count")
        {
            break text;
        }
        assert!(Instant::now() < deadline, "no latency histograms:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(undescribed(&text), Vec::<String>::new(), "{text}");
    assert!(text.contains("# TYPE ocean_dns_answer_seconds histogram\n"));
    assert!(
        text.contains("ocean_dns_answer_seconds_bucket{le=\"0.00001\"} "),
        "{text}"
    );
    assert!(text.contains("ocean_dns_answer_seconds_bucket{le=\"0.1\"} "));
    assert!(text.contains("# TYPE ocean_dns_forward_seconds histogram\n"));
    assert!(
        text.contains("ocean_dns_forward_seconds_bucket{le=\"0.0001\"} "),
        "{text}"
    );
    assert!(
        text.contains("ocean_dns_forward_seconds_count 1\n"),
        "{text}"
    );
    assert!(text.contains("# HELP ocean_dns_queries_total "));

    cancel.cancel();
    running.wait().await;
}

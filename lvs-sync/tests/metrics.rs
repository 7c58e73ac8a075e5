//! `/metrics` people can use (issue 13): reconcile time is a Prometheus histogram (1 ms ..
//! 30 s buckets) and every metric has `# HELP`. Against the dry-run backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ocean_core::metrics::undescribed;
use ocean_lvs_sync::backend::{BackendKind, Output};
use ocean_lvs_sync::{start, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

async fn scrape(addr: std::net::SocketAddr) -> String {
    get(addr, "/metrics").await
}

/// `GET path` on the admin port: the whole 200 response, head included.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_histogram_and_help() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lvs.json");
    let table = serde_json::json!({"services": [{
        "vip": "10.0.0.1", "port": 80, "protocol": "tcp", "scheduler": "wrr",
        "reals": [{"ip": "10.1.0.1", "port": 80, "weight": 1, "forward": "dr"}]
    }]});
    std::fs::write(&file, table.to_string()).unwrap();
    let buf = Arc::new(Mutex::new(Vec::new()));
    let mut config = Config::new(BackendKind::DryRun);
    config.subscriber.table_file = Some(file);
    config.subscriber.file_poll = Duration::from_millis(50);
    config.output = Output::Buffer(buf.clone());
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    let cancel = CancellationToken::new();
    let running = start(config, cancel.clone()).await.unwrap();
    let admin = running.admin_addr.unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(admin).await;
        if text.contains("ocean_lvs_reconcile_seconds_count") && text.contains("ocean_lvs_services")
        {
            break text;
        }
        assert!(Instant::now() < deadline, "no reconcile:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert_eq!(undescribed(body), Vec::<String>::new(), "{body}");
    assert!(body.contains("# TYPE ocean_lvs_reconcile_seconds histogram\n"));
    for le in ["0.001", "30", "+Inf"] {
        let bucket = format!("ocean_lvs_reconcile_seconds_bucket{{le=\"{le}\"}} ");
        assert!(body.contains(&bucket), "{bucket} missing:\n{body}");
    }
    assert!(body.contains("ocean_lvs_services 1\n"), "{body}");
    assert!(body.contains("# HELP ocean_lvs_operations_total "));

    // The status page says what the last reconcile did.
    let page = get(admin, "/").await;
    for fact in [
        "<h1>ocean lvs-sync</h1>",
        "<dt>IPVS services</dt><dd>1</dd>",
        "<dt>real servers</dt><dd>1</dd>",
        "<dt>errors</dt><dd>0</dd>",
    ] {
        assert!(
            page.contains(fact),
            "{fact} missing from the status page:\n{page}"
        );
    }

    cancel.cancel();
    running.wait().await;
}

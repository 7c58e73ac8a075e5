//! The daemon loop with the dry-run backend: a table file, a change to it, a resync, the
//! admin endpoint's metrics, and the flags.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use ocean_lvs_sync::backend::{BackendKind, Output};
use ocean_lvs_sync::{start, Args, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

fn table(weight: u32, with_second: bool) -> String {
    let mut services = vec![serde_json::json!({
        "vip": "10.0.0.1", "port": 80, "protocol": "tcp", "scheduler": "wrr",
        "reals": [{"ip": "10.1.0.1", "port": 80, "weight": weight, "forward": "dr"}]
    })];
    // refused on its own (unknown scheduler, and a weight over the kernel's limit): the
    // rest of the file is applied
    services.push(serde_json::json!({
        "vip": "10.0.0.9", "port": 80, "protocol": "tcp", "scheduler": "fastest",
        "reals": [{"ip": "10.1.0.9", "port": 80, "weight": 70000, "forward": "dr"}]
    }));
    if with_second {
        services.push(serde_json::json!({
            "vip": "10.0.0.2", "port": 53, "protocol": "udp", "scheduler": "rr",
            "reals": [{"ip": "10.1.0.2", "port": 53, "weight": 1, "forward": "dr"}]
        }));
    }
    serde_json::json!({ "services": services }).to_string()
}

async fn wait_for(buf: &Arc<Mutex<Vec<u8>>>, needle: &str) -> String {
    for _ in 0..200 {
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{needle:?} never printed; got:\n{}",
        String::from_utf8_lossy(&buf.lock().unwrap())
    );
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_daemon_follows_the_table_file_and_prints_only_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lvs.json");
    std::fs::write(&file, table(1, true)).unwrap();
    let buf = Arc::new(Mutex::new(Vec::new()));
    let mut config = Config::new(BackendKind::DryRun);
    config.subscriber.table_file = Some(file.clone());
    config.subscriber.file_poll = Duration::from_millis(50);
    config.output = Output::Buffer(buf.clone());
    config.resync = Duration::from_millis(200);
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    let cancel = CancellationToken::new();
    let running = start(config, cancel.clone()).await.unwrap();

    wait_for(&buf, "ipvsadm -a -u 10.0.0.2:53 -r 10.1.0.2:53 -g -w 1").await;
    // resyncs with nothing changed print nothing
    tokio::time::sleep(Duration::from_millis(600)).await;
    let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text,
        "ipvsadm -A -t 10.0.0.1:80 -s wrr\n\
         ipvsadm -a -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 1\n\
         ipvsadm -A -u 10.0.0.2:53 -s rr\n\
         ipvsadm -a -u 10.0.0.2:53 -r 10.1.0.2:53 -g -w 1\n"
    );

    // a change: a weight edit and a removed service
    std::fs::write(&file, table(7, false)).unwrap();
    let text = wait_for(&buf, "ipvsadm -D -u 10.0.0.2:53").await;
    assert!(
        text.contains("ipvsadm -e -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 7\n"),
        "{text}"
    );

    let admin = running.admin_addr.unwrap();
    let health = http_get(admin, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = http_get(admin, "/metrics").await;
    for m in [
        "ocean_lvs_writes_total",
        "ocean_lvs_operations_total",
        "ocean_lvs_reconcile_seconds",
        "ocean_lvs_services",
        "ocean_lvs_destinations",
    ] {
        assert!(metrics.contains(m), "{m} missing from /metrics:\n{metrics}");
    }
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .unwrap();
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

#[test]
fn flags_parse_into_a_config() {
    let cli = Cli::try_parse_from([
        "lvs-sync",
        "--table-file",
        "/tmp/lvs.json",
        "--backend",
        "ipvsadm-restore",
        "--vip",
        "10.0.0.0/24",
        "--vip",
        "2001:db8::/32",
        "--drain",
        "5s",
        "--resync",
        "1m",
        "--max-delete",
        "7",
        "--force",
        "--once",
        "--state-file",
        "/tmp/owned",
        "--max-services",
        "10",
    ])
    .unwrap();
    let c = cli.args.into_config().unwrap();
    assert_eq!(c.backend, BackendKind::IpvsadmRestore);
    assert_eq!(c.vips.len(), 2);
    assert_eq!(c.plan.drain, Duration::from_secs(5));
    assert_eq!(c.resync, Duration::from_secs(60));
    assert_eq!((c.plan.max_delete, c.plan.force, c.once), (7, true, true));
    assert_eq!(c.max_services, 10);
    let defaults = Cli::try_parse_from(["lvs-sync", "--table-file", "/tmp/lvs.json"])
        .unwrap()
        .args
        .into_config()
        .unwrap();
    assert_eq!(defaults.backend, BackendKind::Netlink);
    assert_eq!(defaults.plan.drain, Duration::from_secs(30));
    assert_eq!(defaults.resync, Duration::from_secs(30));
    assert_eq!(defaults.max_services, 4096);
    assert!(Cli::try_parse_from(["lvs-sync", "--vip", "10.0.0.0/33"]).is_err());
}

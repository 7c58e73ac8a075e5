//! `/metrics` people can use (issue 13): sync and derive time are Prometheus histograms
//! (1 ms .. 30 s buckets) and every metric has `# HELP`. Control's per-kind series are
//! labelled with one of the five fixed table kinds, so none can outlive what it describes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use ocean_control::config::Source;
use ocean_control::engine::start;
use ocean_control::Config;
use ocean_core::metrics::undescribed;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// `GET /v2/apps?embed=apps.tasks` of a Marathon with one app and one task.
fn apps() -> serde_json::Value {
    json!({"apps": [{
        "id": "/web",
        "cmd": "sleep infinity",
        "instances": 1,
        "labels": {"OCEAN_REDIS_CLUSTER": "web-cache"},
        "portDefinitions": [{"port": 6390, "protocol": "tcp", "name": "main", "labels": {}}],
        "container": null,
        "healthChecks": [],
        "tasksRunning": 1,
        "tasks": [{
            "id": "web.00000001-3dda-11e4-a088-c20493233aa5",
            "appId": "/web",
            "host": "127.0.1.1",
            "ipAddresses": [{"ipAddress": "127.0.1.1", "protocol": "IPv4"}],
            "ports": [31001],
            "servicePorts": [],
            "slaveId": "db7b40e2-791c-445f-b373-183e2a648a86-S1",
            "stagedAt": "2026-11-27T10:00:00.000Z",
            "startedAt": "2026-11-27T10:00:01.000Z",
            "state": "TASK_RUNNING",
            "version": "2026-11-27T09:59:59.000Z"
        }]
    }]})
}

async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_and_derive_histograms_and_help() {
    ocean_core::http::init_tls();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apps.json");
    std::fs::write(&file, serde_json::to_vec(&apps()).unwrap()).unwrap();
    let mut config = Config::new(Source::File(file.clone()));
    config.listen = "127.0.0.1:0".parse().unwrap();
    let cancel = CancellationToken::new();
    let running = start(config, cancel.clone()).await.unwrap();
    let base = format!("http://{}", running.addr);

    // The first sync publishes the tables; a proxy's poll counts a table request.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = reqwest::get(format!("{base}/v1/tables/redis"))
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no redis table: {}", r.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = metrics_text(&base).await;
    assert_eq!(undescribed(&text), Vec::<String>::new(), "{text}");
    for name in [
        "ocean_control_sync_duration_seconds",
        "ocean_control_derive_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} histogram\n")),
            "{text}"
        );
        assert!(text.contains(&format!("# HELP {name} ")));
        for le in ["0.001", "30", "+Inf"] {
            let bucket = format!("{name}_bucket{{le=\"{le}\"}} ");
            assert!(text.contains(&bucket), "{bucket} missing:\n{text}");
        }
    }
    assert!(text.contains("ocean_control_table_requests_total{kind=\"redis\",status=\"200\"} "));
    assert!(text.contains("# HELP ocean_control_syncs_total "));
    for stage in ["fetch", "normalize", "derive", "publish"] {
        let count = format!("ocean_control_sync_stage_seconds_count{{stage=\"{stage}\"}} 1\n");
        assert!(text.contains(&count), "{count} missing:\n{text}");
    }
    assert!(
        text.contains("ocean_control_derives_total{dns=\"whole\"} 1\n"),
        "{text}"
    );

    // A second task: the next sync derives the dns names of that app only (issue 17).
    let etag = |r: &reqwest::Response| r.headers()["etag"].to_str().unwrap().to_string();
    let first = etag(&reqwest::get(format!("{base}/v1/tables/dns")).await.unwrap());
    let mut changed = apps();
    let mut second = changed["apps"][0]["tasks"][0].clone();
    second["id"] = "web.00000002-3dda-11e4-a088-c20493233aa5".into();
    second["host"] = "127.0.1.2".into();
    second["ipAddresses"][0]["ipAddress"] = "127.0.1.2".into();
    changed["apps"][0]["tasks"]
        .as_array_mut()
        .unwrap()
        .push(second);
    std::fs::write(&file, serde_json::to_vec(&changed).unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while etag(&reqwest::get(format!("{base}/v1/tables/dns")).await.unwrap()) == first {
        assert!(
            Instant::now() < deadline,
            "the second task was not published"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = metrics_text(&base).await;
    assert!(
        text.contains("ocean_control_derives_total{dns=\"patched\"} 1\n"),
        "{text}"
    );

    cancel.cancel();
    running.wait().await;
}

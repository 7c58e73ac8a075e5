//! DNS names and views for load balancers end to end (issue 14): control started on an apps
//! file and a control.toml with views and a zone serves the view records in
//! `/v1/tables/dns`, the view VIPs in `/v1/tables/lvs`, and the refused name in
//! `/v1/problems`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use ocean_control::config::{FileConfig, Source};
use ocean_control::engine::start;
use ocean_control::Config;
use ocean_core::table::{DnsTable, LvsTable};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const CONTROL_TOML: &str = r#"
[dns.views.unicom]
networks = ["10.1.0.0/16"]
[dns.views.telecom]
networks = ["10.2.0.0/16", "10.3.0.0/16"]
[dns.zones."shop.example.com"]
apps = ["/lb/"]
[lvs]
vips = [{ cidr = "10.99.0.0/16", apps = ["/lb/"] }, { cidr = "10.98.0.0/16", apps = ["/web/"] }]
"#;

fn app(id: &str, labels: Value, host: &str) -> Value {
    json!({
        "id": id,
        "labels": labels,
        "tasks": [{
            "id": format!("{}.00000001-3dda-11e4-a088-c20493233aa5", id.trim_start_matches('/').replace('/', "_")),
            "host": host,
            "ports": [31001],
            "slaveId": "db7b40e2-791c-445f-b373-183e2a648a86-S1",
            "state": "TASK_RUNNING"
        }]
    })
}

async fn get(url: &str) -> Option<Value> {
    let r = reqwest::get(url).await.unwrap();
    (r.status() == 200).then_some(())?;
    Some(r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_records_lvs_services_and_refused_names_are_served() {
    ocean_core::http::init_tls();
    let dir = tempfile::tempdir().unwrap();
    let apps = json!({"apps": [
        app("/lb/api", json!({
            "OCEAN_ELB": "10.99.0.1:443/tcp",
            "OCEAN_ELB_VIEW_UNICOM": "10.99.1.1:443/tcp",
            "OCEAN_DNS_NAMES": "api.shop.example.com,api.evil.example.org",
        }), "127.0.1.1"),
        app("/web/thief", json!({
            "OCEAN_ELB": "10.98.0.9:80/tcp",
            "OCEAN_DNS_NAMES": "www.shop.example.com",
        }), "127.0.1.2"),
    ]});
    let file = dir.path().join("apps.json");
    std::fs::write(&file, serde_json::to_vec(&apps).unwrap()).unwrap();
    let toml = dir.path().join("control.toml");
    std::fs::write(&toml, CONTROL_TOML).unwrap();
    let mut config = Config::new(Source::File(file));
    FileConfig::load(&toml)
        .unwrap()
        .apply(dir.path(), &mut config)
        .unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.validate().unwrap();
    let cancel = CancellationToken::new();
    let running = start(config, cancel.clone()).await.unwrap();
    let base = format!("http://{}", running.addr);

    let deadline = Instant::now() + Duration::from_secs(10);
    let dns: DnsTable = loop {
        if let Some(v) = get(&format!("{base}/v1/tables/dns")).await {
            break serde_json::from_value(v).unwrap();
        }
        assert!(Instant::now() < deadline, "no dns table");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dns.zones, vec!["shop.example.com"]);
    let views: Vec<(&str, usize)> = dns
        .views
        .iter()
        .map(|v| (v.name.as_str(), v.networks.len()))
        .collect();
    assert_eq!(views, vec![("unicom", 1), ("telecom", 2)]);
    let a = |r: Option<&ocean_core::table::dns::DnsRecords>| -> Vec<String> {
        r.map(|r| r.a.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    };
    assert_eq!(a(dns.names.get("api.shop.example.com.")), vec!["10.99.0.1"]);
    assert_eq!(
        a(dns.views[0].names.get("api.shop.example.com.")),
        vec!["10.99.1.1"]
    );
    assert!(dns.views[1].names.is_empty());
    assert!(!dns.names.contains_key("www.shop.example.com."));

    let lvs: LvsTable =
        serde_json::from_value(get(&format!("{base}/v1/tables/lvs")).await.unwrap()).unwrap();
    let vips: Vec<String> = lvs
        .services
        .iter()
        .map(|s| {
            format!(
                "{}:{} {:?}",
                s.vip,
                s.port,
                s.reals.iter().map(|r| r.ip.to_string()).collect::<Vec<_>>()
            )
        })
        .collect();
    assert_eq!(
        vips,
        vec![
            "10.98.0.9:80 [\"127.0.1.2\"]",
            "10.99.0.1:443 [\"127.0.1.1\"]",
            "10.99.1.1:443 [\"127.0.1.1\"]"
        ]
    );

    let problems = get(&format!("{base}/v1/problems")).await.unwrap();
    let lines: Vec<String> = problems["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}: {}",
                p["table"].as_str().unwrap(),
                p["app"].as_str().unwrap(),
                p["message"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for want in [
        "dns /lb/api: OCEAN_DNS_NAMES=api.evil.example.org.: refused: it lies in no [dns.zones] zone of control.toml",
        "dns /web/thief: OCEAN_DNS_NAMES=www.shop.example.com.: refused by [dns.zones.\"shop.example.com\"] apps = [\"/lb/\"], which does not cover this app",
    ] {
        assert!(lines.iter().any(|l| l.starts_with(want)), "{want} not in {lines:#?}");
    }
    cancel.cancel();
}

/// Issue 17: a patched derive rewrites the table published before the current one (the
/// engine's recycled table). The load balancers' names that table held go or stay as the
/// new state says, whether their app stopped claiming a name, changed it, or went away,
/// and each table equals the whole derive.
#[test]
fn a_recycled_table_loses_and_gains_load_balancer_names_as_derived() {
    use ocean_control::derive::dns_index::{Derivation, DnsIndex, Recycled};
    use ocean_control::derive::{derive_all, derive_all_patched};
    use ocean_control::marathon::model::parse_apps;
    use ocean_control::state::{normalize, HealthMemory, Resolved, State};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("control.toml");
    std::fs::write(&toml, CONTROL_TOML).unwrap();
    let mut config = Config::new(Source::File(dir.path().join("unused")));
    FileConfig::load(&toml)
        .unwrap()
        .apply(dir.path(), &mut config)
        .unwrap();
    let config = config.derive;
    let lb = |names: &str| {
        app(
            "/lb/api",
            json!({"OCEAN_ELB": "10.99.0.1:443/tcp", "OCEAN_DNS_NAMES": names}),
            "127.0.1.1",
        )
    };
    let web = app("/web/site", json!({}), "127.0.1.2");
    let steps = [
        vec![lb("api.shop.example.com"), web.clone()],
        vec![lb("api.shop.example.com,www.shop.example.com"), web.clone()],
        vec![lb("www.shop.example.com"), web.clone()],
        vec![web.clone()],
        vec![lb("api.shop.example.com")],
        vec![lb("api.shop.example.com"), web],
    ];
    let state = |apps: &[Value]| -> Arc<State> {
        let body = serde_json::to_vec(&json!({ "apps": apps })).unwrap();
        let (apps, _) = parse_apps(&body).unwrap();
        Arc::new(normalize(
            &apps,
            &Resolved::new(),
            &mut HealthMemory::default(),
        ))
    };
    let first = state(&steps[0]);
    let whole = derive_all(&first, &config);
    assert!(whole.dns.names.contains_key("api.shop.example.com."));
    let mut index = DnsIndex::build(Arc::clone(&first), &config.dns).unwrap();
    let mut published = vec![(first, whole.dns, whole.dns_lb_names)];
    for (k, apps) in steps.iter().enumerate().skip(1) {
        let s = state(apps);
        let (from, table, added) = published[published.len().saturating_sub(2)].clone();
        let recycled = Recycled {
            table,
            from: Derivation {
                state: from,
                settings: config.dns.clone(),
                lb_names: added,
            },
        };
        let patched = derive_all_patched(&s, &config, &mut index, Some(recycled)).unwrap();
        let full = derive_all(&s, &config);
        assert_eq!(patched.dns, full.dns, "step {k}");
        assert_eq!(patched.problems, full.problems, "step {k}");
        published.push((s, patched.dns, patched.dns_lb_names));
    }
    let names = |k: usize| -> Vec<&String> {
        let t = &published[k].1;
        t.names
            .keys()
            .filter(|n| n.ends_with("shop.example.com."))
            .collect()
    };
    assert_eq!(names(2), ["www.shop.example.com."]);
    assert!(names(3).is_empty());
    assert_eq!(names(5), ["api.shop.example.com."]);
}

//! DNS views and load-balancer names end to end (issue 14, must-show 1): `ocean up` on a
//! Marathon apps file and a control.toml with a view and a zone; `dig -b` from two loopback
//! addresses asks its DNS for the same load-balancer name and gets each view's VIP, and a
//! name the app's owner does not own is not served and is a line in `/v1/problems`.
//!
//! The VIPs (10.99.x.x) exist only as text in the tables: nothing connects to them.

use std::process::Command;

use ocean_tests::servers::{find_binary, free_port};
use serde_json::json;

use super::{get, start_up, terminate};

const CONTROL_TOML: &str = r#"
[dns.views.unicom]
networks = ["127.0.0.2/32"]
[dns.zones."shop.example.com"]
apps = ["/lb/"]
[lvs]
vips = [{ cidr = "10.99.0.0/16", apps = ["/lb/"] }, { cidr = "10.98.0.0/16", apps = ["/web/"] }]
"#;

fn app(id: &str, labels: serde_json::Value, host: &str) -> serde_json::Value {
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

/// `dig -b source` for `name` A against `ocean up`'s DNS: (status, A records).
fn dig(source: &str, port: u16, name: &str, tcp: bool) -> (String, Vec<String>) {
    let bin = find_binary("dig", "bind9-dnsutils").unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(["-b", source, "@127.0.0.1", "-p", &port.to_string()])
        .args(["+time=3", "+tries=2", "+noall", "+comments", "+answer"]);
    if tcp {
        cmd.arg("+tcp");
    }
    let out = cmd.args([name, "A"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status from dig:\n{text}"))
        .to_string();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A").then(|| f[4].to_string())
        })
        .collect();
    (status, answers)
}

#[test]
fn dig_from_two_networks_gets_each_views_vip_through_ocean_up() {
    let dir = tempfile::tempdir().unwrap();
    let apps = json!({"apps": [
        app("/lb/api", json!({
            "OCEAN_ELB": "10.99.0.1:443/tcp",
            "OCEAN_ELB_VIEW_UNICOM": "10.99.1.1:443/tcp",
            "OCEAN_DNS_NAMES": "api.shop.example.com",
        }), "127.0.1.1"),
        // Another team names a host in a zone only /lb/ may put names in.
        app("/web/thief", json!({
            "OCEAN_ELB": "10.98.0.9:80/tcp",
            "OCEAN_DNS_NAMES": "www.shop.example.com",
        }), "127.0.1.2"),
    ]});
    let apps_file = dir.path().join("apps.json");
    std::fs::write(&apps_file, serde_json::to_vec(&apps).unwrap()).unwrap();
    let control_toml = dir.path().join("control.toml");
    std::fs::write(&control_toml, CONTROL_TOML).unwrap();
    let dns_port = free_port().unwrap();
    let http_port = free_port().unwrap();
    let up = dir.path().join("up.toml");
    std::fs::write(
        &up,
        format!(
            "[control]\nlisten = \"127.0.0.1:0\"\napps_file = \"{}\"\nconfig = \"{}\"\n\
             [dns]\nlisten = \"127.0.0.1:{dns_port}\"\nhttp = \"127.0.0.1:{http_port}\"\n",
            apps_file.display(),
            control_toml.display()
        ),
    )
    .unwrap();
    let (child, url, _) = start_up(&["up", "--config", up.to_str().unwrap()]);
    // DNS follows control: wait until the name is served at all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while dig("127.0.0.1", dns_port, "api.shop.example.com.", false).0 != "NOERROR" {
        assert!(
            std::time::Instant::now() < deadline,
            "the name never appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for tcp in [false, true] {
        let (status, a) = dig("127.0.0.2", dns_port, "api.shop.example.com.", tcp);
        assert_eq!(
            (status.as_str(), a),
            ("NOERROR", vec!["10.99.1.1".to_string()]),
            "unicom, tcp={tcp}"
        );
        let (status, a) = dig("127.0.0.1", dns_port, "api.shop.example.com.", tcp);
        assert_eq!(
            (status.as_str(), a),
            ("NOERROR", vec!["10.99.0.1".to_string()]),
            "default, tcp={tcp}"
        );
        // The thief's name is not served: NXDOMAIN in the zone, for everyone.
        let (status, a) = dig("127.0.0.2", dns_port, "www.shop.example.com.", tcp);
        assert_eq!((status.as_str(), a.len()), ("NXDOMAIN", 0), "tcp={tcp}");
    }
    let (status, problems) = get(&format!("{url}/v1/problems"));
    assert_eq!(status, 200);
    assert!(
        problems.contains("/web/thief")
            && problems.contains("OCEAN_DNS_NAMES=www.shop.example.com.")
            && problems.contains("which does not cover this app"),
        "{problems}"
    );
    // lvs-sync gets the view's VIP as a virtual service too.
    let (_, lvs) = get(&format!("{url}/v1/tables/lvs"));
    assert!(
        lvs.contains("10.99.1.1") && lvs.contains("10.99.0.1"),
        "{lvs}"
    );
    terminate(child);
}

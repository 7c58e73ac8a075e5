//! Derive against whole Marathon responses: the bundled example (Marathon 1.5 shape, every
//! label kind) and real Marathon 1.4 / 1.5 responses (tests/fixtures/marathon, see its README).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use ocean_control::config::{FileConfig, Source};
use ocean_control::derive::{derive_all, Derived};
use ocean_control::marathon::model::parse_apps;
use ocean_control::state::{normalize, HealthMemory, Resolved, State};
use ocean_control::Config;
use ocean_core::table::lvs::{Forward, Protocol};
use ocean_core::table::mysql::Access;
use ocean_core::table::Table;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(path: PathBuf) -> State {
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (apps, bad) = parse_apps(&body).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    normalize(&apps, &Resolved::new(), &mut HealthMemory::default())
}

fn example() -> (State, Derived) {
    let state = load(root().join("examples/marathon-apps.json"));
    let mut config = Config::new(Source::File("unused".into()));
    let file = FileConfig::load(&root().join("examples/control.toml")).unwrap();
    file.apply(&root().join("examples"), &mut config).unwrap();
    let derived = derive_all(&state, &config.derive);
    derived.dns.validate().unwrap();
    derived.redis.validate().unwrap();
    derived.memcached.validate().unwrap();
    derived.mysql.validate().unwrap();
    derived.lvs.validate().unwrap();
    (state, derived)
}

fn a(d: &Derived, name: &str) -> Vec<String> {
    let mut v: Vec<String> = d
        .dns
        .names
        .get(name)
        .map(|r| r.a.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn dns_covers_nested_groups_bridge_ip_per_task_health_and_task_states() {
    let (_, d) = example();
    // Nested group app with a failing-health task (10.0.1.14): left out.
    assert_eq!(
        a(&d, "api-browser-miui.marathon.mesos."),
        vec!["10.0.1.12", "10.0.2.21"]
    );
    // The raw dotted Mesos-DNS name too.
    assert_eq!(
        a(&d, "api.browser.miui.marathon.mesos."),
        vec!["10.0.1.12", "10.0.2.21"]
    );
    // Bridge app mid-deployment: KILLING and STAGING tasks are out, and so is the new
    // RUNNING task whose health was never checked.
    assert_eq!(
        a(&d, "catalog-api-shop.marathon.mesos."),
        vec!["10.0.1.11", "10.0.1.13"]
    );
    // IP-per-task: container IPs; the agents under .slave.
    assert_eq!(
        a(&d, "orders-api-shop.marathon.mesos."),
        vec!["9.0.2.132", "9.0.3.131", "9.0.7.131"]
    );
    assert_eq!(
        a(&d, "orders-api-shop.marathon.slave.mesos."),
        vec!["10.0.1.12", "10.0.1.13", "10.0.2.22"]
    );
    let srv = &d.dns.names["_orders-api-shop._tcp.marathon.mesos."].srv;
    assert_eq!(srv.len(), 3);
    assert!(srv
        .iter()
        .all(|s| s.port == 8080 && s.target.starts_with("orders-api-shop-")));
    // Bridge SRV: host ports on the agent, never the 172.17 bridge address.
    let srv = &d.dns.names["_memcached-sessions-cache-infra._tcp.marathon.mesos."].srv;
    let mut ports: Vec<u16> = srv.iter().map(|s| s.port).collect();
    ports.sort();
    assert_eq!(ports, vec![31326, 31726, 31887]);
    assert!(!d
        .dns
        .names
        .values()
        .any(|r| r.a.iter().any(|ip| ip.octets()[0] == 172)));
    // A suspended app has no names.
    assert!(!d.dns.names.keys().any(|n| n.contains("transcoder")));
}

#[test]
fn redis_memcached_mysql_lvs_from_the_example() {
    let (_, d) = example();
    let names: Vec<(&str, u16, usize)> = d
        .redis
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.listen_port, c.nodes.len()))
        .collect();
    assert_eq!(names, vec![("feeds", 6391, 6), ("sessions", 6390, 6)]);
    assert!(d.redis.clusters[0]
        .nodes
        .iter()
        .all(|n| n.port() == 6379 && n.ip().to_string().starts_with("9.0.")));

    let pages = d
        .memcached
        .pools
        .iter()
        .find(|p| p.name == "pages")
        .unwrap();
    assert_eq!(pages.listen_port, 11212);
    assert_eq!(
        pages
            .replicas
            .iter()
            .map(|r| (r.name.as_str(), r.servers.len()))
            .collect::<Vec<_>>(),
        vec![("a", 3), ("b", 3)]
    );

    let key = d
        .mysql
        .databases
        .iter()
        .find(|db| db.name == "/miui/browser/key")
        .unwrap();
    assert_eq!(key.schema, "key");
    assert_eq!(
        key.primary.map(|p| p.to_string()).as_deref(),
        Some("9.0.3.2:3306")
    );
    assert_eq!(key.replicas.len(), 2);
    assert_eq!(key.ro.as_ref().unwrap().user, "ocean_ro");
    let orders = d
        .mysql
        .databases
        .iter()
        .find(|db| db.name == "/shop/orders/main")
        .unwrap();
    assert_eq!(orders.schema, "orders");
    let web = d
        .mysql
        .jobs
        .iter()
        .find(|j| j.name == "browser-web")
        .unwrap();
    assert_eq!(web.grants[0].access, Access::Rw);
    assert!(web.password.is_some());
    assert_eq!(web.ips.len(), 4, "the STAGING task does not count");
    let export = d
        .mysql
        .jobs
        .iter()
        .find(|j| j.name == "shop/reporting/daily-export")
        .unwrap();
    assert_eq!(export.grants.len(), 2);

    let vs80 = d
        .lvs
        .services
        .iter()
        .find(|s| s.vip.to_string() == "10.10.0.1" && s.port == 80)
        .unwrap();
    assert_eq!(vs80.scheduler, "wrr");
    assert_eq!(vs80.reals.len(), 5, "browser web (4 live) + canary (1)");
    assert!(vs80
        .reals
        .iter()
        .all(|r| r.port == 80 && r.forward == Forward::Dr));
    let udp = d
        .lvs
        .services
        .iter()
        .find(|s| s.protocol == Protocol::Udp)
        .unwrap();
    assert_eq!((udp.vip.to_string().as_str(), udp.port), ("10.10.0.2", 53));
    let nat = d
        .lvs
        .services
        .iter()
        .find(|s| s.vip.to_string() == "10.10.0.3")
        .unwrap();
    assert!(nat
        .reals
        .iter()
        .all(|r| r.forward == Forward::Nat && r.port >= 31000));

    let problems: Vec<String> = d
        .problems
        .iter()
        .map(|p| format!("{:?} {}", p.app, p.message))
        .collect();
    for (app, text) in [
        ("/infra/cache/redis-ratelimit", "OCEAN_PORT"),
        ("/shop/orders/db-standby", "leader"),
        ("/shop/legacy/php-frontend", "not-an-ip"),
        ("/miui/account/sso", "/miui/account/users"),
    ] {
        assert!(
            problems.iter().any(|p| p.contains(app) && p.contains(text)),
            "no problem for {app}: {problems:#?}"
        );
    }
}

#[test]
fn real_marathon_14_and_15_responses_derive() {
    let shared = root().join("control/tests/fixtures/marathon");
    for file in ["zdd_apps.json", "marathon15_apps.json", "zdd_app_blue.json"] {
        let path = shared.join(file);
        let body = std::fs::read(&path).unwrap();
        let (apps, bad) = parse_apps(&body).unwrap();
        assert!(bad.is_empty(), "{file}: {bad:?}");
        let state = normalize(&apps, &Resolved::new(), &mut HealthMemory::default());
        let d = derive_all(
            &state,
            &ocean_control::derive::DeriveConfig {
                dns: Default::default(),
                mysql: Default::default(),
                owners: Default::default(),
            },
        );
        d.dns.validate().unwrap();
        // Every running task with a routable address has a name.
        let live: usize = state.apps.iter().map(|a| a.live_tasks().count()).sum();
        assert!(live > 0, "{file}");
        assert!(d.dns.backend_count() >= live, "{file}");
    }
    // Marathon 1.5 bridge app: the task lists the bridge IP 172.17.0.2, but the agent is
    // where other hosts reach it.
    let s = load(shared.join("marathon15_apps.json"));
    let t = &s.apps[0].tasks[0];
    assert_eq!(t.ip.unwrap().to_string(), "10.0.2.148");
    assert_eq!(t.ports, vec![1565]);
}

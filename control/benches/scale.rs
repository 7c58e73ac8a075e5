#![allow(clippy::unwrap_used, clippy::expect_used)]
// The workspace's rust-version is 1.85; `is_multiple_of` is stable since 1.87.
#![allow(clippy::manual_is_multiple_of)]
//! Scale benchmark of `ocean control` (not run in CI).
//!
//! Part 1, the sync pipeline on a synthetic Marathon of `--apps` apps with
//! `--tasks-per-app` tasks each (default 10,000 / 100,000), given as the JSON of
//! `GET /v2/apps?embed=apps.tasks`: each stage timed on its own (`--reps` times, median):
//! parse, normalize, derive, and per table validate + canonical JSON + ETag, with sizes;
//! then the process's memory (VmRSS / VmHWM from /proc/self/status).
//!
//! Part 2, fan-out: a real control (`engine::start`) on 127.0.0.1:0 fed by an apps file of
//! `--fanout-apps` apps, `--subscribers` long-polling clients on `/v1/tables/dns`; time from
//! (a) rewriting the apps file and (b) calling `Store::publish` directly until every client
//! has its 200. Clients and control share this process: each connection costs two file
//! descriptors (raise `ulimit -n`; `benches/control-scale.sh` does).
//!
//! Run: `cargo bench -p ocean-control --bench scale -- --apps 10000 --tasks-per-app 10 --subscribers 1000`

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ocean_control::config::Source;
use ocean_control::derive::dns::DnsSettings;
use ocean_control::derive::mysql::{hash_password, DatabaseConfig, MysqlConfig};
use ocean_control::derive::{derive_all, DeriveConfig, Derived};
use ocean_control::engine::{Running, Shared};
use ocean_control::marathon::model::parse_apps;
use ocean_control::ownership::{AllowRule, AppPrefix, Owners, VipRange};
use ocean_control::state::{normalize, normalize_patched, HealthMemory, Resolved};
use ocean_control::store::Served;
use ocean_core::table::incremental::{Buffers, Encoded};
use ocean_core::table::mysql::Credentials;
use ocean_core::table::{etag_of, quote_etag, unquote_etag, Table, TableKind};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

/// The allocator of the `ocean` binary (src/main.rs), so that the figures are control's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: cargo bench -p ocean-control --bench scale -- [options]
  --apps N            apps in the synthetic Marathon state (10000)
  --tasks-per-app N   tasks per app (10)
  --reps N            repetitions of each pipeline stage; the median is reported (5)
  --subscribers N     long-polling clients in the fan-out part (1000)
  --fanout-apps N     apps in the state control follows in the fan-out part (10000)
  --fanout-reps N     rounds of each kind (file, event, direct publish) after a warm-up (7)
  --no-fanout         skip the fan-out part";

// ---------------------------------------------------------------------------------------
// Arguments

struct Args {
    apps: usize,
    tasks_per_app: usize,
    reps: usize,
    subscribers: usize,
    fanout_apps: usize,
    fanout_reps: usize,
    fanout: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        apps: 10_000,
        tasks_per_app: 10,
        reps: 5,
        subscribers: 1000,
        fanout_apps: 10_000,
        fanout_reps: 7,
        fanout: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let number = |it: &mut dyn Iterator<Item = String>| -> usize {
            let v = inline.clone().or_else(|| it.next()).unwrap_or_default();
            match v.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    eprintln!("{name} wants a positive number, got {v:?}\n{USAGE}");
                    std::process::exit(2);
                }
            }
        };
        match name.as_str() {
            // cargo passes --bench to harness = false benchmarks.
            "--bench" => {}
            "--apps" => a.apps = number(&mut it),
            "--tasks-per-app" => a.tasks_per_app = number(&mut it),
            "--reps" => a.reps = number(&mut it),
            "--subscribers" => a.subscribers = number(&mut it),
            "--fanout-apps" => a.fanout_apps = number(&mut it),
            "--fanout-reps" => a.fanout_reps = number(&mut it),
            "--no-fanout" => a.fanout = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    a
}

// ---------------------------------------------------------------------------------------
// Synthetic Marathon state
//
// Apps come in blocks of 100 (one block = one product group `/deptD/productB/...`):
//   0-1   redis nodes of cluster redis-B (IP per task, container port 6379, health checks)
//   2-4   memcached pool mc-B, replicas a, b, c (Docker bridge, container port 11211)
//   5     mysql primary of /deptD/productB/dbB (host networking, 1 task)
//   6     mysql replicas of the same database (2T-1 tasks, so a block has 100*T tasks)
//   7-11  mysql clients with OCEAN_MYSQL_GRANTS (7 and 8 share one JOBNAME with a password)
//   12-16 OCEAN_ELB real servers (DR, NAT, UDP+TCP, persistence + weight)
//   17-99 plain services: host networking with portDefinitions, Docker bridge portMappings,
//         or IP per task (`networks: [{mode: container}]`), half with health checks.
// About 1 task in 53 fails its health check and 1 in 97 is staging. Agents are literal IPs.

#[derive(Clone, Copy, PartialEq)]
enum Net {
    Host,
    Bridge,
    IpPerTask,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Redis,
    Memcached(char),
    MysqlPrimary,
    MysqlReplica,
    Grants,
    Elb(usize),
    Plain,
}

struct Spec {
    kind: Kind,
    net: Net,
    block: usize,
    health: bool,
    tasks: usize,
}

fn spec(i: usize, tpa: usize) -> Spec {
    let block = i / 100;
    let slot = i % 100;
    let (kind, net, health) = match slot {
        0..=1 => (Kind::Redis, Net::IpPerTask, true),
        2..=4 => (
            Kind::Memcached((b'a' + (slot - 2) as u8) as char),
            Net::Bridge,
            false,
        ),
        5 => (Kind::MysqlPrimary, Net::Host, true),
        6 => (Kind::MysqlReplica, Net::Host, true),
        7..=11 => (
            Kind::Grants,
            if slot % 2 == 0 {
                Net::Bridge
            } else {
                Net::Host
            },
            slot % 2 == 1,
        ),
        12..=16 => (Kind::Elb(slot - 12), Net::Host, true),
        _ => {
            let net = match i % 3 {
                0 => Net::Host,
                1 => Net::Bridge,
                _ => Net::IpPerTask,
            };
            (Kind::Plain, net, i % 2 == 0)
        }
    };
    let tasks = match kind {
        Kind::MysqlPrimary => 1,
        Kind::MysqlReplica => (2 * tpa).saturating_sub(1).max(1),
        _ => tpa,
    };
    Spec {
        kind,
        net,
        block,
        health,
        tasks,
    }
}

fn db_name(block: usize) -> String {
    format!("/dept{}/product{block}/db{block}", block % 10)
}

fn app_id(i: usize, s: &Spec) -> String {
    let slot = i % 100;
    let (sub, name) = match s.kind {
        Kind::Redis => ("/storage", format!("redis-{slot}")),
        Kind::Memcached(r) => ("/storage", format!("memcached-{r}")),
        Kind::MysqlPrimary => ("/storage", "mysql-primary".to_string()),
        Kind::MysqlReplica => ("/storage", "mysql-replica".to_string()),
        Kind::Grants => ("/api", format!("api-{slot}")),
        Kind::Elb(_) => ("/edge", format!("lb-{slot}")),
        Kind::Plain => (
            match i % 4 {
                0 => "/backend/workers",
                1 => "/frontend",
                2 => "/backend",
                _ => "",
            },
            format!("svc-{slot}"),
        ),
    };
    format!("/dept{}/product{}{sub}/{name}", s.block % 10, s.block)
}

/// The first plain host-networking app: the one fan-out rounds add tasks to.
fn extra_app(apps: usize, tpa: usize) -> usize {
    (0..apps)
        .find(|i| {
            let s = spec(*i, tpa);
            s.kind == Kind::Plain && s.net == Net::Host
        })
        .expect("state too small for an app to change (use --fanout-apps 20 or more)")
}

const VERSION: &str = "2017-07-19T17:34:41.967Z";

struct Stats {
    apps: usize,
    tasks: usize,
    redis_clusters: usize,
    memcached_pools: usize,
    mysql_databases: usize,
    grants_apps: usize,
    elb_apps: usize,
    by_net: [usize; 3],
}

/// Marathon's JSON for `apps` apps; `extra` more tasks on [`extra_app`]. Deterministic: the
/// same arguments give the same bytes, and `extra` changes only that app.
fn generate(apps: usize, tpa: usize, extra: usize) -> (Vec<u8>, Stats) {
    let (out, stats, _) = generate_with_app(apps, tpa, extra);
    (out, stats)
}

/// [`generate`], and the JSON of the app it adds `extra` tasks to (as `/v2/apps/{id}`
/// answers it, without the `{"app": ...}` wrapper).
fn generate_with_app(apps: usize, tpa: usize, extra: usize) -> (Vec<u8>, Stats, Value) {
    let agents = (apps * tpa / 50).clamp(1, 250 * 250);
    let changing = extra_app(apps, tpa);
    let extra_at = if extra > 0 { Some(changing) } else { None };
    let mut changing_json = Value::Null;
    let mut out = Vec::with_capacity(apps * tpa * 1200);
    out.extend_from_slice(b"{\"apps\":[");
    let mut stats = Stats {
        apps,
        tasks: 0,
        redis_clusters: 0,
        memcached_pools: 0,
        mysql_databases: 0,
        grants_apps: 0,
        elb_apps: 0,
        by_net: [0; 3],
    };
    let mut service_port: u32 = 10_000;
    for i in 0..apps {
        let mut s = spec(i, tpa);
        if extra_at == Some(i) {
            s.tasks += extra;
        }
        stats.tasks += s.tasks;
        match s.kind {
            Kind::Redis if i % 100 == 0 => stats.redis_clusters += 1,
            Kind::Memcached('a') => stats.memcached_pools += 1,
            Kind::MysqlPrimary => stats.mysql_databases += 1,
            Kind::Grants => stats.grants_apps += 1,
            Kind::Elb(_) => stats.elb_apps += 1,
            _ => {}
        }
        stats.by_net[s.net as usize] += 1;
        let app = app_json(i, &s, agents, &mut service_port);
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &app).expect("serialize app");
        if i == changing {
            changing_json = app;
        }
    }
    out.extend_from_slice(b"]}");
    (out, stats, changing_json)
}

fn next_service_port(p: &mut u32) -> u32 {
    let v = *p;
    *p = if v >= 39_999 { 10_000 } else { v + 1 };
    v
}

fn app_json(i: usize, s: &Spec, agents: usize, service_port: &mut u32) -> Value {
    let id = app_id(i, s);
    let block = s.block;
    let slot = i % 100;
    let mut labels = Map::new();
    let mut label = |k: &str, v: String| {
        labels.insert(k.to_string(), Value::String(v));
    };
    label("owner", format!("team-{}", block % 37));
    // Ports: (name, container port) per port index.
    let ports: Vec<(&str, u32)> = match s.kind {
        Kind::Redis => {
            label("OCEAN_REDIS_CLUSTER", format!("redis-{block}"));
            label("OCEAN_PORT", (40_000 + block % 5_000).to_string());
            vec![("redis", 6379), ("bus", 16379)]
        }
        Kind::Memcached(r) => {
            label("OCEAN_MEMCACHED_POOL", format!("mc-{block}"));
            label("OCEAN_MEMCACHED_REPLICA", r.to_string());
            label("OCEAN_PORT", (50_000 + block % 5_000).to_string());
            vec![("memcache", 11211)]
        }
        Kind::MysqlPrimary | Kind::MysqlReplica => {
            label("OCEAN_MYSQL_DB", db_name(block));
            let role = if s.kind == Kind::MysqlPrimary {
                "primary"
            } else {
                "replica"
            };
            label("OCEAN_MYSQL_ROLE", role.to_string());
            vec![("mysql", 3306)]
        }
        Kind::Grants => {
            let mut grants = format!("{}:rw", db_name(block));
            if block > 0 {
                grants.push_str(&format!(",{}:ro", db_name(block - 1)));
            }
            label("OCEAN_MYSQL_GRANTS", grants);
            if slot <= 8 {
                label("OCEAN_JOBNAME", format!("product{block}-api"));
            }
            vec![("http", 8080)]
        }
        Kind::Elb(n) => {
            let vip = format!("10.254.{}.{}", (block / 250) % 250, block % 250 + 1);
            match n {
                0 | 1 => label("OCEAN_ELB", format!("{vip}:80/tcp")),
                2 => {
                    label("OCEAN_ELB", format!("{vip}:443/tcp,{vip}:8443/tcp"));
                    label("OCEAN_ELB_FORWARD", "nat".into());
                }
                3 => {
                    label("OCEAN_ELB", format!("{vip}:53/udp,{vip}:53/tcp"));
                    label("OCEAN_ELB_SCHEDULER", "rr".into());
                }
                _ => {
                    label("OCEAN_ELB", format!("{vip}:3306/tcp"));
                    label("OCEAN_ELB_PERSISTENCE", "300".into());
                    label("OCEAN_ELB_WEIGHT", "5".into());
                }
            }
            vec![("http", 8080)]
        }
        Kind::Plain if i % 5 == 0 => vec![("http", 8080), ("metrics", 9090)],
        Kind::Plain => vec![("http", 8080)],
    };
    let service_ports: Vec<u32> = ports
        .iter()
        .map(|_| next_service_port(service_port))
        .collect();

    let mut app = json!({
        "id": id,
        "cmd": if s.net == Net::Host { Value::String("./run --port $PORT0".into()) } else { Value::Null },
        "args": null,
        "user": null,
        "env": {"ENV": "production", "LOG_LEVEL": "info"},
        "instances": s.tasks,
        "cpus": 0.5,
        "mem": 1024,
        "disk": 0,
        "gpus": 0,
        "executor": "",
        "constraints": [["hostname", "UNIQUE"]],
        "uris": [],
        "fetch": [],
        "storeUrls": [],
        "backoffSeconds": 1,
        "backoffFactor": 1.15,
        "maxLaunchDelaySeconds": 3600,
        "readinessChecks": [],
        "dependencies": [],
        "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 1},
        "labels": labels,
        "version": VERSION,
        "versionInfo": {"lastScalingAt": VERSION, "lastConfigChangeAt": VERSION},
        "killSelection": "YOUNGEST_FIRST",
        "unreachableStrategy": {"inactiveAfterSeconds": 300, "expungeAfterSeconds": 600},
        "tasksStaged": 0,
        "tasksRunning": s.tasks,
        "tasksHealthy": if s.health { s.tasks } else { 0 },
        "tasksUnhealthy": 0,
        "deployments": [],
        "requirePorts": false,
    });
    let obj = app.as_object_mut().expect("object");
    let image = format!(
        "registry.example.com/dept{}/{}:1.{}.0",
        block % 10,
        obj["id"]
            .as_str()
            .unwrap_or("x")
            .rsplit('/')
            .next()
            .unwrap_or("x"),
        i % 7
    );
    match s.net {
        Net::Host => {
            let defs: Vec<Value> = ports
                .iter()
                .zip(&service_ports)
                .map(|((name, _), sp)| json!({"port": sp, "protocol": "tcp", "name": name, "labels": {}}))
                .collect();
            obj.insert("portDefinitions".into(), Value::Array(defs));
            obj.insert("networks".into(), json!([{"mode": "host"}]));
        }
        Net::Bridge => {
            let maps: Vec<Value> = ports
                .iter()
                .zip(&service_ports)
                .map(|((name, cp), sp)| {
                    json!({"containerPort": cp, "hostPort": 0, "servicePort": sp, "protocol": "tcp", "name": name, "labels": {}})
                })
                .collect();
            obj.insert(
                "container".into(),
                json!({"type": "DOCKER", "volumes": [], "portMappings": maps,
                       "docker": {"image": image, "forcePullImage": false, "privileged": false, "parameters": []}}),
            );
            obj.insert("networks".into(), json!([{"mode": "container/bridge"}]));
            obj.insert("portDefinitions".into(), json!([]));
        }
        Net::IpPerTask => {
            let maps: Vec<Value> = ports
                .iter()
                .zip(&service_ports)
                .map(|((name, cp), sp)| json!({"containerPort": cp, "servicePort": sp, "protocol": "tcp", "name": name, "labels": {}}))
                .collect();
            obj.insert(
                "container".into(),
                json!({"type": "DOCKER", "volumes": [], "portMappings": maps,
                       "docker": {"image": image, "forcePullImage": false, "privileged": false, "parameters": []}}),
            );
            obj.insert(
                "networks".into(),
                json!([{"mode": "container", "name": "dcos"}]),
            );
            obj.insert("portDefinitions".into(), json!([]));
        }
    }
    let health_checks = if s.health {
        let protocol = match s.kind {
            Kind::Redis | Kind::MysqlPrimary | Kind::MysqlReplica => "TCP",
            _ => "MESOS_HTTP",
        };
        json!([{"gracePeriodSeconds": 300, "intervalSeconds": 10, "maxConsecutiveFailures": 3,
                "portIndex": 0, "timeoutSeconds": 5, "delaySeconds": 15, "protocol": protocol,
                "path": "/health", "ipProtocol": "IPv4"}])
    } else {
        json!([])
    };
    obj.insert("healthChecks".into(), health_checks);

    let task_prefix = obj["id"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches('/')
        .replace('/', "_");
    let app_id_value = obj["id"].clone();
    let stride = 2 * s.tasks.max(1) + 4;
    let tasks: Vec<Value> = (0..s.tasks)
        .map(|j| {
            let agent = (i.wrapping_mul(7919) + j.wrapping_mul(104_729)) % agents;
            let host = format!("10.{}.{}.{}", 1 + agent / 62_500, (agent / 250) % 250, agent % 250 + 1);
            let slave = format!("db7b40e2-791c-445f-b373-183e2a648a86-S{agent}");
            let fragile = !matches!(s.kind, Kind::MysqlPrimary);
            let staging = fragile && (i * 17 + j) % 97 == 0;
            let unhealthy = fragile && (i * 31 + j) % 53 == 0;
            let host_ports: Vec<u32> = match s.net {
                Net::IpPerTask => Vec::new(),
                _ => (0..ports.len()).map(|k| 31_000 + ((i * 7 + j * 3 + k) % 1000) as u32).collect(),
            };
            let ip_addresses = match s.net {
                Net::Host => json!([{"ipAddress": host, "protocol": "IPv4"}]),
                Net::Bridge => json!([{"ipAddress": format!("172.17.0.{}", j % 250 + 2), "protocol": "IPv4"}]),
                Net::IpPerTask => {
                    let n = (i * stride + j) % (1 << 24);
                    json!([{"ipAddress": format!("9.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255), "protocol": "IPv4"}])
                }
            };
            let task_id = format!("{task_prefix}.{:08x}-{:04x}-11e7-beb2-0e2beceebfcc", i, j);
            let mut t = json!({
                "id": task_id,
                "appId": app_id_value,
                "slaveId": slave,
                "host": host,
                "ports": host_ports,
                "ipAddresses": ip_addresses,
                "stagedAt": "2017-07-19T17:34:43.039Z",
                "version": VERSION,
                "localVolumes": [],
                "state": if staging { "TASK_STAGING" } else { "TASK_RUNNING" },
            });
            let to = t.as_object_mut().expect("object");
            if !staging {
                to.insert("startedAt".into(), json!("2017-07-19T17:35:15.654Z"));
                if s.health {
                    to.insert(
                        "healthCheckResults".into(),
                        json!([{"alive": !unhealthy, "consecutiveFailures": if unhealthy { 3 } else { 0 },
                                "firstSuccess": "2017-07-19T17:35:30.001Z", "lastSuccess": "2017-07-20T09:12:00.412Z",
                                "lastFailure": null, "lastFailureCause": null,
                                "instanceId": format!("{}.marathon-{:08x}-{:04x}-11e7-beb2-0e2beceebfcc", to["appId"].as_str().unwrap_or(""), i, j)}]),
                    );
                }
            }
            t
        })
        .collect();
    obj.insert("tasks".into(), Value::Array(tasks));
    app
}

/// Backend credentials for every generated database, and job passwords for the shared
/// JOBNAMEs, as control.toml would give them.
fn mysql_secrets(apps: usize) -> MysqlConfig {
    let mut s = MysqlConfig::default();
    for block in 0..apps.div_ceil(100) {
        s.databases.insert(
            db_name(block),
            DatabaseConfig {
                schema: None,
                rw: Credentials {
                    user: "ocean_rw".into(),
                    password: format!("rw-secret-{block}"),
                },
                ro: Some(Credentials {
                    user: "ocean_ro".into(),
                    password: format!("ro-secret-{block}"),
                }),
                // Generated ids do not follow the database names' groups: open rules keep
                // every claim, so the bench measures the same tables as before ownership.
                apps: Some(vec![open_prefix()]),
                allow: AllowRule::parse("/:rw").ok().map(|r| vec![r]),
                pool_max: None,
                multiplex: None,
            },
        );
        s.jobs.insert(
            format!("product{block}-api"),
            hash_password(&format!("job-{block}")),
        );
    }
    s
}

fn open_prefix() -> AppPrefix {
    AppPrefix::parse("/").unwrap_or_else(|e| panic!("{e}"))
}

fn derive_config(apps: usize) -> DeriveConfig {
    let mut owners = Owners::default();
    for net in ["0.0.0.0/0", "::/0"] {
        owners.vips.push(VipRange {
            cidr: net.parse().unwrap_or_else(|e| panic!("{e}")),
            apps: vec![open_prefix()],
        });
    }
    DeriveConfig {
        dns: DnsSettings::default(),
        mysql: mysql_secrets(apps),
        owners,
    }
}

// ---------------------------------------------------------------------------------------
// Measurement helpers

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s.get(s.len() / 2).copied().unwrap_or_default()
}

/// Runs `f` `reps` times; returns the times and the last result. The previous result is
/// dropped before the next run, outside the timed region.
fn repeat<T>(reps: usize, mut f: impl FnMut() -> T) -> (Vec<Duration>, T) {
    let mut times = Vec::with_capacity(reps);
    let mut last = None;
    for _ in 0..reps {
        drop(last.take());
        let t = Instant::now();
        let r = f();
        times.push(t.elapsed());
        last = Some(r);
    }
    (times, last.expect("reps > 0"))
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// This process's minor page faults so far (`/proc/self/stat`, field 10): each is a page
/// the kernel had to map, and zero, for the allocator.
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(7))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mem(field: &str) -> String {
    proc_status_kib(field)
        .map(|k| mib(k * 1024))
        .unwrap_or_else(|| "n/a".into())
}

/// Resets VmHWM to the current RSS (Linux >= 4.0).
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn open_files_soft_limit() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    let v = line.split_whitespace().nth(3)?;
    if v == "unlimited" {
        return Some(u64::MAX);
    }
    v.parse().ok()
}

struct TableRow {
    kind: TableKind,
    entries: usize,
    backends: usize,
    bytes: usize,
    etag: String,
    validate: Vec<Duration>,
    json: Vec<Duration>,
    etag_t: Vec<Duration>,
}

fn table_row<T: Table>(t: &T, entries: usize, reps: usize) -> TableRow {
    let (validate, ok) = repeat(reps, || t.validate());
    if let Err(e) = ok {
        panic!("derived {} table is invalid: {e}", T::KIND);
    }
    let (json, body) = repeat(reps, || t.canonical_body().expect("canonical json"));
    let (etag_t, etag) = repeat(reps, || etag_of(&body));
    TableRow {
        kind: T::KIND,
        entries,
        backends: t.backend_count(),
        bytes: body.len(),
        etag,
        validate,
        json,
        etag_t,
    }
}

fn table_rows(d: &Derived, reps: usize) -> Vec<TableRow> {
    vec![
        table_row(&d.dns, d.dns.names.len(), reps),
        table_row(&d.redis, d.redis.clusters.len(), reps),
        table_row(&d.memcached, d.memcached.pools.len(), reps),
        table_row(&d.mysql, d.mysql.databases.len() + d.mysql.jobs.len(), reps),
        table_row(&d.lvs, d.lvs.services.len(), reps),
    ]
}

/// Validate + JSON + ETag of `next`, built on `t` (published and encoded before), as
/// control's publish does after a change: per rep.
fn built_on_last<T: Table>(
    t: &T,
    next: &T,
    hint: Option<&std::collections::BTreeSet<String>>,
    reps: usize,
) -> Vec<Duration> {
    let (mut first, _) = t.encode_after(None, Buffers::default()).expect("encode");
    first.hash_etag(None);
    // Each rep builds in the buffers of the one before, as control builds in those of the
    // table its last publish replaced (the first rep in fresh memory).
    let mut retired: Option<Encoded> = None;
    let (times, etag) = repeat(reps, || {
        let buffers = retired.take().map(Buffers::reclaim).unwrap_or_default();
        let (mut encoded, changes) = match hint {
            Some(hint) => next.encode_hinted((t, &first), hint, buffers),
            None => next.encode_after(Some((t, &first)), buffers),
        }
        .expect("encode");
        match &changes {
            Some(c) => next.validate_after(t, c),
            None => next.validate(),
        }
        .expect("valid");
        let etag = encoded.hash_etag(Some(&first));
        retired = Some(encoded);
        etag
    });
    assert_eq!(
        etag,
        etag_of(&next.canonical_body().expect("json")),
        "{} built on the last table differs from its canonical body",
        T::KIND
    );
    times
}

/// One task change as Marathon reports it: one more address on the first name with an A
/// record from the middle of the dns table on (the other tables: the same). The ETag is
/// hashed from the first change on, so a change at the front costs about half the dns
/// ETag more, one at the end as much less.
fn one_task_change(d: &Derived, hinted: bool, reps: usize) -> Vec<Duration> {
    let mut dns = d.dns.clone();
    let half = dns.names.len() / 2;
    // The name changed: the hint a patched derive gives the publish.
    let mut hint = std::collections::BTreeSet::new();
    if let Some((name, r)) = dns
        .names
        .iter_mut()
        .skip(half)
        .find(|(_, r)| !r.a.is_empty())
    {
        r.a.push(std::net::Ipv4Addr::new(10, 255, 255, 254));
        r.a.sort();
        hint.insert(name.clone());
    }
    let parts = [
        built_on_last(&d.dns, &dns, hinted.then_some(&hint), reps),
        built_on_last(&d.redis, &d.redis, None, reps),
        built_on_last(&d.memcached, &d.memcached, None, reps),
        built_on_last(&d.mysql, &d.mysql, None, reps),
        built_on_last(&d.lvs, &d.lvs, None, reps),
    ];
    (0..reps)
        .map(|k| parts.iter().map(|p| p[k]).sum())
        .collect()
}

/// `reps` normalizes after events named one app, as a sync after them does: the app's
/// first task copied with a new id, then taken away again.
fn patched_normalize(
    apps: &[ocean_control::marathon::model::App],
    state: &ocean_control::state::State,
    reps: usize,
) -> Vec<Duration> {
    let mut grown = apps.to_vec();
    let app = grown
        .iter_mut()
        .find(|a| a.tasks.as_ref().is_some_and(|t| !t.is_empty()))
        .expect("an app with tasks");
    let tasks = app.tasks.as_mut().expect("tasks");
    let mut t = tasks[0].clone();
    t.id.push_str("-bench");
    tasks.push(t);
    let ids = [app.id.clone()];
    let lists = [apps, &grown[..]];
    let mut memory = HealthMemory::default();
    let mut last = state.clone();
    let mut k = 0;
    let (times, _) = repeat(reps.max(2), || {
        k += 1;
        last = normalize_patched(&last, lists[k % 2], &ids, &Resolved::new(), &mut memory)
            .expect("one named app is patched");
    });
    times
}

/// The dns index built on `state` (its time), then derives each after one task change (a
/// copy of the first app's first task added, then taken away again): the second copies
/// every name (its time), the next `reps` rewrite the table published before the last.
fn patched_derive(
    state: &ocean_control::state::State,
    config: &DeriveConfig,
    reps: usize,
) -> (Duration, Duration, Vec<Duration>) {
    use ocean_control::derive::derive_all_patched;
    use ocean_control::derive::dns_index::{Derivation, DnsIndex, Recycled};
    use ocean_core::table::dns::DnsTable;
    let base = Arc::new(state.clone());
    let mut changed = state.clone();
    if let Some(app) = changed.apps.iter_mut().find(|a| !a.tasks.is_empty()) {
        let mut t = app.tasks[0].clone();
        t.id.push_str("-bench");
        t.ip = Some(std::net::IpAddr::from([10, 255, 255, 254]));
        t.ips = t.ip.into_iter().collect();
        Arc::make_mut(app).tasks.push(t);
    }
    let changed = Arc::new(changed);
    let t = Instant::now();
    let mut index = DnsIndex::build(Arc::clone(&base), &config.dns).expect("unique app ids");
    let build = t.elapsed();
    // The tables as the engine publishes them: each patch rewrites the one before the
    // current one. The first two have none to rewrite and copy every name: not timed.
    let mut published: Vec<(Arc<ocean_control::state::State>, DnsTable, Vec<String>)> = Vec::new();
    let mut patch = || {
        let next = if Arc::ptr_eq(index.base(), &base) {
            &changed
        } else {
            &base
        };
        let recycled = (published.len() >= 2).then(|| {
            let (from, table, added) = published.remove(0);
            Recycled {
                table,
                from: Derivation {
                    state: from,
                    settings: config.dns.clone(),
                    lb_names: added,
                },
            }
        });
        let derived =
            derive_all_patched(next, config, &mut index, recycled).expect("one change is patched");
        published.push((Arc::clone(next), derived.dns, derived.dns_lb_names));
    };
    patch();
    let t = Instant::now();
    patch();
    let copying = t.elapsed();
    let (times, _) = repeat(reps.max(2), patch);
    (build, copying, times)
}

/// Per-rep sums over tables of one column, so the median of a sum is a median of real runs.
/// Where derive's time goes: each table's derive alone (median of `reps`).
fn derive_by_table(state: &ocean_control::state::State, config: &DeriveConfig, reps: usize) {
    use ocean_control::derive::{dns, lb_names, lvs, memcached, mysql, redis};
    let mut p = Vec::new();
    let (dns_t, mut zone) = repeat(reps, || dns::derive(state, &config.dns, &mut p));
    let (lb_t, _) = repeat(reps, || {
        lb_names::derive(state, &config.dns, &config.owners.vips, &mut zone, &mut p)
    });
    let (redis_t, _) = repeat(reps, || redis::derive(state, &config.owners, &mut p));
    let (mc_t, _) = repeat(reps, || memcached::derive(state, &config.owners, &mut p));
    let (mysql_t, _) = repeat(reps, || mysql::derive(state, &config.mysql, &mut p));
    let (lvs_t, _) = repeat(reps, || {
        lvs::derive(state, &config.owners.vips, &config.dns.views, &mut p)
    });
    println!(
        "derive by table (ms, median): dns {} + lb names {} + redis {} + memcached {} + mysql {} + lvs {}",
        ms(median(&dns_t)),
        ms(median(&lb_t)),
        ms(median(&redis_t)),
        ms(median(&mc_t)),
        ms(median(&mysql_t)),
        ms(median(&lvs_t))
    );
}

fn summed(rows: &[TableRow], col: impl Fn(&TableRow) -> &Vec<Duration>) -> Vec<Duration> {
    let reps = rows.first().map(|r| col(r).len()).unwrap_or(0);
    (0..reps)
        .map(|k| rows.iter().map(|r| col(r)[k]).sum())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Part 1: the sync pipeline

fn pipeline(args: &Args) {
    println!("== control scale: sync pipeline ==");
    let rss_start = mem("VmRSS");
    let t = Instant::now();
    let (body, stats) = generate(args.apps, args.tasks_per_app, 0);
    let gen_time = t.elapsed();
    println!(
        "state: {} apps, {} tasks; {} redis clusters, {} memcached pools (3 replicas), {} mysql databases, {} grants apps, {} OCEAN_ELB apps",
        stats.apps, stats.tasks, stats.redis_clusters, stats.memcached_pools, stats.mysql_databases, stats.grants_apps, stats.elb_apps
    );
    println!(
        "networking: {} host (portDefinitions), {} Docker bridge (portMappings), {} IP per task",
        stats.by_net[Net::Host as usize],
        stats.by_net[Net::Bridge as usize],
        stats.by_net[Net::IpPerTask as usize]
    );
    println!(
        "apps JSON: {} ({} bytes), generated in {} ms; {} reps per stage, median shown",
        mib(body.len() as u64),
        body.len(),
        ms(gen_time),
        args.reps
    );
    let rss_generated = mem("VmRSS");
    let hwm_generated = mem("VmHWM");
    let reset = reset_hwm();

    let (parse_t, parsed) = repeat(args.reps, || parse_apps(&body).expect("apps JSON"));
    let (apps, bad) = parsed;
    assert!(
        bad.is_empty(),
        "generator produced apps control refuses: {:?}",
        bad.iter().take(3).collect::<Vec<_>>()
    );
    // As control parses Marathon's list: from a reader, as the body streams in.
    let (streamed_t, _) = repeat(args.reps, || {
        ocean_control::marathon::model::parse_apps_from(&body[..]).expect("apps JSON")
    });
    let rss_parsed = mem("VmRSS");
    let (norm_t, state) = repeat(args.reps, || {
        normalize(&apps, &Resolved::new(), &mut HealthMemory::default())
    });
    let rss_normalized = mem("VmRSS");
    let config = derive_config(args.apps);
    let (derive_t, derived) = repeat(args.reps, || derive_all(&state, &config));
    derive_by_table(&state, &config, args.reps);
    let rss_derived = mem("VmRSS");
    let rows = table_rows(&derived, args.reps);
    let rss_serialized = mem("VmRSS");
    let hwm_pipeline = mem("VmHWM");

    let live: usize = state.apps.iter().map(|a| a.live_tasks().count()).sum();
    println!(
        "normalized: {} apps, {} tasks, {} live (running, healthy, addressable)",
        state.apps.len(),
        state.apps.iter().map(|a| a.tasks.len()).sum::<usize>(),
        live
    );
    println!("derive problems: {}", derived.problems.len());
    for p in derived.problems.iter().take(5) {
        println!("  {:?} {:?}: {}", p.app, p.table, p.message);
    }

    let validate_t = summed(&rows, |r| &r.validate);
    let json_t = summed(&rows, |r| &r.json);
    let etag_t = summed(&rows, |r| &r.etag_t);
    let stages: Vec<(&str, &Vec<Duration>)> = vec![
        ("parse_apps (JSON -> model)", &parse_t),
        ("normalize", &norm_t),
        ("derive_all (5 tables)", &derive_t),
        ("validate (5 tables)", &validate_t),
        ("canonical JSON (5 tables)", &json_t),
        ("ETag (5 tables)", &etag_t),
    ];
    let total: Duration = stages.iter().map(|(_, t)| median(t)).sum();
    println!();
    println!(
        "{:<30} {:>10} {:>10} {:>10} {:>8}",
        "stage", "median ms", "min ms", "max ms", "share"
    );
    for (name, t) in &stages {
        let m = median(t);
        println!(
            "{:<30} {:>10} {:>10} {:>10} {:>7.1}%",
            name,
            ms(m),
            ms(t.iter().min().copied().unwrap_or_default()),
            ms(t.iter().max().copied().unwrap_or_default()),
            100.0 * m.as_secs_f64() / total.as_secs_f64().max(1e-9)
        );
    }
    println!("{:<30} {:>10}", "total (sum of medians)", ms(total));
    println!(
        "{:<30} {:>10}   (Marathon's list, parsed from a reader as it streams in; the file is parsed whole)",
        "parse_apps_from (streamed)",
        ms(median(&streamed_t))
    );
    // What control's publish does since the incremental encoding: after one task change,
    // only the changed names are serialized and validated.
    let after_change = one_task_change(&derived, true, args.reps);
    let compared = one_task_change(&derived, false, args.reps);
    let whole: Duration = [&validate_t, &json_t, &etag_t]
        .iter()
        .map(|t| median(t))
        .sum();
    println!(
        "{:<30} {:>10}   (validate + JSON + ETag of all 5 built on the last version, the dns walk given the changed name by the patched derive; comparing every name: {} ms; whole: {} ms)",
        "publish after one task change",
        ms(median(&after_change)),
        ms(median(&compared)),
        ms(whole)
    );
    // What a sync normalizes after events named one app: that app alone.
    let patch_norm_t = patched_normalize(&apps, &state, args.reps);
    println!(
        "{:<30} {:>10}   (the app an event named only, the others taken from the last state)",
        "normalize after one app change",
        ms(median(&patch_norm_t)),
    );
    // What a sync derives after one task change since the dns index: only that app's names.
    let (build_t, copying_t, patch_t) = patched_derive(&state, &config, args.reps);
    println!(
        "{:<30} {:>10}   (the dns names of the changed app only, rewritten in the table published before the last, the other 4 tables whole; copying every name instead: {} ms; building the dns index, once after a whole derive: {} ms)",
        "derive after one task change",
        ms(median(&patch_t)),
        ms(copying_t),
        ms(build_t)
    );
    println!(
        "{:<30} {:>10}   (parse too: a file is read whole; an event fetches its app alone)",
        "total with the three",
        ms(
            total - whole + median(&after_change) - median(&derive_t) + median(&patch_t)
                - median(&norm_t)
                + median(&patch_norm_t)
        )
    );
    println!();
    println!(
        "{:<10} {:>9} {:>9} {:>14} {:>12} {:>12} {:>9} {:>11}  etag",
        "table", "entries", "backends", "bytes", "validate ms", "json ms", "etag ms", "json MB/s"
    );
    for r in &rows {
        let j = median(&r.json);
        println!(
            "{:<10} {:>9} {:>9} {:>14} {:>12} {:>12} {:>9} {:>11.0}  {}",
            r.kind.as_str(),
            r.entries,
            r.backends,
            r.bytes,
            ms(median(&r.validate)),
            ms(j),
            ms(median(&r.etag_t)),
            r.bytes as f64 / 1e6 / j.as_secs_f64().max(1e-9),
            r.etag
        );
    }
    let total_bytes: usize = rows.iter().map(|r| r.bytes).sum();
    println!(
        "{:<10} {:>9} {:>9} {:>14}",
        "all",
        "",
        rows.iter().map(|r| r.backends).sum::<usize>(),
        total_bytes
    );
    println!("(entries: dns names, redis clusters, memcached pools, mysql databases + jobs, lvs virtual services)");

    drop(rows);
    drop(derived);
    drop(state);
    drop(apps);
    drop(body);
    println!();
    println!("memory (this process; VmHWM = peak RSS):");
    println!("  RSS at start                         {rss_start}");
    println!("  RSS with the apps JSON generated     {rss_generated}   (VmHWM so far {hwm_generated}, the generator)");
    if !reset {
        println!("  (could not reset VmHWM through /proc/self/clear_refs: the peak below includes the generator)");
    }
    println!("  RSS after parse                      {rss_parsed}");
    println!("  RSS after normalize                  {rss_normalized}");
    println!("  RSS after derive                     {rss_derived}");
    println!("  RSS after serialize                  {rss_serialized}");
    println!("  VmHWM during the pipeline            {hwm_pipeline}   (peak of a sync of this state, the fetched JSON included)");
    println!("  RSS after dropping it all            {}", mem("VmRSS"));
}

// ---------------------------------------------------------------------------------------
// Part 2: fan-out

struct Got {
    status: u16,
    etag: String,
    headers_at: Instant,
    body_at: Instant,
    bytes: usize,
}

async fn long_poll(client: reqwest::Client, url: String, have: String) -> Result<Got, String> {
    // As a proxy's subscriber asks: gzip accepted (control then sends the body compressed).
    let mut resp = client
        .get(&url)
        .header(reqwest::header::IF_NONE_MATCH, quote_etag(&have))
        .header(reqwest::header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let headers_at = Instant::now();
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|v| unquote_etag(v).to_string())
        .unwrap_or_default();
    // Read and drop chunk by chunk: 1000 clients buffering whole bodies would dwarf
    // control's own memory in VmHWM.
    let mut bytes = 0;
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        bytes += chunk.len();
    }
    Ok(Got {
        status,
        etag,
        headers_at,
        body_at: Instant::now(),
        bytes,
    })
}

/// Waits until `n` subscribers whose id starts with `prefix` poll the dns table.
async fn wait_subscribed(
    client: &reqwest::Client,
    addr: SocketAddr,
    prefix: &str,
    n: usize,
) -> Duration {
    let started = Instant::now();
    loop {
        let rows: Vec<Value> = match client
            .get(format!("http://{addr}/v1/subscribers"))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let count = rows
            .iter()
            .filter(|r| {
                r["kind"] == "dns" && r["id"].as_str().is_some_and(|id| id.starts_with(prefix))
            })
            .count();
        if count >= n {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {count} of {n} subscribers arrived within 60s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn_waiters(
    client: &reqwest::Client,
    addr: SocketAddr,
    prefix: &str,
    have: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<Got, String>>> {
    (0..n)
        .map(|i| {
            // As a proxy's subscriber asks: `since=` the table it runs, for a delta.
            let url =
                format!("http://{addr}/v1/tables/dns?wait=60s&subscriber={prefix}{i}&since={have}");
            tokio::spawn(long_poll(client.clone(), url, have.to_string()))
        })
        .collect()
}

struct Round {
    ok: usize,
    errors: Vec<String>,
    headers: Vec<Duration>,
    bodies: Vec<Duration>,
    bytes: usize,
}

async fn collect(
    t0: Instant,
    want: &str,
    handles: Vec<tokio::task::JoinHandle<Result<Got, String>>>,
) -> Round {
    let mut r = Round {
        ok: 0,
        errors: Vec::new(),
        headers: Vec::new(),
        bodies: Vec::new(),
        bytes: 0,
    };
    for h in handles {
        match h.await {
            Ok(Ok(g)) if g.status == 200 && g.etag == want => {
                r.ok += 1;
                r.bytes += g.bytes;
                r.headers.push(g.headers_at.saturating_duration_since(t0));
                r.bodies.push(g.body_at.saturating_duration_since(t0));
            }
            Ok(Ok(g)) => r
                .errors
                .push(format!("status {} etag {}", g.status, g.etag)),
            Ok(Err(e)) => r.errors.push(e),
            Err(e) => r.errors.push(e.to_string()),
        }
    }
    r.headers.sort();
    r.bodies.sort();
    r
}

enum Trigger<'a> {
    /// Rewrite the apps file with this body; the engine notices, syncs and publishes.
    File(&'a Path, &'a [u8]),
    /// Make the bench's Marathon answer this state and send the event of its changed app;
    /// the engine fetches that app alone, syncs and publishes.
    Event(&'a BenchMarathon, &'a Arc<MarathonView>),
    /// Publish this dns table directly.
    Publish(&'a Served),
}

struct Ctx<'a> {
    client: &'a reqwest::Client,
    addr: SocketAddr,
    shared: &'a Shared,
    n: usize,
}

impl Ctx<'_> {
    /// `n` long-polls holding `have`, then the trigger (t0), then every response. Returns
    /// the round and the new dns ETag.
    async fn round(&self, prefix: String, have: &str, trigger: Trigger<'_>) -> (Round, String) {
        let handles = spawn_waiters(self.client, self.addr, &prefix, have, self.n);
        wait_subscribed(self.client, self.addr, &prefix, self.n).await;
        // Every handler has registered; give the last ones time to reach their wait.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (t0, want) = match trigger {
            Trigger::File(path, body) => {
                write_atomically(path, body);
                let t0 = Instant::now();
                (t0, self.published_after(have, t0).await)
            }
            Trigger::Event(marathon, view) => {
                let t0 = Instant::now();
                marathon.change(view);
                (t0, self.published_after(have, t0).await)
            }
            Trigger::Publish(served) => {
                let served = Served::new(
                    served.etag.clone(),
                    served.body.clone(),
                    served.backends,
                    SystemTime::now(),
                );
                let want = served.etag.clone();
                assert_ne!(want, have, "publishing the table the clients already have");
                let t0 = Instant::now();
                self.shared.store.publish(vec![(TableKind::Dns, served)]);
                (t0, want)
            }
        };
        (collect(t0, &want, handles).await, want)
    }

    /// The dns ETag control publishes after `have`, once it does.
    async fn published_after(&self, have: &str, t0: Instant) -> String {
        loop {
            let current = self.shared.store.get(TableKind::Dns);
            if let Some(s) = current.filter(|s| s.etag != have) {
                return s.etag.clone();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the change was not published within 30s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The bench's Marathon, for the event rounds: answers the list, the one app the rounds
// change, `/v2/info` (elected) and the event stream, from memory, so that the Marathon side
// costs next to nothing.

/// One state of the bench's Marathon.
struct MarathonView {
    /// `GET /v2/apps?embed=apps.tasks`.
    list: Bytes,
    /// The app the rounds change, and `GET /v2/apps/{id}`'s answer for it.
    app_id: String,
    app: Bytes,
}

impl MarathonView {
    fn new(list: &[u8], app: &Value) -> Arc<MarathonView> {
        let app_id = app["id"].as_str().expect("app id").to_string();
        Arc::new(MarathonView {
            list: Bytes::copy_from_slice(list),
            app_id,
            app: Bytes::from(json!({ "app": app }).to_string()),
        })
    }
}

#[derive(Clone)]
struct BenchMarathon {
    view: Arc<std::sync::Mutex<Arc<MarathonView>>>,
    events: tokio::sync::broadcast::Sender<Bytes>,
}

impl BenchMarathon {
    /// Serves `view` on a free loopback port until `cancel`.
    async fn start(
        view: Arc<MarathonView>,
        cancel: CancellationToken,
    ) -> (BenchMarathon, url::Url) {
        use axum::routing::get;
        let (events, _) = tokio::sync::broadcast::channel(64);
        let m = BenchMarathon {
            view: Arc::new(std::sync::Mutex::new(view)),
            events,
        };
        let router = axum::Router::new()
            .route("/v2/info", get(marathon_info))
            .route("/v2/apps", get(marathon_apps))
            .route("/v2/apps/{*id}", get(marathon_app))
            .route("/v2/events", get(marathon_events))
            .with_state(m.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the bench's Marathon");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await;
        });
        let url = url::Url::parse(&format!("http://{addr}/")).expect("url");
        (m, url)
    }

    fn now(&self) -> Arc<MarathonView> {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Switches to `view` and sends the `status_update_event` Marathon would for its app.
    fn change(&self, view: &Arc<MarathonView>) {
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = view.clone();
        let data = json!({
            "eventType": "status_update_event",
            "timestamp": VERSION,
            "slaveId": "bench-agent",
            "taskId": format!("{}.bench", view.app_id.trim_start_matches('/').replace('/', "_")),
            "taskStatus": "TASK_RUNNING",
            "appId": view.app_id,
            "host": "10.0.0.1",
            "ports": [31000],
            "version": VERSION
        });
        let chunk = format!("event: status_update_event\ndata: {data}\n\n");
        // No receiver means control's stream is down: the round then times out and says so.
        let _ = self.events.send(Bytes::from(chunk));
    }
}

fn json_answer(body: Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn marathon_info() -> axum::response::Response {
    json_answer(Bytes::from(
        json!({"name": "marathon", "version": "1.5.0", "elected": true, "leader": "127.0.0.1:8080"})
            .to_string(),
    ))
}

async fn marathon_apps(
    axum::extract::State(m): axum::extract::State<BenchMarathon>,
) -> axum::response::Response {
    json_answer(m.now().list.clone())
}

async fn marathon_app(
    axum::extract::State(m): axum::extract::State<BenchMarathon>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let view = m.now();
    if format!("/{}", id.trim_start_matches('/')) == view.app_id {
        json_answer(view.app.clone())
    } else {
        // Control asks only for the app an event named; anything else is the bench's bug.
        (
            axum::http::StatusCode::NOT_FOUND,
            "not the app the rounds change",
        )
            .into_response()
    }
}

async fn marathon_events(
    axum::extract::State(m): axum::extract::State<BenchMarathon>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let rx = m.events.subscribe();
    let attached = Bytes::from_static(
        b"event: event_stream_attached\ndata: {\"remoteAddress\":\"127.0.0.1\",\"eventType\":\"event_stream_attached\"}\n\n",
    );
    let stream = futures_util::stream::unfold((rx, Some(attached)), |(mut rx, first)| async move {
        if let Some(f) = first {
            return Some((Ok::<_, std::io::Error>(f), (rx, None)));
        }
        loop {
            match rx.recv().await {
                Ok(chunk) => return Some((Ok(chunk), (rx, None))),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// Each stage's mean ms between two [`sync_stages`] readings (its sum when not `mean`), and
/// the derive counts.
fn stage_means(
    before: &std::collections::BTreeMap<String, (f64, f64)>,
    after: &std::collections::BTreeMap<String, (f64, f64)>,
    mean: bool,
) -> String {
    after
        .iter()
        .map(|(stage, (sum, count))| {
            let (s0, c0) = before.get(stage).copied().unwrap_or_default();
            if stage.ends_with("(count)") {
                format!("{stage} {}", count - c0)
            } else if mean {
                format!("{stage} {:.1}", 1e3 * (sum - s0) / (count - c0).max(1.0))
            } else {
                format!("{stage} {:.0}", 1e3 * (sum - s0))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sum and count of each stage of control's syncs (`ocean_control_sync_stage_seconds`),
/// from its `/metrics`.
async fn sync_stages(
    client: &reqwest::Client,
    addr: SocketAddr,
) -> std::collections::BTreeMap<String, (f64, f64)> {
    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("ocean_control_sync_stage_seconds_") else {
            continue;
        };
        let (series, value) = rest.split_once(' ').unwrap_or((rest, ""));
        let Some((what, labels)) = series.split_once("{stage=\"") else {
            continue;
        };
        if what != "sum" && what != "count" {
            continue;
        }
        let stage = labels.trim_end_matches("\"}").to_string();
        let v: f64 = value.trim().parse().unwrap_or(0.0);
        let e = out.entry(stage).or_insert((0.0, 0.0));
        if what == "sum" {
            e.0 = v;
        } else {
            e.1 = v;
        }
    }
    // How the dns names were derived (patched by the dns index, or whole), as counts.
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("ocean_control_derives_total{dns=\"") {
            if let Some((how, n)) = rest.split_once("\"} ") {
                out.insert(
                    format!("derives {how} (count)"),
                    (0.0, n.trim().parse().unwrap_or(0.0)),
                );
            }
        }
    }
    out
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn write_atomically(path: &Path, body: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).expect("write apps file");
    std::fs::rename(&tmp, path).expect("rename apps file");
}

/// The tables of the apps JSON `body`: parsed, normalized and derived whole.
fn derive_body(body: &[u8], config: &DeriveConfig) -> Derived {
    let (apps, _) = parse_apps(body).expect("apps JSON");
    let state = normalize(&apps, &Resolved::new(), &mut HealthMemory::default());
    derive_all(&state, config)
}

/// Where a fan-out phase's control reads Marathon's state from.
enum Feed<'a> {
    /// The apps file, rewritten for each change.
    File(&'a Path),
    /// The bench's Marathon, which sends an event for each change.
    Marathon(&'a BenchMarathon),
}

/// What the fan-out rounds publish and change.
struct Material {
    body0: Vec<u8>,
    body1: Vec<u8>,
    view0: Arc<MarathonView>,
    view1: Arc<MarathonView>,
    /// Two more dns tables to publish directly, whole.
    served2: Served,
    served3: Served,
}

/// The rounds of one phase: changes (file or event) and, if asked, direct publishes.
struct Phase {
    changes: Vec<Round>,
    publishes: Vec<Round>,
    /// Control's mean ms per sync stage during the change rounds.
    stages: String,
}

/// Runs one control fed by `feed` with `n` subscribers: a warm-up, a change to settle the
/// version history, `reps` change rounds, and `reps` direct publishes when `publish`.
fn phase(
    rts: (&tokio::runtime::Runtime, &tokio::runtime::Runtime),
    config: ocean_control::Config,
    feed: &Feed<'_>,
    m: &Material,
    (n, reps): (usize, usize),
    publish: bool,
) -> Phase {
    let (control_rt, client_rt) = rts;
    let cancel = CancellationToken::new();
    let running: Running = control_rt
        .block_on(ocean_control::engine::start(config, cancel.clone()))
        .expect("start control");
    let addr = running.addr;
    let shared = running.shared.clone();
    let out = client_rt.block_on(async {
        let started = Instant::now();
        while shared.store.get(TableKind::Dns).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "control published no dns table within 30s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let client = ocean_core::http::client_builder(Duration::from_secs(10))
            .pool_max_idle_per_host(usize::MAX)
            .build()
            .expect("http client");
        let first = client
            .get(format!("http://{addr}/v1/tables/dns"))
            .send()
            .await
            .expect("GET dns");
        let etag0 = first
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|v| unquote_etag(v).to_string())
            .expect("ETag header");
        let dns_bytes = first.bytes().await.expect("dns body").len();
        println!("control on {addr}: dns table {dns_bytes} bytes, etag {etag0}");
        // A sync still under way (Marathon's: the re-list when the event stream attaches)
        // would publish its table again over the warm-up's direct publish: start once
        // control has been idle for a while.
        let mut syncs = sync_stages(&client, addr).await.get("fetch").map(|s| s.1);
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = sync_stages(&client, addr).await.get("fetch").map(|s| s.1);
            if now == syncs {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "control did not become idle within 120s"
            );
            syncs = now;
        }
        let ctx = Ctx {
            client: &client,
            addr,
            shared: &shared,
            n,
        };
        let change = |k: usize| match feed {
            Feed::File(path) => Trigger::File(path, if k % 2 == 0 { &m.body0 } else { &m.body1 }),
            Feed::Marathon(marathon) => {
                Trigger::Event(marathon, if k % 2 == 0 { &m.view0 } else { &m.view1 })
            }
        };
        // Warm-up (not reported): opens the connections and lets TCP grow its windows, as on
        // the long-lived keep-alive connections proxies poll on.
        let (warm, mut have) = ctx
            .round("warm-up".into(), &etag0, Trigger::Publish(&m.served2))
            .await;
        println!(
            "warm-up: {} long-polls answered ({} errors), full body p50 {} ms",
            warm.ok,
            warm.errors.len(),
            ms(pct(&warm.bodies, 50.0))
        );
        // The warm-up's direct publish broke control's version history: this first change
        // goes out whole (not reported); the change rounds after it are deltas.
        let (_, etag) = ctx.round("settle.".into(), &have, change(1)).await;
        have = etag;
        let stages_before = sync_stages(&client, addr).await;
        let mut changes = Vec::new();
        let mut per_round = Vec::new();
        let mut last = stages_before.clone();
        for k in 0..reps {
            // The state alternates between the original one and one task more.
            let faults = minor_faults();
            let (r, etag) = ctx.round(format!("c{k}."), &have, change(k)).await;
            let faults = minor_faults() - faults;
            changes.push(r);
            have = etag;
            // Where this round's time went: its syncs' stages, in ms, and the pages the
            // process faulted in meanwhile (clients included).
            let now = sync_stages(&client, addr).await;
            per_round.push(format!(
                "{}, minor faults {faults}",
                stage_means(&last, &now, false)
            ));
            last = now;
        }
        let stages = format!(
            "{}; per round: {}",
            stage_means(&stages_before, &last, true),
            per_round.join(" | ")
        );
        let mut publishes = Vec::new();
        for k in 0..if publish { reps } else { 0 } {
            let served = if k % 2 == 0 { &m.served2 } else { &m.served3 };
            let (r, etag) = ctx
                .round(format!("p{k}."), &have, Trigger::Publish(served))
                .await;
            publishes.push(r);
            have = etag;
        }
        Phase {
            changes,
            publishes,
            stages,
        }
    });
    cancel.cancel();
    control_rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(10), running.wait()).await;
    });
    out
}

fn fanout(args: &Args) {
    println!();
    println!("== control scale: long-poll fan-out ==");
    let mut n = args.subscribers;
    let limit = open_files_soft_limit().unwrap_or(1024);
    // Each connection is two descriptors here (client and server end), plus some slack.
    let need = 2 * n as u64 + 256;
    if limit < need {
        let fit = (limit.saturating_sub(256) / 2) as usize;
        println!(
            "WARNING: open files limit {limit} < {need} needed for {n} subscribers; running {fit} instead. Raise it: `ulimit -n {need}` (benches/control-scale.sh does)"
        );
        n = fit.max(1);
    }
    let rss_before = mem("VmRSS");
    let reset = reset_hwm();
    let fa = args.fanout_apps;
    let tpa = args.tasks_per_app;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("apps.json");
    let (body0, s0, app0) = generate_with_app(fa, tpa, 0);
    let (body1, _, app1) = generate_with_app(fa, tpa, 1);
    let (body2, _) = generate(fa, tpa, 2);
    write_atomically(&path, &body0);
    let config_derive = derive_config(fa);
    // Two more tables to publish directly, whole (no changes: every client gets the body).
    let whole = |body: &[u8]| {
        let derived = derive_body(body, &config_derive);
        let dns = derived.dns.canonical_body().expect("dns json");
        Served::new(
            etag_of(&dns),
            Bytes::from(dns),
            derived.dns.backend_count(),
            SystemTime::now(),
        )
    };
    let material = Material {
        view0: MarathonView::new(&body0, &app0),
        view1: MarathonView::new(&body1, &app1),
        served2: whole(&body2),
        served3: whole(&generate(fa, tpa, 3).0),
        body0,
        body1,
    };

    let control_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("control")
        .build()
        .expect("control runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("clients")
        .build()
        .expect("client runtime");
    let reps = args.fanout_reps;

    // Phase 1: control watches the apps file.
    // Both phases' control: on a free port, the apps file watched every 200 ms.
    let control_config = |source: Source| {
        let mut config = ocean_control::Config::new(source);
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.poll_while_down = Duration::from_millis(200);
        config.derive = config_derive.clone();
        config
    };
    let config = control_config(Source::File(path.clone()));
    let watch_every = config.poll_while_down.min(Duration::from_secs(1));
    let debounce = config.debounce;
    println!(
        "apps file {} apps / {} tasks ({}), watched every {} ms, debounce {} ms; {n} subscribers on /v1/tables/dns",
        s0.apps,
        s0.tasks,
        mib(material.body0.len() as u64),
        watch_every.as_millis(),
        debounce.as_millis()
    );
    let file = phase(
        (&control_rt, &client_rt),
        config,
        &Feed::File(&path),
        &material,
        (n, reps),
        true,
    );
    println!(
        "control's syncs during the file rounds, mean ms per stage (its /metrics): {}",
        file.stages
    );

    // Phase 2: control follows the bench's Marathon and its events.
    let stop_marathon = CancellationToken::new();
    let (marathon, url) = client_rt.block_on(BenchMarathon::start(
        material.view0.clone(),
        stop_marathon.clone(),
    ));
    let config = control_config(Source::Marathon(vec![url.clone()]));
    println!(
        "Marathon at {url} with the same state, one status_update_event per change, debounce {} ms",
        config.debounce.as_millis()
    );
    let events = phase(
        (&control_rt, &client_rt),
        config,
        &Feed::Marathon(&marathon),
        &material,
        (n, reps),
        false,
    );
    println!(
        "control's syncs during the event rounds, mean ms per stage (its /metrics): {}",
        events.stages
    );
    stop_marathon.cancel();

    println!();
    println!(
        "{:<40} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9}   (ms after t0)",
        format!("{reps} rounds of {n} pooled / measured at"),
        "ok",
        "errors",
        "min",
        "p50",
        "p99",
        "max"
    );
    let kinds = [
        ("apps file rewritten -> delta", &file.changes),
        ("Marathon event -> delta", &events.changes),
        ("Store::publish -> whole table", &file.publishes),
    ];
    for (name, rounds) in kinds {
        let mut headers: Vec<Duration> = rounds.iter().flat_map(|r| r.headers.clone()).collect();
        let mut bodies: Vec<Duration> = rounds.iter().flat_map(|r| r.bodies.clone()).collect();
        headers.sort();
        bodies.sort();
        let ok: usize = rounds.iter().map(|r| r.ok).sum();
        let errors: Vec<&String> = rounds.iter().flat_map(|r| &r.errors).collect();
        for (what, v) in [("headers", &headers), ("full body", &bodies)] {
            println!(
                "{:<40} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9}",
                format!("{name} [{what}]"),
                ok,
                errors.len(),
                ms(pct(v, 0.0)),
                ms(pct(v, 50.0)),
                ms(pct(v, 99.0)),
                ms(pct(v, 100.0))
            );
        }
        for e in errors.iter().take(3) {
            println!("  error: {e}");
        }
    }
    for (name, rounds) in kinds {
        let per_round: Vec<String> = rounds
            .iter()
            .map(|r| format!("{}/{}", ms(pct(&r.bodies, 50.0)), ms(pct(&r.bodies, 100.0))))
            .collect();
        // From the first 200 to the last body: how fast control pushes the table out.
        let rates: Vec<String> = rounds
            .iter()
            .map(|r| {
                let spread = pct(&r.bodies, 100.0).saturating_sub(pct(&r.headers, 0.0));
                format!(
                    "{:.2}",
                    r.bytes as f64 / 1e9 / spread.as_secs_f64().max(1e-9)
                )
            })
            .collect();
        println!(
            "{name}: full body p50/max per round (ms) {}; {:.0} MB of bodies per round, delivered at {} GB/s",
            per_round.join(", "),
            rounds.first().map(|r| r.bytes as f64 / 1e6).unwrap_or(0.0),
            rates.join(", ")
        );
    }
    // Bytes on the wire per change, summed over the subscribers, against every subscriber
    // fetching the whole table (as JSON, and gzip-compressed as control serves it).
    let per_round = |rounds: &[Round]| {
        rounds.iter().map(|r| r.bytes as f64).sum::<f64>() / rounds.len().max(1) as f64
    };
    let whole_json = (material.served3.body.len() * n) as f64;
    let whole_gzip = per_round(&file.publishes);
    for (name, rounds) in [("file", &file.changes), ("event", &events.changes)] {
        let delta_bytes = per_round(rounds);
        println!(
            "bytes per {name} change, sum over {n} subscribers: delta {:.0} KB = {:.3}% of the whole table as JSON ({:.0} MB), {:.2}% of it gzip-compressed ({:.0} MB)",
            delta_bytes / 1e3,
            100.0 * delta_bytes / whole_json.max(1.0),
            whole_json / 1e6,
            100.0 * delta_bytes / whole_gzip.max(1.0),
            whole_gzip / 1e6
        );
    }
    let pooled_p50 = |rounds: &[Round]| {
        let mut v: Vec<Duration> = rounds.iter().flat_map(|r| r.bodies.clone()).collect();
        v.sort();
        pct(&v, 50.0)
    };
    let pub_p50 = pooled_p50(&file.publishes).as_secs_f64().max(1e-9);
    println!(
        "apps file round = file watcher poll (0-{} ms) + debounce {} ms + sync (the file parsed and normalized whole, the derive patched, the publish built on the last table: control's stages above) + fan-out;",
        watch_every.as_millis(),
        debounce.as_millis(),
    );
    println!(
        "Marathon event round = event stream + fetch of the one app + sync (normalize, derive, publish) + fan-out (an event after a quiet spell waits no debounce; within {} ms of the last sync it waits out the rest);",
        debounce.as_millis()
    );
    println!(
        "publish round = fan-out alone. p50 ratio to publish: file {:.2}x, event {:.2}x. Clients and control share this process and its CPUs ({} available).",
        pooled_p50(&file.changes).as_secs_f64() / pub_p50,
        pooled_p50(&events.changes).as_secs_f64() / pub_p50,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );

    println!(
        "memory: RSS before the fan-out {rss_before}, VmHWM during it {}{} (control and clients; bodies are read chunk by chunk)",
        mem("VmHWM"),
        if reset {
            ""
        } else {
            " (VmHWM not reset: whole process)"
        }
    );

    control_rt.shutdown_timeout(Duration::from_secs(1));
    client_rt.shutdown_timeout(Duration::from_secs(1));
}

fn main() {
    let args = parse_args();
    pipeline(&args);
    if args.fanout {
        fanout(&args);
    }
    println!();
    println!(
        "RSS at exit {}, VmHWM at exit {} (since the last reset, if /proc/self/clear_refs allowed one)",
        mem("VmRSS"),
        mem("VmHWM")
    );
}

//! A zone updated from a delta against the same zone built whole, at platform scale.
//!
//! `cargo bench -p ocean-dns --bench zone_update -- [APPS] [TASKS_PER_APP]` (default
//! 10,000 x 10): a Mesos-DNS-shaped table (per app an A name with every task, an SRV name,
//! and one A name per task), then one task change (the app's A and SRV names and one
//! per-task name) loaded both ways, five times each; prints the medians and the ratio, and
//! what the subscriber spends applying and checking that delta.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ocean_core::table::dns::{DnsRecords, SrvRecord};
use ocean_core::table::{DnsTable, Table, Versioned};
use ocean_dns::zone::Zone;

fn ip(app: u32, task: u32) -> Ipv4Addr {
    let n = app * 64 + task;
    Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8)
}

/// The names of one app with `tasks` tasks.
fn app_names(names: &mut BTreeMap<String, DnsRecords>, app: u32, tasks: u32) {
    let mut a = Vec::new();
    let mut srv = Vec::new();
    for k in 0..tasks {
        let task = format!("app{app}-t{k}.marathon.mesos.");
        names.insert(
            task.clone(),
            DnsRecords {
                a: vec![ip(app, k)],
                ..Default::default()
            },
        );
        a.push(ip(app, k));
        srv.push(SrvRecord {
            port: 31000 + k as u16,
            priority: 0,
            target: task,
            weight: 1,
        });
    }
    names.insert(
        format!("app{app}.marathon.mesos."),
        DnsRecords {
            a,
            ..Default::default()
        },
    );
    names.insert(
        format!("_app{app}._tcp.marathon.mesos."),
        DnsRecords {
            srv,
            ..Default::default()
        },
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let apps = args.first().copied().unwrap_or(10_000);
    let tasks = args.get(1).copied().unwrap_or(10);
    let mut t = DnsTable::default();
    for app in 0..apps {
        app_names(&mut t.names, app, tasks);
    }
    let v0 = Versioned::new(t.clone()).unwrap();
    // App 0 gains a task.
    app_names(&mut t.names, 0, tasks + 1);
    let changed = vec![
        "app0.marathon.mesos.".to_string(),
        "_app0._tcp.marathon.mesos.".to_string(),
        format!("app0-t{tasks}.marathon.mesos."),
    ];
    let v1: Arc<Versioned<DnsTable>> = Versioned::new(t).unwrap();
    println!(
        "zone of {apps} apps x {tasks} tasks: {} names; one task change touches {} names",
        v1.table.names.len(),
        changed.len()
    );
    // The subscriber's part first: apply the delta to the running table and check it
    // (clone, validate the changed names, serialize, hash).
    let doc = ocean_core::table::delta::Changes::between(&v0.table, &v1.table)
        .unwrap()
        .encode(&v0.etag, &v1.etag);
    let applies: Vec<Duration> = (0..5)
        .map(|_| {
            let s = Instant::now();
            let applied = v0
                .table
                .apply_delta(&v0.etag, &v0.encoded, &doc)
                .unwrap()
                .unwrap();
            assert_eq!(applied.etag, v1.etag);
            s.elapsed()
        })
        .collect();
    println!(
        "subscriber: a delta of {} bytes applied and checked in {:.1} ms (median of 5)",
        doc.len(),
        median(applies).as_secs_f64() * 1e3
    );
    let zone = Zone::build(v0, 1).unwrap();
    let (mut builds, mut updates) = (Vec::new(), Vec::new());
    for i in 0..5 {
        let s = Instant::now();
        let built = Zone::build(v1.clone(), 2 + i).unwrap();
        builds.push(s.elapsed());
        let s = Instant::now();
        let updated = zone.update(v1.clone(), &changed, 2 + i).unwrap();
        updates.push(s.elapsed());
        assert_eq!(built.len(), updated.len());
    }
    let (b, u) = (median(builds), median(updates));
    println!(
        "full build {:.1} ms, update {:.1} ms (median of 5): {:.0}x",
        b.as_secs_f64() * 1e3,
        u.as_secs_f64() * 1e3,
        b.as_secs_f64() / u.as_secs_f64().max(1e-9)
    );
}

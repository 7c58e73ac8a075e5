//! Views (issue 14): the same load-balancer name answers each client network with its own
//! VIP (one VIP per carrier line). Checked with `dig -b` from several loopback source
//! addresses over UDP and TCP: the first view whose networks hold the client wins, clients
//! in no view get the default; a zone besides the domain has its own SOA/NS and NXDOMAIN
//! below it; names outside every zone are refused (no forwarding here).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;

use anyhow::{ensure, Result};
use common::{dig, start_dns_with, OURS, OURS_ADDR};
use ocean_core::net::Cidr;
use serde_json::json;

const API: &str = "api.shop.example.com.";
const DEFAULT_VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const UNICOM_VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
const TELECOM_VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 30);

fn table() -> serde_json::Value {
    json!({
        "domain": "mesos",
        "ttl": 60,
        "soa": {"mname": "ns1.mesos.", "rname": "root.ns1.mesos.", "refresh_s": 60, "retry_s": 600, "expire_s": 86400},
        "zones": ["shop.example.com"],
        "names": {
            OURS: {"a": [OURS_ADDR.to_string()]},
            API: {"a": [DEFAULT_VIP.to_string()]},
            "api2.shop.example.com.": {"a": [DEFAULT_VIP.to_string()]}
        },
        "views": [
            // 127.0.0.2 is in both views: the first wins.
            {"name": "unicom", "networks": ["127.0.0.2/32", "10.20.0.0/16"],
             "names": {API: {"a": [UNICOM_VIP.to_string()]}}},
            {"name": "telecom", "networks": ["127.0.0.0/24"],
             "names": {API: {"a": [TELECOM_VIP.to_string()]}}}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_network_gets_its_views_vip() -> Result<()> {
    let dns = start_dns_with(table(), |_| {}).await?;
    let port = dns.port();
    let ask = |source: &'static str, name: &'static str, extra: &'static [&'static str]| {
        tokio::task::spawn_blocking(move || dig(source, port, name, extra))
    };
    for (transport, extra) in [("udp", &[][..]), ("tcp", &["+tcp"][..])] {
        for (source, want) in [
            ("127.0.0.2", UNICOM_VIP),
            ("127.0.0.1", TELECOM_VIP),
            ("127.0.0.3", TELECOM_VIP),
            ("127.0.1.1", DEFAULT_VIP),
        ] {
            let d = ask(source, API, extra).await??;
            ensure!(
                d.status == "NOERROR" && d.has_flag("aa") && d.answers == [want],
                "{transport}: {source} asking {API}: want {want}, got {}",
                d.output
            );
            // A name no view changes answers the same everywhere.
            let d = ask(source, "api2.shop.example.com.", extra).await??;
            ensure!(
                d.answers == [DEFAULT_VIP],
                "{transport} {source}: {}",
                d.output
            );
            let d = ask(source, OURS, extra).await??;
            ensure!(
                d.answers == [OURS_ADDR],
                "{transport} {source}: {}",
                d.output
            );
        }
        println!("{transport}: 127.0.0.2 -> {UNICOM_VIP}, 127.0.0.1/.3 -> {TELECOM_VIP}, 127.0.1.1 -> {DEFAULT_VIP}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_zone_has_soa_ns_and_nxdomain_below_it() -> Result<()> {
    let dns = start_dns_with(table(), |_| {}).await?;
    let port = dns.port();
    let (soa, ns, nx, outside) = tokio::task::spawn_blocking(move || {
        let kind = |name: &str, t: &str| {
            let bin = ocean_tests::servers::find_binary("dig", "bind9-dnsutils")?;
            let out = std::process::Command::new(bin)
                .args(["-b", "127.0.0.1", "@127.0.0.1", "-p", &port.to_string()])
                .args([
                    "+time=3",
                    "+tries=1",
                    "+noall",
                    "+comments",
                    "+answer",
                    "+authority",
                ])
                .args([name, t])
                .output()?;
            anyhow::Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        anyhow::Ok((
            kind("shop.example.com.", "SOA")?,
            kind("shop.example.com.", "NS")?,
            kind("nope.shop.example.com.", "A")?,
            kind("api.other.example.", "A")?,
        ))
    })
    .await??;
    ensure!(
        soa.contains("status: NOERROR")
            && soa.contains("shop.example.com.\t60\tIN\tSOA\tns1.mesos. root.ns1.mesos."),
        "{soa}"
    );
    ensure!(
        ns.contains("shop.example.com.\t60\tIN\tNS\tns1.mesos."),
        "{ns}"
    );
    // NXDOMAIN below the zone, with the zone's own SOA in the authority section.
    ensure!(
        nx.contains("status: NXDOMAIN")
            && nx.contains(" aa")
            && nx.contains("shop.example.com.\t60\tIN\tSOA"),
        "{nx}"
    );
    ensure!(outside.contains("status: REFUSED"), "{outside}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_resolvers_client_subnet_picks_the_view() -> Result<()> {
    let dns = start_dns_with(table(), |c| {
        c.trust_ecs = vec!["127.0.0.5".parse::<Cidr>().unwrap()];
    })
    .await?;
    let port = dns.port();
    let ask = |source: &'static str, extra: Vec<&'static str>| {
        tokio::task::spawn_blocking(move || dig(source, port, API, &extra))
    };
    for (transport, tcp) in [("udp", None), ("tcp", Some("+tcp"))] {
        let with = |subnet: &'static str| {
            let mut v = vec![subnet];
            v.extend(tcp);
            v
        };
        // The trusted resolver 127.0.0.5 (itself in telecom's 127.0.0.0/24) asks for a
        // client in unicom's 10.20.0.0/16: unicom's VIP, and the option comes back with
        // the scope the answer depends on.
        let d = ask("127.0.0.5", with("+subnet=10.20.7.0/24")).await??;
        ensure!(
            d.answers == [UNICOM_VIP] && d.output.contains("CLIENT-SUBNET: 10.20.7.0/24/24"),
            "{transport}: {}",
            d.output
        );
        // A client in no view: the default VIP.
        let d = ask("127.0.0.5", with("+subnet=192.0.2.0/24")).await??;
        ensure!(d.answers == [DEFAULT_VIP], "{transport}: {}", d.output);
        // Anyone else's option is ignored: their own address decides, nothing is echoed.
        let d = ask("127.0.1.1", with("+subnet=10.20.7.0/24")).await??;
        ensure!(
            d.answers == [DEFAULT_VIP] && !d.output.contains("CLIENT-SUBNET"),
            "{transport}: {}",
            d.output
        );
        let d = ask("127.0.0.2", with("+subnet=192.0.2.0/24")).await??;
        ensure!(d.answers == [UNICOM_VIP], "{transport}: {}", d.output);
    }
    // A name no view changes: echoed with scope 0 (cacheable for every client).
    let d = tokio::task::spawn_blocking(move || {
        dig(
            "127.0.0.5",
            port,
            "api2.shop.example.com.",
            &["+subnet=10.20.7.0/24"],
        )
    })
    .await??;
    ensure!(
        d.answers == [DEFAULT_VIP] && d.output.contains("CLIENT-SUBNET: 10.20.7.0/24/0"),
        "{}",
        d.output
    );
    Ok(())
}

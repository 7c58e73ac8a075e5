//! Tests of the reconcile engine against the in-memory IPVS: one per rule, property tests
//! over random current/desired pairs with foreign services mixed in, and a scale run.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ocean_core::table::lvs::{Forward, LvsTable, Protocol, RealServer, VirtualService};

use crate::model::*;
use crate::plan::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn vs(
    vip: &str,
    port: u16,
    protocol: Protocol,
    sched: &str,
    reals: &[(&str, u16, u32, Forward)],
) -> VirtualService {
    VirtualService {
        vip: ip(vip),
        port,
        protocol,
        scheduler: sched.into(),
        persistence_s: None,
        reals: reals
            .iter()
            .map(|&(i, port, weight, forward)| RealServer {
                ip: ip(i),
                port,
                weight,
                forward,
            })
            .collect(),
    }
}

fn desired(services: Vec<VirtualService>) -> Desired {
    let (d, refusals) = desired_from_table(&LvsTable { services }, &[], &[]);
    assert!(refusals.is_empty(), "{refusals:?}");
    d
}

fn cfg() -> PlanConfig {
    PlanConfig {
        drain: Duration::from_secs(30),
        max_delete: 1000,
        force: false,
    }
}

fn lines(p: &Plan) -> Vec<String> {
    p.ops.iter().map(Op::to_string).collect()
}

fn entry(svc: Service, dests: &[Dest]) -> ServiceEntry {
    ServiceEntry {
        service: svc,
        dests: dests.iter().map(|d| (d.addr, d.clone())).collect(),
    }
}

fn with_conns(mut d: Dest, active: u32, inactive: u32) -> Dest {
    d.active_conns = active;
    d.inactive_conns = inactive;
    d
}

const TCP80: &str = "10.0.0.1:80";

fn tcp80() -> ServiceKey {
    ServiceKey::tcp(sa(TCP80))
}

// ---------------------------------------------------------------- model

#[test]
fn dr_and_tunnel_real_servers_take_the_virtual_port_nat_keeps_its_own() {
    let d = desired(vec![vs(
        "10.0.0.1",
        80,
        Protocol::Tcp,
        "wrr",
        &[
            ("10.1.0.1", 8080, 1, Forward::Dr),
            ("10.1.0.2", 8080, 2, Forward::Tunnel),
            ("10.1.0.3", 8080, 3, Forward::Nat),
        ],
    )]);
    let e = &d.services[&tcp80()];
    let addrs: Vec<_> = e.dests.keys().copied().collect();
    assert_eq!(
        addrs,
        vec![sa("10.1.0.1:80"), sa("10.1.0.2:80"), sa("10.1.0.3:8080")]
    );
    assert_eq!(e.service.scheduler, "wrr");
    assert_eq!(e.service.netmask, u32::MAX);
}

#[test]
fn bad_entries_are_refused_one_by_one_and_the_rest_applied() {
    let table = LvsTable {
        services: vec![
            vs(
                "10.0.0.1",
                80,
                Protocol::Tcp,
                "rr",
                &[("10.1.0.1", 80, 1, Forward::Dr)],
            ),
            vs(
                "192.168.9.9",
                80,
                Protocol::Tcp,
                "rr",
                &[("10.1.0.1", 80, 1, Forward::Dr)],
            ),
            vs("10.0.0.2", 80, Protocol::Tcp, "rr", &[]),
            vs("10.0.0.2", 80, Protocol::Tcp, "wrr", &[]),
            vs("10.0.0.3", 80, Protocol::Tcp, "fastest", &[]),
            vs("10.0.0.4", 0, Protocol::Tcp, "rr", &[]),
            vs(
                "10.0.0.5",
                80,
                Protocol::Udp,
                "rr",
                &[
                    ("10.1.0.1", 53, 70000, Forward::Nat),
                    ("10.1.0.2", 53, 65535, Forward::Nat),
                    ("2001:db8::1", 53, 1, Forward::Nat),
                ],
            ),
        ],
    };
    let vips: Vec<Cidr> = vec!["10.0.0.0/24".parse().unwrap()];
    let (d, refusals) = desired_from_table(&table, &vips, &[]);
    let msgs: Vec<String> = refusals.iter().map(Refusal::to_string).collect();
    let all = msgs.join("\n");
    assert!(all.contains("services[1] (192.168.9.9:80/tcp): VIP 192.168.9.9 is outside this director's --vip ranges (10.0.0.0/24)"), "{all}");
    assert!(
        all.contains("services[2] (10.0.0.2:80/tcp): duplicate virtual service (listed 2 times)"),
        "{all}"
    );
    assert!(
        all.contains("services[3] (10.0.0.2:80/tcp): duplicate virtual service"),
        "{all}"
    );
    assert!(
        all.contains("services[4] (10.0.0.3:80/tcp): unknown scheduler \"fastest\""),
        "{all}"
    );
    assert!(
        all.contains("services[5] (10.0.0.4:0/tcp): port is 0"),
        "{all}"
    );
    assert!(all.contains("services[6] (10.0.0.5:80/udp) real 10.1.0.1:53: weight 70000 is over the kernel's limit 65535"), "{all}");
    assert!(
        all.contains(
            "real [2001:db8::1]:53: real server 2001:db8::1 is not of the VIP's address family"
        ),
        "{all}"
    );
    assert_eq!(refusals.len(), 7, "{all}");
    let keys: Vec<_> = d.services.keys().copied().collect();
    assert_eq!(keys, vec![tcp80(), ServiceKey::udp(sa("10.0.0.5:80"))]);
    let udp = &d.services[&ServiceKey::udp(sa("10.0.0.5:80"))];
    assert_eq!(
        udp.dests.keys().copied().collect::<Vec<_>>(),
        vec![sa("10.1.0.2:53")]
    );
    assert!(d
        .held_services
        .contains(&ServiceKey::tcp(sa("10.0.0.2:80"))));
    assert!(d
        .held_services
        .contains(&ServiceKey::tcp(sa("10.0.0.3:80"))));
    assert!(d
        .held_dests
        .contains(&(ServiceKey::udp(sa("10.0.0.5:80")), sa("10.1.0.1:53"))));
}

#[test]
fn cidr_parses_and_matches_both_families() {
    let c: Cidr = "10.0.0.0/8".parse().unwrap();
    assert!(c.contains(ip("10.255.0.1")));
    assert!(!c.contains(ip("11.0.0.1")));
    // One rule for every daemon (ocean_core::net): an IPv4-mapped address is its IPv4.
    assert!(c.contains(ip("::ffff:10.0.0.1")));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(ip("1.2.3.4")));
    let host: Cidr = "10.0.0.1".parse().unwrap();
    assert!(host.contains(ip("10.0.0.1")) && !host.contains(ip("10.0.0.2")));
    let v6: Cidr = "2001:db8::/32".parse().unwrap();
    assert!(v6.contains(ip("2001:db8:ffff::1")));
    assert!(!v6.contains(ip("2001:db9::1")));
    assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    assert!("bogus/8".parse::<Cidr>().is_err());
    assert!("10.0.0.0/x".parse::<Cidr>().is_err());
    assert_eq!(v6.to_string(), "2001:db8::/32");
}

#[test]
fn in_memory_ipvs_has_the_kernels_errors_and_edits_in_place() {
    let mut k = InMemoryIpvs::new();
    let s = Service::new(tcp80(), "rr");
    let d = Dest::new(sa("10.1.0.1:80"), 1, Forward::Dr);
    assert_eq!(
        k.apply(&Op::AddDest(tcp80(), d.clone())),
        Err(IpvsError::NoService(tcp80()))
    );
    assert_eq!(
        k.apply(&Op::DelService(tcp80())),
        Err(IpvsError::NoService(tcp80()))
    );
    assert_eq!(
        k.apply(&Op::EditService(s.clone())),
        Err(IpvsError::NoService(tcp80()))
    );
    k.apply(&Op::AddService(s.clone())).unwrap();
    assert_eq!(
        k.apply(&Op::AddService(s.clone())),
        Err(IpvsError::ServiceExists(tcp80()))
    );
    assert_eq!(
        k.apply(&Op::DelDest(tcp80(), d.addr)),
        Err(IpvsError::NoDest(tcp80(), d.addr))
    );
    assert_eq!(
        k.apply(&Op::EditDest(tcp80(), d.clone())),
        Err(IpvsError::NoDest(tcp80(), d.addr))
    );
    k.apply(&Op::AddDest(tcp80(), d.clone())).unwrap();
    assert_eq!(
        k.apply(&Op::AddDest(tcp80(), d.clone())),
        Err(IpvsError::DestExists(tcp80(), d.addr))
    );
    assert!(k.set_conns(&tcp80(), &d.addr, 5, 7));
    let mut heavier = Dest::new(d.addr, 9, Forward::Tunnel);
    k.apply(&Op::EditDest(tcp80(), heavier.clone())).unwrap();
    let got = &k.services()[&tcp80()].dests[&d.addr];
    assert_eq!(
        (
            got.weight,
            got.forward,
            got.active_conns,
            got.inactive_conns
        ),
        (9, Forward::Tunnel, 5, 7)
    );
    heavier.weight = 70000;
    assert!(matches!(
        k.apply(&Op::EditDest(tcp80(), heavier)),
        Err(IpvsError::Invalid(..))
    ));
    let mut s2 = s.clone();
    s2.scheduler = "wlc".into();
    s2.persistence_s = Some(300);
    k.apply(&Op::EditService(s2.clone())).unwrap();
    assert_eq!(k.services()[&tcp80()].service, s2);
    assert_eq!(k.services()[&tcp80()].dests.len(), 1);
    k.apply(&Op::DelService(tcp80())).unwrap();
    assert!(k.services().is_empty());
}

// ---------------------------------------------------------------- plan: rules

#[test]
fn from_empty_adds_services_then_dests_as_ipvsadm_lines() {
    let mut d = desired(vec![
        vs(
            "10.0.0.1",
            80,
            Protocol::Tcp,
            "wrr",
            &[
                ("10.1.0.1", 80, 1, Forward::Dr),
                ("10.1.0.2", 9000, 3, Forward::Nat),
            ],
        ),
        vs(
            "2001:db8::1",
            53,
            Protocol::Udp,
            "sh",
            &[("2001:db8:1::1", 53, 2, Forward::Tunnel)],
        ),
    ]);
    if let Some(e) = d.services.get_mut(&tcp80()) {
        e.service.persistence_s = Some(300);
    }
    let p = plan(
        &Ipvs::new(),
        &d,
        &OwnedSet::new(),
        &mut DrainState::default(),
        0,
        &cfg(),
    )
    .unwrap();
    assert_eq!(
        lines(&p),
        vec![
            "-A -t 10.0.0.1:80 -s wrr -p 300",
            "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 1",
            "-a -t 10.0.0.1:80 -r 10.1.0.2:9000 -m -w 3",
            "-A -u [2001:db8::1]:53 -s sh",
            "-a -u [2001:db8::1]:53 -r [2001:db8:1::1]:53 -i -w 2",
        ]
    );
    assert_eq!(p.removals, 0);
    assert_eq!(p.owned, d.services.keys().copied().collect());
}

#[test]
fn every_op_displays_as_an_ipvsadm_command() {
    let k = tcp80();
    let mut s = Service::new(
        ServiceKey::Fwmark {
            mark: 7,
            ipv6: false,
        },
        "mh",
    );
    s.flags = SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_ONEPACKET;
    s.persistence_s = Some(60);
    s.netmask = 0xffff_ff00;
    let d = Dest::new(sa("10.1.0.1:80"), 0, Forward::Dr);
    let ops = [
        Op::AddService(s.clone()),
        Op::EditService(Service::new(
            ServiceKey::Fwmark {
                mark: 7,
                ipv6: true,
            },
            "rr",
        )),
        Op::DelService(k),
        Op::AddDest(k, d.clone()),
        Op::EditDest(k, d.clone()),
        Op::DelDest(k, d.addr),
    ];
    let got: Vec<String> = ops.iter().map(Op::to_string).collect();
    assert_eq!(
        got,
        vec![
            "-A -f 7 -s mh -b flag-1,flag-2 -p 60 -M 255.255.255.0 -o",
            "-E -f 7 -6 -s rr",
            "-D -t 10.0.0.1:80",
            "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 0",
            "-e -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 0",
            "-d -t 10.0.0.1:80 -r 10.1.0.1:80",
        ]
    );
    assert_eq!(
        ops.iter().map(Op::kind).collect::<Vec<_>>(),
        vec![
            "add_service",
            "edit_service",
            "del_service",
            "add_dest",
            "edit_dest",
            "del_dest"
        ]
    );
}

#[test]
fn foreign_services_are_never_touched_owned_ones_are_deleted() {
    let foreign = ServiceKey::tcp(sa("10.0.0.9:80"));
    let mine = ServiceKey::tcp(sa("10.0.0.8:80"));
    let mut current = Ipvs::new();
    current.insert(
        foreign,
        entry(
            Service::new(foreign, "rr"),
            &[Dest::new(sa("10.1.0.9:80"), 1, Forward::Dr)],
        ),
    );
    current.insert(
        mine,
        entry(
            Service::new(mine, "rr"),
            &[Dest::new(sa("10.1.0.8:80"), 1, Forward::Dr)],
        ),
    );
    let d = desired(vec![vs("10.0.0.1", 80, Protocol::Tcp, "rr", &[])]);
    let owned: OwnedSet = [mine].into();
    let p = plan(&current, &d, &owned, &mut DrainState::default(), 0, &cfg()).unwrap();
    assert_eq!(
        lines(&p),
        vec!["-A -t 10.0.0.1:80 -s rr", "-D -t 10.0.0.8:80"]
    );
    assert_eq!(p.removals, 2);
    assert_eq!(p.owned, [tcp80()].into());
}

#[test]
fn a_desired_service_already_in_the_kernel_is_adopted_and_edited_in_place() {
    let mut current = Ipvs::new();
    current.insert(
        tcp80(),
        entry(
            Service::new(tcp80(), "rr"),
            &[
                Dest::new(sa("10.1.0.1:80"), 1, Forward::Dr),
                Dest::new(sa("10.1.0.2:80"), 1, Forward::Dr),
                Dest::new(sa("10.1.0.3:80"), 1, Forward::Dr),
            ],
        ),
    );
    let d = desired(vec![vs(
        "10.0.0.1",
        80,
        Protocol::Tcp,
        "wrr",
        &[
            ("10.1.0.1", 80, 5, Forward::Dr),
            ("10.1.0.2", 80, 1, Forward::Tunnel),
            ("10.1.0.3", 80, 1, Forward::Dr),
        ],
    )]);
    let p = plan(
        &current,
        &d,
        &OwnedSet::new(),
        &mut DrainState::default(),
        0,
        &cfg(),
    )
    .unwrap();
    assert_eq!(
        lines(&p),
        vec![
            "-E -t 10.0.0.1:80 -s wrr",
            "-e -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 5",
            "-e -t 10.0.0.1:80 -r 10.1.0.2:80 -i -w 1",
        ]
    );
    assert_eq!(p.removals, 0);
}

fn one_service_with(dests: &[Dest], key: ServiceKey) -> Ipvs {
    let mut current = Ipvs::new();
    current.insert(key, entry(Service::new(key, "rr"), dests));
    current
}

#[test]
fn a_leaving_real_server_drains_at_weight_0_then_is_deleted_after_the_drain_time() {
    let current = one_service_with(
        &[
            Dest::new(sa("10.1.0.1:80"), 1, Forward::Dr),
            with_conns(Dest::new(sa("10.1.0.2:80"), 4, Forward::Dr), 3, 2),
        ],
        tcp80(),
    );
    let d = desired(vec![vs(
        "10.0.0.1",
        80,
        Protocol::Tcp,
        "rr",
        &[("10.1.0.1", 80, 1, Forward::Dr)],
    )]);
    let mut k = InMemoryIpvs::from_services(current);
    let mut drain = DrainState::default();
    let p = plan(
        k.services(),
        &d,
        &OwnedSet::new(),
        &mut drain,
        1_000,
        &cfg(),
    )
    .unwrap();
    assert_eq!(lines(&p), vec!["-e -t 10.0.0.1:80 -r 10.1.0.2:80 -g -w 0"]);
    assert_eq!(p.removals, 1);
    assert_eq!(drain.since_ms(&tcp80(), &sa("10.1.0.2:80")), Some(1_000));
    assert!(apply_plan(&mut k, &p).errors.is_empty());

    // Still draining: nothing to do, and it does not count as a new removal.
    let p = plan(
        k.services(),
        &d,
        &OwnedSet::new(),
        &mut drain,
        30_999,
        &cfg(),
    )
    .unwrap();
    assert!(p.is_empty(), "{:?}", lines(&p));
    assert_eq!(drain.len(), 1);

    // Drain time over: deleted even with connections left.
    let p = plan(
        k.services(),
        &d,
        &OwnedSet::new(),
        &mut drain,
        31_000,
        &cfg(),
    )
    .unwrap();
    assert_eq!(lines(&p), vec!["-d -t 10.0.0.1:80 -r 10.1.0.2:80"]);
    assert_eq!(p.removals, 0);
    assert!(drain.is_empty());
    assert!(apply_plan(&mut k, &p).errors.is_empty());
    assert!(plan(
        k.services(),
        &d,
        &OwnedSet::new(),
        &mut drain,
        31_001,
        &cfg()
    )
    .unwrap()
    .is_empty());
}

#[test]
fn a_draining_real_server_is_deleted_as_soon_as_its_connections_reach_0() {
    let current = one_service_with(
        &[with_conns(
            Dest::new(sa("10.1.0.2:80"), 4, Forward::Dr),
            1,
            0,
        )],
        tcp80(),
    );
    let d = desired(vec![vs("10.0.0.1", 80, Protocol::Tcp, "rr", &[])]);
    let mut k = InMemoryIpvs::from_services(current);
    let mut drain = DrainState::default();
    let p = plan(k.services(), &d, &OwnedSet::new(), &mut drain, 0, &cfg()).unwrap();
    apply_plan(&mut k, &p);
    assert_eq!(k.services()[&tcp80()].dests[&sa("10.1.0.2:80")].weight, 0);
    k.set_conns(&tcp80(), &sa("10.1.0.2:80"), 0, 0);
    let p = plan(k.services(), &d, &OwnedSet::new(), &mut drain, 1, &cfg()).unwrap();
    assert_eq!(lines(&p), vec!["-d -t 10.0.0.1:80 -r 10.1.0.2:80"]);
}

#[test]
fn idle_and_udp_real_servers_are_deleted_at_once() {
    let udp = ServiceKey::udp(sa("10.0.0.1:53"));
    let d = desired(vec![
        vs("10.0.0.1", 53, Protocol::Udp, "rr", &[]),
        vs("10.0.0.1", 80, Protocol::Tcp, "rr", &[]),
    ]);
    let mut current = one_service_with(
        &[with_conns(
            Dest::new(sa("10.1.0.1:53"), 1, Forward::Dr),
            9,
            9,
        )],
        udp,
    );
    current.extend(one_service_with(
        &[Dest::new(sa("10.1.0.1:80"), 1, Forward::Dr)],
        tcp80(),
    ));
    let mut drain = DrainState::default();
    let p = plan(&current, &d, &OwnedSet::new(), &mut drain, 0, &cfg()).unwrap();
    assert_eq!(
        lines(&p),
        vec![
            "-d -t 10.0.0.1:80 -r 10.1.0.1:80",
            "-d -u 10.0.0.1:53 -r 10.1.0.1:53"
        ]
    );
    assert_eq!(p.removals, 2);
    assert!(drain.is_empty());
}

#[test]
fn a_real_server_returning_while_draining_gets_its_weight_back() {
    let current = one_service_with(
        &[with_conns(
            Dest::new(sa("10.1.0.2:80"), 4, Forward::Dr),
            3,
            0,
        )],
        tcp80(),
    );
    let mut k = InMemoryIpvs::from_services(current);
    let mut drain = DrainState::default();
    let gone = desired(vec![vs("10.0.0.1", 80, Protocol::Tcp, "rr", &[])]);
    let p = plan(k.services(), &gone, &OwnedSet::new(), &mut drain, 0, &cfg()).unwrap();
    apply_plan(&mut k, &p);
    assert_eq!(drain.len(), 1);
    let back = desired(vec![vs(
        "10.0.0.1",
        80,
        Protocol::Tcp,
        "rr",
        &[("10.1.0.2", 80, 4, Forward::Dr)],
    )]);
    let p = plan(
        k.services(),
        &back,
        &OwnedSet::new(),
        &mut drain,
        5_000,
        &cfg(),
    )
    .unwrap();
    assert_eq!(lines(&p), vec!["-e -t 10.0.0.1:80 -r 10.1.0.2:80 -g -w 4"]);
    assert!(drain.is_empty());
    apply_plan(&mut k, &p);
    let dest = &k.services()[&tcp80()].dests[&sa("10.1.0.2:80")];
    assert_eq!((dest.weight, dest.active_conns), (4, 3));
}

#[test]
fn more_removals_than_max_delete_are_refused_without_force_and_leave_drain_state_alone() {
    let dests: Vec<Dest> = (1..=5)
        .map(|i| {
            with_conns(
                Dest::new(sa(&format!("10.1.0.{i}:80")), 1, Forward::Dr),
                1,
                0,
            )
        })
        .collect();
    let current = one_service_with(&dests, tcp80());
    let d = desired(vec![vs(
        "10.0.0.1",
        80,
        Protocol::Tcp,
        "rr",
        &[("10.1.0.1", 80, 1, Forward::Dr)],
    )]);
    let mut drain = DrainState::default();
    let config = PlanConfig {
        max_delete: 3,
        ..cfg()
    };
    let err = plan(&current, &d, &OwnedSet::new(), &mut drain, 0, &config).unwrap_err();
    assert_eq!(err, PlanError::TooManyRemovals { count: 4, max: 3 });
    assert!(
        err.to_string()
            .contains("remove 4 services and real servers, over --max-delete 3"),
        "{err}"
    );
    assert!(drain.is_empty());
    let p = plan(
        &current,
        &d,
        &OwnedSet::new(),
        &mut drain,
        0,
        &PlanConfig {
            force: true,
            ..config
        },
    )
    .unwrap();
    assert_eq!(p.ops.len(), 4);
    assert_eq!(drain.len(), 4);
}

#[test]
fn an_empty_desired_table_never_flushes_without_force() {
    let current = one_service_with(&[Dest::new(sa("10.1.0.1:80"), 1, Forward::Dr)], tcp80());
    let owned: OwnedSet = [tcp80()].into();
    let mut drain = DrainState::default();
    let err = plan(&current, &Desired::default(), &owned, &mut drain, 0, &cfg()).unwrap_err();
    assert_eq!(err, PlanError::EmptyDesired { count: 2 });
    // Nothing owned in the kernel: an empty table is an empty plan, not an error.
    assert!(plan(
        &current,
        &Desired::default(),
        &OwnedSet::new(),
        &mut drain,
        0,
        &cfg()
    )
    .unwrap()
    .is_empty());
    let p = plan(
        &current,
        &Desired::default(),
        &owned,
        &mut drain,
        0,
        &PlanConfig {
            force: true,
            ..cfg()
        },
    )
    .unwrap();
    assert_eq!(lines(&p), vec!["-D -t 10.0.0.1:80"]);
    assert!(p.owned.is_empty());
}

#[test]
fn refused_entries_hold_what_the_kernel_has() {
    // 10.0.0.1:80 is ours; the new table lists it twice: it is left alone and stays ours.
    // 10.0.0.2:80 keeps a real server whose new weight is over the limit: not drained.
    let k2 = ServiceKey::tcp(sa("10.0.0.2:80"));
    let mut current = one_service_with(&[Dest::new(sa("10.1.0.1:80"), 1, Forward::Dr)], tcp80());
    current.extend(one_service_with(
        &[with_conns(
            Dest::new(sa("10.1.0.1:80"), 1, Forward::Dr),
            5,
            5,
        )],
        k2,
    ));
    let table = LvsTable {
        services: vec![
            vs("10.0.0.1", 80, Protocol::Tcp, "rr", &[]),
            vs("10.0.0.1", 80, Protocol::Tcp, "rr", &[]),
            vs(
                "10.0.0.2",
                80,
                Protocol::Tcp,
                "rr",
                &[("10.1.0.1", 80, 99_999, Forward::Dr)],
            ),
        ],
    };
    let (d, refusals) = desired_from_table(&table, &[], &[]);
    assert_eq!(refusals.len(), 3);
    let owned: OwnedSet = [tcp80(), k2].into();
    let p = plan(&current, &d, &owned, &mut DrainState::default(), 0, &cfg()).unwrap();
    assert!(p.is_empty(), "{:?}", lines(&p));
    assert_eq!(p.owned, owned);
}

#[test]
fn apply_plan_is_idempotent_exists_becomes_edit_missing_delete_is_done() {
    let d = desired(vec![vs(
        "10.0.0.1",
        80,
        Protocol::Tcp,
        "wrr",
        &[("10.1.0.1", 80, 2, Forward::Dr)],
    )]);
    let p = plan(
        &Ipvs::new(),
        &d,
        &OwnedSet::new(),
        &mut DrainState::default(),
        0,
        &cfg(),
    )
    .unwrap();
    let mut k = InMemoryIpvs::new();
    let r = apply_plan(&mut k, &p);
    assert_eq!((r.applied, r.converted, r.errors.len()), (2, 0, 0));
    let after_first = k.clone();
    // Another writer raced us: the same plan again meets EEXIST everywhere.
    let r = apply_plan(&mut k, &p);
    assert_eq!((r.applied, r.converted, r.errors.len()), (0, 2, 0));
    assert_eq!(k, after_first);
    // Deletes of what is already gone are done.
    let dels = Plan {
        ops: vec![
            Op::DelDest(tcp80(), sa("10.9.9.9:80")),
            Op::DelService(ServiceKey::tcp(sa("10.9.9.9:80"))),
        ],
        ..Plan::default()
    };
    let r = apply_plan(&mut k, &dels);
    assert_eq!((r.applied, r.converted, r.errors.len()), (0, 2, 0));
    // An edit of something deleted meanwhile becomes an add.
    let edit = Plan {
        ops: vec![Op::EditDest(
            tcp80(),
            Dest::new(sa("10.1.0.7:80"), 3, Forward::Dr),
        )],
        ..Plan::default()
    };
    assert_eq!(apply_plan(&mut k, &edit).converted, 1);
    assert_eq!(k.services()[&tcp80()].dests[&sa("10.1.0.7:80")].weight, 3);
    // A dest of a service deleted meanwhile is an error to report, not a panic.
    let orphan = Plan {
        ops: vec![Op::AddDest(
            ServiceKey::tcp(sa("10.9.9.9:80")),
            Dest::new(sa("10.1.0.7:80"), 3, Forward::Dr),
        )],
        ..Plan::default()
    };
    assert_eq!(apply_plan(&mut k, &orphan).errors.len(), 1);
}

// ---------------------------------------------------------------- property tests

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

const VIPS: &[&str] = &[
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.3",
    "10.0.0.4",
    "2001:db8::1",
];
const PORTS: &[u16] = &[80, 443];
const REALS4: &[&str] = &["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5"];
const REALS6: &[&str] = &["2001:db8:1::1", "2001:db8:1::2", "2001:db8:1::3"];
const SCHEDS: &[&str] = &["rr", "wrr", "lc", "sh", "mh"];
const FORWARDS: &[Forward] = &[Forward::Dr, Forward::Nat, Forward::Tunnel];

fn random_proto(rng: &mut Rng) -> Protocol {
    if rng.chance(30) {
        Protocol::Udp
    } else {
        Protocol::Tcp
    }
}

fn random_current(rng: &mut Rng) -> Ipvs {
    let mut cur = Ipvs::new();
    for _ in 0..rng.below(8) {
        let vip = ip(rng.pick(VIPS));
        let key = if rng.chance(10) {
            ServiceKey::Fwmark {
                mark: rng.below(3) as u32 + 1,
                ipv6: vip.is_ipv6(),
            }
        } else {
            ServiceKey::Addr {
                protocol: random_proto(rng),
                addr: SocketAddr::new(vip, rng.pick(PORTS)),
            }
        };
        let mut svc = Service::new(key, rng.pick(SCHEDS));
        if rng.chance(20) {
            svc.persistence_s = Some(300);
        }
        if rng.chance(10) {
            svc.flags = SVC_F_SCHED1;
        }
        let pool = if key.is_ipv6() { REALS6 } else { REALS4 };
        let mut dests = BTreeMap::new();
        for _ in 0..rng.below(5) {
            let addr = SocketAddr::new(ip(rng.pick(pool)), rng.pick(&[80u16, 443, 8080]));
            let mut d = Dest::new(addr, rng.below(4) as u32, rng.pick(FORWARDS));
            if rng.chance(50) {
                d.active_conns = rng.below(10) as u32;
                d.inactive_conns = rng.below(10) as u32;
            }
            dests.insert(addr, d);
        }
        cur.insert(
            key,
            ServiceEntry {
                service: svc,
                dests,
            },
        );
    }
    cur
}

fn random_table(rng: &mut Rng) -> LvsTable {
    let mut services = Vec::new();
    for _ in 0..rng.below(7) {
        let vip = rng.pick(VIPS);
        let pool = if vip.contains(':') { REALS6 } else { REALS4 };
        let mut s = vs(
            vip,
            rng.pick(PORTS),
            random_proto(rng),
            rng.pick(SCHEDS),
            &[],
        );
        if rng.chance(5) {
            s.scheduler = "fastest".into();
        }
        if rng.chance(20) {
            s.persistence_s = Some(rng.below(2) as u32 * 300 + 60);
        }
        for _ in 0..rng.below(5) {
            s.reals.push(RealServer {
                ip: ip(rng.pick(pool)),
                port: rng.pick(&[80u16, 443, 8080]),
                weight: if rng.chance(5) {
                    70_000
                } else {
                    rng.below(4) as u32
                },
                forward: rng.pick(FORWARDS),
            });
        }
        services.push(s);
    }
    LvsTable { services }
}

/// The services the plan must leave byte-for-byte alone.
fn untouchable(current: &Ipvs, desired: &Desired, owned: &OwnedSet) -> Ipvs {
    current
        .iter()
        .filter(|(k, _)| {
            !desired.services.contains_key(k)
                && (!owned.contains(k) || desired.held_services.contains(k))
        })
        .map(|(k, e)| (*k, e.clone()))
        .collect()
}

/// What each desired service must look like at the end: desired, plus held destinations the
/// kernel already had.
fn expected_owned(current: &Ipvs, desired: &Desired) -> Ipvs {
    let mut want = desired.services.clone();
    for (k, e) in want.iter_mut() {
        if let Some(have) = current.get(k) {
            for (a, d) in &have.dests {
                if desired.held_dests.contains(&(*k, *a)) {
                    e.dests.insert(*a, d.clone());
                }
            }
        }
    }
    want
}

fn same_config(a: &Ipvs, b: &Ipvs) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, ea), (kb, eb))| ka == kb && ea.same_config(eb))
}

#[test]
fn random_current_and_desired_converge_without_touching_foreign_services() {
    let config = PlanConfig {
        force: true,
        ..cfg()
    };
    // How often each interesting case came up, so a generator change cannot quietly make
    // the property vacuous.
    let (mut with_foreign, mut with_drain, mut with_held, mut with_edits, mut with_deletes) =
        (0, 0, 0, 0, 0);
    for seed in 1..=2_000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let current = random_current(&mut rng);
        let vips: Vec<Cidr> = if rng.chance(30) {
            vec!["10.0.0.0/30".parse().unwrap()]
        } else {
            vec![]
        };
        let (desired, _refusals) = desired_from_table(&random_table(&mut rng), &vips, &[]);
        let owned: OwnedSet = current.keys().filter(|_| rng.chance(40)).copied().collect();
        let foreign = untouchable(&current, &desired, &owned);
        let want = expected_owned(&current, &desired);

        let mut k = InMemoryIpvs::from_services(current.clone());
        let mut drain = DrainState::default();
        let mut now = 1_000u64;
        let p1 = plan(k.services(), &desired, &owned, &mut drain, now, &config).unwrap();
        with_foreign += usize::from(!foreign.is_empty());
        with_drain += usize::from(!drain.is_empty());
        with_held +=
            usize::from(!desired.held_services.is_empty() || !desired.held_dests.is_empty());
        with_edits += usize::from(
            p1.ops
                .iter()
                .any(|op| matches!(op, Op::EditService(_) | Op::EditDest(..))),
        );
        with_deletes += usize::from(p1.ops.iter().any(|op| matches!(op, Op::DelService(_))));
        let r = apply_plan(&mut k, &p1);
        assert!(r.errors.is_empty(), "seed {seed}: {:?}", r.errors);
        assert_eq!(
            r.converted, 0,
            "seed {seed}: the plan met its own kernel state"
        );

        // Leaving TCP real servers with connections are at weight 0, not gone.
        for (key, e) in k.services() {
            if let Some(w) = desired.services.get(key) {
                for (a, d) in &e.dests {
                    if !w.dests.contains_key(a) && !desired.held_dests.contains(&(*key, *a)) {
                        assert_eq!(d.weight, 0, "seed {seed}: {key} {a} should be draining");
                        assert!(d.conns() > 0 && !key.is_udp(), "seed {seed}");
                    }
                }
            }
        }

        // Their connections end, or the drain time passes.
        if rng.chance(50) {
            let owned_keys: Vec<ServiceKey> = k
                .services()
                .keys()
                .filter(|k| !foreign.contains_key(k))
                .copied()
                .collect();
            for key in owned_keys {
                let addrs: Vec<DestKey> = k.services()[&key].dests.keys().copied().collect();
                for a in addrs {
                    k.set_conns(&key, &a, 0, 0);
                }
            }
            now += 1;
        } else {
            now += 30_000;
        }
        let p2 = plan(k.services(), &desired, &p1.owned, &mut drain, now, &config).unwrap();
        assert!(
            p2.ops.iter().all(|op| matches!(op, Op::DelDest(..))),
            "seed {seed}: {:?}",
            lines(&p2)
        );
        let r = apply_plan(&mut k, &p2);
        assert!(r.errors.is_empty(), "seed {seed}: {:?}", r.errors);

        let after = k.services();
        let owned_part: Ipvs = after
            .iter()
            .filter(|(key, _)| desired.services.contains_key(key))
            .map(|(key, e)| (*key, e.clone()))
            .collect();
        assert!(
            same_config(&owned_part, &want),
            "seed {seed}:\n got {owned_part:#?}\nwant {want:#?}"
        );
        let foreign_after: Ipvs = after
            .iter()
            .filter(|(key, _)| foreign.contains_key(key))
            .map(|(key, e)| (*key, e.clone()))
            .collect();
        assert_eq!(
            foreign_after, foreign,
            "seed {seed}: a foreign service changed"
        );
        assert_eq!(
            after.len(),
            owned_part.len() + foreign.len(),
            "seed {seed}: an owned service survived"
        );
        assert!(drain.is_empty(), "seed {seed}");

        let p3 = plan(after, &desired, &p2.owned, &mut drain, now + 1, &cfg()).unwrap();
        assert!(
            p3.is_empty(),
            "seed {seed}: second plan not empty: {:?}",
            lines(&p3)
        );
    }
    eprintln!("2000 cases: {with_foreign} with foreign services, {with_drain} with drains, {with_held} with held entries, {with_edits} with edits in place, {with_deletes} with service deletes");
    for n in [
        with_foreign,
        with_drain,
        with_held,
        with_edits,
        with_deletes,
    ] {
        assert!(n > 100, "generator too narrow: {n}");
    }
}

#[test]
fn plans_never_touch_services_that_are_neither_desired_nor_owned() {
    for seed in 1..=2_000u64 {
        let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1);
        let current = random_current(&mut rng);
        let (desired, _) = desired_from_table(&random_table(&mut rng), &[], &[]);
        let owned: OwnedSet = current.keys().filter(|_| rng.chance(40)).copied().collect();
        let foreign = untouchable(&current, &desired, &owned);
        let p = plan(
            &current,
            &desired,
            &owned,
            &mut DrainState::default(),
            0,
            &PlanConfig {
                force: true,
                ..cfg()
            },
        )
        .unwrap();
        for op in &p.ops {
            assert!(
                !foreign.contains_key(op.key()),
                "seed {seed}: {op} touches a foreign service"
            );
        }
    }
}

// ---------------------------------------------------------------- scale

fn big_table(services: usize, reals: usize) -> LvsTable {
    let services = (0..services)
        .map(|i| VirtualService {
            vip: IpAddr::from([10, 0, (i / 250) as u8, (i % 250 + 1) as u8]),
            port: 80,
            protocol: Protocol::Tcp,
            scheduler: "wrr".into(),
            persistence_s: None,
            reals: (0..reals)
                .map(|j| RealServer {
                    ip: IpAddr::from([10, 1, (j / 250) as u8, (j % 250 + 1) as u8]),
                    port: 80,
                    weight: 1,
                    forward: Forward::Dr,
                })
                .collect(),
        })
        .collect();
    LvsTable { services }
}

#[test]
fn scale_1000_services_by_20_reals_from_empty_and_a_no_change_resync() {
    let table = big_table(1_000, 20);
    let t = Instant::now();
    let (desired, refusals) = desired_from_table(&table, &["10.0.0.0/8".parse().unwrap()], &[]);
    let t_desired = t.elapsed();
    assert!(refusals.is_empty());

    let mut k = InMemoryIpvs::new();
    let mut drain = DrainState::default();
    let t = Instant::now();
    let p = plan(
        k.services(),
        &desired,
        &OwnedSet::new(),
        &mut drain,
        0,
        &cfg(),
    )
    .unwrap();
    let t_plan = t.elapsed();
    assert_eq!(p.ops.len(), 1_000 + 20_000);
    let t = Instant::now();
    let r = apply_plan(&mut k, &p);
    let t_apply = t.elapsed();
    assert!(r.errors.is_empty());

    let t = Instant::now();
    let again = plan(k.services(), &desired, &p.owned, &mut drain, 1, &cfg()).unwrap();
    let t_resync = t.elapsed();
    assert!(again.is_empty());
    eprintln!(
        "scale 1000 services x 20 reals (in-memory): desired_from_table {t_desired:?}, plan from empty {t_plan:?} ({} ops), apply {t_apply:?}, no-change resync plan {t_resync:?} (0 ops)",
        p.ops.len()
    );
}

// ---- VIPs refused whatever the table says, and --max-services (issue 12) ----

fn svc(vip: &str) -> VirtualService {
    vs(
        vip,
        80,
        Protocol::Tcp,
        "wrr",
        &[("10.1.0.1", 80, 1, Forward::Dr)],
    )
}

fn six(vip: &str) -> VirtualService {
    vs(
        vip,
        80,
        Protocol::Tcp,
        "wrr",
        &[("2001:db8:1::1", 80, 1, Forward::Dr)],
    )
}

#[test]
fn dangerous_vips_are_refused_one_by_one_even_inside_vip_ranges() {
    let cases: [(VirtualService, &str); 14] = [
        (svc("127.0.0.1"), "is loopback"),
        (svc("127.5.5.5"), "is loopback"),
        (six("::1"), "is loopback"),
        (svc("0.0.0.0"), "is unspecified"),
        (svc("0.1.2.3"), "is unspecified"),
        (six("::"), "is unspecified"),
        (svc("224.0.0.1"), "is multicast"),
        (svc("239.1.2.3"), "is multicast"),
        (six("ff02::1"), "is multicast"),
        (svc("255.255.255.255"), "is the broadcast address"),
        (svc("169.254.169.254"), "is link-local"),
        (six("fe80::1"), "is link-local"),
        (six("::ffff:127.0.0.1"), "is loopback"),
        (svc("192.0.2.2"), "one of this director's own addresses"),
    ];
    let host = [ip("192.0.2.2"), ip("fd00::2")];
    for (service, why) in &cases {
        // An operator range that covers everything does not let them in either.
        for vips in [vec![], vec!["0.0.0.0/0".parse().unwrap()]] {
            let table = LvsTable {
                services: vec![service.clone(), svc("10.0.0.1")],
            };
            let (d, refusals) = desired_from_table(&table, &vips, &host);
            let all: Vec<String> = refusals.iter().map(Refusal::to_string).collect();
            if why.contains("own addresses") && !vips.is_empty() {
                // Inside an explicit --vip range, a host address is a VIP the director
                // carries (keepalived put it on an interface): allowed.
                assert!(refusals.is_empty(), "{all:?}");
                assert_eq!(d.services.len(), 2);
                continue;
            }
            assert_eq!(
                refusals.len(),
                1,
                "{} with --vip {vips:?}: {all:?}",
                service.vip
            );
            assert!(
                all[0].starts_with(&format!(
                    "services[0] ({}/tcp): VIP ",
                    SocketAddr::new(service.vip, 80)
                )) && all[0].contains(why)
                    && all[0].contains("never a virtual service"),
                "{all:?}"
            );
            // Refused, not held: nothing of it is desired or kept, the other service is.
            assert_eq!(
                d.services.keys().copied().collect::<Vec<_>>(),
                vec![tcp80()]
            );
            assert!(d.held_services.is_empty() && d.held_dests.is_empty());
        }
    }
    // An IPv6 host address too, and only an exact match: its neighbours are fine.
    let table = LvsTable {
        services: vec![six("fd00::2"), six("fd00::3"), svc("192.0.2.3")],
    };
    let (d, refusals) = desired_from_table(&table, &[], &host);
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(refusals[0].reason.contains("own addresses"), "{refusals:?}");
    assert_eq!(d.services.len(), 2);
    // A host address outside the --vip ranges stays refused.
    let vips: Vec<Cidr> = vec!["10.0.0.0/24".parse().unwrap()];
    let (_, refusals) = desired_from_table(
        &LvsTable {
            services: vec![svc("192.0.2.2")],
        },
        &vips,
        &host,
    );
    assert!(refusals[0].reason.contains("own addresses"), "{refusals:?}");
}

mod reconciler {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::backend::Backend;
    use crate::host::HostAddrs;
    use crate::reconcile::{Guard, Reason, ReconcileError, Reconciler};

    fn reconciler(host: &[&str], max_services: usize) -> (Reconciler, Arc<Mutex<InMemoryIpvs>>) {
        let mem = Arc::new(Mutex::new(InMemoryIpvs::new()));
        let guard = Guard {
            vips: vec![],
            host_addrs: HostAddrs::Fixed(host.iter().map(|h| ip(h)).collect()),
            max_services,
        };
        let r = Reconciler::new(Backend::Memory(mem.clone()), guard, cfg(), None).unwrap();
        (r, mem)
    }

    fn kernel_vips(mem: &Arc<Mutex<InMemoryIpvs>>) -> Vec<String> {
        mem.lock()
            .unwrap()
            .services()
            .keys()
            .map(|k| k.to_string())
            .collect()
    }

    #[test]
    fn refused_vips_never_reach_the_kernel_and_are_reported() {
        let (mut r, mem) = reconciler(&["192.0.2.2"], 4096);
        let table = LvsTable {
            services: vec![
                svc("127.0.0.1"),
                svc("0.0.0.0"),
                svc("224.0.0.5"),
                svc("255.255.255.255"),
                svc("169.254.1.1"),
                six("::1"),
                six("::"),
                six("ff05::2"),
                six("fe80::9"),
                svc("192.0.2.2"),
                svc("10.0.0.1"),
            ],
        };
        let rep = r.reconcile(&table, Reason::Table).unwrap();
        assert!(rep.converged(), "{rep:?}");
        assert_eq!(rep.refusals.len(), 10, "{:?}", rep.refusals);
        assert_eq!(kernel_vips(&mem), vec!["-t 10.0.0.1:80"]);
        // Nothing refused was written, not even once: two writes (service + real).
        assert_eq!(rep.writes, 2);
    }

    #[test]
    fn a_service_we_own_on_a_vip_that_became_a_host_address_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("owned");
        let mem = Arc::new(Mutex::new(InMemoryIpvs::new()));
        let guard = |host: Vec<IpAddr>| Guard {
            vips: vec![],
            host_addrs: HostAddrs::Fixed(host),
            max_services: 4096,
        };
        let table = LvsTable {
            services: vec![svc("10.0.0.1"), svc("10.0.0.2")],
        };
        let mut r = Reconciler::new(
            Backend::Memory(mem.clone()),
            guard(vec![]),
            cfg(),
            Some(state.clone()),
        )
        .unwrap();
        r.reconcile(&table, Reason::Table).unwrap();
        assert_eq!(kernel_vips(&mem).len(), 2);
        // Restarted on a host that now has 10.0.0.2 (getifaddrs is read at start and at
        // every reconcile): the service there is refused, and being ours, removed.
        let mut r = Reconciler::new(
            Backend::Memory(mem.clone()),
            guard(vec![ip("10.0.0.2")]),
            cfg(),
            Some(state.clone()),
        )
        .unwrap();
        let rep = r.reconcile(&table, Reason::Table).unwrap();
        assert_eq!(rep.refusals.len(), 1, "{:?}", rep.refusals);
        assert!(rep.refusals[0].reason.contains("own addresses"));
        assert!(rep.converged(), "{rep:?}");
        assert_eq!(kernel_vips(&mem), vec!["-t 10.0.0.1:80"]);
    }

    #[test]
    fn a_table_over_max_services_is_refused_whole_and_the_last_good_one_stays() {
        let (mut r, mem) = reconciler(&[], 2);
        // No good table yet: refused, nothing written.
        let big = LvsTable {
            services: vec![svc("10.0.0.1"), svc("10.0.0.2"), svc("10.0.0.3")],
        };
        let err = r.reconcile(&big, Reason::Table).unwrap_err();
        assert!(matches!(err, ReconcileError::TableRefused(_)), "{err}");
        assert!(
            err.to_string()
                .contains("the table has 3 services, over --max-services 2"),
            "{err}"
        );
        assert!(kernel_vips(&mem).is_empty());

        // A good table is applied; a later big one is refused whole and the good one stays.
        let good = LvsTable {
            services: vec![svc("10.0.0.1"), svc("10.0.0.2")],
        };
        let rep = r.reconcile(&good, Reason::Table).unwrap();
        assert!(rep.converged() && rep.table_refused.is_none());
        let before = mem.lock().unwrap().clone();
        let rep = r.reconcile(&big, Reason::Table).unwrap();
        assert_eq!(
            rep.table_refused.as_deref(),
            Some("the table has 3 services, over --max-services 2")
        );
        assert_eq!(rep.writes, 0, "{rep:?}");
        assert_eq!(*mem.lock().unwrap(), before);

        // Drift is still repaired against the last good table while the big one is refused.
        let key = ServiceKey::tcp(sa("10.0.0.2:80"));
        mem.lock().unwrap().apply(&Op::DelService(key)).unwrap();
        let rep = r.reconcile(&big, Reason::Resync).unwrap();
        assert!(rep.table_refused.is_some());
        assert_eq!(*mem.lock().unwrap(), before);

        // Exactly at the cap is fine; 0 means no cap.
        let (mut r, _) = reconciler(&[], 0);
        assert!(r
            .reconcile(&big, Reason::Table)
            .unwrap()
            .table_refused
            .is_none());
    }
}

// ------------------------------------------- restarts, unmanaged settings, SCTP (issue 19)

mod restart {
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::backend::Backend;
    use crate::host::HostAddrs;
    use crate::netlink::wire;
    use crate::reconcile::{load_state, Clock, Guard, Reason, Reconciler, State, StateError};

    /// A clock the test moves: (monotonic, wall). A restart is a new clock at the same wall
    /// time with its monotonic origin back at 0, as a new process has.
    #[derive(Debug, Clone)]
    struct ManualClock(Arc<Mutex<(Duration, Duration)>>);

    impl ManualClock {
        fn at_unix(unix: Duration) -> Self {
            ManualClock(Arc::new(Mutex::new((Duration::ZERO, unix))))
        }

        fn advance(&self, d: Duration) {
            let mut t = self.0.lock().unwrap();
            t.0 += d;
            t.1 += d;
        }

        /// The clock a restarted process would see.
        fn restarted(&self) -> Self {
            Self::at_unix(self.0.lock().unwrap().1)
        }
    }

    impl Clock for ManualClock {
        fn monotonic(&self) -> Duration {
            self.0.lock().unwrap().0
        }

        fn unix(&self) -> Duration {
            self.0.lock().unwrap().1
        }
    }

    const T0: u64 = 1_700_000_000;

    fn guard() -> Guard {
        Guard {
            vips: vec![],
            host_addrs: HostAddrs::Fixed(vec![]),
            max_services: 4096,
        }
    }

    fn reconciler(
        mem: &Arc<Mutex<InMemoryIpvs>>,
        state: &Path,
        clock: &ManualClock,
        config: PlanConfig,
    ) -> Reconciler {
        Reconciler::with_clock(
            Backend::Memory(mem.clone()),
            guard(),
            config,
            Some(state.to_path_buf()),
            Box::new(clock.clone()),
        )
        .unwrap()
    }

    fn table(reals: &[(&str, u32)]) -> LvsTable {
        let reals: Vec<(&str, u16, u32, Forward)> = reals
            .iter()
            .map(|&(a, w)| (a, 80, w, Forward::Dr))
            .collect();
        LvsTable {
            services: vec![vs("10.0.0.1", 80, Protocol::Tcp, "wrr", &reals)],
        }
    }

    fn dest(mem: &Arc<Mutex<InMemoryIpvs>>, key: &ServiceKey, a: &str) -> Option<Dest> {
        mem.lock()
            .unwrap()
            .services()
            .get(key)?
            .dests
            .get(&sa(a))
            .cloned()
    }

    const LEAVING: &str = "10.1.0.2:80";

    /// Two real servers, then the second leaves with connections open: it drains from
    /// `T0 + 10 s`. Returns the kernel, the state file's directory and the clock.
    fn start_a_drain() -> (Arc<Mutex<InMemoryIpvs>>, tempfile::TempDir, ManualClock) {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mem = Arc::new(Mutex::new(InMemoryIpvs::new()));
        let clock = ManualClock::at_unix(Duration::from_secs(T0));
        let mut r = reconciler(&mem, &state, &clock, cfg());
        let both = table(&[("10.1.0.1", 1), ("10.1.0.2", 1)]);
        assert!(r.reconcile(&both, Reason::Table).unwrap().converged());
        assert!(mem.lock().unwrap().set_conns(&tcp80(), &sa(LEAVING), 5, 3));
        clock.advance(Duration::from_secs(10));
        let rep = r
            .reconcile(&table(&[("10.1.0.1", 1)]), Reason::Table)
            .unwrap();
        assert!(rep.converged(), "{rep:?}");
        assert_eq!(dest(&mem, &tcp80(), LEAVING).unwrap().weight, 0);
        let text = std::fs::read_to_string(&state).unwrap();
        assert!(
            text.contains(&format!("drain -t 10.0.0.1:80 -r {LEAVING} {}\n", T0 + 10)),
            "{text}"
        );
        (mem, dir, clock)
    }

    /// Must-show 3: a restart during a drain does not restart it; the drain ends at its
    /// original start + `drain` (30 s), to the millisecond, not 30 s after the restart.
    #[test]
    fn a_restart_during_a_drain_ends_the_drain_at_its_original_deadline() {
        let (mem, dir, clock) = start_a_drain();
        let state = dir.path().join("state");
        let smaller = table(&[("10.1.0.1", 1)]);

        // 25 s into the drain the process dies; a new one starts (new monotonic origin).
        clock.advance(Duration::from_secs(25));
        let clock = clock.restarted();
        let mut r = reconciler(&mem, &state, &clock, cfg());
        assert_eq!(
            r.draining().get(&(tcp80(), sa(LEAVING))),
            Some(&(T0 + 10)),
            "the drain's start came back from the state file"
        );
        let rep = r.reconcile(&smaller, Reason::Table).unwrap();
        assert_eq!(rep.writes, 0, "a resumed drain writes nothing: {rep:?}");
        assert!(rep.converged());
        assert_eq!(r.draining().get(&(tcp80(), sa(LEAVING))), Some(&(T0 + 10)));

        // 29.999 s after the drain began: still draining (connections are still open).
        clock.advance(Duration::from_millis(4_999));
        r.reconcile(&smaller, Reason::Resync).unwrap();
        assert_eq!(dest(&mem, &tcp80(), LEAVING).unwrap().weight, 0);

        // 30 s after it began (5 s after the restart): deleted. Without the state file's
        // drain time it would have lasted until 30 s after the restart.
        clock.advance(Duration::from_millis(1));
        let rep = r.reconcile(&smaller, Reason::Resync).unwrap();
        assert!(rep.converged(), "{rep:?}");
        assert_eq!(dest(&mem, &tcp80(), LEAVING), None);
        assert!(dest(&mem, &tcp80(), "10.1.0.1:80").is_some());
        assert!(r.draining().is_empty());
        let saved = load_state(&state).unwrap();
        assert!(saved.drains.is_empty(), "{saved:?}");
        assert_eq!(saved.owned.len(), 1);
    }

    #[test]
    fn a_drain_past_its_deadline_at_restart_ends_at_the_first_reconcile() {
        let (mem, dir, clock) = start_a_drain();
        let state = dir.path().join("state");
        // Down for longer than the drain: the first reconcile of the new process deletes.
        clock.advance(Duration::from_secs(45));
        let clock = clock.restarted();
        let mut r = reconciler(&mem, &state, &clock, cfg());
        let rep = r
            .reconcile(&table(&[("10.1.0.1", 1)]), Reason::Table)
            .unwrap();
        assert!(rep.converged(), "{rep:?}");
        assert_eq!(dest(&mem, &tcp80(), LEAVING), None);
        // A drain as long as the downtime restored at 0 ms of the new clock works as well.
        assert!(load_state(&state).unwrap().drains.is_empty());
    }

    #[test]
    fn a_server_returning_after_a_restart_gets_its_weight_back_and_its_drain_is_forgotten() {
        let (mem, dir, clock) = start_a_drain();
        let state = dir.path().join("state");
        let clock = clock.restarted();
        let mut r = reconciler(&mem, &state, &clock, cfg());
        let both = table(&[("10.1.0.1", 1), ("10.1.0.2", 1)]);
        let rep = r.reconcile(&both, Reason::Table).unwrap();
        assert_eq!(rep.writes, 1, "{rep:?}");
        assert_eq!(dest(&mem, &tcp80(), LEAVING).unwrap().weight, 1);
        assert!(load_state(&state).unwrap().drains.is_empty());
    }

    #[test]
    fn a_state_file_without_drain_times_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        // What the previous version wrote.
        std::fs::write(
            &state,
            "# services ocean lvs-sync created and may change or delete\n-t 10.0.0.1:80\n-f 7 -6\n",
        )
        .unwrap();
        let s = load_state(&state).unwrap();
        assert_eq!(
            s,
            State {
                owned: [
                    tcp80(),
                    ServiceKey::Fwmark {
                        mark: 7,
                        ipv6: true
                    }
                ]
                .into_iter()
                .collect(),
                drains: BTreeMap::new(),
            }
        );
        // It keeps owning what it owned: the service leaves the table, it is deleted.
        let mem = Arc::new(Mutex::new(InMemoryIpvs::new()));
        let clock = ManualClock::at_unix(Duration::from_secs(T0));
        mem.lock()
            .unwrap()
            .apply(&Op::AddService(Service::new(tcp80(), "wrr")))
            .unwrap();
        let mut r = reconciler(
            &mem,
            &state,
            &clock,
            PlanConfig {
                force: true,
                ..cfg()
            },
        );
        r.reconcile(&LvsTable { services: vec![] }, Reason::Table)
            .unwrap();
        assert!(mem.lock().unwrap().services().is_empty());
    }

    #[test]
    fn a_corrupt_state_file_refuses_to_start_naming_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mem = Arc::new(Mutex::new(InMemoryIpvs::new()));
        let clock = ManualClock::at_unix(Duration::from_secs(T0));
        for (text, why) in [
            (
                "-t 10.0.0.1:80\ndrain -t 10.0.0.1:80 -r 10.1.0.2:80 soon\n",
                "not a drain",
            ),
            (
                "-t 10.0.0.1:80\ndrain -t 10.0.0.1:80 10.1.0.2:80 1\n",
                "not a drain",
            ),
            ("-t 10.0.0.1:80\n-x 1.2.3.4:80\n", "not a service"),
            ("--sctp-service 10.0.0.1:80\n", "SCTP"),
        ] {
            std::fs::write(&state, text).unwrap();
            let err = Reconciler::with_clock(
                Backend::Memory(mem.clone()),
                guard(),
                cfg(),
                Some(state.clone()),
                Box::new(clock.clone()),
            )
            .unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(&state.display().to_string()), "{msg}");
            assert!(msg.contains(why), "{msg}");
            assert!(matches!(
                err.downcast_ref::<StateError>(),
                Some(StateError::Malformed { .. })
            ));
        }
        // Unreadable (a directory): refused too, naming it.
        let err = load_state(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
    }

    /// Must-show 3: thresholds set by an operator (`ipvsadm -e ... -x 100 -y 10`) survive
    /// Ocean's weight change, its drain, and the tunnel settings and persistence engine
    /// survive likewise; the in-memory kernel resets them on an edit that omits them, as
    /// the kernel does, so this fails if the plan does not send them back.
    #[test]
    fn thresholds_tunnel_settings_and_the_persistence_engine_survive_edits() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mem = Arc::new(Mutex::new(InMemoryIpvs::new()));
        let clock = ManualClock::at_unix(Duration::from_secs(T0));
        let mut r = reconciler(&mem, &state, &clock, cfg());
        let reals = [("10.1.0.1", 1), ("10.1.0.2", 1)];
        r.reconcile(&table(&reals), Reason::Table).unwrap();

        // The operator's settings, as ipvsadm would make them.
        let mut tuned = Dest::new(sa("10.1.0.1:80"), 1, Forward::Dr);
        tuned.u_threshold = 100;
        tuned.l_threshold = 10;
        tuned.tun_type = 1;
        tuned.tun_port = 6080;
        tuned.tun_flags = 1;
        let mut tuned2 = tuned.clone();
        tuned2.addr = sa(LEAVING);
        let mut svc = Service::new(tcp80(), "wrr");
        svc.pe_name = Some("sip".into());
        {
            let mut k = mem.lock().unwrap();
            k.apply(&Op::EditDest(tcp80(), tuned.clone())).unwrap();
            k.apply(&Op::EditDest(tcp80(), tuned2.clone())).unwrap();
            k.apply(&Op::EditService(svc.clone())).unwrap();
            assert!(k.set_conns(&tcp80(), &sa(LEAVING), 2, 0));
        }
        // Unmanaged settings differ from the table's defaults, yet nothing is to do.
        let rep = r.reconcile(&table(&reals), Reason::Resync).unwrap();
        assert_eq!(rep.writes, 0, "{rep:?}");

        // A weight change through the table; the second server leaves (drain: weight 0);
        // the scheduler changes (a service edit).
        let mut t = table(&[("10.1.0.1", 5)]);
        t.services[0].scheduler = "rr".into();
        let rep = r.reconcile(&t, Reason::Table).unwrap();
        assert!(rep.converged(), "{rep:?}");
        assert_eq!(rep.writes, 3, "{rep:?}");
        let got = dest(&mem, &tcp80(), "10.1.0.1:80").unwrap();
        assert_eq!(got.weight, 5);
        assert_eq!(
            got,
            Dest {
                weight: 5,
                ..tuned.clone()
            }
        );
        let drained = dest(&mem, &tcp80(), LEAVING).unwrap();
        assert_eq!(
            (
                drained.weight,
                drained.u_threshold,
                drained.l_threshold,
                drained.tun_port
            ),
            (0, 100, 10, 6080)
        );
        let s = mem.lock().unwrap().services()[&tcp80()].service.clone();
        assert_eq!(
            (s.scheduler.as_str(), s.pe_name.as_deref()),
            ("rr", Some("sip"))
        );

        // The model has teeth: an edit that omits them clears them, as the kernel's does.
        let mut k = mem.lock().unwrap();
        k.apply(&Op::EditDest(
            tcp80(),
            Dest::new(sa("10.1.0.1:80"), 5, Forward::Dr),
        ))
        .unwrap();
        let cleared = &k.services()[&tcp80()].dests[&sa("10.1.0.1:80")];
        assert_eq!(
            (cleared.u_threshold, cleared.l_threshold, cleared.tun_type),
            (0, 0, 0)
        );
    }

    fn sctp() -> (ServiceKey, ServiceEntry) {
        let key = ServiceKey::Sctp { addr: sa(TCP80) };
        let mut d = Dest::new(sa("10.1.0.9:80"), 3, Forward::Nat);
        d.active_conns = 4;
        (key, entry(Service::new(key, "rr"), &[d]))
    }

    /// SCTP services are read and left alone: never owned, edited or deleted, through
    /// reconciles with a table at the same VIP:port, with `--force` and an empty table,
    /// and even when an owned set (a hand-edited state) names one.
    #[test]
    fn sctp_services_are_never_touched_even_forced_with_an_empty_table() {
        let (sk, se) = sctp();
        let mut start = Ipvs::new();
        start.insert(sk, se.clone());
        let mem = Arc::new(Mutex::new(InMemoryIpvs::from_services(start)));
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let clock = ManualClock::at_unix(Duration::from_secs(T0));
        let forced = PlanConfig {
            force: true,
            max_delete: 0,
            ..cfg()
        };
        let mut r = reconciler(&mem, &state, &clock, forced.clone());
        // TCP at the same VIP and port: a different service; the SCTP one stays as it is.
        let rep = r
            .reconcile(&table(&[("10.1.0.1", 1)]), Reason::Table)
            .unwrap();
        assert!(rep.converged(), "{rep:?}");
        assert_eq!(mem.lock().unwrap().services().get(&sk), Some(&se));
        assert!(!r.owned().contains(&sk));
        for _ in 0..2 {
            let rep = r
                .reconcile(&LvsTable { services: vec![] }, Reason::Resync)
                .unwrap();
            assert!(rep.converged(), "{rep:?}");
            let k = mem.lock().unwrap();
            assert_eq!(
                k.services().len(),
                1,
                "the owned TCP service went, SCTP stayed"
            );
            assert_eq!(k.services().get(&sk), Some(&se));
        }
        assert!(!std::fs::read_to_string(&state).unwrap().contains("sctp"));

        // The plan itself refuses to touch it, whatever `owned` says.
        let owned: OwnedSet = [sk].into_iter().collect();
        let mut drain = DrainState::default();
        let current = mem.lock().unwrap().services().clone();
        let p = plan(
            &current,
            &Desired::default(),
            &owned,
            &mut drain,
            0,
            &forced,
        )
        .unwrap();
        assert!(p.is_empty(), "{:?}", lines(&p));
        assert!(p.owned.is_empty());
    }

    /// The netlink side: an SCTP service (protocol 132) reads as `Sctp`, a destination's
    /// thresholds and tunnel settings read and are sent back in a SET_DEST, a persistence
    /// engine in a SET_SERVICE.
    #[test]
    fn netlink_reads_sctp_and_unmanaged_settings_and_sends_them_back() {
        // A kernel-format service reply: SCTP 10.0.0.1:80.
        let mut inner = Vec::new();
        wire::put_attr(
            &mut inner,
            wire::IPVS_SVC_ATTR_AF,
            &wire::AF_INET.to_ne_bytes(),
        );
        wire::put_attr(
            &mut inner,
            wire::IPVS_SVC_ATTR_PROTOCOL,
            &132u16.to_ne_bytes(),
        );
        wire::put_attr(
            &mut inner,
            wire::IPVS_SVC_ATTR_ADDR,
            &[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        wire::put_attr(&mut inner, wire::IPVS_SVC_ATTR_PORT, &80u16.to_be_bytes());
        wire::put_attr(&mut inner, wire::IPVS_SVC_ATTR_SCHED_NAME, b"rr\0");
        wire::put_attr(&mut inner, wire::IPVS_SVC_ATTR_PE_NAME, b"sip\0");
        let mut flags = Vec::new();
        flags.extend_from_slice(&0x0002u32.to_ne_bytes());
        flags.extend_from_slice(&u32::MAX.to_ne_bytes());
        wire::put_attr(&mut inner, wire::IPVS_SVC_ATTR_FLAGS, &flags);
        wire::put_attr(&mut inner, wire::IPVS_SVC_ATTR_TIMEOUT, &0u32.to_ne_bytes());
        wire::put_attr(
            &mut inner,
            wire::IPVS_SVC_ATTR_NETMASK,
            &[255, 255, 255, 255],
        );
        let mut attrs = Vec::new();
        wire::put_nested(&mut attrs, wire::IPVS_CMD_ATTR_SERVICE, &inner);
        let m = wire::message(0x23, 2, 1, wire::IPVS_CMD_NEW_SERVICE, 1, &attrs);
        let msgs = wire::messages(&m).unwrap();
        let s = wire::parse_service(msgs[0].payload).unwrap().unwrap();
        assert_eq!(s.key, ServiceKey::Sctp { addr: sa(TCP80) });
        assert_eq!(s.key.to_string(), "--sctp-service 10.0.0.1:80");
        assert_eq!(s.pe_name.as_deref(), Some("sip"));
        // It re-encodes to itself (a dests dump of it names protocol 132).
        let back = wire::op_message(0x23, 1, &Op::EditService(s.clone()));
        let back = wire::messages(&back).unwrap();
        assert_eq!(wire::parse_service(back[0].payload).unwrap(), Some(s));

        // A destination with thresholds and GUE tunnel settings round-trips through SET_DEST.
        let mut d = Dest::new(sa("10.1.0.1:80"), 7, Forward::Tunnel);
        d.u_threshold = 100;
        d.l_threshold = 10;
        d.tun_type = 1;
        d.tun_port = 6080;
        d.tun_flags = 2;
        let m = wire::op_message(0x23, 1, &Op::EditDest(tcp80(), d.clone()));
        let msgs = wire::messages(&m).unwrap();
        assert_eq!(
            wire::parse_dest(msgs[0].payload, false).unwrap(),
            Some(d.clone())
        );
        // The bytes: U_THRESH 100 and L_THRESH 10, not 0.
        let mut want = Vec::new();
        wire::put_attr(
            &mut want,
            wire::IPVS_DEST_ATTR_U_THRESH,
            &100u32.to_ne_bytes(),
        );
        wire::put_attr(
            &mut want,
            wire::IPVS_DEST_ATTR_L_THRESH,
            &10u32.to_ne_bytes(),
        );
        assert!(m.windows(want.len()).any(|w| w == want.as_slice()));
        assert_eq!(
            Op::EditDest(tcp80(), d).to_string(),
            "-e -t 10.0.0.1:80 -r 10.1.0.1:80 -i -w 7 -x 100 -y 10 --tun-type gue --tun-port 6080 --tun-remcsum"
        );
    }
}

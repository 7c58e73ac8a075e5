//! Bounded property tests of the netlink codec (issue 18; the fuzz targets are
//! `netlink_reply` and `netlink_roundtrip` in fuzz/): every service and destination the
//! model holds survives encode -> parse, and arbitrary replies parse or fail, never panic,
//! with what parses re-encoding to itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ocean_lvs_sync::model::{
    Dest, Forward, Protocol, Service, ServiceKey, SVC_F_ONEPACKET, SVC_F_SCHED1, SVC_F_SCHED2,
    SVC_F_SCHED3,
};
use ocean_lvs_sync::netlink::wire;
use ocean_lvs_sync::plan::Op;
use proptest::prelude::*;

const FAMILY: u16 = 0x23;

fn ip(v6: bool) -> BoxedStrategy<IpAddr> {
    if v6 {
        any::<u128>()
            .prop_map(|a| IpAddr::V6(Ipv6Addr::from(a)))
            .boxed()
    } else {
        any::<u32>()
            .prop_map(|a| IpAddr::V4(Ipv4Addr::from(a)))
            .boxed()
    }
}

fn key() -> impl Strategy<Value = ServiceKey> {
    any::<bool>().prop_flat_map(|v6| {
        prop_oneof![
            (any::<bool>(), ip(v6), any::<u16>()).prop_map(|(tcp, ip, port)| {
                ServiceKey::Addr {
                    protocol: if tcp { Protocol::Tcp } else { Protocol::Udp },
                    addr: SocketAddr::new(ip, port),
                }
            }),
            // Mark 0 is how the kernel reports an address service, so a mark is never 0.
            (1..=u32::MAX).prop_map(move |mark| ServiceKey::Fwmark { mark, ipv6: v6 }),
        ]
    })
}

fn service() -> impl Strategy<Value = Service> {
    (
        key(),
        // What the kernel can report: up to 15 bytes, no NUL.
        "[\\x01-\\x7f]{0,15}",
        proptest::option::of(any::<u32>()),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(key, sched, persistence_s, netmask, flags)| {
            let mut s = Service::new(key, sched);
            s.persistence_s = persistence_s;
            s.netmask = netmask;
            s.flags = flags & (SVC_F_ONEPACKET | SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3);
            s
        })
}

fn dest() -> impl Strategy<Value = Dest> {
    (
        any::<bool>().prop_flat_map(ip),
        any::<u16>(),
        any::<u32>(),
        0..3usize,
    )
        .prop_map(|(ip, port, weight, fwd)| {
            let forward = [Forward::Dr, Forward::Nat, Forward::Tunnel][fwd];
            Dest::new(SocketAddr::new(ip, port), weight, forward)
        })
}

fn reparse_service(s: &Service) -> Option<Service> {
    let m = wire::op_message(FAMILY, 1, &Op::AddService(s.clone()));
    let msgs = wire::messages(&m).unwrap();
    assert_eq!(msgs.len(), 1);
    wire::parse_service(msgs[0].payload).unwrap()
}

fn reparse_dest(d: &Dest) -> Option<Dest> {
    let key = ServiceKey::tcp("127.0.0.1:80".parse().unwrap());
    let m = wire::op_message(FAMILY, 1, &Op::AddDest(key, d.clone()));
    let msgs = wire::messages(&m).unwrap();
    wire::parse_dest(msgs[0].payload, d.addr.is_ipv6()).unwrap()
}

/// The real GET dumps of `src/netlink/testdata` (a Linux 6.1 kernel), as seeds to mutate.
fn captured() -> Vec<Vec<u8>> {
    include_str!("../src/netlink/testdata/linux-6.1-get-dumps.hex")
        .lines()
        .map(|l| {
            let digits: Vec<u8> = l.bytes().filter(u8::is_ascii_hexdigit).collect();
            digits
                .chunks(2)
                .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
                .collect()
        })
        .collect()
}

fn parse_everything(data: &[u8]) {
    let _ = wire::attrs(data);
    let Ok(msgs) = wire::messages(data) else {
        return;
    };
    for m in msgs {
        let _ = wire::error_code(m.payload);
        let _ = wire::parse_family(m.payload);
        if let Ok(Some(s)) = wire::parse_service(m.payload) {
            assert_eq!(reparse_service(&s).as_ref(), Some(&s));
        }
        for v6 in [false, true] {
            if let Ok(Some(d)) = wire::parse_dest(m.payload, v6) {
                assert!(reparse_dest(&d).is_some_and(|b| b.same_config(&d)), "{d:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn services_and_destinations_round_trip(s in service(), d in dest()) {
        prop_assert_eq!(reparse_service(&s), Some(s));
        prop_assert_eq!(reparse_dest(&d), Some(d));
    }

    /// Captured kernel replies with bytes overwritten and cut: errors, never panics.
    #[test]
    fn mutated_kernel_replies_never_panic(
        which in 0..4usize,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        let mut d = captured()[which].clone();
        for (at, b) in edits {
            let at = at % d.len();
            d[at] = b;
        }
        let len = d.len();
        d.truncate(len - cut % (len / 4 + 1));
        parse_everything(&d);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        parse_everything(&data);
    }
}

#[test]
fn captured_replies_parse() {
    let services: usize = captured()
        .iter()
        .flat_map(|d| wire::messages(d).unwrap())
        .filter(|m| matches!(wire::parse_service(m.payload), Ok(Some(_))))
        .count();
    assert_eq!(services, 5);
}

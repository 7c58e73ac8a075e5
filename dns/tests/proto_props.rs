//! Bounded property tests of the DNS codec and responder (issue 18; the fuzz targets are
//! `dns_query`, `dns_respond` and `dns_roundtrip` in fuzz/): queries we write parse back to
//! the same fields, arbitrary bytes never panic the parser or the responder, and every
//! reply is a DNS message (read back with hickory) for the request's id and question.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use hickory_proto::op::{Message, MessageType};
use hickory_proto::serialize::binary::BinEncodable;
use ocean_core::table::dns::DnsRecords;
use ocean_core::table::{DnsTable, Versioned};
use ocean_dns::proto::encode::{name_to_wire, Writer};
use ocean_dns::proto::query::{display_name, parse};
use ocean_dns::route::{respond, Action, Settings, Transport};
use ocean_dns::zone::Zone;
use proptest::prelude::*;

fn zone() -> Zone {
    let mut t = DnsTable::default();
    t.names.insert(
        "web.marathon.mesos.".into(),
        DnsRecords {
            a: (1..=4).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect(),
            ..Default::default()
        },
    );
    t.names.insert(
        "big.marathon.mesos.".into(),
        DnsRecords {
            a: (1..=100).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect(),
            ..Default::default()
        },
    );
    Zone::build(Versioned::new(t).unwrap(), 1).unwrap()
}

/// A query: id, flags (opcode QUERY, QR clear), labels, type, class, EDNS (size, DO,
/// version).
type Spec = (u16, u16, Vec<Vec<u8>>, u16, u16, Option<(u16, bool, u8)>);

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<u16>(),
        any::<u16>().prop_map(|f| f & !0xF800),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..=63), 0..4),
        any::<u16>(),
        any::<u16>(),
        proptest::option::of((any::<u16>(), any::<bool>(), any::<u8>())),
    )
}

fn encode(s: &Spec) -> Vec<u8> {
    let (id, flags, labels, qtype, qclass, edns) = s;
    let mut w = Writer::new();
    for v in [*id, *flags, 1, 0, 0, u16::from(edns.is_some())] {
        w.u16(v);
    }
    for l in labels {
        w.bytes(&[l.len() as u8]);
        w.bytes(l);
    }
    w.bytes(&[0]);
    w.u16(*qtype);
    w.u16(*qclass);
    if let Some((size, dnssec_ok, version)) = edns {
        w.bytes(&[0, 0, 41]);
        w.u16(*size);
        w.bytes(&[0, *version]);
        w.u16(if *dnssec_ok { 0x8000 } else { 0 });
        w.u16(0);
    }
    w.into_vec()
}

fn check_replies(zone: &Zone, req: &[u8]) {
    let mut out = Vec::new();
    for forwarding in [false, true] {
        let settings = Settings {
            forwarding,
            max_udp_payload: 1232,
        };
        for (z, transport) in [
            (Some(zone), Transport::Udp),
            (Some(zone), Transport::Tcp),
            (None, Transport::Udp),
        ] {
            let client = ocean_dns::route::Client::direct(std::net::IpAddr::from([127, 0, 0, 1]));
            let (action, _) = respond(z, client, req, transport, settings, 0, &mut out);
            if action != Action::Reply {
                continue;
            }
            if transport == Transport::Udp {
                assert!(out.len() <= 1232, "UDP reply of {} bytes", out.len());
            }
            let m = Message::from_vec(&out)
                .unwrap_or_else(|e| panic!("reply unreadable ({e}): {out:02x?}"));
            assert_eq!(m.metadata.message_type, MessageType::Response);
            assert_eq!(m.metadata.id, u16::from_be_bytes([req[0], req[1]]));
            if let (Ok(q), Some(hq)) = (parse(req), m.queries.first()) {
                let name = hq.name().to_bytes().unwrap();
                assert_eq!(name.to_ascii_lowercase(), q.name());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn queries_round_trip(s in spec()) {
        let q = parse(&encode(&s)).unwrap();
        let (id, flags, labels, qtype, qclass, edns) = &s;
        prop_assert_eq!((q.id, q.flags, q.qtype, q.qclass), (*id, *flags, *qtype, *qclass));
        let mut name = Vec::new();
        for l in labels {
            name.push(l.len() as u8);
            name.extend(l.iter().map(u8::to_ascii_lowercase));
        }
        name.push(0);
        prop_assert_eq!(q.name(), &name[..]);
        prop_assert_eq!(q.edns.map(|e| (e.udp_size, e.dnssec_ok, e.version)), *edns);
    }

    #[test]
    fn plain_names_survive_text_and_wire(labels in proptest::collection::vec("[a-z0-9_-]{1,20}", 0..5)) {
        let dotted: String = labels.iter().map(|l| format!("{l}.")).collect();
        let wire = name_to_wire(&dotted).unwrap();
        let text = display_name(&wire);
        prop_assert_eq!(&text, if dotted.is_empty() { "." } else { &dotted });
        prop_assert_eq!(name_to_wire(&text), Some(wire));
    }

    /// Queries (ours, with bytes overwritten) and random bytes through the responder.
    #[test]
    fn replies_are_dns_messages(
        s in spec(),
        name in 0..3usize,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        noise in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let zone = zone();
        let mut s = s;
        s.2 = match name {
            0 => vec![b"web".to_vec(), b"marathon".to_vec(), b"mesos".to_vec()],
            1 => vec![b"BIG".to_vec(), b"marathon".to_vec(), b"mesos".to_vec()],
            _ => s.2,
        };
        let mut req = encode(&s);
        for (at, b) in edits {
            let at = at % req.len();
            req[at] = b;
        }
        check_replies(&zone, &req);
        check_replies(&zone, &noise);
    }
}

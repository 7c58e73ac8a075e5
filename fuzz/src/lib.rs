//! # ocean-fuzz
//!
//! The bodies of Ocean's fuzz targets, one function per target taking raw bytes. Each
//! `src/bin/<target>.rs` hands them to AFL++ through `afl::fuzz!` (built by
//! `cargo afl build --features afl`, see `benches/fuzz.sh`), and `tests/corpus.rs` replays
//! `corpus/<target>/*` through the same functions on stable with plain `cargo test`.
//!
//! A target fails by panicking: every parser must be total (an error, never a panic, on any
//! input), and where we also encode, what we encode must decode to what we started from.
//! Inputs are bounded by AFL (1 MB by default) and every target's work is linear in them.
//!
//! Parsers of redis-router (RESP), memcached-router (ASCII/meta) and mysql-proxy (packets,
//! PROXY v2) get their targets once their re-shape lands (issue 18).

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::{Name, RData as HData};
use hickory_proto::serialize::binary::BinEncodable;
use ocean_control::derive::{derive_all, DeriveConfig};
use ocean_control::marathon::events::{SseEvent, SseParser};
use ocean_control::marathon::model::parse_apps;
use ocean_control::state::{hostnames, normalize, HealthMemory, Resolved};
use ocean_core::table::dns::{DnsRecords, SrvRecord};
use ocean_core::table::{
    canonical_json, DnsTable, LvsTable, MemcachedTable, MysqlTable, RedisTable, Table, Versioned,
};
use ocean_dns::proto::encode::{self, name_to_wire, Owner, RData, Writer};
use ocean_dns::proto::query::{self, display_name, read_name, ParseError, MAX_NAME};
use ocean_dns::respond::{respond, servfail, Action, Settings, Transport};
use ocean_dns::zone::Zone;
use ocean_lvs_sync::model::{Dest, Forward, Protocol, Service, ServiceKey};
use ocean_lvs_sync::netlink::wire;
use ocean_lvs_sync::plan::Op;

/// A target's body: panics on a finding.
pub type Target = fn(&[u8]);

/// Every target: its name (the binary, the corpus folder) and its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("dns_query", dns_query),
    ("dns_respond", dns_respond),
    ("dns_roundtrip", dns_roundtrip),
    ("marathon_apps", marathon_apps),
    ("marathon_sse", marathon_sse),
    ("netlink_reply", netlink_reply),
    ("netlink_roundtrip", netlink_roundtrip),
    ("table_json", table_json),
];

// ---------------------------------------------------------------------------------------
// DNS

/// The UDP fast path's query parser (`ocean_dns::proto::query`): any bytes parse or fail
/// cleanly, and a parsed query is consistent with the bytes it came from.
pub fn dns_query(data: &[u8]) {
    match query::parse(data) {
        Ok(q) => {
            let name = q.name();
            assert!(!name.is_empty() && name.len() <= MAX_NAME, "name length");
            assert_eq!(name.last(), Some(&0), "a name ends with the root label");
            assert!(q.question.start == ocean_dns::proto::HEADER_LEN);
            assert!(q.question.end <= data.len(), "question inside the message");
            assert_eq!(q.opcode(), 0);
            if !q.question_compressed {
                // The question is copied verbatim into answers: it must be the name read.
                let raw = &data[q.question.start..q.question.start + name.len()];
                assert_eq!(raw.to_ascii_lowercase(), name);
            }
            let _ = display_name(name);
        }
        Err(ParseError::TooShort) => assert!(data.len() < ocean_dns::proto::HEADER_LEN),
        Err(_) => {}
    }
    // Names at any offset, as answers and OPT owners are read.
    let mut out = [0u8; MAX_NAME];
    let start = data.first().map_or(0, |&b| usize::from(b));
    if let Ok((len, next, _)) = read_name(data, start, &mut out) {
        assert!(len <= MAX_NAME && next <= data.len());
    }
    let _ = display_name(data);
}

fn dns_zone() -> &'static Zone {
    static ZONE: OnceLock<Option<Zone>> = OnceLock::new();
    let zone = ZONE.get_or_init(|| {
        let mut t = DnsTable::default();
        let a = |n: u8| Ipv4Addr::new(10, 0, 0, n);
        t.names.insert(
            "web.marathon.mesos.".into(),
            DnsRecords {
                a: (1..=4).map(a).collect(),
                aaaa: vec![Ipv6Addr::LOCALHOST],
                srv: vec![SrvRecord {
                    port: 80,
                    priority: 0,
                    target: "web.marathon.mesos.".into(),
                    weight: 1,
                }],
            },
        );
        t.names.insert(
            "_web._tcp.marathon.mesos.".into(),
            DnsRecords {
                srv: (0..40)
                    .map(|i| SrvRecord {
                        port: 31000 + i,
                        priority: 0,
                        target: format!("web-{i}.marathon.mesos."),
                        weight: 1,
                    })
                    .collect(),
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
        let v: Arc<Versioned<DnsTable>> = Versioned::new(t).ok()?;
        Zone::build(v, 1).ok()
    });
    match zone {
        Some(z) => z,
        None => panic!("the fuzz zone does not build"),
    }
}

/// The responder (`ocean_dns::respond`) over UDP and TCP, with and without a zone and
/// forwarding: never panics, a UDP reply fits the limit, and every reply is a DNS message
/// (read back with hickory) answering the request's id and question.
pub fn dns_respond(data: &[u8]) {
    let max_udp_payload = 1232;
    let settings = Settings {
        forwarding: data.first().is_some_and(|b| b & 1 == 1),
        max_udp_payload,
    };
    let n = data.len() as u32;
    let mut out = Vec::new();
    for (zone, transport) in [
        (Some(dns_zone()), Transport::Udp),
        (Some(dns_zone()), Transport::Tcp),
        (None, Transport::Udp),
    ] {
        let (action, _outcome) = respond(zone, data, transport, settings, n, &mut out);
        match action {
            Action::Reply => check_reply(data, &out, transport, max_udp_payload),
            Action::Forward => assert!(settings.forwarding, "forwarded without forwarding"),
            Action::Drop => {}
        }
    }
    if servfail(data, settings, &mut out).is_some() {
        check_reply(data, &out, Transport::Udp, max_udp_payload);
    }
}

fn check_reply(req: &[u8], out: &[u8], transport: Transport, max_udp: u16) {
    if transport == Transport::Udp {
        assert!(
            out.len() <= usize::from(max_udp),
            "UDP reply of {} bytes",
            out.len()
        );
    } else {
        assert!(
            out.len() <= usize::from(u16::MAX),
            "TCP reply of {} bytes",
            out.len()
        );
    }
    let m = match Message::from_vec(out) {
        Ok(m) => m,
        Err(e) => panic!("reply is not a DNS message ({e}): {out:02x?}"),
    };
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.metadata.id, u16::from_be_bytes([req[0], req[1]]));
    if let Ok(q) = query::parse(req) {
        // A reply to a parsed query carries its question (FORMERR/NOTIMP have none).
        if let Some(hq) = m.queries.first() {
            let wire = name_wire(hq.name());
            assert_eq!(wire.to_ascii_lowercase(), q.name(), "question echoed");
            assert_eq!(u16::from(hq.query_type()), q.qtype);
        }
    }
}

fn name_wire(n: &Name) -> Vec<u8> {
    match n.to_bytes() {
        Ok(b) => b,
        Err(e) => panic!("hickory cannot encode a name it decoded: {e}"),
    }
}

/// A query as the parser should read it back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QuerySpec {
    id: u16,
    flags: u16,
    labels: Vec<Vec<u8>>,
    qtype: u16,
    qclass: u16,
    edns: Option<EdnsSpec>,
}

/// EDNS as sent: UDP size, DO bit, version, options (code, value).
type EdnsSpec = (u16, bool, u8, Vec<(u16, Vec<u8>)>);

impl<'a> Arbitrary<'a> for QuerySpec {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut labels = Vec::new();
        let mut total = 1;
        for _ in 0..u.int_in_range(0..=8)? {
            let len = u.int_in_range(1..=63usize)?;
            if total + 1 + len > MAX_NAME {
                break;
            }
            total += 1 + len;
            labels.push(u.bytes(len)?.to_vec());
        }
        let edns = if u.arbitrary()? {
            let mut options = Vec::new();
            for _ in 0..u.int_in_range(0..=3)? {
                let len = u.int_in_range(0..=16usize)?;
                options.push((u.arbitrary()?, u.bytes(len)?.to_vec()));
            }
            Some((u.arbitrary()?, u.arbitrary()?, u.arbitrary()?, options))
        } else {
            None
        };
        Ok(QuerySpec {
            id: u.arbitrary()?,
            // QR clear, opcode QUERY; RD, CD and the rest as given.
            flags: u.arbitrary::<u16>()? & !0xF800,
            labels,
            qtype: u.arbitrary()?,
            qclass: u.arbitrary()?,
            edns,
        })
    }
}

fn encode_query(q: &QuerySpec) -> Vec<u8> {
    let mut w = Writer::new();
    w.u16(q.id);
    w.u16(q.flags);
    for count in [1, 0, 0, u16::from(q.edns.is_some())] {
        w.u16(count);
    }
    for l in &q.labels {
        w.bytes(&[l.len() as u8]);
        w.bytes(l);
    }
    w.bytes(&[0]);
    w.u16(q.qtype);
    w.u16(q.qclass);
    let mut out = w.into_vec();
    if let Some((size, dnssec_ok, version, options)) = &q.edns {
        let mut rdata = Vec::new();
        for (code, value) in options {
            rdata.extend_from_slice(&code.to_be_bytes());
            rdata.extend_from_slice(&(value.len() as u16).to_be_bytes());
            rdata.extend_from_slice(value);
        }
        out.push(0);
        out.extend_from_slice(&ocean_dns::proto::rtype::OPT.to_be_bytes());
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&[0, *version]);
        out.extend_from_slice(&(if *dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    out
}

fn arbitrary_name(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut dotted = String::new();
    for _ in 0..u.int_in_range(0..=5)? {
        for _ in 0..u.int_in_range(1..=12)? {
            dotted.push(char::from(*u.choose(CHARS)?));
        }
        dotted.push('.');
    }
    let wire = match name_to_wire(&dotted) {
        Some(w) => w,
        None => panic!("name_to_wire refused {dotted:?}"),
    };
    // Text and wire agree both ways for names of plain characters.
    assert_eq!(
        display_name(&wire),
        if dotted.is_empty() { "." } else { &dotted }
    );
    assert_eq!(
        name_to_wire(&display_name(&wire)).as_deref(),
        Some(&wire[..])
    );
    Ok(wire)
}

/// Round trips of what the DNS code writes: a query built from the bytes parses back to
/// the same fields (names lowercased), and a record written by `proto::encode::record`
/// reads back (with hickory) as the same owner, TTL and data.
pub fn dns_roundtrip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    if let Ok(spec) = QuerySpec::arbitrary(&mut u) {
        let wire = encode_query(&spec);
        let q = match query::parse(&wire) {
            Ok(q) => q,
            Err(e) => panic!("our own query does not parse ({e}): {spec:?}"),
        };
        assert_eq!(
            (q.id, q.flags, q.qtype, q.qclass),
            (spec.id, spec.flags, spec.qtype, spec.qclass)
        );
        let mut name = Vec::new();
        for l in &spec.labels {
            name.push(l.len() as u8);
            name.extend(l.iter().map(u8::to_ascii_lowercase));
        }
        name.push(0);
        assert_eq!(q.name(), &name[..]);
        assert!(!q.question_compressed);
        assert_eq!(
            q.edns.map(|e| (e.udp_size, e.dnssec_ok, e.version)),
            spec.edns.as_ref().map(|e| (e.0, e.1, e.2))
        );
    }
    let _ = record_round_trip(&mut u);
}

fn record_round_trip(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let owner = arbitrary_name(u)?;
    let ttl: u32 = u.arbitrary()?;
    let target = arbitrary_name(u)?;
    let second = arbitrary_name(u)?;
    let rdata = match u.int_in_range(0..=4)? {
        0 => RData::A(Ipv4Addr::from(u.arbitrary::<u32>()?)),
        1 => RData::Aaaa(Ipv6Addr::from(u.arbitrary::<u128>()?)),
        2 => RData::Srv {
            priority: u.arbitrary()?,
            weight: u.arbitrary()?,
            port: u.arbitrary()?,
            target: &target,
        },
        3 => RData::Ns(&target),
        _ => RData::Soa {
            mname: &target,
            rname: &second,
            serial: u.arbitrary()?,
            refresh: u.arbitrary()?,
            retry: u.arbitrary()?,
            expire: u.arbitrary()?,
            minimum: u.arbitrary()?,
        },
    };
    // A response holding just this record in its answer section.
    let mut w = Writer::new();
    for v in [0x1234, 0x8400, 0, 1, 0, 0] {
        w.u16(v);
    }
    encode::record(&mut w, Owner::Name(&owner), ttl, &rdata);
    let bytes = w.into_vec();
    let m = match Message::from_vec(&bytes) {
        Ok(m) => m,
        Err(e) => panic!("record {rdata:?} does not decode ({e}): {bytes:02x?}"),
    };
    assert_eq!(m.answers.len(), 1);
    let r = &m.answers[0];
    assert_eq!(name_wire(&r.name), owner);
    assert_eq!(r.ttl, ttl);
    assert_eq!(u16::from(r.record_type()), rdata.rtype());
    match (&rdata, &r.data) {
        (RData::A(ip), HData::A(h)) => assert_eq!(*ip, h.0),
        (RData::Aaaa(ip), HData::AAAA(h)) => assert_eq!(*ip, h.0),
        (
            RData::Srv {
                priority,
                weight,
                port,
                target,
            },
            HData::SRV(h),
        ) => {
            assert_eq!((*priority, *weight, *port), (h.priority, h.weight, h.port));
            assert_eq!(&name_wire(&h.target)[..], *target);
        }
        (RData::Ns(n), HData::NS(h)) => assert_eq!(&name_wire(&h.0)[..], *n),
        (
            RData::Soa {
                mname,
                rname,
                serial,
                refresh,
                retry,
                expire,
                minimum,
            },
            HData::SOA(h),
        ) => {
            assert_eq!(&name_wire(&h.mname)[..], *mname);
            assert_eq!(&name_wire(&h.rname)[..], *rname);
            assert_eq!(
                (*serial, *refresh, *retry, *expire, *minimum),
                (
                    h.serial,
                    h.refresh as u32,
                    h.retry as u32,
                    h.expire as u32,
                    h.minimum
                )
            );
        }
        (ours, theirs) => panic!("{ours:?} read back as {theirs:?}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Marathon

fn derive_config() -> &'static DeriveConfig {
    static CONFIG: OnceLock<DeriveConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        // The example control.toml: every ownership rule and label kind in play.
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut config =
            ocean_control::Config::new(ocean_control::config::Source::File("unused".into()));
        match ocean_control::config::FileConfig::load(&examples.join("control.toml")) {
            Ok(file) => {
                if let Err(e) = file.apply(&examples, &mut config) {
                    panic!("examples/control.toml does not apply: {e}");
                }
            }
            Err(e) => panic!("examples/control.toml does not load: {e}"),
        }
        config.derive
    })
}

/// Marathon's apps JSON through everything control does with it: `parse_apps`, `normalize`
/// (twice, with health memory), `derive_all`. Never panics, and every derived table
/// validates ("derive makes valid tables by construction", engine.rs).
pub fn marathon_apps(data: &[u8]) {
    let Ok((apps, _bad)) = parse_apps(data) else {
        return;
    };
    let _ = hostnames(&apps);
    let mut memory = HealthMemory::default();
    let state = normalize(&apps, &Resolved::new(), &mut memory);
    let again = normalize(&apps, &Resolved::new(), &mut memory);
    // Health memory is keyed by task id, which Marathon keeps unique (ids embed the app);
    // with duplicates the memory of one task answers for the other, as designed.
    let mut ids: Vec<&str> = apps
        .iter()
        .flat_map(|a| a.tasks.iter().flatten())
        .map(|t| t.id.as_str())
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() == count {
        assert_eq!(
            state, again,
            "normalize is stable under its own health memory"
        );
    }
    let d = derive_all(&state, derive_config());
    let check = |kind: &str, r: Result<(), ocean_core::table::TableError>| {
        if let Err(e) = r {
            panic!("derived {kind} table does not validate: {e}");
        }
    };
    check("dns", d.dns.validate());
    check("redis", d.redis.validate());
    check("memcached", d.memcached.validate());
    check("mysql", d.mysql.validate());
    check("lvs", d.lvs.validate());
}

/// The `/v2/events` parser: bounded (no line or event over its limit), and the events do
/// not depend on how the stream was cut into chunks.
pub fn marathon_sse(data: &[u8]) {
    const MAX: usize = 512;
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let whole = SseParser::new(MAX).feed(stream);
    if let Ok(events) = &whole {
        for e in events {
            assert!(e.data.len() <= MAX, "event data over the limit");
        }
    }
    // The same stream in chunks of 1..=16 bytes (the first byte picks the size).
    let step = usize::from(cut % 16) + 1;
    let mut p = SseParser::new(MAX);
    let mut got: Vec<SseEvent> = Vec::new();
    let mut err = None;
    for chunk in stream.chunks(step) {
        match p.feed(chunk) {
            Ok(ev) => got.extend(ev),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    match (whole, err) {
        (Ok(events), None) => assert_eq!(events, got, "events depend on chunking"),
        (Err(a), Some(b)) => assert_eq!(a, b, "errors depend on chunking"),
        (w, e) => panic!("whole stream gave {w:?}, chunked gave {e:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Netlink (lvs-sync)

/// Kernel replies through `lvs_sync::netlink::wire`: datagram split, attributes, and the
/// GET_SERVICE / GET_DEST / CTRL_CMD_GETFAMILY parsers. What parses re-encodes to itself.
pub fn netlink_reply(data: &[u8]) {
    let _ = wire::attrs(data);
    let Ok(msgs) = wire::messages(data) else {
        return;
    };
    for m in msgs {
        assert!(m.payload.len() <= data.len());
        let _ = wire::error_code(m.payload);
        let _ = wire::parse_family(m.payload);
        if let Ok(Some(svc)) = wire::parse_service(m.payload) {
            let back = reparse_service(&svc);
            assert_eq!(back.as_ref(), Some(&svc), "service re-encodes to itself");
        }
        for v6 in [false, true] {
            if let Ok(Some(d)) = wire::parse_dest(m.payload, v6) {
                let back = reparse_dest(&d);
                assert!(
                    back.as_ref().is_some_and(|b| b.same_config(&d)),
                    "destination {d:?} re-encodes as {back:?}"
                );
            }
        }
    }
}

fn reparse_service(svc: &Service) -> Option<Service> {
    let m = wire::op_message(0x23, 1, &Op::AddService(svc.clone()));
    let msgs = match wire::messages(&m) {
        Ok(msgs) => msgs,
        Err(e) => panic!("our own request does not split ({e}): {svc:?}"),
    };
    assert_eq!(msgs.len(), 1);
    match wire::parse_service(msgs[0].payload) {
        Ok(s) => s,
        Err(e) => panic!("our own service does not parse ({e}): {svc:?}"),
    }
}

fn reparse_dest(d: &Dest) -> Option<Dest> {
    let key = ServiceKey::tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 80));
    let m = wire::op_message(0x23, 1, &Op::AddDest(key, d.clone()));
    let msgs = match wire::messages(&m) {
        Ok(msgs) => msgs,
        Err(e) => panic!("our own request does not split ({e}): {d:?}"),
    };
    match wire::parse_dest(msgs[0].payload, d.addr.is_ipv6()) {
        Ok(back) => back,
        Err(e) => panic!("our own destination does not parse ({e}): {d:?}"),
    }
}

fn arbitrary_ip(u: &mut Unstructured<'_>, v6: bool) -> arbitrary::Result<IpAddr> {
    Ok(if v6 {
        IpAddr::V6(Ipv6Addr::from(u.arbitrary::<u128>()?))
    } else {
        IpAddr::V4(Ipv4Addr::from(u.arbitrary::<u32>()?))
    })
}

fn arbitrary_service(u: &mut Unstructured<'_>) -> arbitrary::Result<Service> {
    let v6: bool = u.arbitrary()?;
    let key = match u.int_in_range(0..=2)? {
        0 | 1 => ServiceKey::Addr {
            protocol: if u.arbitrary()? {
                Protocol::Tcp
            } else {
                Protocol::Udp
            },
            addr: SocketAddr::new(arbitrary_ip(u, v6)?, u.arbitrary()?),
        },
        // Mark 0 is not a firewall-mark service: the kernel reports address services so.
        _ => ServiceKey::Fwmark {
            mark: u.int_in_range(1..=u32::MAX)?,
            ipv6: v6,
        },
    };
    // Any scheduler name the kernel could report (no NUL, at most 15 bytes).
    let len = u.int_in_range(0..=15)?;
    let scheduler: String = (0..len)
        .map(|_| u.int_in_range(1u8..=127).map(char::from))
        .collect::<arbitrary::Result<_>>()?;
    let mut s = Service::new(key, scheduler);
    s.persistence_s = u.arbitrary()?;
    s.netmask = u.arbitrary()?;
    s.flags = u.arbitrary::<u32>()?
        & (ocean_lvs_sync::model::SVC_F_ONEPACKET
            | ocean_lvs_sync::model::SVC_F_SCHED1
            | ocean_lvs_sync::model::SVC_F_SCHED2
            | ocean_lvs_sync::model::SVC_F_SCHED3);
    Ok(s)
}

/// Every service and destination the model can hold survives encode -> parse, and the
/// framing (`message` / `messages`, family lookup) round-trips its header fields.
pub fn netlink_roundtrip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(svc) = arbitrary_service(&mut u) else {
        return;
    };
    assert_eq!(reparse_service(&svc).as_ref(), Some(&svc));
    let Ok(v6) = u.arbitrary::<bool>() else {
        return;
    };
    let (Ok(ip), Ok(port), Ok(weight), Ok(fwd)) = (
        arbitrary_ip(&mut u, v6),
        u.arbitrary::<u16>(),
        u.arbitrary::<u32>(),
        u.int_in_range(0..=2u8),
    ) else {
        return;
    };
    let forward = [Forward::Dr, Forward::Nat, Forward::Tunnel][usize::from(fwd)];
    let d = Dest::new(SocketAddr::new(ip, port), weight, forward);
    assert_eq!(reparse_dest(&d).as_ref(), Some(&d));
    // Framing: a family lookup reply built with the encoder.
    let (Ok(seq), Ok(family)) = (u.arbitrary::<u32>(), u.arbitrary::<u16>()) else {
        return;
    };
    let mut attrs = Vec::new();
    wire::put_attr(&mut attrs, wire::CTRL_ATTR_FAMILY_NAME, b"IPVS\0");
    wire::put_attr(&mut attrs, wire::CTRL_ATTR_FAMILY_ID, &family.to_ne_bytes());
    let mut dgram = wire::message(wire::GENL_ID_CTRL, 0, seq, 1, 2, &attrs);
    dgram.extend_from_slice(&wire::get_family(seq));
    let msgs = match wire::messages(&dgram) {
        Ok(m) => m,
        Err(e) => panic!("two of our messages do not split: {e}"),
    };
    assert_eq!(msgs.len(), 2);
    assert_eq!((msgs[0].kind, msgs[0].seq), (wire::GENL_ID_CTRL, seq));
    assert_eq!(wire::parse_family(msgs[0].payload).ok(), Some(family));
}

// ---------------------------------------------------------------------------------------
// Tables (ocean_core::table)

fn table_kind<T: Table>(data: &[u8]) -> Option<T> {
    let t = T::from_json(data).ok()?;
    let body = match t.canonical_body() {
        Ok(b) => b,
        Err(e) => panic!("{}: a valid table does not serialize: {e}", T::KIND),
    };
    match canonical_json(&t) {
        Ok(c) => assert_eq!(c, body, "{}: direct body is not canonical", T::KIND),
        Err(e) => panic!("{}: canonical_json fails: {e}", T::KIND),
    }
    let back = match T::from_json(&body) {
        Ok(b) => b,
        Err(e) => panic!(
            "{}: canonical body of a valid table is refused ({e}): {}",
            T::KIND,
            String::from_utf8_lossy(&body)
        ),
    };
    assert_eq!(back, t, "{}: from_json(canonical_body(t)) != t", T::KIND);
    let _ = t.backend_count();
    Some(t)
}

/// Table bodies as proxies receive them: `from_json` (parse + validate) for every kind; a
/// table that passes re-serializes canonically and parses back equal, and a valid DNS table
/// builds a zone.
pub fn table_json(data: &[u8]) {
    if let Some(t) = table_kind::<DnsTable>(data) {
        let v = match Versioned::new(t) {
            Ok(v) => v,
            Err(e) => panic!("valid dns table not versioned: {e}"),
        };
        if let Err(e) = Zone::build(v, 1) {
            panic!("a valid dns table does not build a zone: {e}");
        }
    }
    let _ = table_kind::<RedisTable>(data);
    let _ = table_kind::<MemcachedTable>(data);
    let _ = table_kind::<MysqlTable>(data);
    let _ = table_kind::<LvsTable>(data);
}

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
//! Parsers of redis-router (RESP requests and replies), memcached-router (ASCII/meta
//! requests, reply framing) and mysql-proxy (packets, handshake, commands, PROXY v2) have
//! theirs too (issue 18).

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
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
use ocean_dns::route::{respond, servfail, Action, Settings, Transport};
use ocean_dns::zone::Zone;
use ocean_lvs_sync::model::{Dest, Forward, Protocol, Service, ServiceKey};
use ocean_lvs_sync::netlink::wire;
use ocean_lvs_sync::plan::Op;
use ocean_memcached_router::proto::{
    decode as mc_decode, discard as mc_discard, Decoder as McDecoder, Limits as McLimits,
};
use ocean_memcached_router::reply::{
    count_values, is_error_line, reply_len, value_blocks, write_severity, Expect, SkipReply,
};
use ocean_mysql_proxy::proto::command::{Scanner, INTERCEPT_LIMIT};
use ocean_mysql_proxy::proto::frame::{
    encode as my_encode, Decoder as MyDecoder, LOGIN_PACKET_LIMIT, MAX_PAYLOAD,
};
use ocean_mysql_proxy::proto::handshake::{
    is_ssl_request, max_packet_size, parse_backend_answer, parse_greeting, parse_response,
};
use ocean_mysql_proxy::proto::proxy_v2::{
    decode as pv2_decode, header_v2, needed as pv2_needed, HEADER_LEN as PV2_HEADER_LEN,
};
use ocean_redis_router::proto::encode::{write_array_header, write_bulk, write_integer};
use ocean_redis_router::proto::reply::{
    decode_reply, parse as reply_parse, ReplyLimits, ReplyScanner, Value,
};
use ocean_redis_router::proto::request::{
    decode as resp_decode, Decoder as RespDecoder, Limits as RespLimits, PreAuthLimits,
    Request as RespRequest,
};

/// A target's body: panics on a finding.
pub type Target = fn(&[u8]);

/// Every target: its name (the binary, the corpus folder) and its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("dns_query", dns_query),
    ("dns_respond", dns_respond),
    ("dns_roundtrip", dns_roundtrip),
    ("marathon_apps", marathon_apps),
    ("marathon_sse", marathon_sse),
    ("memcached_request", memcached_request),
    ("mysql_packet", mysql_packet),
    ("netlink_reply", netlink_reply),
    ("netlink_roundtrip", netlink_roundtrip),
    ("proxy_v2", proxy_v2),
    ("resp_reply", resp_reply),
    ("resp_request", resp_request),
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
        // A second zone and a view that answers one of its names differently.
        t.zones = vec!["shop.example.com".into()];
        let api = |last| DnsRecords {
            a: vec![Ipv4Addr::new(203, 0, 113, last)],
            ..Default::default()
        };
        t.names.insert("api.shop.example.com.".into(), api(10));
        t.views = vec![ocean_core::table::dns::DnsView {
            name: "odd".into(),
            networks: vec!["127.0.0.1/32".into(), "127.0.0.3/32".into()],
            names: [("api.shop.example.com.".to_string(), api(20))].into(),
        }];
        let v: Arc<Versioned<DnsTable>> = Versioned::new(t).ok()?;
        Zone::build(v, 1).ok()
    });
    match zone {
        Some(z) => z,
        None => panic!("the fuzz zone does not build"),
    }
}

/// The responder (`ocean_dns::route::respond`) over UDP and TCP, with and without a zone and
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
        // The client (and so its view) from the input too.
        let last = data.last().copied().unwrap_or(1);
        let client = ocean_dns::route::Client {
            addr: std::net::IpAddr::from([127, 0, 0, last & 3]),
            trust_ecs: last & 4 != 0,
        };
        let (action, _outcome) = respond(zone, client, data, transport, settings, n, &mut out);
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

// ---------------------------------------------------------------------------------------
// Redis (RESP)

/// Requests off the front of `data` with one `Decoder` fed the whole buffer, until it needs
/// more or fails: the requests, and whether it stopped on an error.
fn resp_requests(data: &[u8], pre_auth: Option<PreAuthLimits>) -> (Vec<RespRequest>, bool) {
    let mut decoder = RespDecoder::with_limits(RespLimits::default());
    decoder.set_pre_auth(pre_auth);
    let mut buf = BytesMut::from(data);
    let mut out = Vec::new();
    loop {
        let before = buf.len();
        match decoder.decode(&mut buf) {
            Ok(Some(r)) => {
                assert!(!r.args.is_empty(), "a request has a name");
                assert!(buf.len() < before, "a request consumes bytes");
                out.push(r);
            }
            Ok(None) => return (out, false),
            Err(e) => {
                let _ = e.reply();
                return (out, true);
            }
        }
    }
}

/// redis-router's request decoder (`proto::request`), without and with the pre-auth limits:
/// never panics; the free `decode` and a `Decoder` fed the bytes in pieces agree with the
/// one-shot `Decoder`; pre-auth requests keep the pre-auth bounds; and every request
/// re-encodes (`Request::encode`) to a multibulk that decodes back to the same arguments.
pub fn resp_request(data: &[u8]) {
    let (whole, _) = resp_requests(data, None);

    // The free function, one request at a time.
    let mut buf = BytesMut::from(data);
    for r in &whole {
        match resp_decode(&mut buf, &RespLimits::default()) {
            Ok(Some(got)) => assert_eq!(&got, r, "decode and Decoder disagree"),
            other => panic!("decode returned {other:?} where Decoder read {r:?}"),
        }
    }

    // The same bytes arriving in pieces: the resumed decoder reads the same requests.
    let step = data.first().map_or(1, |&b| usize::from(b % 7) + 1);
    let mut decoder = RespDecoder::new();
    let mut buf = BytesMut::new();
    let mut pieces = Vec::new();
    'feed: for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(r)) => pieces.push(r),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    let n = pieces.len().min(whole.len());
    assert_eq!(
        pieces[..n],
        whole[..n],
        "requests depend on how the bytes arrived"
    );

    // Pre-auth: the tight bounds hold for every multibulk request accepted.
    let pre = PreAuthLimits::default();
    let (limited, _) = resp_requests(data, Some(pre));
    for r in limited.iter().filter(|r| !r.inline) {
        assert!(
            r.args.len() <= pre.max_array_len,
            "pre-auth args over the limit"
        );
        assert!(
            r.args.iter().all(|a| a.len() <= pre.max_bulk_len),
            "pre-auth bulk over the limit"
        );
    }

    for r in &whole {
        let mut enc = BytesMut::new();
        r.encode(&mut enc);
        let len = enc.len();
        match resp_decode(&mut enc, &RespLimits::default()) {
            Ok(Some(back)) => {
                assert_eq!(back.args, r.args, "encode -> decode changed the arguments");
                assert!(!back.inline);
                assert!(enc.is_empty(), "encode wrote one request ({len} bytes)");
                if let Some(raw) = &back.raw {
                    assert_eq!(raw.len(), len, "raw is the request's own bytes");
                }
            }
            other => panic!("encoded {r:?} decodes as {other:?}"),
        }
    }
}

/// RESP2 for a value as `proto::reply::parse` returns it (errors as RESP3 blob errors, so
/// any bytes survive).
fn encode_value(v: &Value, out: &mut BytesMut) {
    match v {
        Value::Simple(s) => {
            out.extend_from_slice(b"+");
            out.extend_from_slice(s);
            out.extend_from_slice(b"\r\n");
        }
        Value::Error(e) => {
            out.extend_from_slice(format!("!{}\r\n", e.len()).as_bytes());
            out.extend_from_slice(e);
            out.extend_from_slice(b"\r\n");
        }
        Value::Int(n) => write_integer(out, *n),
        Value::Bulk(Some(b)) => write_bulk(out, b),
        Value::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
        Value::Array(None) => out.extend_from_slice(b"*-1\r\n"),
        Value::Array(Some(items)) => {
            write_array_header(out, items.len());
            for i in items {
                encode_value(i, out);
            }
        }
    }
}

/// The backend reply scanner and parser (`proto::reply`): never panics; the resumable
/// `ReplyScanner` fed the bytes in pieces agrees with `decode_reply` on the whole; a reply
/// `parse` reads is one `decode_reply` frames; and a parsed value re-encodes to bytes that
/// parse back to it.
pub fn resp_reply(data: &[u8]) {
    let limits = ReplyLimits::default();
    let whole = decode_reply(data, &limits);
    if let Ok(Some(n)) = whole {
        assert!(n > 0 && n <= data.len(), "reply length inside the buffer");
    }

    let step = data.first().map_or(1, |&b| usize::from(b % 7) + 1);
    let mut scanner = ReplyScanner::new();
    let mut resumed = Ok(None);
    let mut end = 0;
    while end < data.len() {
        end = (end + step).min(data.len());
        resumed = scanner.check(&data[..end], &limits);
        if !matches!(resumed, Ok(None)) {
            break;
        }
    }
    match (&whole, &resumed) {
        (Ok(Some(a)), Ok(Some(b))) => assert_eq!(a, b, "reply length depends on chunking"),
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        (a, b) => panic!("whole buffer {a:?}, in pieces {b:?}"),
    }

    // Tight limits: still total, and never longer than the default ones found.
    let tight = ReplyLimits {
        max_bulk_len: 64,
        max_line_len: 64,
        max_depth: 4,
    };
    if let (Ok(Some(a)), Ok(Some(b))) = (decode_reply(data, &tight), &whole) {
        assert_eq!(a, *b, "tighter limits framed a different reply");
    }

    let bytes = Bytes::copy_from_slice(data);
    if let Some(v) = reply_parse(&bytes) {
        assert!(
            matches!(whole, Ok(Some(_))),
            "parse read a reply the scanner did not frame"
        );
        let _ = (v.as_bytes(), v.as_int(), v.as_array());
        let mut enc = BytesMut::new();
        encode_value(&v, &mut enc);
        let enc = enc.freeze();
        assert_eq!(
            reply_parse(&enc).as_ref(),
            Some(&v),
            "value -> RESP -> value"
        );
        assert_eq!(decode_reply(&enc, &limits), Ok(Some(enc.len())));
    }
}

// ---------------------------------------------------------------------------------------
// memcached (ASCII and meta)

/// memcached-router's request decoder (`proto::decode` and the resumable `Decoder`) and its
/// reply framing (`reply::reply_len`, `SkipReply`, value blocks): never panics; the decoder
/// fed the bytes in pieces reads what the one-shot decode reads; an error's swallow and
/// discard keep the stream going; `SkipReply` skips exactly the reply `reply_len` frames.
pub fn memcached_request(data: &[u8]) {
    let limits = McLimits {
        max_value_bytes: 4096,
        max_swallow_bytes: 1 << 16,
        ..McLimits::default()
    };
    let mut whole = Vec::new();
    let mut buf = BytesMut::from(data);
    for _ in 0..data.len() + 1 {
        let before = buf.len();
        match mc_decode(&mut buf, &limits) {
            Ok(Some(r)) => {
                assert!(buf.len() < before, "a request consumes bytes");
                assert!(r.raw().len() <= before);
                let _ = (r.command().word(), r.keys(), r.data(), r.noreply());
                let _ = (r.exptime(), r.meta(), r.command().is_meta());
                if r.command().is_retrieval() && !r.keys().is_empty() {
                    let idx: Vec<usize> = (0..r.keys().len()).collect();
                    let mut out = BytesMut::new();
                    r.encode_retrieval(&idx, &mut out);
                    assert!(!out.is_empty());
                }
                whole.push(r);
            }
            Ok(None) => break,
            Err(e) => {
                let _ = e.reply();
                if e.closes_connection() {
                    break;
                }
                let mut remaining = e.swallow();
                mc_discard(&mut buf, &mut remaining);
                if remaining > 0 {
                    break;
                }
            }
        }
    }

    // Appended in pieces, up to the first error: the same requests.
    let step = data.first().map_or(1, |&b| usize::from(b % 13) + 1);
    let mut decoder = McDecoder::new();
    let mut buf = BytesMut::new();
    let mut pieces = Vec::new();
    'feed: for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf, &limits) {
                Ok(Some(r)) => pieces.push(r),
                Ok(None) => {
                    assert!(decoder.scanned() <= buf.len());
                    break;
                }
                Err(_) => break 'feed,
            }
        }
    }
    let mut first_err = BytesMut::from(data);
    let mut clean = 0;
    while let Ok(Some(_)) = mc_decode(&mut first_err, &limits) {
        clean += 1;
    }
    let n = pieces.len().min(clean).min(whole.len());
    assert_eq!(
        pieces[..n],
        whole[..n],
        "requests depend on how the bytes arrived"
    );

    // Replies, for every kind a request can expect.
    for expect in [
        Expect::Line,
        Expect::Meta,
        Expect::Retrieval,
        Expect::UntilMn,
    ] {
        let framed = reply_len(data, expect);
        if let Ok(Some(n)) = framed {
            assert!(n <= data.len(), "reply inside the buffer");
        }
        let mut skip = SkipReply::new(expect);
        let mut at = 0;
        let mut done = false;
        let mut failed = false;
        while !done && at <= data.len() {
            match skip.feed(&data[at..]) {
                Ok((k, d)) => {
                    assert!(k <= data.len() - at, "skipped past the buffer");
                    at += k;
                    done = d;
                    if k == 0 && !d {
                        break;
                    }
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if let (Ok(Some(n)), true, false) = (&framed, done, failed) {
            assert_eq!(*n, at, "SkipReply and reply_len end {expect:?} differently");
        }
    }
    let bytes = Bytes::copy_from_slice(data);
    if let Some(blocks) = value_blocks(&bytes) {
        assert!(blocks.len() <= data.len());
    }
    let _ = (
        count_values(data),
        is_error_line(data),
        write_severity(data),
    );
}

// ---------------------------------------------------------------------------------------
// MySQL

/// mysql-proxy's packet codec and what reads packets: `frame::Decoder` (continuations,
/// both limits) with an encode -> decode round trip of every packet; the handshake parsers
/// (`parse_response`, `parse_backend_answer`, `parse_greeting`, `is_ssl_request`,
/// `max_packet_size`) on every payload; and `command::Scanner` over the stream in pieces.
pub fn mysql_packet(data: &[u8]) {
    for limit in [LOGIN_PACKET_LIMIT, MAX_PAYLOAD * 2] {
        let decoder = MyDecoder::new(limit);
        let mut buf = BytesMut::from(data);
        loop {
            let before = buf.len();
            let needed = decoder.needed(&buf);
            match decoder.decode(&mut buf) {
                Ok(Some(p)) => {
                    assert_eq!(needed, 0);
                    assert!(buf.len() < before, "a packet consumes bytes");
                    assert!(p.payload.len() <= limit, "payload over the limit");
                    mysql_payload(&p.payload);
                    let mut enc = Vec::new();
                    let last = my_encode(p.seq, &p.payload, &mut enc);
                    let mut enc = BytesMut::from(&enc[..]);
                    match MyDecoder::new(MAX_PAYLOAD * 2).decode(&mut enc) {
                        Ok(Some(back)) => {
                            assert_eq!(back.payload, p.payload, "encode -> decode payload");
                            assert_eq!(back.seq, p.seq);
                            assert_eq!(back.last_seq, last);
                            assert!(enc.is_empty());
                        }
                        other => panic!("encoded packet decodes as {other:?}"),
                    }
                }
                Ok(None) => {
                    assert!(needed > 0, "incomplete but nothing needed");
                    break;
                }
                Err(_) => break,
            }
        }
    }
    mysql_payload(data);

    let step = data.first().map_or(1, |&b| usize::from(b % 11) + 1);
    let mut scanner = Scanner::default();
    let mut buf: Vec<u8> = Vec::new();
    'feed: for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match scanner.scan(&buf) {
                Ok((n, icpt)) => {
                    assert!(n <= buf.len(), "forwarded past the buffer");
                    buf.drain(..n);
                    match icpt {
                        Some(i) => {
                            assert!(i.total <= buf.len(), "intercept past the buffer");
                            assert!(i.payload.len() <= INTERCEPT_LIMIT);
                            let _ = i.command();
                            buf.drain(..i.total);
                        }
                        None => break,
                    }
                }
                Err(_) => break 'feed,
            }
        }
    }
}

fn mysql_payload(p: &[u8]) {
    let _ = parse_response(p);
    let _ = parse_backend_answer(p);
    let _ = parse_greeting(p);
    let _ = is_ssl_request(p);
    let _ = max_packet_size(p);
}

/// The PROXY protocol v2 header (`proto::proxy_v2`): `decode` never panics and agrees with
/// `needed`; a decoded header consumes exactly its bytes; and `header_v2` for addresses
/// made from the input decodes to its source (IPv4 pairs as IPv4, else IPv6, v4-mapped).
pub fn proxy_v2(data: &[u8]) {
    let needed = pv2_needed(data);
    let mut buf = BytesMut::from(data);
    match pv2_decode(&mut buf) {
        Ok(None) => {
            assert!(needed > 0, "incomplete but nothing needed");
            assert_eq!(buf.len(), data.len(), "nothing consumed");
        }
        Ok(Some(_)) => {
            assert_eq!(needed, 0);
            let len = usize::from(u16::from_be_bytes([data[14], data[15]]));
            assert_eq!(
                buf.len(),
                data.len() - PV2_HEADER_LEN - len,
                "consumed the header"
            );
        }
        Err(_) => assert_eq!(needed, 0),
    }

    let mut u = Unstructured::new(data);
    let Ok((v6s, v6d)) = <(bool, bool)>::arbitrary(&mut u) else {
        return;
    };
    let (Ok(src), Ok(dst)) = (arbitrary_ip(&mut u, v6s), arbitrary_ip(&mut u, v6d)) else {
        return;
    };
    let (Ok(sp), Ok(dp)) = (u16::arbitrary(&mut u), u16::arbitrary(&mut u)) else {
        return;
    };
    let (src, dst) = (SocketAddr::new(src, sp), SocketAddr::new(dst, dp));
    let mut h = header_v2(src, dst);
    let len = h.len();
    h.extend_from_slice(u.take_rest());
    let mut buf = BytesMut::from(&h[..]);
    let expect = match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => src,
        _ => {
            let ip = match src.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            SocketAddr::new(ip.into(), sp)
        }
    };
    assert_eq!(pv2_needed(&h[..len]), 0);
    match pv2_decode(&mut buf) {
        Ok(Some(hdr)) => assert_eq!(hdr.source, Some(expect), "header_v2 -> decode"),
        other => panic!("header_v2({src}, {dst}) decodes as {other:?}"),
    }
    assert_eq!(buf.len(), h.len() - len, "decode consumed the header only");
}

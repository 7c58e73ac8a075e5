//! Answering one query: parse, look up the pre-built answer, assemble the response.
//!
//! Everything here is synchronous and works on caller-provided buffers, so the UDP loop can
//! answer without allocating. Queries for names outside the zone come back as
//! [`Action::Forward`] for the caller to send upstream.

use std::net::IpAddr;

use ocean_core::net::Cidr;

use crate::proto::encode::opt_with_ecs;
use crate::proto::query::{parse, ParseError, Query};
use crate::proto::{rcode, CLASSIC_UDP_PAYLOAD, CLASS_IN, HEADER_LEN};
use crate::zone::Zone;

/// How the query arrived, which bounds the answer size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What the caller should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send `out`.
    Reply,
    /// The name is outside our zone: forward the request.
    Forward,
    /// Send nothing (not a query, or too short to answer).
    Drop,
}

/// What happened, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub qtype: u16,
    pub rcode: u8,
    pub truncated: bool,
}

impl Outcome {
    /// A message answered (or dropped) before its question could be read.
    fn header_only(rcode: u8) -> Outcome {
        Outcome {
            qtype: 0,
            rcode,
            truncated: false,
        }
    }
}

/// Answering settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Whether out-of-zone names can be forwarded (sets RA, and REFUSED otherwise).
    pub forwarding: bool,
    /// The largest UDP answer we send to an EDNS client.
    pub max_udp_payload: u16,
}

/// Who asks: the address a query came from, and whether it is a resolver whose EDNS
/// Client Subnet option is believed (`--trust-ecs`).
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub addr: IpAddr,
    pub trust_ecs: bool,
}

impl Client {
    /// A client whose Client Subnet option is ignored.
    pub fn direct(addr: IpAddr) -> Client {
        Client {
            addr,
            trust_ecs: false,
        }
    }
}

/// Answers `req` from `client` into `out`: the client's view (from its address, or from
/// the Client Subnet of a trusted resolver) decides which records a name has. `n` picks
/// the rotation of multi-record answers.
pub fn respond(
    zone: Option<&Zone>,
    client: Client,
    req: &[u8],
    transport: Transport,
    settings: Settings,
    n: u32,
    out: &mut Vec<u8>,
) -> (Action, Outcome) {
    out.clear();
    let mut q = match parse(req) {
        Ok(q) => q,
        Err(ParseError::TooShort | ParseError::NotAQuery) => {
            return (Action::Drop, Outcome::header_only(rcode::FORMERR));
        }
        Err(ParseError::FormErr { id, flags, .. }) => {
            error_header(out, id, flags, rcode::FORMERR, settings.forwarding);
            return (Action::Reply, Outcome::header_only(rcode::FORMERR));
        }
        Err(ParseError::NotImp { id, flags, .. }) => {
            error_header(out, id, flags, rcode::NOTIMP, settings.forwarding);
            return (Action::Reply, Outcome::header_only(rcode::NOTIMP));
        }
    };
    let outcome = |rcode, truncated| Outcome {
        qtype: q.qtype,
        rcode,
        truncated,
    };
    if let Some(e) = q.edns {
        if e.version > 0 {
            // BADVERS: extended rcode 16 = upper bits 1 in the OPT, 0 in the header.
            write_header(out, &q, 0, false, settings.forwarding, false, 0, 0, 0);
            write_question(out, &q, req);
            // The OPT record is the only additional record: `finish` counts it.
            finish(out, &q, 0, settings);
            return (Action::Reply, outcome(rcode::REFUSED, false));
        }
    }
    let Some(zone) = zone else {
        // No table yet: SERVFAIL, never a wrong NXDOMAIN.
        simple(out, &q, req, rcode::SERVFAIL, settings);
        return (Action::Reply, outcome(rcode::SERVFAIL, false));
    };
    if q.qclass != CLASS_IN || !zone.contains(q.name()) {
        if q.qclass == CLASS_IN && settings.forwarding {
            return (Action::Forward, outcome(rcode::NOERROR, false));
        }
        simple(out, &q, req, rcode::REFUSED, settings);
        return (Action::Reply, outcome(rcode::REFUSED, false));
    }
    let limit = match transport {
        Transport::Tcp => u16::MAX as usize,
        Transport::Udp => udp_limit(&q, settings),
    };
    // The view: of the subnet a trusted resolver asks for, else of the sender. The answer
    // then carries the option back with the scope it depends on: the whole source prefix
    // for a name some view answers differently, 0 for the others (RFC 7871 7.2.1).
    let varies = client.trust_ecs
        && q.edns.is_some_and(|e| e.ecs.is_some())
        && zone.varies_by_view(q.name());
    let view_addr = match q.edns.as_mut().and_then(|e| e.ecs.as_mut()) {
        Some(ecs) if client.trust_ecs => {
            ecs.scope = Some(if varies { ecs.source_len } else { 0 });
            ecs.addr
        }
        _ => client.addr,
    };
    let echo = q.edns.and_then(|e| e.ecs).filter(|e| e.scope.is_some());
    let opt_len = if q.edns.is_some() {
        crate::proto::encode::opt_len(echo.as_ref())
    } else {
        0
    };
    let view = zone.view_of(view_addr);
    match zone.get(q.name(), view) {
        Some(entry) => match entry.get(q.qtype) {
            Some(answer) => {
                let section = answer.pick(n);
                let sections = &section.bytes;
                let question_len = q.question.len().max(q.name().len() + 4);
                if HEADER_LEN + question_len + sections.len() + opt_len > limit {
                    // Does not fit: TC with no records; the client retries over TCP.
                    write_header(
                        out,
                        &q,
                        rcode::NOERROR,
                        true,
                        settings.forwarding,
                        true,
                        0,
                        0,
                        0,
                    );
                    write_question(out, &q, req);
                    finish(out, &q, 0, settings);
                    return (Action::Reply, outcome(rcode::NOERROR, true));
                }
                write_header(
                    out,
                    &q,
                    rcode::NOERROR,
                    true,
                    settings.forwarding,
                    false,
                    section.ancount,
                    0,
                    section.arcount,
                );
                write_question(out, &q, req);
                out.extend_from_slice(sections);
                finish(out, &q, section.arcount, settings);
                (Action::Reply, outcome(rcode::NOERROR, false))
            }
            None => {
                // NODATA: the name exists with other types.
                negative(out, &q, req, zone, rcode::NOERROR, settings);
                (Action::Reply, outcome(rcode::NOERROR, false))
            }
        },
        None => {
            negative(out, &q, req, zone, rcode::NXDOMAIN, settings);
            (Action::Reply, outcome(rcode::NXDOMAIN, false))
        }
    }
}

/// A response with only a header (FORMERR, NOTIMP): no question, since it may be unreadable.
fn error_header(out: &mut Vec<u8>, id: u16, flags: u16, rc: u8, ra: bool) {
    out.extend_from_slice(&id.to_be_bytes());
    let opcode = flags & 0x7800;
    let rd = flags & 0x0100;
    let ra = if ra { 0x0080 } else { 0 };
    let f = 0x8000 | opcode | rd | ra | rc as u16;
    out.extend_from_slice(&f.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

#[allow(clippy::too_many_arguments)]
fn write_header(
    out: &mut Vec<u8>,
    q: &Query,
    rc: u8,
    aa: bool,
    ra: bool,
    tc: bool,
    an: u16,
    ns: u16,
    ar: u16,
) {
    out.extend_from_slice(&q.id.to_be_bytes());
    let mut f: u16 = 0x8000 | (q.flags & 0x0110); // QR, RD and CD echoed
    if aa {
        f |= 0x0400;
    }
    if tc {
        f |= 0x0200;
    }
    if ra {
        f |= 0x0080;
    }
    f |= rc as u16 & 0xf;
    out.extend_from_slice(&f.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&an.to_be_bytes());
    out.extend_from_slice(&ns.to_be_bytes());
    out.extend_from_slice(&ar.to_be_bytes());
}

/// The question, as the client wrote it (case preserved, for 0x20-randomizing resolvers),
/// or rebuilt when the client compressed it.
fn write_question(out: &mut Vec<u8>, q: &Query, req: &[u8]) {
    match req.get(q.question.clone()) {
        Some(bytes) if !q.question_compressed => out.extend_from_slice(bytes),
        _ => {
            out.extend_from_slice(q.name());
            out.extend_from_slice(&q.qtype.to_be_bytes());
            out.extend_from_slice(&q.qclass.to_be_bytes());
        }
    }
}

/// Appends the OPT record when the client used EDNS, counting it in ARCOUNT (the header
/// already counts `ar` additional records).
fn finish(out: &mut Vec<u8>, q: &Query, ar: u16, settings: Settings) {
    if let Some(e) = q.edns {
        let ext = if e.version > 0 {
            (rcode::BADVERS >> 4) as u8
        } else {
            0
        };
        let echo = e.ecs.filter(|c| c.scope.is_some());
        opt_with_ecs(
            out,
            settings.max_udp_payload,
            ext,
            e.dnssec_ok,
            echo.as_ref(),
        );
        let ar = ar + 1;
        out[10..12].copy_from_slice(&ar.to_be_bytes());
    }
}

fn simple(out: &mut Vec<u8>, q: &Query, req: &[u8], rc: u8, settings: Settings) {
    write_header(out, q, rc, false, settings.forwarding, false, 0, 0, 0);
    write_question(out, q, req);
    finish(out, q, 0, settings);
}

/// NXDOMAIN or NODATA, authoritative, with the SOA in the authority section (RFC 2308).
fn negative(out: &mut Vec<u8>, q: &Query, req: &[u8], zone: &Zone, rc: u8, settings: Settings) {
    write_header(out, q, rc, true, settings.forwarding, false, 0, 1, 0);
    write_question(out, q, req);
    out.extend_from_slice(zone.soa_authority(q.name()));
    finish(out, q, 0, settings);
}

/// A SERVFAIL answer to `req` (when forwarding fails); `None` when `req` is not a query.
pub fn servfail(req: &[u8], settings: Settings, out: &mut Vec<u8>) -> Option<Query> {
    out.clear();
    let q = parse(req).ok()?;
    simple(out, &q, req, rcode::SERVFAIL, settings);
    Some(q)
}

/// The REFUSED answer to a query we would forward for a client outside
/// `--allow-recursion`: RA clear (this client may not recurse), the question echoed.
/// `None` when `req` is not a query.
pub fn refused_recursion(req: &[u8], settings: Settings, out: &mut Vec<u8>) -> Option<Query> {
    out.clear();
    let q = parse(req).ok()?;
    let no_recursion = Settings {
        forwarding: false,
        ..settings
    };
    simple(out, &q, req, rcode::REFUSED, no_recursion);
    Some(q)
}

/// What a query [`respond`] would forward becomes for a client outside
/// `--allow-recursion`: the REFUSED answer in `out` (or a drop when `req` is not a query),
/// and the outcome to count. One place for UDP and TCP.
pub fn refuse_forward(
    req: &[u8],
    settings: Settings,
    outcome: Outcome,
    out: &mut Vec<u8>,
) -> (Action, Outcome) {
    let action = match refused_recursion(req, settings, out) {
        Some(_) => Action::Reply,
        None => Action::Drop,
    };
    let outcome = Outcome {
        rcode: rcode::REFUSED,
        ..outcome
    };
    (action, outcome)
}

/// Whether `client` may have names outside the zone forwarded (`--allow-recursion`).
pub fn recursion_allowed(acl: &[Cidr], client: IpAddr) -> bool {
    acl.iter().any(|net| net.contains(client))
}

/// A truncated reply to `req`: header (TC set, `rc`), question and OPT, no records, so the
/// client retries over TCP. Used for rate-limit slips and for forwarded answers larger
/// than the client can take. `None` when `req` is not a query.
pub fn truncated(req: &[u8], rc: u8, settings: Settings, out: &mut Vec<u8>) -> Option<Query> {
    out.clear();
    let q = parse(req).ok()?;
    write_header(out, &q, rc, false, settings.forwarding, true, 0, 0, 0);
    write_question(out, &q, req);
    finish(out, &q, 0, settings);
    Some(q)
}

/// The largest UDP reply the client of `q` takes: its EDNS buffer size capped at
/// `--max-udp-payload`, 512 without EDNS (and never less than 512).
pub fn udp_limit(q: &Query, settings: Settings) -> usize {
    match q.edns {
        None => CLASSIC_UDP_PAYLOAD as usize,
        Some(e) => e.udp_size.clamp(
            CLASSIC_UDP_PAYLOAD,
            settings.max_udp_payload.max(CLASSIC_UDP_PAYLOAD),
        ) as usize,
    }
}

/// Fits an upstream's `answer` to the client's UDP query `req`: `Some(false)` when it fits
/// [`udp_limit`] (send `answer` as is); otherwise `Some(true)` with a [`truncated`] reply
/// in `out` (the upstream's rcode and AA kept; no partial RRsets). `None` when `req` is
/// not a query (nothing to send).
pub fn fit_forwarded_udp(
    req: &[u8],
    answer: &[u8],
    settings: Settings,
    out: &mut Vec<u8>,
) -> Option<bool> {
    let q = parse(req).ok()?;
    if answer.len() <= udp_limit(&q, settings) {
        return Some(false);
    }
    let flags = answer
        .get(2..4)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0);
    truncated(req, (flags & 0xf) as u8, settings, out)?;
    // Keep the upstream's AA bit (it is our header's byte 2, bit 2).
    if let Some(b) = out.get_mut(2) {
        *b |= ((flags >> 8) as u8) & 0x04;
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, MessageType, OpCode, Query as HQuery, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};
    use ocean_core::table::dns::DnsRecords;
    use ocean_core::table::{DnsTable, Versioned};

    use super::*;

    fn zone() -> Zone {
        let mut t = DnsTable::default();
        t.names.insert(
            "web.marathon.mesos.".into(),
            DnsRecords {
                a: (1..=4)
                    .map(|i| std::net::Ipv4Addr::new(10, 0, 0, i))
                    .collect(),
                ..Default::default()
            },
        );
        t.names.insert(
            "big.marathon.mesos.".into(),
            DnsRecords {
                a: (1..=100)
                    .map(|i| std::net::Ipv4Addr::new(10, 1, 0, i))
                    .collect(),
                ..Default::default()
            },
        );
        Zone::build(Versioned::new(t).unwrap(), 7).unwrap()
    }

    fn ask(
        zone: Option<&Zone>,
        name: &str,
        rtype: RecordType,
        edns: Option<u16>,
        transport: Transport,
        n: u32,
    ) -> (Action, Option<Message>) {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.add_query(HQuery::query(Name::from_ascii(name).unwrap(), rtype));
        if let Some(size) = edns {
            let mut e = hickory_proto::op::Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        let req = m.to_vec().unwrap();
        let mut out = Vec::new();
        let settings = Settings {
            forwarding: false,
            max_udp_payload: 1232,
        };
        let client = Client::direct(IpAddr::from([127, 0, 0, 1]));
        let (action, _) = respond(zone, client, &req, transport, settings, n, &mut out);
        (
            action,
            (action == Action::Reply).then(|| Message::from_vec(&out).unwrap()),
        )
    }

    #[test]
    fn answers_rotate_and_negative_answers_carry_the_soa() {
        let z = zone();
        let first = |n| {
            let (_, m) = ask(
                Some(&z),
                "web.marathon.mesos.",
                RecordType::A,
                None,
                Transport::Udp,
                n,
            );
            let m = m.unwrap();
            assert!(m.metadata.authoritative);
            assert_eq!(m.answers.len(), 4);
            m.answers[0].data.clone()
        };
        assert_ne!(
            first(0),
            first(1),
            "consecutive queries start at different records"
        );
        let (_, m) = ask(
            Some(&z),
            "nope.marathon.mesos.",
            RecordType::A,
            None,
            Transport::Udp,
            0,
        );
        let m = m.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1);
        // An empty non-terminal and another type: NODATA.
        for (name, t) in [
            ("marathon.mesos.", RecordType::A),
            ("web.marathon.mesos.", RecordType::AAAA),
        ] {
            let (_, m) = ask(Some(&z), name, t, None, Transport::Udp, 0);
            let m = m.unwrap();
            assert_eq!(
                (
                    m.metadata.response_code,
                    m.answers.len(),
                    m.authorities.len()
                ),
                (ResponseCode::NoError, 0, 1),
                "{name}"
            );
        }
    }

    #[test]
    fn size_limits_truncate_over_udp_only() {
        let z = zone();
        // 100 A records (1.6 KB) exceed 512 and 1232 bytes over UDP...
        for edns in [None, Some(4096)] {
            let (_, m) = ask(
                Some(&z),
                "big.marathon.mesos.",
                RecordType::A,
                edns,
                Transport::Udp,
                0,
            );
            let m = m.unwrap();
            assert!(m.metadata.truncation, "{edns:?}");
            assert!(m.answers.is_empty());
            assert_eq!(
                m.edns.is_some(),
                edns.is_some(),
                "OPT echoed only to EDNS clients"
            );
        }
        // ...and come whole over TCP.
        let (_, m) = ask(
            Some(&z),
            "big.marathon.mesos.",
            RecordType::A,
            None,
            Transport::Tcp,
            0,
        );
        assert_eq!(m.unwrap().answers.len(), 100);
    }

    /// Found by the `dns_respond` fuzz target: the BADVERS answer counted two additional
    /// records but carried one (its OPT), so no client could read it.
    #[test]
    fn badvers_answer_counts_its_one_opt_record() {
        let mut req = Message::new(9, MessageType::Query, OpCode::Query);
        req.add_query(HQuery::query(
            Name::from_ascii("web.marathon.mesos.").unwrap(),
            RecordType::A,
        ));
        let mut e = hickory_proto::op::Edns::new();
        e.set_version(1);
        req.set_edns(e);
        let req = req.to_vec().unwrap();
        let settings = Settings {
            forwarding: false,
            max_udp_payload: 1232,
        };
        let mut out = Vec::new();
        let z = zone();
        let client = Client::direct(IpAddr::from([127, 0, 0, 1]));
        let (action, _) = respond(
            Some(&z),
            client,
            &req,
            Transport::Udp,
            settings,
            0,
            &mut out,
        );
        assert_eq!(action, Action::Reply);
        assert_eq!(u16::from_be_bytes([out[10], out[11]]), 1, "ARCOUNT");
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 9);
        // Extended rcode 16 (hickory reads 16 as BADSIG, which shares the number).
        assert_eq!(u16::from(m.metadata.response_code), 16);
        assert_eq!(m.additionals.len(), 0);
        assert!(m.edns.is_some());
    }

    #[test]
    fn no_zone_is_servfail_and_outside_names_are_refused_without_forwarding() {
        let (_, m) = ask(
            None,
            "web.marathon.mesos.",
            RecordType::A,
            None,
            Transport::Udp,
            0,
        );
        assert_eq!(m.unwrap().metadata.response_code, ResponseCode::ServFail);
        let z = zone();
        let (_, m) = ask(
            Some(&z),
            "example.com.",
            RecordType::A,
            None,
            Transport::Udp,
            0,
        );
        assert_eq!(m.unwrap().metadata.response_code, ResponseCode::Refused);
    }
    fn query_bytes(name: &str, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(42, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(HQuery::query(
            Name::from_ascii(name).unwrap(),
            RecordType::A,
        ));
        if let Some(size) = edns {
            let mut e = hickory_proto::op::Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn recursion_refused_without_ra_and_acl_matches_networks() {
        let settings = Settings {
            forwarding: true,
            max_udp_payload: 1232,
        };
        let mut out = Vec::new();
        let req = query_bytes("example.com.", None);
        refused_recursion(&req, settings, &mut out).unwrap();
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.recursion_available, "RA clear");
        assert_eq!(m.metadata.id, 42);
        assert_eq!(m.queries.len(), 1);
        let acl: Vec<Cidr> = vec!["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
        for (ip, ok) in [
            ("127.0.0.1", true),
            ("127.9.9.9", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("10.0.0.1", false),
            ("::2", false),
        ] {
            assert_eq!(recursion_allowed(&acl, ip.parse().unwrap()), ok, "{ip}");
        }
    }

    #[test]
    fn forwarded_udp_answers_fit_the_client_or_are_truncated() {
        let settings = Settings {
            forwarding: true,
            max_udp_payload: 1232,
        };
        let mut out = Vec::new();
        // An upstream answer of 100 A records (~1.6 KB), AA set, NOERROR.
        let mut answer = Message::new(42, MessageType::Response, OpCode::Query);
        answer.metadata.authoritative = true;
        answer.add_query(HQuery::query(
            Name::from_ascii("big.example.com.").unwrap(),
            RecordType::A,
        ));
        for i in 0..100u8 {
            answer.add_answer(hickory_proto::rr::Record::from_rdata(
                Name::from_ascii("big.example.com.").unwrap(),
                60,
                hickory_proto::rr::RData::A(std::net::Ipv4Addr::new(10, 0, 1, i).into()),
            ));
        }
        let answer = answer.to_vec().unwrap();
        assert!(answer.len() > 1232);
        // Without EDNS (512), with EDNS 1400 (capped at 1232) and 4096 (capped too): TC.
        for edns in [None, Some(1400), Some(4096)] {
            let req = query_bytes("big.example.com.", edns);
            assert_eq!(
                fit_forwarded_udp(&req, &answer, settings, &mut out),
                Some(true)
            );
            let m = Message::from_vec(&out).unwrap();
            assert!(m.metadata.truncation, "{edns:?}");
            assert!(m.metadata.authoritative, "upstream's AA kept");
            assert!(m.answers.is_empty(), "no partial RRsets");
            assert_eq!(m.queries.len(), 1);
            assert_eq!(m.edns.is_some(), edns.is_some());
            assert!(out.len() <= 512);
        }
        // A small answer fits and is sent as is.
        let req = query_bytes("big.example.com.", None);
        assert_eq!(
            fit_forwarded_udp(&req, &answer[..100], settings, &mut out),
            Some(false)
        );
    }
}

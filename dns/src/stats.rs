//! Query counters shared by the UDP workers ([`crate::server`]) and the TCP connections
//! ([`crate::connection`]).

use crate::proto::rtype;
use crate::route::{Action, Outcome};

/// Per-worker counters, flushed to the metrics registry in batches so that the hot path
/// does no registry lookups.
pub(crate) struct Counters {
    by: [[u64; 6]; 5],
    truncated: u64,
    forwarded: u64,
    dropped: u64,
    /// Out-of-zone queries refused to clients outside `--allow-recursion`.
    refused_recursion: u64,
    /// UDP answers over the rate limit: dropped, and sent truncated instead (slipped).
    rrl_dropped: u64,
    rrl_slipped: u64,
    /// `recvmmsg` calls that returned datagrams (UDP workers): queries over receives is the
    /// mean batch.
    pub(crate) udp_receives: u64,
    pending: u32,
    /// Sampled answer times (every 64th query), seconds.
    pub(crate) latency: Vec<f64>,
}

const QTYPES: [&str; 5] = ["A", "AAAA", "SRV", "SOA_NS_ANY", "other"];
const RCODES: [&str; 6] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
];

impl Counters {
    pub(crate) fn new() -> Self {
        Counters {
            by: [[0; 6]; 5],
            truncated: 0,
            forwarded: 0,
            dropped: 0,
            refused_recursion: 0,
            rrl_dropped: 0,
            rrl_slipped: 0,
            udp_receives: 0,
            pending: 0,
            latency: Vec::with_capacity(64),
        }
    }

    pub(crate) fn count(&mut self, o: Outcome, action: Action) {
        let t = match o.qtype {
            rtype::A => 0,
            rtype::AAAA => 1,
            rtype::SRV => 2,
            rtype::SOA | rtype::NS | rtype::ANY => 3,
            _ => 4,
        };
        match action {
            Action::Forward => self.forwarded += 1,
            Action::Drop => self.dropped += 1,
            Action::Reply => self.by[t][(o.rcode as usize).min(5)] += 1,
        }
        if o.truncated {
            self.truncated += 1;
        }
        self.pending += 1;
        if self.pending >= 4096 {
            self.flush();
        }
    }

    /// A query for a name outside the zone refused to a client outside
    /// `--allow-recursion` (also counted by [`Counters::count`] as a REFUSED answer).
    pub(crate) fn refused_recursion(&mut self) {
        self.refused_recursion += 1;
    }

    /// A UDP answer over the rate limit: sent truncated (`slipped`) or not at all. Not
    /// counted in `ocean_dns_queries_total`.
    pub(crate) fn rate_limited(&mut self, slipped: bool) {
        if slipped {
            self.rrl_slipped += 1;
        } else {
            self.rrl_dropped += 1;
        }
        self.pending += 1;
        if self.pending >= 4096 {
            self.flush();
        }
    }

    pub(crate) fn flush(&mut self) {
        for (t, row) in self.by.iter_mut().enumerate() {
            for (r, n) in row.iter_mut().enumerate() {
                if *n > 0 {
                    metrics::counter!("ocean_dns_queries_total", "qtype" => QTYPES[t], "rcode" => RCODES[r]).increment(*n);
                    *n = 0;
                }
            }
        }
        for (name, n) in [
            ("ocean_dns_truncated_total", &mut self.truncated),
            ("ocean_dns_forwarded_total", &mut self.forwarded),
            ("ocean_dns_dropped_total", &mut self.dropped),
            ("ocean_dns_udp_receives_total", &mut self.udp_receives),
        ] {
            if *n > 0 {
                metrics::counter!(name).increment(*n);
                *n = 0;
            }
        }
        if self.refused_recursion > 0 {
            metrics::counter!("ocean_dns_refused_total", "reason" => "recursion")
                .increment(self.refused_recursion);
            self.refused_recursion = 0;
        }
        for (action, n) in [
            ("drop", &mut self.rrl_dropped),
            ("slip", &mut self.rrl_slipped),
        ] {
            if *n > 0 {
                metrics::counter!("ocean_dns_rate_limited_total", "action" => action).increment(*n);
                *n = 0;
            }
        }
        for s in self.latency.drain(..) {
            metrics::histogram!("ocean_dns_answer_seconds").record(s);
        }
        self.pending = 0;
    }
}

/// Describes the DNS server's Prometheus metrics (`# HELP`); called once at start. The
/// list is docs/metrics.md's dns section.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "ocean_dns_queries_total",
        Unit::Count,
        "Queries answered, per query type (A, AAAA, SRV, SOA_NS_ANY, other) and rcode."
    );
    describe_counter!(
        "ocean_dns_udp_receives_total",
        Unit::Count,
        "recvmmsg calls of the UDP workers that returned datagrams; UDP queries over this is the mean batch."
    );
    describe_counter!(
        "ocean_dns_tls_handshake_failures_total",
        Unit::Count,
        "DNS-over-TLS connections closed before a query: the TLS handshake failed or did not finish within --tcp-idle-timeout."
    );
    describe_counter!(
        "ocean_dns_truncated_total",
        Unit::Count,
        "UDP answers sent truncated (TC bit set)."
    );
    describe_counter!(
        "ocean_dns_forwarded_total",
        Unit::Count,
        "Queries outside the zone forwarded to the upstream resolvers."
    );
    describe_counter!(
        "ocean_dns_dropped_total",
        Unit::Count,
        "Messages dropped without an answer (too short, or not a query)."
    );
    describe_counter!(
        "ocean_dns_refused_total",
        Unit::Count,
        "Queries refused by policy, per reason (recursion: a name outside the zone asked by a client outside --allow-recursion)."
    );
    describe_counter!(
        "ocean_dns_rate_limited_total",
        Unit::Count,
        "UDP answers over --rrl-per-second for their client network, per action (drop: not sent; slip: sent truncated with TC set)."
    );
    describe_histogram!(
        "ocean_dns_answer_seconds",
        Unit::Seconds,
        "Time to answer a UDP query from the zone, one query in 64 sampled."
    );
    describe_histogram!(
        "ocean_dns_forward_seconds",
        Unit::Seconds,
        "Time for an upstream resolver to answer a forwarded query (answered ones)."
    );
    describe_counter!(
        "ocean_dns_forward_failures_total",
        Unit::Count,
        "Upstream resolver attempts that failed or timed out."
    );
    describe_gauge!(
        "ocean_dns_zone_names",
        Unit::Count,
        "Names in the zone being served."
    );
    describe_gauge!(
        "ocean_dns_zone_serial",
        Unit::Count,
        "SOA serial of the zone being served."
    );
    describe_gauge!(
        "ocean_dns_zone_loaded_timestamp_seconds",
        Unit::Seconds,
        "Unix time the zone being served was built."
    );
    describe_histogram!(
        "ocean_dns_zone_build_seconds",
        Unit::Seconds,
        "Time to build and pre-encode a zone from a dns table (or update one from a delta)."
    );
    describe_counter!(
        "ocean_dns_zone_loads_total",
        Unit::Count,
        "Zones loaded, by how: update (a delta's names re-encoded on the running zone) or build (the whole table)."
    );
}

//! Any bytes, over UDP and TCP, with and without a zone: the responder never panics, and
//! every reply is at most the transport's limit.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ocean_core::table::dns::{DnsRecords, SrvRecord};
use ocean_core::table::{DnsTable, Versioned};
use ocean_dns::respond::{respond, Action, Settings, Transport};
use ocean_dns::zone::Zone;

fn zone() -> &'static Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    ZONE.get_or_init(|| {
        let mut t = DnsTable::default();
        t.names.insert(
            "web.marathon.mesos.".into(),
            DnsRecords {
                a: vec![std::net::Ipv4Addr::new(10, 0, 0, 1)],
                srv: vec![SrvRecord { port: 80, priority: 0, target: "web.marathon.mesos.".into(), weight: 1 }],
                ..Default::default()
            },
        );
        let v: Arc<Versioned<DnsTable>> = Versioned::new(t).expect("serializable");
        Zone::build(v, 1).expect("valid zone")
    })
}

fuzz_target!(|data: &[u8]| {
    let settings = Settings { forwarding: data.first().is_some_and(|b| b & 1 == 1), max_udp_payload: 1232 };
    let mut out = Vec::new();
    for (zone, transport) in [(Some(zone()), Transport::Udp), (Some(zone()), Transport::Tcp), (None, Transport::Udp)] {
        let (action, _) = respond(zone, data, transport, settings, data.len() as u32, &mut out);
        if action == Action::Reply && transport == Transport::Udp {
            assert!(out.len() <= 1232, "UDP reply of {} bytes", out.len());
        }
    }
});

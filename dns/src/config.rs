//! `ocean dns` settings.

use std::net::SocketAddr;
use std::time::Duration;

use ocean_core::subscriber::SubscriberConfig;

/// Everything `ocean dns` runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// DNS address, UDP and TCP (port 0: any free port, for tests).
    pub listen: SocketAddr,
    /// Mesos-DNS HTTP API plus `/metrics`, `/healthz`, `/table`; `None` disables it.
    pub http: Option<SocketAddr>,
    /// Upstream resolvers for names outside the domain, tried in order.
    pub resolvers: Vec<SocketAddr>,
    /// Upstreams for particular zones (`consul.` -> 127.0.0.1:8600), before `resolvers`.
    pub zone_resolvers: Vec<(String, SocketAddr)>,
    /// Timeout of one upstream try.
    pub forward_timeout: Duration,
    /// Forwarded queries in flight at most; beyond it clients get SERVFAIL at once.
    pub max_forward_inflight: usize,
    /// UDP worker threads, each with its own `SO_REUSEPORT` socket.
    pub udp_workers: usize,
    /// Largest UDP answer to EDNS clients (the client's own limit applies when smaller).
    pub max_udp_payload: u16,
    /// TCP connections at most; more wait in the kernel's accept queue.
    pub max_tcp_connections: usize,
    /// A TCP connection idle this long between queries is closed.
    pub tcp_idle_timeout: Duration,
    /// Where the `dns` table comes from.
    pub subscriber: SubscriberConfig,
}

impl Config {
    pub fn new(subscriber: SubscriberConfig) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8053)),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 8123))),
            resolvers: Vec::new(),
            zone_resolvers: Vec::new(),
            forward_timeout: Duration::from_secs(2),
            max_forward_inflight: 1024,
            udp_workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            max_udp_payload: 1232,
            max_tcp_connections: 1024,
            tcp_idle_timeout: Duration::from_secs(10),
            subscriber,
        }
    }

    /// Checks the settings; the message names the flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.subscriber.validate()?;
        anyhow::ensure!(self.udp_workers >= 1, "--udp-workers must be at least 1");
        anyhow::ensure!(
            self.max_udp_payload >= 512,
            "--max-udp-payload must be at least 512"
        );
        anyhow::ensure!(
            !self.forward_timeout.is_zero(),
            "--forward-timeout must be longer than 0"
        );
        for (zone, _) in &self.zone_resolvers {
            anyhow::ensure!(
                crate::proto::encode::name_to_wire(zone).is_some(),
                "--zone-resolver {zone:?}: not a domain name"
            );
        }
        Ok(())
    }
}

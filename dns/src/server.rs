//! The DNS server: UDP workers, the TCP listener, the zone builder and the HTTP API.
//!
//! UDP is the hot path ([`crate::udp`]): OS threads with blocking `SO_REUSEPORT` sockets,
//! which measured faster here than any async shape (PERF.md). TCP and TLS run on the async
//! runtime.
//!
//! Both paths refuse to forward for clients outside `--allow-recursion`; only UDP answers
//! are rate limited ([`crate::rrl`]), and forwarded UDP answers are fitted to the client's
//! payload size (truncated when larger).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use ocean_core::daemon::{self, Conn, Limits};
use ocean_core::net::Cidr;
use ocean_core::subscriber::{self, TableWatch};
use ocean_core::table::DnsTable;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::connection;
use crate::route::Settings;
use crate::rrl::Rrl;
use crate::udp;
use crate::upstream::Forwarder;
use crate::zone::Zone;

pub use crate::zone::SharedZone;

/// A running `ocean dns`.
pub struct Running {
    pub dns_addr: SocketAddr,
    /// DNS over TLS, when `--tls-listen` is set.
    pub tls_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    pub zone: SharedZone,
    tracker: TaskTracker,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Waits for every task and worker thread to stop (after cancellation).
    pub async fn wait(self) {
        self.tracker.wait().await;
        let threads = self.threads;
        // Workers notice the stop flag within their read timeout.
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Runs `ocean dns` until `cancel` fires.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    start(config, cancel).await?.wait().await;
    Ok(())
}

/// SIGHUP: re-reads `--mesos-dns-config` (when given) and applies what needs no new
/// socket: `resolvers`, `zoneResolvers` and `timeout`, for the forwarded queries that start
/// from now on. A change of `listener`, `port`, `httplistener`, `httpport`, `httpon`, or
/// forwarding turned on or off (`externalon`, resolvers emptied or first set: the RA bit
/// of every answer) needs a restart: it is logged and the running value stays. Zone keys
/// (`domain`, `ttl`, ...) are control's and stay notes. A file that cannot be read or
/// parsed changes nothing and fails the reload.
fn reload(
    running: &mut Config,
    forwarder: &Forwarder,
    cert: Option<&ocean_core::tls::ServerCert>,
) -> anyhow::Result<Vec<String>> {
    // The DNS-over-TLS certificate: new handshakes get the new one. A pair that cannot be
    // used keeps the old one and fails the reload (after the Mesos-DNS file is applied).
    let mut changed = Vec::new();
    let cert_result = match cert {
        Some(c) => c.reload().map(|new| {
            if new {
                changed.push("--tls-cert/--tls-key".to_string());
            }
        }),
        None => Ok(()),
    };
    let mut from_file = reload_mesos_dns(running, forwarder)?;
    cert_result?;
    changed.append(&mut from_file);
    Ok(changed)
}

fn reload_mesos_dns(running: &mut Config, forwarder: &Forwarder) -> anyhow::Result<Vec<String>> {
    let Some(path) = running.mesos_dns_config.clone() else {
        return Ok(Vec::new());
    };
    let file = crate::config::mesos_dns::load(&path)?;
    let mut next = running.clone();
    for note in file.apply(&mut next) {
        tracing::debug!(file = %path.display(), "{note}");
    }
    next.validate()
        .map_err(|e| anyhow::anyhow!("Mesos-DNS config {}: {e:#}", path.display()))?;
    let mut restart = Vec::new();
    if next.listen != running.listen {
        restart.push("listener/port");
    }
    if next.http != running.http {
        restart.push("httplistener/httpport/httpon");
    }
    let mut changed = Vec::new();
    let upstreams = Forwarder::new(
        next.resolvers.clone(),
        &next.zone_resolvers,
        next.forward_timeout,
    );
    if upstreams.enabled() != forwarder.enabled() {
        restart.push("externalon/resolvers (forwarding on or off)");
    } else if !forwarder.same_as(&upstreams) {
        forwarder.replace(&upstreams);
        running.resolvers = next.resolvers;
        running.zone_resolvers = next.zone_resolvers;
        running.forward_timeout = next.forward_timeout;
        changed.push(format!(
            "{}: resolvers/zoneResolvers/timeout",
            path.display()
        ));
    }
    if !restart.is_empty() {
        tracing::warn!(
            file = %path.display(),
            settings = ?restart,
            "changed in the Mesos-DNS config but needs a restart: still running the old value"
        );
    }
    Ok(changed)
}

/// Binds the UDP sockets and the TCP listener on one port. With port 0 the kernel picks a
/// UDP port whose TCP twin may be taken (an outgoing connection's ephemeral port): then
/// pick again, a few times.
fn bind_udp_and_tcp(
    listen: SocketAddr,
    udp_workers: usize,
) -> anyhow::Result<(
    SocketAddr,
    Vec<std::net::UdpSocket>,
    tokio::net::TcpListener,
)> {
    let attempts = if listen.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let first = udp::bind(listen)?;
        let dns_addr = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..udp_workers {
            sockets.push(udp::bind(dns_addr)?);
        }
        match ocean_core::listener::bind_tcp(dns_addr, false) {
            Ok(tcp) => return Ok((dns_addr, sockets, tcp)),
            Err(e) => last = Some((dns_addr, e)),
        }
    }
    match last {
        Some((addr, e)) => anyhow::bail!("cannot listen on {addr}/tcp (--listen): {e}"),
        None => anyhow::bail!("cannot listen on {listen} (--listen)"),
    }
}

/// Binds everything, starts the subscriber, and returns once listening.
pub async fn start(config: Config, cancel: CancellationToken) -> anyhow::Result<Running> {
    config.validate()?;
    ocean_core::metrics::handle();
    crate::stats::describe();
    let tracker = TaskTracker::new();
    let zone: SharedZone = Arc::new(ArcSwapOption::empty());
    let forwarder = Arc::new(Forwarder::new(
        config.resolvers.clone(),
        &config.zone_resolvers,
        config.forward_timeout,
    ));
    // SIGHUP: the table comes from its subscriber and flags are fixed; a Mesos-DNS config
    // file is re-read (see `reload`). Without one the reload is still answered (log,
    // metric, systemd READY=1).
    let dot = match &config.tls {
        Some(t) => Some(dot_listener(t)?),
        None => None,
    };
    {
        let (mut running, forwarder) = (config.clone(), forwarder.clone());
        let cert = dot.as_ref().map(|(_, _, cert)| cert.clone());
        ocean_core::reload::spawn("dns", cancel.clone(), move || {
            reload(&mut running, &forwarder, cert.as_deref())
        });
    }
    let settings = Settings {
        forwarding: forwarder.enabled(),
        max_udp_payload: config.max_udp_payload,
    };

    // UDP sockets: the first decides the port (it may be 0), the others share it.
    let (dns_addr, sockets, tcp) = bind_udp_and_tcp(config.listen, config.udp_workers)?;

    // Table -> zone.
    let (watch, _sub) = subscriber::spawn::<DnsTable>(config.subscriber.clone(), cancel.clone());
    tracker.spawn(build_zones(watch.clone(), zone.clone(), cancel.clone()));

    // Forwarding.
    let (fwd_tx, fwd_rx) = mpsc::channel::<udp::ForwardJob>(config.max_forward_inflight.max(1));
    tracker.spawn(udp::forward(
        fwd_rx,
        forwarder.clone(),
        settings,
        config.max_forward_inflight,
        cancel.clone(),
    ));

    // UDP workers, sharing the recursion ACL and one rate limiter.
    let acl: Arc<[Cidr]> = config.allow_recursion.clone().into();
    let trust_ecs: Arc<[Cidr]> = config.trust_ecs.clone().into();
    let rrl = Rrl::new(config.rrl_per_second, config.rrl_slip).map(Arc::new);
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (i, s) in sockets.into_iter().enumerate() {
        let policy = udp::UdpPolicy {
            acl: acl.clone(),
            trust_ecs: trust_ecs.clone(),
            rrl: rrl.clone(),
        };
        let (zone, stop, fwd_tx) = (zone.clone(), stop.clone(), fwd_tx.clone());
        let socket = Arc::new(s);
        threads.push(
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || udp::worker(socket, zone, settings, policy, fwd_tx, stop))?,
        );
    }
    let c = cancel.clone();
    tracker.spawn(async move {
        c.cancelled().await;
        stop.store(true, Ordering::Relaxed);
    });

    // TCP, and TLS on its own listener.
    let mut tls_addr = None;
    if let Some((listener, acceptor, _)) = dot {
        tls_addr = Some(listener.local_addr()?);
        tracker.spawn(serve_tcp(
            listener,
            Some(acceptor),
            zone.clone(),
            forwarder.clone(),
            acl.clone(),
            settings,
            config.clone(),
            cancel.clone(),
        ));
    }
    tracker.spawn(serve_tcp(
        tcp,
        None,
        zone.clone(),
        forwarder,
        acl,
        settings,
        config.clone(),
        cancel.clone(),
    ));

    // HTTP.
    let http_addr = match config.http {
        Some(addr) => {
            let listener = ocean_core::listener::bind_tcp(addr, false)
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--http): {e}"))?;
            let local = listener.local_addr()?;
            // /v1/config reports the bound addresses (port 0 in tests becomes the real port).
            let mut shown = config.clone();
            shown.listen = dns_addr;
            shown.http = Some(local);
            let router = crate::http::router(crate::http::ApiState {
                zone: zone.clone(),
                watch,
                config: shown,
            });
            let c = cancel.clone();
            tracker.spawn(async move {
                if let Err(e) = ocean_core::admin::serve(listener, router, c).await {
                    tracing::error!(error = %e, "HTTP API failed");
                }
            });
            Some(local)
        }
        None => None,
    };
    tracker.close();
    tracing::info!(
        dns = %dns_addr,
        http = ?http_addr,
        workers = config.udp_workers,
        forwarding = settings.forwarding,
        allow_recursion = ?config.allow_recursion,
        rrl_per_second = config.rrl_per_second,
        rrl_slip = config.rrl_slip,
        "ocean dns listening"
    );
    Ok(Running {
        dns_addr,
        tls_addr,
        http_addr,
        zone,
        tracker,
        threads,
    })
}

/// Rebuilds the zone for every accepted table.
async fn build_zones(mut watch: TableWatch<DnsTable>, zone: SharedZone, cancel: CancellationToken) {
    let mut last_serial = 0u32;
    loop {
        let table = tokio::select! {
            _ = cancel.cancelled() => return,
            t = watch.first() => t,
        };
        let Some(table) = table else { return };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        let serial = now.max(last_serial.wrapping_add(1));
        let started = std::time::Instant::now();
        let etag = table.etag.clone();
        // A table made by a delta from the running zone's table: re-encode only what the
        // delta touched (and what refers to it); anything else: build the whole zone.
        let base = zone
            .load_full()
            .filter(|z| table.delta.as_ref().is_some_and(|d| d.from == z.table.etag));
        let how = if base.is_some() { "update" } else { "build" };
        let load = move || match (base, table.delta.clone()) {
            (Some(base), Some(delta)) => base.update(table, &delta.changed, serial),
            _ => Zone::build(table, serial),
        };
        match tokio::task::spawn_blocking(load).await {
            Ok(Ok(z)) => {
                last_serial = serial;
                metrics::counter!("ocean_dns_zone_loads_total", "how" => how).increment(1);
                tracing::info!(etag = %etag, names = z.len(), serial, how, build_ms = started.elapsed().as_millis() as u64, "zone loaded");
                metrics::gauge!("ocean_dns_zone_names").set(z.len() as f64);
                metrics::gauge!("ocean_dns_zone_serial").set(serial as f64);
                metrics::gauge!("ocean_dns_zone_loaded_timestamp_seconds").set(now as f64);
                metrics::histogram!("ocean_dns_zone_build_seconds")
                    .record(started.elapsed().as_secs_f64());
                zone.store(Some(Arc::new(z)));
            }
            Ok(Err(e)) => {
                tracing::error!(etag = %etag, error = %e, "cannot build a zone from this table; keeping the current one")
            }
            Err(e) => {
                tracing::error!(error = %e, "zone builder panicked; keeping the current zone")
            }
        }
        // Wait for the next table.
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = watch.changed() => if changed.is_none() { return },
        }
        // `changed` consumed the new value; `first` returns it again on the next turn.
    }
}

/// The DNS-over-TLS listener, its acceptor (ALPN `dot`, RFC 7858 section 3.2) and the
/// certificate a reload re-reads.
fn dot_listener(
    t: &crate::config::DotConfig,
) -> anyhow::Result<(
    tokio::net::TcpListener,
    tokio_rustls::TlsAcceptor,
    Arc<ocean_core::tls::ServerCert>,
)> {
    use ocean_core::tls::{self, PemFile};
    let cert = tls::ServerCert::load(
        PemFile::new("--tls-cert", &t.cert),
        PemFile::new("--tls-key", &t.key),
    )?;
    let mut server = tls::server_config(cert.clone())?;
    server.alpn_protocols = vec![b"dot".to_vec()];
    let listener = ocean_core::listener::bind_tcp(t.listen, false)
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (--tls-listen): {e}", t.listen))?;
    Ok((
        listener,
        tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        cert,
    ))
}

/// The server side of a DNS-over-TLS handshake. It gets the idle timeout: a client that
/// connects and says nothing (or no TLS) is closed like an idle one. A failure is counted
/// by reason and logged; `None` then closes the connection.
async fn tls_handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    timeout: std::time::Duration,
    peer: std::net::IpAddr,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let reason = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls_stream)) => return Some(tls_stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "tls handshake failed");
            "error"
        }
        Err(_) => {
            tracing::debug!(%peer, "tls handshake timed out");
            "timeout"
        }
    };
    metrics::counter!("ocean_dns_tls_handshake_failures_total", "reason" => reason).increment(1);
    None
}

// The listener's pieces, each its own concern; a struct for one caller would only rename them.
#[allow(clippy::too_many_arguments)]
async fn serve_tcp(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    zone: SharedZone,
    forwarder: Arc<Forwarder>,
    acl: Arc<[Cidr]>,
    settings: Settings,
    config: Config,
    cancel: CancellationToken,
) {
    // DNS has no greeting to refuse with: a client past the cap is closed, which a resolver
    // reads as "try another server" (RFC 7766 section 6.2.2).
    let mut limits = Limits::new("dns", Bytes::new());
    limits.max_clients = config.max_tcp_connections.max(1);
    limits.idle_timeout = config.tcp_idle_timeout;
    limits.write_timeout = config.tcp_write_timeout;
    let limits = Arc::new(limits);
    let conns = TaskTracker::new();
    let per_conn = limits.clone();
    let trust_ecs: Arc<[Cidr]> = config.trust_ecs.clone().into();
    daemon::accept_loop(
        listener,
        limits,
        conns.clone(),
        cancel,
        move |conn: Conn| {
            let (zone, forwarder, limits) = (zone.clone(), forwarder.clone(), per_conn.clone());
            let (acl, trust_ecs, tls) = (acl.clone(), trust_ecs.clone(), tls.clone());
            async move {
                let forwarding = connection::Forwarding {
                    forwarder,
                    acl,
                    trust_ecs,
                };
                let stream = conn.stream;
                let peer = match stream.set_nodelay(true).and_then(|()| stream.peer_addr()) {
                    Ok(p) => p.ip(),
                    Err(e) => {
                        tracing::debug!(error = %e, "tcp connection gone at accept");
                        return;
                    }
                };
                let result = match tls {
                    None => {
                        connection::serve(
                            stream,
                            peer,
                            zone,
                            forwarding,
                            settings,
                            &limits,
                            conn.cancel,
                        )
                        .await
                    }
                    Some(acceptor) => {
                        match tls_handshake(&acceptor, stream, limits.idle_timeout, peer).await {
                            Some(tls_stream) => {
                                connection::serve(
                                    tls_stream,
                                    peer,
                                    zone,
                                    forwarding,
                                    settings,
                                    &limits,
                                    conn.cancel,
                                )
                                .await
                            }
                            None => Ok(()),
                        }
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "tcp connection ended");
                }
            }
        },
    )
    .await;
    conns.close();
    conns.wait().await;
}

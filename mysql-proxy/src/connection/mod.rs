//! One client connection, from accept to close: the PROXY header from a trusted balancer,
//! the per-IP pre-login cap, the greeting, TLS, the login ([`login`]), the backend's OK,
//! then the [`relay`] until either side closes, the session idles out, a write to the
//! client stalls, or the proxy closes it (moved database, revoked job, drain).
//!
//! The whole login, from accept to the OK, runs within `--connect-timeout` (the
//! pre-login timeout); the session after it is bounded by `--idle-timeout` and
//! `--write-timeout`.

pub mod login;
pub mod multiplex;
pub mod pinning;
pub mod prelogin;
pub mod relay;

use crate::proto::exchange::Exchange;
use ocean_core::drain::DrainWatch;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::BytesMut;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::auth::new_scramble;
use crate::config::Config;
use crate::proto::handshake::{greeting, is_ssl_request};
use crate::proto::reply::err_payload;
use crate::proto::{Decoder, Packet, LOGIN_PACKET_LIMIT};
use crate::route::registry::Registry;
use crate::route::Index;
use crate::upstream::BackendStream;
use crate::wire::{read_packet, read_proxy_header, write_packet, write_packet_within};
use login::{authenticate, Accepted, Deny, Transport};
use prelogin::{PreLogin, PreLoginSlot};
use relay::{relay, Counters, End, InitDbCheck, Timeouts};

const LOGIN: Decoder = Decoder::new(LOGIN_PACKET_LIMIT);

/// State every connection shares: the config, the table in use, open sessions, TLS.
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// The indexed table; `None` until the first one arrives. Read with `load_full()`:
    /// never a guard held across an await.
    pub(crate) index: ArcSwapOption<Index>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) prelogin: Arc<PreLogin>,
    /// TLS to clients; SIGHUP swaps it when `--client-ca` changes (the certificate is
    /// swapped inside, by its resolver). Each handshake takes the current one.
    pub(crate) tls: Option<ArcSwap<tokio_rustls::TlsAcceptor>>,
    /// TLS to backends; SIGHUP swaps it when `--backend-ca` changes (next backend login).
    pub(crate) backend_tls: Option<ArcSwap<tokio_rustls::TlsConnector>>,
    /// The key of caching_sha2_password full authentication over plain TCP (`--rsa-key`,
    /// or generated at start); `None` when full authentication is off. SIGHUP swaps it
    /// when the `--rsa-key` file changes; a login takes one key for all its steps.
    pub(crate) rsa: Option<ArcSwap<crate::auth::RsaKey>>,
    /// Round robin over replicas.
    pub(crate) rr: AtomicUsize,
    /// The greeting's server version (the last backend's unless `--server-version`).
    pub(crate) server_version: ArcSwap<String>,
    /// Client connections open, logins in progress included.
    pub(crate) connections: AtomicUsize,
    /// Backend connections kept between sessions.
    pub(crate) pool: crate::pool::Pool,
    /// What backend servers offered of MariaDB's extensions: what the greeting offers.
    pub(crate) backend_caps: crate::mariadb_caps::BackendCaps,
}

/// Capabilities the proxy offers clients (CLIENT_SSL is added when TLS is configured).
/// No compression, no LOCAL INFILE (the backend then refuses LOAD DATA LOCAL itself), no
/// query attributes or optional metadata (not every backend has them).
pub fn offered_capabilities() -> CapabilityFlags {
    CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_FOUND_ROWS
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB
        | CapabilityFlags::CLIENT_IGNORE_SPACE
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_INTERACTIVE
        | CapabilityFlags::CLIENT_IGNORE_SIGPIPE
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_CONNECT_ATTRS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CapabilityFlags::CLIENT_SESSION_TRACK
        | CapabilityFlags::CLIENT_DEPRECATE_EOF
}

/// A stream the relay can split into independently owned halves.
pub trait Halves: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type R: AsyncRead + Unpin + Send;
    type W: AsyncWrite + Unpin + Send;
    fn halves(self) -> (Self::R, Self::W);
    /// Ends the session's connection. By default the halves are dropped.
    fn close(r: Self::R, w: Self::W) {
        drop((r, w));
    }
}

impl Halves for TcpStream {
    type R = tokio::net::tcp::OwnedReadHalf;
    type W = tokio::net::tcp::OwnedWriteHalf;
    fn halves(self) -> (Self::R, Self::W) {
        self.into_split()
    }
    /// Without `forget`, dropping the write half calls `shutdown(SHUT_WR)` before the
    /// socket is closed: one syscall per session for the FIN that `close` sends anyway.
    fn close(r: Self::R, w: Self::W) {
        w.forget();
        drop(r);
    }
}

impl Halves for tokio_rustls::server::TlsStream<TcpStream> {
    type R = tokio::io::ReadHalf<Self>;
    type W = tokio::io::WriteHalf<Self>;
    fn halves(self) -> (Self::R, Self::W) {
        tokio::io::split(self)
    }
}

/// One audit line per login attempt and per proxy-initiated close.
fn audit(job: &str, ip: IpAddr, schema: &str, result: &str, reason: &str) {
    tracing::info!(target: "audit", job, ip = %ip, schema, result, reason, "mysql login");
}

fn login_metric(job: &str, result: &'static str) {
    metrics::counter!("ocean_mysql_logins_total", "job" => job.to_string(), "result" => result)
        .increment(1);
}

/// Serves one accepted connection to the end; `conn_id` is the greeting's connection id.
/// Serves one client: PROXY header, login, then the relay. `drain` (SIGTERM) ends the
/// relay once the session is at rest; a login in progress finishes first.
pub(crate) async fn serve(
    mut tcp: TcpStream,
    peer: SocketAddr,
    conn_id: u32,
    shared: Arc<Shared>,
    drain: DrainWatch,
) {
    // v4-mapped IPv6 peers (a dual-stack listener) are normalized once, here: every check
    // below (trusted proxies, pre-login cap, the job's IPs) sees the canonical address.
    let mut peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    if shared
        .config
        .trusted_proxies
        .iter()
        .any(|net| net.contains(peer.ip()))
    {
        let header =
            tokio::time::timeout(shared.config.connect_timeout, read_proxy_header(&mut tcp))
                .await
                .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()));
        match header {
            Ok(Some(client)) => peer = SocketAddr::new(client.ip().to_canonical(), client.port()),
            Ok(None) => {}
            Err(e) => {
                audit(
                    "",
                    peer.ip(),
                    "",
                    "error",
                    &format!("from trusted proxy {peer}: {e}"),
                );
                login_metric("", "bad_handshake");
                return;
            }
        }
    }
    let ip = peer.ip();
    let Some(prelogin) = shared.prelogin.try_acquire(ip) else {
        refuse_prelogin(tcp, ip, &shared).await;
        return;
    };
    // Latency only: a socket without TCP_NODELAY still works.
    let _nodelay_is_best_effort = tcp.set_nodelay(true);
    let scramble = new_scramble();
    let mut caps = offered_capabilities();
    if shared.tls.is_some() {
        caps |= CapabilityFlags::CLIENT_SSL;
    }
    let version = shared.server_version.load_full();
    let mariadb = shared.backend_caps.offered();
    let hello = greeting(
        conn_id,
        &version,
        &scramble,
        caps,
        mariadb,
        shared.config.default_auth.name(),
    );

    let login_deadline = shared.config.connect_timeout;
    let first = tokio::time::timeout(login_deadline, async {
        write_packet(&mut tcp, 0, &hello).await?;
        read_packet(&mut tcp, LOGIN).await
    })
    .await;
    let first = match first {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            audit("", ip, "", "error", &format!("no handshake response: {e}"));
            login_metric("", "bad_handshake");
            return;
        }
        Err(_) => {
            audit("", ip, "", "error", "handshake response timed out");
            login_metric("", "timeout");
            return;
        }
    };
    let start = Start {
        ip,
        scramble,
        offered: caps,
        offered_mariadb: mariadb,
        prelogin,
    };
    if is_ssl_request(&first.payload) {
        let Some(acceptor) = shared.tls.as_ref().map(ArcSwap::load_full) else {
            audit("", ip, "", "denied", "TLS requested but not configured");
            return;
        };
        let upgraded = tokio::time::timeout(login_deadline, async {
            let mut tls = acceptor.accept(tcp).await?;
            let p = read_packet(&mut tls, LOGIN).await?;
            Ok::<_, crate::wire::ReadError>((tls, p))
        })
        .await;
        match upgraded {
            Ok(Ok((tls, response))) => {
                // rustls verified any certificate presented against --client-ca.
                let client_cn = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|cert| crate::auth::certificate_cn(cert));
                session(
                    tls,
                    response,
                    Transport::Tls { client_cn },
                    start,
                    &shared,
                    drain,
                )
                .await
            }
            Ok(Err(e)) => {
                audit("", ip, "", "error", &format!("TLS handshake failed: {e}"));
                login_metric("", "bad_handshake");
            }
            Err(_) => {
                audit("", ip, "", "error", "TLS handshake timed out");
                login_metric("", "timeout");
            }
        }
    } else {
        session(tcp, first, Transport::Plain, start, &shared, drain).await
    }
}

/// What the greeting told the client, and the login's pre-login slot.
struct Start {
    ip: IpAddr,
    scramble: [u8; 20],
    offered: CapabilityFlags,
    /// MariaDB's extensions the greeting offered.
    offered_mariadb: MariadbCapabilities,
    prelogin: PreLoginSlot,
}

/// Answers a connection over `--max-prelogin-per-ip` with ERR 1040 instead of the greeting
/// (as a MySQL server over `max_connections` does), then closes it.
async fn refuse_prelogin(mut tcp: TcpStream, ip: IpAddr, shared: &Shared) {
    let limit = shared.config.max_prelogin_per_ip;
    audit(
        "",
        ip,
        "",
        "denied",
        &format!(
            "too many connections from this IP not logged in yet (--max-prelogin-per-ip {limit})"
        ),
    );
    login_metric("", "too_many_prelogin");
    let p = err_payload(
        1040,
        b"08004",
        &format!("Too many connections: {limit} logins from {ip} in progress already"),
    );
    // Best effort: the client may be gone, and the connection is closed either way.
    let _best_effort =
        tokio::time::timeout(shared.config.connect_timeout, write_packet(&mut tcp, 0, &p)).await;
}

/// The login after the handshake response, then the session until it ends.
async fn session<S: Halves>(
    mut stream: S,
    response: Packet,
    transport: Transport,
    start: Start,
    shared: &Arc<Shared>,
    drain: DrainWatch,
) {
    let Start {
        ip,
        scramble,
        offered,
        offered_mariadb,
        prelogin,
    } = start;
    let payload = response.payload;
    let seq = response.last_seq;
    let mut seq = seq.wrapping_add(1);
    let outcome = tokio::time::timeout(
        shared.config.connect_timeout,
        authenticate(
            &mut stream,
            ip,
            &mut seq,
            &payload,
            &scramble,
            (offered, offered_mariadb),
            transport,
            shared,
        ),
    )
    .await
    .unwrap_or_else(|_| {
        Err(Deny {
            code: 1105,
            state: *b"HY000",
            message: "ocean: login timed out".into(),
            job: String::new(),
            schema: String::new(),
            metric: "timeout",
            reason: "login timed out (client or backend)".into(),
        })
    });
    // The login is over either way: the IP's pre-login slot goes back.
    drop(prelogin);
    let accepted = match outcome {
        Ok(a) => a,
        Err(d) => {
            audit(&d.job, ip, &d.schema, "denied", &d.reason);
            // Only jobs in the table become label values (bounded cardinality).
            let known = !matches!(
                d.metric,
                "unknown_job" | "insecure" | "no_table" | "timeout" | "bad_handshake"
            );
            login_metric(if known { &d.job } else { "" }, d.metric);
            // The client may be gone; it is closed right after either way.
            let _best_effort = write_packet_within(
                &mut stream,
                seq,
                &err_payload(d.code, &d.state, &d.message),
                shared.config.write_timeout,
            )
            .await;
            return;
        }
    };
    let Accepted {
        job,
        schema,
        plugin,
        full_auth,
        route,
        backend,
        backend_addr,
        guard,
        pool_key,
        reused,
        permit,
        params,
        offered,
    } = accepted;
    // The backend's own OK (status flags, session state) goes to the client.
    if let Err(e) =
        write_packet_within(&mut stream, seq, &backend.ok, shared.config.write_timeout).await
    {
        audit(
            &job,
            ip,
            &schema,
            "error",
            &format!("client gone before OK: {e}"),
        );
        return;
    }
    audit(
        &job,
        ip,
        &schema,
        "ok",
        &format!(
            "plugin {}{} backend {backend_addr}{}",
            plugin.name(),
            full_auth.map_or(String::new(), |how| format!(" full authentication {how}")),
            if reused { " (pooled connection)" } else { "" }
        ),
    );
    login_metric(&job, "ok");
    if shared.config.server_version.is_none()
        && **shared.server_version.load() != backend.server_version
    {
        shared
            .server_version
            .store(Arc::new(backend.server_version.clone()));
    }

    let db = route.database.name.clone();
    let gauge =
        metrics::gauge!("ocean_mysql_sessions", "job" => job.clone(), "database" => db.clone());
    gauge.increment(1.0);
    let counters = Counters {
        to_backend: metrics::counter!("ocean_mysql_bytes_total", "job" => job.clone(), "database" => db.clone(), "direction" => "to_backend"),
        to_client: metrics::counter!("ocean_mysql_bytes_total", "job" => job.clone(), "database" => db.clone(), "direction" => "to_client"),
        queries: relay::QueryStats::new(&job, &db),
    };
    let check = SchemaCheck {
        shared,
        job: &job,
        ip,
        database: &db,
    };
    let (mut cr, mut cw) = stream.halves();
    let timeouts = Timeouts {
        idle: shared.config.idle_timeout,
        write: shared.config.write_timeout,
    };
    let token = &guard.closer.token;
    let max_idle = crate::pool::max_idle(&route.database);
    let deprecate_eof = backend.deprecate_eof;
    let mut drain = drain;
    // A multiplexed session gives the login's connection back at once and takes one per
    // command until it pins (see `multiplex`); the others keep theirs from the start.
    let start = match permit {
        None => Ok((backend, None, Exchange::new(deprecate_eof), BytesMut::new())),
        Some(permit) => {
            shared.pool.put_clean(pool_key.clone(), max_idle, backend);
            drop(permit);
            let opener = multiplex::Opener {
                shared: shared.clone(),
                key: pool_key.clone(),
                creds: route.credentials.clone(),
                client_caps: params.capabilities & offered,
                params,
                offered,
                max: max_idle,
            };
            match multiplex::run(
                &mut cr,
                &mut cw,
                &opener,
                &counters,
                timeouts,
                token,
                &mut drain,
                deprecate_eof,
            )
            .await
            {
                multiplex::Outcome::Ended(end) => Err(end),
                multiplex::Outcome::Pinned(p) => {
                    let multiplex::Pinned {
                        backend,
                        permit,
                        exchange,
                        pending,
                    } = *p;
                    Ok((backend, Some(permit), exchange, pending))
                }
            }
        }
    };
    let (end, held) = match start {
        Err(end) => (end, None),
        Ok((mut backend, permit, exchange, pending)) => {
            // The backend halves are borrowed, so that the connection can go back to the
            // pool.
            let ended = match &mut backend.stream {
                BackendStream::Plain(b) => {
                    let (br, bw) = b.split();
                    relay(
                        &mut cr, &mut cw, br, bw, &check, &counters, timeouts, token, drain,
                        exchange, pending,
                    )
                    .await
                }
                BackendStream::Tls(b) => {
                    let (br, bw) = tokio::io::split(b.as_mut());
                    relay(
                        &mut cr, &mut cw, br, bw, &check, &counters, timeouts, token, drain,
                        exchange, pending,
                    )
                    .await
                }
            };
            (ended.end, Some((backend, permit, ended.backend_at_rest)))
        }
    };
    gauge.decrement(1.0);
    S::close(cr, cw);
    // Only a session that ended cleanly, with nothing owed and no transaction open, gives
    // its connection back; anything else closes it (the server rolls back).
    if let Some((mut backend, permit, at_rest)) = held {
        if max_idle > 0 && at_rest && matches!(end, End::ClientQuit | End::ClientClosed) {
            let shared = shared.clone();
            tokio::spawn(async move {
                shared.pool.give_back(pool_key, max_idle, backend).await;
                // A multiplexed session's busy slot is free once the connection is idle.
                drop(permit);
            });
        } else if matches!(end, End::ClientQuit) {
            // Passed on as the client meant it: the server closes without an
            // aborted-client warning and rolls back what is open.
            crate::pool::quit(&mut backend.stream).await;
        }
    }
    let reason = match &end {
        End::Kicked => guard
            .closer
            .reason
            .get()
            .copied()
            .unwrap_or("closed by the proxy")
            .to_string(),
        other => other.reason(),
    };
    let label = match end {
        End::ClientClosed | End::ClientQuit => "client_closed",
        End::BackendClosed => "backend_closed",
        End::Idle => "idle",
        End::Kicked => "kicked",
        End::Drained => "drained",
        End::ClientError(_) => "client_error",
        End::WriteTimeout(_) => "write_timeout",
        End::BackendError(_) => "backend_error",
        End::Protocol(_) => "protocol",
    };
    if crate::metrics::still_listed(shared.index.load().as_deref(), &job, &db) {
        metrics::counter!("ocean_mysql_sessions_closed_total", "job" => job.clone(), "database" => db.clone(), "reason" => label).increment(1);
    }
    if !matches!(label, "client_closed") {
        tracing::info!(target: "audit", job = %job, ip = %ip, schema = %schema, result = "closed", reason = %reason, "mysql session closed");
    }
    drop(guard);
}

/// COM_INIT_DB is allowed only into the session's own database's schema, still granted.
struct SchemaCheck<'a> {
    shared: &'a Shared,
    job: &'a str,
    ip: IpAddr,
    database: &'a str,
}

impl InitDbCheck for SchemaCheck<'_> {
    fn check(&self, schema: &str) -> Result<(), (u16, [u8; 5], String)> {
        let denied = || {
            (
                1044,
                *b"42000",
                format!(
                    "Access denied for user '{}'@'{}' to database '{schema}'",
                    self.job, self.ip
                ),
            )
        };
        let index = self.shared.index.load_full().ok_or_else(denied)?;
        let entry = index.jobs.get(self.job).ok_or_else(denied)?;
        let route = index.route(entry, schema).map_err(|r| {
            audit(
                self.job,
                self.ip,
                schema,
                "denied",
                &format!("COM_INIT_DB: {}", r.reason()),
            );
            denied()
        })?;
        if route.database.name != self.database {
            audit(
                self.job,
                self.ip,
                schema,
                "denied",
                "COM_INIT_DB into another database",
            );
            return Err((
                1044,
                *b"42000",
                format!(
                    "ocean: schema '{schema}' is served by another database: open a new connection with it as the default schema"
                ),
            ));
        }
        Ok(())
    }
}

//! One client connection: greeting, optional TLS, login as a job, backend login, relay.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::access::{backends, Refusal, Route};
use crate::auth::{has_password, new_scramble, Plugin};
use crate::backend::{self, ClientParams};
use crate::packet::{err_payload, read_packet, write_packet, LOGIN_PACKET_LIMIT};
use crate::prelogin::PreLoginSlot;
use crate::registry::NewSession;
use crate::relay::{relay, Counters, End, InitDbCheck};
use crate::server::Shared;

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
}

impl Halves for TcpStream {
    type R = tokio::net::tcp::OwnedReadHalf;
    type W = tokio::net::tcp::OwnedWriteHalf;
    fn halves(self) -> (Self::R, Self::W) {
        self.into_split()
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

/// Serves one accepted connection to the end.
pub(crate) async fn serve(mut tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let mut peer = peer;
    if shared
        .config
        .trusted_proxies
        .iter()
        .any(|net| net.contains(&peer.ip().to_canonical()))
    {
        let header = tokio::time::timeout(
            shared.config.connect_timeout,
            crate::proxy_protocol::read_v2(&mut tcp),
        )
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
        match header {
            Ok(Some(client)) => peer = client,
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
    let ip = peer.ip().to_canonical();
    let Some(prelogin) = shared.prelogin.try_acquire(ip) else {
        refuse_prelogin(tcp, ip, &shared).await;
        return;
    };
    let _ = tcp.set_nodelay(true);
    let conn_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let scramble = new_scramble();
    let mut caps = offered_capabilities();
    if shared.tls.is_some() {
        caps |= CapabilityFlags::CLIENT_SSL;
    }
    let version = shared.server_version.load_full();
    let mut s1 = [0u8; 8];
    s1.copy_from_slice(&scramble[..8]);
    // mysql_common writes scramble part 2 as given: 12 bytes plus the NUL servers send.
    let mut s2 = scramble[8..].to_vec();
    s2.push(0);
    let hs = HandshakePacket::new(
        10,
        version.as_bytes(),
        conn_id,
        s1,
        Some(s2),
        caps,
        45, // utf8mb4_general_ci; the client's choice is passed to the backend
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(shared.config.default_auth.name().as_bytes()),
    );
    let mut greeting = Vec::with_capacity(96);
    hs.serialize(&mut greeting);

    let login_deadline = shared.config.connect_timeout;
    let first = tokio::time::timeout(login_deadline, async {
        write_packet(&mut tcp, 0, &greeting).await?;
        read_packet(&mut tcp, LOGIN_PACKET_LIMIT).await
    })
    .await;
    let (seq, payload) = match first {
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
    let ssl_request = payload.len() == 32
        && payload
            .get(..4)
            .map(|c| {
                u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & CapabilityFlags::CLIENT_SSL.bits()
                    != 0
            })
            .unwrap_or(false);
    if ssl_request {
        let Some(acceptor) = shared.tls.clone() else {
            audit("", ip, "", "denied", "TLS requested but not configured");
            return;
        };
        let upgraded = tokio::time::timeout(login_deadline, async {
            let mut tls = acceptor.accept(tcp).await?;
            let p = read_packet(&mut tls, LOGIN_PACKET_LIMIT).await?;
            Ok::<_, std::io::Error>((tls, p))
        })
        .await;
        match upgraded {
            Ok(Ok((tls, (seq, payload)))) => {
                login(
                    tls, ip, seq, payload, &scramble, caps, true, &shared, prelogin,
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
        login(
            tcp, ip, seq, payload, &scramble, caps, false, &shared, prelogin,
        )
        .await
    }
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
    let _ =
        tokio::time::timeout(shared.config.connect_timeout, write_packet(&mut tcp, 0, &p)).await;
}

/// What a failed login sends to the client.
struct Deny {
    code: u16,
    state: [u8; 5],
    message: String,
    job: String,
    schema: String,
    metric: &'static str,
    reason: String,
}

#[allow(clippy::too_many_arguments)]
async fn login<S: Halves>(
    mut stream: S,
    ip: IpAddr,
    seq: u8,
    payload: Vec<u8>,
    scramble: &[u8; 20],
    offered: CapabilityFlags,
    tls: bool,
    shared: &Arc<Shared>,
    prelogin: PreLoginSlot,
) {
    let mut seq = seq.wrapping_add(1);
    let outcome = tokio::time::timeout(
        shared.config.connect_timeout,
        authenticate(
            &mut stream,
            ip,
            &mut seq,
            &payload,
            scramble,
            offered,
            tls,
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
            let _ =
                write_packet(&mut stream, seq, &err_payload(d.code, &d.state, &d.message)).await;
            return;
        }
    };
    let Accepted {
        job,
        schema,
        plugin,
        route,
        backend,
        backend_addr,
        guard,
    } = accepted;
    // The backend's own OK (status flags, session state) goes to the client.
    if let Err(e) = write_packet(&mut stream, seq, &backend.ok).await {
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
        &format!("plugin {} backend {backend_addr}", plugin.name()),
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
    };
    let check = SchemaCheck {
        shared,
        job: &job,
        ip,
        database: &db,
    };
    let (cr, cw) = stream.halves();
    let idle = shared.config.idle_timeout;
    let token = &guard.closer.token;
    let end = match backend.stream {
        backend::BackendStream::Plain(b) => {
            let (br, bw) = b.into_split();
            relay(cr, cw, br, bw, &check, &counters, idle, token).await
        }
        backend::BackendStream::Tls(b) => {
            let (br, bw) = tokio::io::split(*b);
            relay(cr, cw, br, bw, &check, &counters, idle, token).await
        }
    };
    gauge.decrement(1.0);
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
        End::ClientClosed => "client_closed",
        End::BackendClosed => "backend_closed",
        End::Idle => "idle",
        End::Kicked => "kicked",
        End::ClientError(_) => "client_error",
        End::BackendError(_) => "backend_error",
        End::Protocol(_) => "protocol",
    };
    metrics::counter!("ocean_mysql_sessions_closed_total", "job" => job.clone(), "database" => db.clone(), "reason" => label).increment(1);
    if !matches!(label, "client_closed") {
        tracing::info!(target: "audit", job = %job, ip = %ip, schema = %schema, result = "closed", reason = %reason, "mysql session closed");
    }
    drop(guard);
}

struct Accepted {
    job: String,
    schema: String,
    plugin: Plugin,
    route: Route,
    backend: backend::Backend,
    backend_addr: SocketAddr,
    guard: crate::registry::SessionGuard,
}

#[allow(clippy::too_many_arguments)]
async fn authenticate<S: Halves>(
    stream: &mut S,
    ip: IpAddr,
    seq: &mut u8,
    payload: &[u8],
    scramble: &[u8; 20],
    offered: CapabilityFlags,
    tls: bool,
    shared: &Arc<Shared>,
) -> Result<Accepted, Deny> {
    let deny =
        |code, state: &[u8; 5], message: String, job: &str, schema: &str, metric, reason: &str| {
            Deny {
                code,
                state: *state,
                message,
                job: job.to_string(),
                schema: schema.to_string(),
                metric,
                reason: reason.to_string(),
            }
        };
    let bad = |reason: &str| {
        deny(
            1043,
            b"08S01",
            "Bad handshake".into(),
            "",
            "",
            "bad_handshake",
            reason,
        )
    };
    let resp: HandshakeResponse<'_> = ParseBuf(payload)
        .parse(())
        .map_err(|e| bad(&format!("unparsable handshake response: {e}")))?;
    let client_caps = resp.capabilities();
    if !client_caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        return Err(bad("client without protocol 4.1"));
    }
    if shared.config.require_tls && !tls {
        return Err(deny(
            3159,
            b"HY000",
            "Connections using insecure transport are prohibited: this proxy requires TLS".into(),
            &String::from_utf8_lossy(resp.user()),
            "",
            "insecure",
            "TLS required",
        ));
    }
    let job = String::from_utf8_lossy(resp.user()).into_owned();
    let schema = resp
        .db_name()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_default();

    // The auth exchange: verify the plugin the client chose when the proxy knows it,
    // else switch the client to the proxy's default plugin.
    let mut plugin = match resp.auth_plugin() {
        None => Some(Plugin::Native),
        Some(p) => Plugin::from_name(p.as_bytes()),
    };
    let mut auth_data = resp.scramble_buf().to_vec();
    // A client whose plugin is not the one the greeting named may answer with nothing
    // (libmariadb does: the scramble was meant for the other plugin); it waits for an
    // AuthSwitchRequest to its own plugin. Unknown plugins are switched to the default.
    let switch_to = match plugin {
        Some(p) if p != shared.config.default_auth && auth_data.is_empty() => Some(p),
        Some(_) => None,
        None => Some(shared.config.default_auth),
    };
    if let Some(p) = switch_to {
        let mut switch = vec![0xfe];
        switch.extend_from_slice(p.name().as_bytes());
        switch.push(0);
        switch.extend_from_slice(scramble);
        switch.push(0);
        write_packet(stream, *seq, &switch)
            .await
            .map_err(|e| bad(&format!("auth switch: {e}")))?;
        let (s, data) = read_packet(stream, LOGIN_PACKET_LIMIT)
            .await
            .map_err(|e| bad(&format!("auth switch response: {e}")))?;
        *seq = s.wrapping_add(1);
        plugin = Some(p);
        auth_data = data;
    }
    let plugin = plugin.unwrap_or_default();
    let using = if has_password(&auth_data) {
        "YES"
    } else {
        "NO"
    };
    let access_denied = |job: &str, reason: Refusal| {
        deny(
            1045,
            b"28000",
            format!("Access denied for user '{job}'@'{ip}' (using password: {using})"),
            job,
            &schema,
            reason.metric(),
            reason.reason(),
        )
    };
    // Not granted, not existing, or not usable (ro without ro credentials): the same 1044
    // to the client, the reason in the audit line.
    let db_denied = |reason: Refusal| {
        deny(
            1044,
            b"42000",
            format!(
                "Access denied for user '{job}'@'{ip}' to database '{}'",
                if schema.is_empty() { "(none)" } else { &schema }
            ),
            &job,
            &schema,
            reason.metric(),
            reason.reason(),
        )
    };

    let Some(index) = shared.index.load_full() else {
        return Err(deny(
            1105,
            b"HY000",
            "ocean: the proxy has no table yet".into(),
            &job,
            &schema,
            "no_table",
            "no table loaded",
        ));
    };
    let entry = index
        .admit(&job, ip, &shared.config.host_ips, |hashes| {
            has_password(&auth_data) && hashes.verify(plugin, scramble, &auth_data)
        })
        .map_err(|r| access_denied(&job, r))?;
    // caching_sha2_password clients that sent a scramble wait for "fast auth succeeded".
    if plugin == Plugin::CachingSha2 && has_password(&auth_data) {
        write_packet(stream, *seq, &[0x01, 0x03])
            .await
            .map_err(|e| bad(&format!("auth more data: {e}")))?;
        *seq = seq.wrapping_add(1);
    }

    let no_schema = schema.is_empty();
    // No schema: the session goes to the first usable database granted to the job, by
    // name, read-only when possible. Only `SELECT 1`-style use until COM_INIT_DB.
    let route = if no_schema {
        index.default_route(entry)
    } else {
        index.route(entry, &schema)
    }
    .map_err(db_denied)?;

    // Backend: replicas first for ro, then the primary.
    let addrs = backends(&route, &shared.rr);
    if addrs.is_empty() {
        return Err(deny(
            1429,
            b"HY000",
            format!("ocean: database for schema '{schema}' has no running primary"),
            &job,
            &schema,
            "no_backend",
            "no primary or replica in the table",
        ));
    }
    let params = ClientParams {
        capabilities: client_caps,
        collation: resp.collation(),
        max_packet_size: resp_max_packet(payload),
        attributes: resp.connect_attributes(),
    };
    let backend_schema = if no_schema {
        None
    } else {
        Some(schema.as_str())
    };
    let mut last_err = String::new();
    for addr in addrs {
        let Some(guard) = shared.registry.register(
            NewSession {
                job: &job,
                database: &route.database.name,
                access: route.access,
                backend: addr,
                peer: ip,
            },
            shared.config.max_connections_per_job,
        ) else {
            return Err(deny(
                1203,
                b"42000",
                format!(
                    "User {job} already has more than {} active connections",
                    shared.config.max_connections_per_job
                ),
                &job,
                &schema,
                "job_limit",
                "per-job connection limit",
            ));
        };
        match backend::login(
            addr,
            &route.credentials,
            backend_schema,
            &params,
            offered,
            shared.backend_tls.as_ref(),
        )
        .await
        {
            Ok(backend) => {
                return Ok(Accepted {
                    job,
                    schema,
                    plugin,
                    route,
                    backend,
                    backend_addr: addr,
                    guard,
                })
            }
            Err(e) => {
                tracing::warn!(job = %job, database = %route.database.name, backend = %addr, error = %e, "backend login failed");
                last_err = format!("backend {addr}: {e}");
            }
        }
    }
    Err(deny(
        1429,
        b"HY000",
        format!("ocean: cannot reach the database for schema '{schema}' (see the proxy's log)"),
        &job,
        &schema,
        "backend_error",
        &last_err,
    ))
}

/// The client's max packet size (bytes 4..8 of the response).
fn resp_max_packet(payload: &[u8]) -> u32 {
    match payload.get(4..8) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 16 * 1024 * 1024,
    }
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

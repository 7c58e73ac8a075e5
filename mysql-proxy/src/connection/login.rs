//! Authentication at the proxy: the client's handshake response, the auth exchange
//! (switch to a plugin the proxy checks, caching_sha2 fast auth), the IP + JOBNAME check,
//! the route, and the backend login. Everything a client may be refused for is decided
//! here and returned as a [`Deny`] for the caller to send.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use tracing::Instrument;

use super::{Halves, Shared};
use crate::auth::{has_password, Plugin};
use crate::pool::PoolKey;
use crate::proto::handshake::{
    self, auth_more_data, auth_switch, FAST_AUTH_SUCCESS, PERFORM_FULL_AUTH, REQUEST_PUBLIC_KEY,
};
use crate::proto::{Decoder, LOGIN_PACKET_LIMIT};
use crate::route::registry::{NewSession, SessionGuard};
use crate::route::{backends, Refusal, Route};
use crate::upstream::{self, ClientParams};
use crate::wire::{read_packet, write_packet};

/// How the client is connected.
pub(super) enum Transport {
    Plain,
    /// Inside TLS, with the subject CN of the client certificate rustls verified against
    /// `--client-ca` (`None`: no certificate, or one without a CN).
    Tls {
        client_cn: Option<String>,
    },
}

/// What a failed login sends to the client.
pub(super) struct Deny {
    pub(super) code: u16,
    pub(super) state: [u8; 5],
    pub(super) message: String,
    pub(super) job: String,
    pub(super) schema: String,
    pub(super) metric: &'static str,
    pub(super) reason: String,
}

/// A client logged in and its backend connection open.
pub(super) struct Accepted {
    pub(super) job: String,
    pub(super) schema: String,
    pub(super) plugin: Plugin,
    /// caching_sha2_password full authentication, and how the password came: `"rsa"`
    /// (plain TCP) or `"tls"`; `None` for a checked scramble or no password.
    pub(super) full_auth: Option<&'static str>,
    pub(super) route: Route,
    pub(super) backend: upstream::Backend,
    pub(super) backend_addr: SocketAddr,
    pub(super) guard: SessionGuard,
    /// Under which key the backend connection may go back to the pool.
    pub(super) pool_key: PoolKey,
    /// Whether `backend` came from the pool (no login to the backend this time).
    pub(super) reused: bool,
    /// A multiplexed session's busy slot for `backend` (see [`crate::pool`]).
    pub(super) permit: Option<crate::pool::BusyPermit>,
    /// What a backend login of this session sends (multiplexed sessions log in again).
    pub(super) params: ClientParams,
    pub(super) offered: CapabilityFlags,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn authenticate<S: Halves>(
    stream: &mut S,
    ip: IpAddr,
    seq: &mut u8,
    payload: &[u8],
    scramble: &[u8; 20],
    (offered, offered_mariadb): (CapabilityFlags, MariadbCapabilities),
    transport: Transport,
    shared: &Arc<Shared>,
) -> Result<Accepted, Deny> {
    let (tls, client_cn) = match transport {
        Transport::Plain => (false, None),
        Transport::Tls { client_cn } => (true, client_cn),
    };
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
    let resp = handshake::parse_response(payload).map_err(|e| bad(&e.to_string()))?;
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
        write_packet(stream, *seq, &auth_switch(p.name(), scramble))
            .await
            .map_err(|e| bad(&format!("auth switch: {e}")))?;
        let answer = read_packet(stream, Decoder::new(LOGIN_PACKET_LIMIT))
            .await
            .map_err(|e| bad(&format!("auth switch response: {e}")))?;
        *seq = answer.last_seq.wrapping_add(1);
        plugin = Some(p);
        auth_data = answer.payload.to_vec();
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
    // caching_sha2_password full authentication (`--caching-sha2-full-auth`): the
    // password itself, in clear inside TLS or RSA-encrypted over plain TCP. `None` when
    // the client sent none that decrypts: then no password matches.
    let full_auth = plugin == Plugin::CachingSha2
        && has_password(&auth_data)
        && shared.config.caching_sha2_full_auth;
    let cleartext = if full_auth {
        Some(full_authentication(stream, seq, scramble, tls, shared).await?)
    } else {
        None
    };
    let entry = index
        .admit(
            &job,
            ip,
            &shared.config.host_ips,
            |hashes| match &cleartext {
                Some(pw) => pw.as_ref().is_some_and(|pw| hashes.verify_cleartext(pw)),
                None => has_password(&auth_data) && hashes.verify(plugin, scramble, &auth_data),
            },
        )
        .map_err(|r| access_denied(&job, r))?;
    entry
        .check_cert(client_cn.as_deref())
        .map_err(|r| access_denied(&job, r))?;
    // caching_sha2_password clients that sent a scramble wait for "fast auth succeeded"
    // (after full authentication, the OK comes next).
    if plugin == Plugin::CachingSha2 && has_password(&auth_data) && !full_auth {
        write_packet(stream, *seq, &FAST_AUTH_SUCCESS)
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
        max_packet_size: handshake::max_packet_size(payload),
        attributes: resp.connect_attributes(),
        // Read only when offered: otherwise the greeting said "MySQL", and those bytes
        // are filler.
        mariadb: resp.mariadb_ext_capabilities() & offered_mariadb,
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
        let pool_key = PoolKey::new(
            &route.database.name,
            addr,
            &route.credentials,
            backend_schema,
            &params,
            offered,
            shared.backend_tls.is_some(),
        );
        // A multiplexed session counts against its server's pool_max from the start.
        let permit = if crate::pool::multiplexed(&route.database) {
            let max = crate::pool::max_idle(&route.database);
            match shared
                .pool
                .busy_permit(&pool_key, max, shared.config.pool_wait)
                .await
            {
                Some(p) => Some(p),
                None => {
                    return Err(deny(
                        1040,
                        b"08004",
                        "Too many connections".into(),
                        &job,
                        &schema,
                        "pool_wait",
                        "every pool_max backend connection busy for --pool-wait",
                    ))
                }
            }
        } else {
            None
        };
        let pooled = if crate::pool::max_idle(&route.database) > 0 {
            let pooled = shared.pool.take(&pool_key);
            crate::metrics::pool_login(&route.database.name, pooled.is_some());
            pooled
        } else {
            None
        };
        let (backend, reused) = match pooled {
            Some(backend) => (Ok(backend), true),
            None => {
                // The backend call runs in a child of the connection's span.
                let started = std::time::Instant::now();
                let span = tracing::debug_span!(
                    "backend",
                    backend.addr = %addr,
                    database = %route.database.name,
                    access = ?route.access
                );
                let login = upstream::login(
                    addr,
                    &route.credentials,
                    backend_schema,
                    &params,
                    offered,
                    shared.backend_tls.as_ref(),
                )
                .instrument(span)
                .await;
                shared.backend_caps.note(addr, &login);
                if login.is_ok() {
                    crate::metrics::backend_login(&route.database.name, started.elapsed());
                }
                (login, false)
            }
        };
        match backend {
            Ok(backend) => {
                return Ok(Accepted {
                    job,
                    schema,
                    plugin,
                    full_auth: full_auth.then_some(if tls { "tls" } else { "rsa" }),
                    route,
                    backend,
                    backend_addr: addr,
                    guard,
                    pool_key,
                    reused,
                    permit,
                    params,
                    offered,
                });
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

/// caching_sha2_password full authentication after a scramble: "perform full
/// authentication", then the password in clear (TLS), or over plain TCP an optional
/// "request public key" answered with the proxy's key, then the password RSA-encrypted.
/// Returns the password, `None` when what the client sent does not decrypt; `Err` for a
/// broken exchange (no key, a dropped client).
async fn full_authentication<S: Halves>(
    stream: &mut S,
    seq: &mut u8,
    scramble: &[u8; 20],
    tls: bool,
    shared: &Shared,
) -> Result<Option<Vec<u8>>, Deny> {
    let bad = |reason: String| Deny {
        code: 1043,
        state: *b"08S01",
        message: "Bad handshake".into(),
        job: String::new(),
        schema: String::new(),
        metric: "bad_handshake",
        reason,
    };
    write_packet(stream, *seq, &PERFORM_FULL_AUTH)
        .await
        .map_err(|e| bad(format!("perform full authentication: {e}")))?;
    let answer = read_packet(stream, Decoder::new(LOGIN_PACKET_LIMIT))
        .await
        .map_err(|e| bad(format!("full authentication: {e}")))?;
    *seq = answer.last_seq.wrapping_add(1);
    if tls {
        let mut pw = answer.payload.to_vec();
        if pw.last() == Some(&0) {
            pw.pop();
        }
        return Ok(Some(pw));
    }
    // One key for the whole exchange, even if SIGHUP swaps it meanwhile.
    let Some(key) = shared.rsa.as_ref().map(arc_swap::ArcSwap::load_full) else {
        return Err(bad(
            "full authentication over plain TCP without an RSA key".into()
        ));
    };
    let mut encrypted = answer.payload.to_vec();
    // A client that has the key already sends the password at once.
    if encrypted == REQUEST_PUBLIC_KEY {
        write_packet(stream, *seq, &auth_more_data(key.public_pem()))
            .await
            .map_err(|e| bad(format!("public key: {e}")))?;
        let answer = read_packet(stream, Decoder::new(LOGIN_PACKET_LIMIT))
            .await
            .map_err(|e| bad(format!("encrypted password: {e}")))?;
        *seq = answer.last_seq.wrapping_add(1);
        encrypted = answer.payload.to_vec();
    }
    Ok(key.decrypt_password(&encrypted, scramble))
}

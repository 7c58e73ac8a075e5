//! Commands the router answers itself: PING, ECHO, QUIT, SELECT 0, AUTH, HELLO, RESET,
//! CLIENT SETNAME/GETNAME/ID/INFO/SETINFO, INFO.
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncRead;

use super::{lower, Session};
use crate::command::CommandSpec;
use crate::connection::{Client, Flow};
use crate::metrics::Family;
use crate::proto::{self, err_reply, Protocol, Request};
use crate::route::Target;
use std::sync::atomic::Ordering;

impl Session {
    pub(super) async fn local<R: AsyncRead + Unpin + Send>(
        &mut self,
        c: &mut Client<R>,
        spec: &CommandSpec,
        req: Request,
    ) -> Flow {
        let started = Instant::now();
        let arg = |i: usize| req.args.get(i).cloned();
        let argc = req.args.len();
        let mut out = BytesMut::new();
        match spec.name {
            "ping" => match arg(1) {
                None if argc == 1 => proto::write_simple(&mut out, "PONG"),
                Some(m) if argc == 2 => proto::write_bulk(&mut out, &m),
                _ => {
                    proto::write_error(&mut out, "ERR wrong number of arguments for 'ping' command")
                }
            },
            "echo" => match arg(1) {
                Some(m) => proto::write_bulk(&mut out, &m),
                None => {
                    proto::write_error(&mut out, "ERR wrong number of arguments for 'echo' command")
                }
            },
            "quit" => {
                c.ready(Bytes::from_static(b"+OK\r\n")).await;
                return Flow::Close;
            }
            "select" => {
                if arg(1).as_deref() == Some(b"0") {
                    proto::write_simple(&mut out, "OK");
                } else {
                    proto::write_error(&mut out, "ERR SELECT is not allowed in cluster mode");
                }
            }
            "auth" => {
                let (user, pass) = match argc {
                    2 => (Bytes::from_static(b"default"), arg(1).unwrap_or_default()),
                    3 => (arg(1).unwrap_or_default(), arg(2).unwrap_or_default()),
                    _ => {
                        c.ready(err_reply("ERR syntax error")).await;
                        return Flow::Continue;
                    }
                };
                match self.check_auth(c, &user, &pass) {
                    Ok(()) => proto::write_simple(&mut out, "OK"),
                    Err(e) => proto::write_error(&mut out, e),
                }
            }
            "hello" => self.hello(c, &req, &mut out),
            "reset" => {
                c.proto = Protocol::Resp2;
                self.name = None;
                self.authed = c.shared.opts.password.is_none();
                c.set_authenticated(self.authed);
                proto::write_simple(&mut out, "RESET");
            }
            "client" => self.client_cmd(c, &req, &mut out),
            "info" => self.info(c, &mut out),
            "command" => {
                // The table's source of truth is the backend: pass COMMAND (and its
                // COUNT/INFO/DOCS/GETKEYS subcommands) to some node.
                let s = self.any_slot();
                c.forward(&req, Target::Slot(s), Family::Local, true).await;
                return Flow::Continue;
            }
            other => {
                proto::write_error(
                    &mut out,
                    &format!("ERR command '{other}' is not available through the router"),
                );
            }
        }
        let reply = out.freeze();
        c.shared.metrics.record(Family::Local, started, &reply);
        c.ready(reply).await;
        Flow::Continue
    }

    pub(super) fn check_auth<R: AsyncRead + Unpin + Send>(
        &mut self,
        c: &mut Client<R>,
        user: &[u8],
        pass: &[u8],
    ) -> Result<(), &'static str> {
        // The password now (SIGHUP may have rotated it): one load per AUTH.
        match c.shared.opts.password.as_ref().map(|p| p.current()) {
            None => Err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"),
            Some(p) if user == b"default" && constant_time_eq(pass, p.expose().as_bytes()) => {
                self.authed = true;
                c.set_authenticated(true);
                Ok(())
            }
            Some(_) => Err("WRONGPASS invalid username-password pair or user is disabled."),
        }
    }

    pub(super) fn hello<R: AsyncRead + Unpin + Send>(
        &mut self,
        c: &mut Client<R>,
        req: &Request,
        out: &mut BytesMut,
    ) {
        let mut proto = c.proto;
        let mut i = 1;
        if let Some(v) = req.args.get(1) {
            match &v[..] {
                b"2" => proto = Protocol::Resp2,
                b"3" => proto = Protocol::Resp3,
                _ => {
                    proto::write_error(out, "NOPROTO unsupported protocol version");
                    return;
                }
            }
            i = 2;
        }
        let mut name = None;
        while i < req.args.len() {
            let opt = req.args.get(i).map(|a| lower(a)).unwrap_or_default();
            match opt.as_str() {
                "auth" if i + 2 < req.args.len() => {
                    let user = req.args.get(i + 1).cloned().unwrap_or_default();
                    let pass = req.args.get(i + 2).cloned().unwrap_or_default();
                    if let Err(e) = self.check_auth(c, &user, &pass) {
                        proto::write_error(out, e);
                        return;
                    }
                    i += 3;
                }
                "setname" if i + 1 < req.args.len() => {
                    name = req.args.get(i + 1).cloned();
                    i += 2;
                }
                _ => {
                    proto::write_error(out, &format!("ERR Syntax error in HELLO option '{opt}'"));
                    return;
                }
            }
        }
        if !self.authed {
            proto::write_error(
                out,
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
            return;
        }
        if name.is_some() {
            self.name = name;
        }
        c.proto = proto;
        proto::write_map_header(out, 7, proto);
        proto::write_bulk(out, b"server");
        proto::write_bulk(out, b"redis");
        proto::write_bulk(out, b"version");
        proto::write_bulk(out, b"7.2.0");
        proto::write_bulk(out, b"proto");
        proto::write_integer(out, if proto == Protocol::Resp3 { 3 } else { 2 });
        proto::write_bulk(out, b"id");
        proto::write_integer(out, self.id as i64);
        proto::write_bulk(out, b"mode");
        proto::write_bulk(out, b"standalone");
        proto::write_bulk(out, b"role");
        proto::write_bulk(out, b"master");
        proto::write_bulk(out, b"modules");
        proto::write_array_header(out, 0);
    }

    pub(super) fn client_cmd<R: AsyncRead + Unpin + Send>(
        &mut self,
        c: &mut Client<R>,
        req: &Request,
        out: &mut BytesMut,
    ) {
        let sub = req.args.get(1).map(|a| lower(a)).unwrap_or_default();
        match sub.as_str() {
            "setname" if req.args.len() == 3 => {
                let name = req.args.get(2).cloned().unwrap_or_default();
                if name.iter().any(|&b| b <= b' ' || b > b'~') {
                    proto::write_error(
                        out,
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                } else {
                    self.name = if name.is_empty() { None } else { Some(name) };
                    proto::write_simple(out, "OK");
                }
            }
            "getname" => match &self.name {
                Some(n) => proto::write_bulk(out, n),
                None => proto::write_null(out, c.proto),
            },
            "id" => proto::write_integer(out, self.id as i64),
            "setinfo" => proto::write_simple(out, "OK"),
            "info" => {
                let name = self
                    .name
                    .as_ref()
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .unwrap_or_default();
                let resp = if c.proto == Protocol::Resp3 { 3 } else { 2 };
                let line = format!("id={} name={} db=0 resp={resp}\n", self.id, name);
                proto::write_bulk(out, line.as_bytes());
            }
            _ => proto::write_error(
                out,
                &format!(
                    "ERR CLIENT {} is not supported by the router",
                    sub.to_ascii_uppercase()
                ),
            ),
        }
    }

    pub(super) fn info<R: AsyncRead + Unpin + Send>(&self, c: &mut Client<R>, out: &mut BytesMut) {
        let cluster = &c.shared.cluster;
        let map = cluster.map();
        let masters: Vec<String> = map.masters.iter().map(|n| n.addr.to_string()).collect();
        let text = format!(
            "# Server\r\nredis_version:7.2.0\r\nredis_mode:standalone\r\nproxy:ocean-redis-router\r\n\r\n\
             # Proxy\r\ncluster_name:{}\r\nmasters:{}\r\nmaster_addrs:{}\r\nreplicas_read:{}\r\nslots_covered:{}\r\n\
             slot_map_refreshes:{}\r\nconnected_clients:{}\r\n",
            cluster.name,
            masters.len(),
            masters.join(","),
            map.replicas.iter().map(Vec::len).sum::<usize>(),
            map.covered(),
            cluster.refreshes.load(Ordering::Relaxed),
            cluster.clients.load(Ordering::Relaxed),
        );
        if c.proto == Protocol::Resp3 {
            proto::write_verbatim(out, b"txt", text.as_bytes(), c.proto);
        } else {
            proto::write_bulk(out, text.as_bytes());
        }
    }
}

/// Compares a client's password with ours without returning early at the first
/// differing byte (the length is not hidden).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

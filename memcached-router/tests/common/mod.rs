//! Shared helpers for the router's end-to-end tests: a router in front of harness
//! memcached servers, and a raw socket client for byte-exact replies.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ocean_memcached_router::config::{PoolSpec, ReplicaSetSpec, ServerSpec, Settings};
use ocean_memcached_router::ketama::{server_name, KeyHash};
use ocean_memcached_router::{Config, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A pool spec over `sets` of server addresses (weight 1, twemproxy names).
pub fn pool(sets: &[Vec<SocketAddr>], hash: KeyHash) -> PoolSpec {
    pool_weighted(
        &sets
            .iter()
            .map(|s| s.iter().map(|a| (*a, 1)).collect())
            .collect::<Vec<_>>(),
        hash,
    )
}

pub fn pool_weighted(sets: &[Vec<(SocketAddr, u32)>], hash: KeyHash) -> PoolSpec {
    PoolSpec {
        name: "test".into(),
        hash,
        placement: Default::default(),
        replica_sets: sets
            .iter()
            .enumerate()
            .map(|(i, s)| ReplicaSetSpec {
                name: format!("set{i}"),
                servers: s
                    .iter()
                    .map(|(a, w)| ServerSpec {
                        addr: *a,
                        name: server_name(*a),
                        weight: *w,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// A running router; cancelled (and waited for) on drop of the token.
pub struct Router {
    pub addr: SocketAddr,
    pub running: Option<Running>,
    pub cancel: CancellationToken,
}

impl Router {
    pub async fn start(pool: PoolSpec, settings: Settings) -> Result<Router> {
        let mut config = Config::standalone("127.0.0.1:0".parse()?, pool);
        config.settings = settings;
        let cancel = CancellationToken::new();
        let running = ocean_memcached_router::start(config, cancel.clone()).await?;
        Ok(Router {
            addr: running.listen_addr.context("no listen addr")?,
            running: Some(running),
            cancel,
        })
    }

    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(r) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(10), r.wait())
                .await
                .expect("router stops within 10 s");
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A raw memcached text-protocol client.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Result<Raw> {
        Ok(Raw {
            stream: TcpStream::connect(addr).await?,
        })
    }

    /// Sends `req` and reads until the reply ends with one of `ends`.
    pub async fn call(&mut self, req: &[u8], ends: &[&[u8]]) -> Result<Vec<u8>> {
        self.stream.write_all(req).await?;
        self.read_until(ends).await
    }

    pub async fn read_until(&mut self, ends: &[&[u8]]) -> Result<Vec<u8>> {
        let mut reply = Vec::new();
        tokio::time::timeout(IO_TIMEOUT, async {
            while !ends.iter().any(|e| reply.ends_with(e)) {
                if self.stream.read_buf(&mut reply).await? == 0 {
                    bail!(
                        "connection closed after {:?}",
                        String::from_utf8_lossy(&reply)
                    );
                }
            }
            Ok(())
        })
        .await
        .with_context(|| format!("reply timed out: {:?}", String::from_utf8_lossy(&reply)))??;
        Ok(reply)
    }

    /// Sends `req` and expects exactly `want` (read until that many bytes arrived).
    pub async fn expect(&mut self, req: &[u8], want: &[u8]) -> Result<()> {
        self.stream.write_all(req).await?;
        let mut reply = Vec::new();
        tokio::time::timeout(IO_TIMEOUT, async {
            while reply.len() < want.len() {
                if self.stream.read_buf(&mut reply).await? == 0 {
                    break;
                }
            }
            Ok::<_, std::io::Error>(())
        })
        .await
        .context("reply timed out")??;
        if reply != want {
            bail!(
                "request {:?}\n  got  {:?}\n  want {:?}",
                String::from_utf8_lossy(req),
                String::from_utf8_lossy(&reply),
                String::from_utf8_lossy(want)
            );
        }
        Ok(())
    }

    /// Reads until the peer closes; returns what came before.
    pub async fn read_to_close(&mut self) -> Result<Vec<u8>> {
        let mut reply = Vec::new();
        tokio::time::timeout(IO_TIMEOUT, async {
            loop {
                match self.stream.read_buf(&mut reply).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .context("the connection was not closed")?;
        Ok(reply)
    }
}

/// `get key` straight from a server: the value, if it holds the key.
pub async fn direct_get(addr: SocketAddr, key: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut c = Raw::connect(addr).await?;
    let mut req = b"get ".to_vec();
    req.extend_from_slice(key);
    req.extend_from_slice(b"\r\n");
    let reply = c.call(&req, &[b"END\r\n", b"ERROR\r\n"]).await?;
    if !reply.starts_with(b"VALUE ") {
        return Ok(None);
    }
    let nl = reply
        .iter()
        .position(|&b| b == b'\n')
        .context("no newline")?;
    Ok(Some(reply[nl + 1..reply.len() - 7].to_vec()))
}

/// A `stats` value of a server.
pub async fn stat(addr: SocketAddr, name: &str) -> Result<u64> {
    let mut c = Raw::connect(addr).await?;
    let reply = c.call(b"stats\r\n", &[b"END\r\n"]).await?;
    let text = String::from_utf8_lossy(&reply);
    for line in text.lines() {
        let mut parts = line.split(' ');
        if parts.next() == Some("STAT") && parts.next() == Some(name) {
            return Ok(parts.next().context("no value")?.parse()?);
        }
    }
    bail!("no stat {name} in {text}")
}

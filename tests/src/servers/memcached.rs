//! `memcached` on a free loopback port.

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::process::{NotReady, ServerProcess};
use super::{find_binary, free_port, is_root, loopback, server_dir, READY_TIMEOUT, START_ATTEMPTS};

/// A `memcached -l 127.0.0.1 -p PORT -U 0 -m 64` (TCP only, 64 MiB), plus `-u root` when
/// the tests run as root, which memcached otherwise refuses.
///
/// Dropping it stops the server (SIGTERM, then SIGKILL) and removes its directory.
#[derive(Debug)]
pub struct Memcached {
    // Field order matters: the process is stopped before its directory is removed.
    process: ServerProcess,
    addr: SocketAddr,
    dir: TempDir,
}

impl Memcached {
    /// Starts memcached on a free port and waits until it answers `version`.
    ///
    /// # Errors
    /// When `memcached` is not installed or does not answer within 20 s (the error quotes
    /// its output).
    pub async fn start() -> Result<Self> {
        Self::start_with::<&str>(&[]).await
    }

    /// Like [`start`](Self::start) with extra arguments appended, e.g. `&["-I", "2m"]`.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub async fn start_with<S: AsRef<OsStr>>(extra_args: &[S]) -> Result<Self> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::spawn(loopback(free_port()?), extra_args).await {
                Ok(m) => return Ok(m),
                Err(NotReady::AddrInUse(e)) => last = Some(e),
                Err(NotReady::Failed(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("memcached: no start attempt made")))
    }

    /// Starts memcached on exactly `addr` (a loopback address the test chose, e.g.
    /// `127.0.0.55:11211` to exercise the default port), without retrying elsewhere.
    ///
    /// # Errors
    /// As [`start`](Self::start), and when `addr` is taken.
    pub async fn start_at(addr: SocketAddr) -> Result<Self> {
        Self::spawn::<&str>(addr, &[])
            .await
            .map_err(NotReady::into_error)
    }

    async fn spawn<S: AsRef<OsStr>>(addr: SocketAddr, extra_args: &[S]) -> Result<Self, NotReady> {
        let program = find_binary("memcached", "memcached").map_err(NotReady::Failed)?;
        let dir = server_dir("ocean-memcached-").map_err(NotReady::Failed)?;
        let mut args: Vec<OsString> = [
            "-l",
            &addr.ip().to_string(),
            "-p",
            &addr.port().to_string(),
            "-U",
            "0",
            "-m",
            "64",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        if is_root() {
            args.push("-u".into());
            args.push("root".into());
        }
        args.extend(extra_args.iter().map(|a| a.as_ref().to_owned()));
        let mut process = ServerProcess::spawn(
            format!("memcached {addr}"),
            program,
            args,
            dir.path(),
            dir.path().join("memcached.log"),
            Vec::new(),
        )
        .map_err(NotReady::Failed)?;
        wait_memcached_ready(&mut process, addr).await?;
        Ok(Memcached { process, addr, dir })
    }

    /// The address clients connect to (`127.0.0.1:port`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts memcached again on the same port after [`stop`](Self::stop) or
    /// [`kill`](Self::kill) (empty, as memcached keeps nothing).
    ///
    /// # Errors
    /// When it is still running or does not come back (its port may have been taken).
    pub async fn restart(&mut self) -> Result<()> {
        self.process.respawn()?;
        wait_memcached_ready(&mut self.process, self.addr)
            .await
            .map_err(NotReady::into_error)
    }

    /// The server's temp directory (holds `memcached.log`, its stdout and stderr).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

super::impl_process_controls!(Memcached);

async fn wait_memcached_ready(
    process: &mut ServerProcess,
    addr: SocketAddr,
) -> Result<(), NotReady> {
    process
        .wait_ready(READY_TIMEOUT, move || async move {
            let mut stream = TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            stream.write_all(b"version\r\n").await?;
            let mut reply = Vec::new();
            while !reply.ends_with(b"\r\n") {
                if stream.read_buf(&mut reply).await? == 0 {
                    bail!("{addr} closed the connection");
                }
            }
            if !reply.starts_with(b"VERSION ") {
                bail!("version answered {:?}", String::from_utf8_lossy(&reply));
            }
            Ok(())
        })
        .await
}

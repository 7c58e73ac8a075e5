//! The descriptor-exhaustion harness of the abuse tests (issue 18): a daemon run as a child
//! process under `ulimit -n 256`, flooded with 400 connections, watched from `/proc`.
//!
//! The child is the test binary itself, re-run with libtest's `--exact` filter on one test
//! that does nothing unless an environment variable tells it what to start; that test starts
//! the daemon and prints `LISTEN <addr> ...`. Running the daemon in a child process is what
//! lets the limit apply to it alone, and lets `/proc/<pid>` measure only the daemon's CPU.
//!
//! The pieces, in the order a test uses them: [`LimitedChild::spawn`], [`flood`],
//! [`settle`] (wait until the daemon stops accepting), [`LimitedChild::cpu_ticks_over`]
//! (the no-spinning check), [`served_again`] (after the flood is gone).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::time::Instant;

use crate::servers::proc_stat;

/// The descriptor limit the abuse tests give a daemon (`ulimit -n`).
pub const NOFILE: u64 = 256;

/// Connections in the flood: more than [`NOFILE`], fewer than the listen backlog.
pub const FLOOD: usize = 400;

/// A daemon running as a child process of the test binary under `ulimit -n`, killed on drop.
pub struct LimitedChild {
    child: Child,
    /// The child's pid (the shell `exec`s the test binary, so this is the daemon's process).
    pub pid: u32,
    /// The address after `LISTEN ` in the child's output.
    pub addr: SocketAddr,
    /// The words after the address on the `LISTEN` line (a daemon may report more there).
    pub extra: Vec<String>,
}

impl LimitedChild {
    /// Re-runs this test binary's test `entry` under `sh -c 'ulimit -n NOFILE; exec ...'`
    /// with `env` set, and waits up to 30 s for its `LISTEN <addr> ...` line.
    ///
    /// dash's and bash's `ulimit -n` set the soft and the hard limit. The child's stderr is
    /// dropped; its stdout is read up to the `LISTEN` line only.
    ///
    /// Errors: the child cannot be spawned, exits before listening, or does not listen in
    /// time.
    pub async fn spawn(entry: &str, env: &[(&str, String)]) -> Result<LimitedChild> {
        let exe = std::env::current_exe()?;
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {NOFILE} && exec \"$0\" \"$@\""))
            .arg(&exe)
            .args([entry, "--exact", "--nocapture", "--test-threads=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let pid = child.id().context("child pid")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let (addr, extra) = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                // libtest prints `test <entry> ... ` before the test's output.
                if let Some((_, rest)) = line.split_once("LISTEN ") {
                    let mut words = rest.split_whitespace();
                    let addr: SocketAddr = words.next().context("no address")?.parse()?;
                    return Ok((addr, words.map(str::to_string).collect()));
                }
            }
            bail!("the child daemon exited before listening")
        })
        .await
        .context("the child daemon did not start")??;
        Ok(LimitedChild {
            child,
            pid,
            addr,
            extra,
        })
    }

    /// The child's `Max open files` line of `/proc/<pid>/limits`, split in words: the soft
    /// limit is word 3, the hard limit word 4.
    pub fn nofile_line(&self) -> Result<Vec<String>> {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid))?;
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .context("no open files limit")?;
        Ok(line.split_whitespace().map(str::to_string).collect())
    }

    /// CPU ticks (user + system, `/proc/<pid>/stat`) the child used over the next `d`.
    pub async fn cpu_ticks_over(&self, d: Duration) -> Result<u64> {
        let t0 = proc_stat(self.pid)
            .context("the child daemon is gone")?
            .cpu_ticks;
        tokio::time::sleep(d).await;
        let t1 = proc_stat(self.pid)
            .context("the child daemon is gone")?
            .cpu_ticks;
        Ok(t1.saturating_sub(t0))
    }

    /// Descriptors the child holds open (entries of `/proc/<pid>/fd`).
    pub fn open_fds(&self) -> Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.pid))?.count())
    }

    /// Kills the child and reaps it.
    pub async fn kill(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// Opens `n` TCP connections to `addr` (the listen backlog completes them whether or not the
/// daemon accepts them) and returns them, to be dropped when the flood should end.
pub async fn flood(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(TcpStream::connect(addr).await?);
    }
    Ok(streams)
}

/// Waits until accepting has hit the limit: polls `count` (the daemon's connection count, or
/// anything that grows while it accepts) every 300 ms until it is the same twice in a row
/// and over 100. Returns that count.
///
/// Errors: `count` fails, or it has not settled within 10 s.
pub async fn settle(mut count: impl AsyncFnMut() -> Result<usize>) -> Result<usize> {
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let n = count().await?;
        if n == last && n > 100 {
            return Ok(n);
        }
        last = n;
        if Instant::now() >= deadline {
            bail!("connections never settled: {n}");
        }
    }
}

/// After the flood has closed: retries `attempt` (each within 2 s, 100 ms apart) until it
/// succeeds. Returns how long that took.
///
/// Errors: no attempt succeeded within 15 s (the last failure is in the message).
pub async fn served_again(mut attempt: impl AsyncFnMut() -> Result<()>) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let last = match tokio::time::timeout(Duration::from_secs(2), attempt()).await {
            Ok(Ok(())) => return Ok(start.elapsed()),
            other => other,
        };
        if start.elapsed() >= Duration::from_secs(15) {
            bail!("no new client served after the flood: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! One server child process: spawn, readiness, log tail, signals, stop on drop.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::find_binary;

/// Time a server gets to exit after SIGTERM before it is killed with SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Lines of each log file quoted in error messages.
const LOG_TAIL_LINES: usize = 30;

/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(25);

/// Longest a single readiness probe may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A server process owned by a test. Dropping it stops the process (SIGTERM, then
/// SIGKILL after [`STOP_GRACE`]) and reaps it.
///
/// Signals are sent by pid only while the child has not been reaped, so the pid cannot
/// have been reused by another process.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    dir: PathBuf,
    output_log: PathBuf,
    other_logs: Vec<PathBuf>,
    child: Option<Child>,
    pid: u32,
}

/// Why a server did not become ready.
#[derive(Debug)]
pub(crate) enum NotReady {
    /// The process exited and its log says its address was taken: retry on other ports.
    AddrInUse(anyhow::Error),
    /// Anything else: give up.
    Failed(anyhow::Error),
}

impl NotReady {
    pub(crate) fn into_error(self) -> anyhow::Error {
        match self {
            NotReady::AddrInUse(e) | NotReady::Failed(e) => e,
        }
    }
}

impl ServerProcess {
    /// Spawns `program args` in `dir`, stdout and stderr appended to `output_log`.
    /// `other_logs` are files the server writes itself; they are quoted in errors too.
    ///
    /// # Errors
    /// When the log cannot be opened or the program cannot be executed.
    pub fn spawn(
        name: impl Into<String>,
        program: PathBuf,
        args: Vec<OsString>,
        dir: &Path,
        output_log: PathBuf,
        other_logs: Vec<PathBuf>,
    ) -> Result<Self> {
        let mut process = ServerProcess {
            name: name.into(),
            program,
            args,
            dir: dir.to_path_buf(),
            output_log,
            other_logs,
            child: None,
            pid: 0,
        };
        process.respawn()?;
        Ok(process)
    }

    /// Starts the same command again (same ports, same directory) after [`stop`](Self::stop)
    /// or [`kill`](Self::kill). The caller waits for readiness itself.
    ///
    /// # Errors
    /// When the process is still running or cannot be spawned.
    pub fn respawn(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("{} (pid {}) is still running", self.name, self.pid);
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.output_log)
            .with_context(|| format!("opening {}", self.output_log.display()))?;
        let log_err = log.try_clone()?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("spawning {}", self.program.display()))?;
        self.pid = child.id();
        self.child = Some(child);
        Ok(())
    }

    /// [`respawn`](Self::respawn) with `extra` options added to the command line (and
    /// kept for later restarts), e.g. to turn on a feature the server reads only at start.
    ///
    /// # Errors
    /// As [`respawn`](Self::respawn).
    pub fn respawn_with_args(&mut self, extra: &[OsString]) -> Result<()> {
        if self.is_running() {
            bail!("{} (pid {}) is still running", self.name, self.pid);
        }
        self.args.extend_from_slice(extra);
        self.respawn()
    }

    /// The server's name, as used in messages (`redis-server 127.0.0.1:6379`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Pid of the process last spawned (it may have exited since).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.exit_status(), Ok(None))
    }

    /// `Some(status)` once the process has exited, `None` while it runs.
    ///
    /// # Errors
    /// When it was never started or `waitpid` fails.
    pub fn exit_status(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => Err(anyhow!("{} is not running", self.name)),
        }
    }

    /// The last lines of the server's output and log files, for error messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for path in std::iter::once(&self.output_log).chain(&self.other_logs) {
            let text = match std::fs::read(path) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(_) => continue,
            };
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            out.push_str(&format!(
                "--- {} (last {} lines)\n",
                path.display(),
                lines.len() - start
            ));
            for line in &lines[start..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        if out.is_empty() {
            out.push_str("(no log output)\n");
        }
        out
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`, ...) with `kill(1)`.
    ///
    /// # Errors
    /// When the process is not running or `kill` fails.
    pub fn signal(&mut self, signal: &str) -> Result<()> {
        if !self.is_running() {
            bail!("{} (pid {}) is not running", self.name, self.pid);
        }
        send_signal(self.pid, signal)
    }

    /// Freezes the process with SIGSTOP: its sockets stay open but it answers nothing,
    /// like a hung backend. Undo with [`resume`](Self::resume); stop and drop work on a
    /// paused process too.
    ///
    /// # Errors
    /// When the process is not running or `kill` fails.
    pub fn pause(&mut self) -> Result<()> {
        self.signal("STOP")
    }

    /// Continues a process frozen by [`pause`](Self::pause).
    ///
    /// # Errors
    /// When the process is not running or `kill` fails.
    pub fn resume(&mut self) -> Result<()> {
        self.signal("CONT")
    }

    /// Stops the process gracefully: SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL;
    /// always reaps it. Does nothing when it is not running. Blocks the calling thread.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        match child.try_wait() {
            Ok(None) => {}
            Ok(Some(_)) => return,
            Err(_) => return reap(child),
        }
        if send_signal(self.pid, "TERM").is_ok() {
            // A paused process only acts on SIGTERM once continued. Failure is harmless:
            // the SIGKILL below ends it either way.
            let _ = send_signal(self.pid, "CONT");
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(_)) => return,
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    Err(_) => break,
                }
            }
        }
        reap(child);
    }

    /// Kills the process at once with SIGKILL, like a crash, and reaps it.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            reap(child);
        }
    }

    /// Polls `probe` until it succeeds, the process exits, or `timeout` passes.
    ///
    /// An exit whose log mentions "already in use" is reported as
    /// [`NotReady::AddrInUse`] so the caller can retry on other ports.
    pub(crate) async fn wait_ready<F, Fut>(
        &mut self,
        timeout: Duration,
        mut probe: F,
    ) -> std::result::Result<(), NotReady>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let started = Instant::now();
        let mut last_error = anyhow!("no probe ran");
        loop {
            match self.exit_status() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    let log = self.log_tail();
                    let err = anyhow!(
                        "{} exited during startup with {status}; log:\n{log}",
                        self.name
                    );
                    return Err(if log.to_ascii_lowercase().contains("already in use") {
                        NotReady::AddrInUse(err)
                    } else {
                        NotReady::Failed(err)
                    });
                }
                Err(e) => return Err(NotReady::Failed(e)),
            }
            match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last_error = e,
                Err(_) => last_error = anyhow!("probe timed out after {PROBE_TIMEOUT:?}"),
            }
            if started.elapsed() > timeout {
                return Err(NotReady::Failed(anyhow!(
                    "{} (pid {}) not ready after {timeout:?}: {last_error:#}; log:\n{}",
                    self.name,
                    self.pid,
                    self.log_tail()
                )));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGKILL and wait. Errors are ignored on purpose: `kill` fails only when the process
/// already exited, and `wait` then returns its status or an error we cannot act on.
fn reap(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn send_signal(pid: u32, signal: &str) -> Result<()> {
    let kill = find_binary("kill", "procps")?;
    let status = Command::new(kill)
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed with {status}");
    }
    Ok(())
}

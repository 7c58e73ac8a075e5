//! One server child process: spawn, readiness, log tail, signals, stop on drop, and a
//! watchdog that kills the server when the test process dies (see [`spawn_guarded`]).

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::find_binary;

/// Time a server gets to exit after SIGTERM before it is killed with SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long [`ServerProcess::pause`] waits for every thread to stop after SIGSTOP.
const PAUSE_WAIT: Duration = Duration::from_secs(5);

/// Lines of each log file quoted in error messages.
const LOG_TAIL_LINES: usize = 30;

/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(25);

/// Longest a single readiness probe may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A server process owned by a test. Dropping it stops the process (SIGTERM, then
/// SIGKILL after [`STOP_GRACE`]), kills anything left in its process group, and reaps it.
/// If the test process dies instead (SIGKILL, a CI timeout), the server's watchdog kills
/// the process group (see [`spawn_guarded`]).
///
/// Signals are sent by pid (and to the process group, whose id is the server's pid) only
/// while the server has not been reaped, so the pid cannot have been reused by another
/// process: whether the server still runs is read from `/proc/<pid>/stat`, which does not
/// reap it, and it is reaped only when the handle is done with it (`stop`, `kill`, or an
/// exit seen by [`exit_status`](Self::exit_status)).
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    dir: PathBuf,
    output_log: PathBuf,
    other_logs: Vec<PathBuf>,
    /// The running (or exited but unreaped) server; `None` once reaped.
    child: Option<Child>,
    /// Armed while `child` is `Some`.
    watchdog: Option<Watchdog>,
    /// How the last server process ended, once reaped.
    exited: Option<ExitStatus>,
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
            watchdog: None,
            exited: None,
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
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let (child, watchdog) = spawn_guarded(&mut command)
            .with_context(|| format!("spawning {}", self.program.display()))?;
        self.pid = child.id();
        self.child = Some(child);
        self.watchdog = Some(watchdog);
        self.exited = None;
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

    /// Pid of the watchdog guarding the server (see [`spawn_guarded`]), while the server
    /// has not been reaped.
    pub fn watchdog_pid(&self) -> Option<u32> {
        self.watchdog.as_ref().map(Watchdog::pid)
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.exit_status(), Ok(None))
    }

    /// `Some(status)` once the process has exited, `None` while it runs. An exit seen
    /// here is handled like [`kill`](Self::kill): whatever the server left in its process
    /// group is killed, the watchdog is stopped and the server is reaped.
    ///
    /// # Errors
    /// When it was never started or `waitpid` fails.
    pub fn exit_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.child.is_none() {
            return self
                .exited
                .map(Some)
                .ok_or_else(|| anyhow!("{} is not running", self.name));
        }
        if leader_running(self.pid) {
            return Ok(None);
        }
        self.finish()
            .map(Some)
            .ok_or_else(|| anyhow!("waiting for {} (pid {}) failed", self.name, self.pid))
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
    /// Returns once every thread of the process is stopped: `kill` returns when the
    /// signal is queued, and on a busy machine the thread that takes it may run only
    /// milliseconds later, while another thread woken by a request still answers it
    /// (a test saw a paused memcached answer four gets).
    ///
    /// # Errors
    /// When the process is not running, `kill` fails, or its threads are not all stopped
    /// within [`PAUSE_WAIT`].
    pub fn pause(&mut self) -> Result<()> {
        self.signal("STOP")?;
        let deadline = Instant::now() + PAUSE_WAIT;
        loop {
            let states = thread_states(self.pid);
            if !states.is_empty() && states.iter().all(|s| matches!(s, 'T' | 't')) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} (pid {}) not stopped {PAUSE_WAIT:?} after SIGSTOP: thread states {states:?}",
                    self.name,
                    self.pid
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Continues a process frozen by [`pause`](Self::pause).
    ///
    /// # Errors
    /// When the process is not running or `kill` fails.
    pub fn resume(&mut self) -> Result<()> {
        self.signal("CONT")
    }

    /// Stops the process gracefully: SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL
    /// to its whole process group; stops the watchdog; always reaps the server. Does
    /// nothing when it is not running. Blocks the calling thread.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        if leader_running(self.pid) && send_signal(self.pid, "TERM").is_ok() {
            // A paused process only acts on SIGTERM once continued. Failure is harmless:
            // the SIGKILL in `finish` ends it either way.
            let _ = send_signal(self.pid, "CONT");
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline && leader_running(self.pid) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.finish();
    }

    /// Kills the process (and its process group) at once with SIGKILL, like a crash,
    /// stops the watchdog and reaps the server.
    pub fn kill(&mut self) {
        self.finish();
    }

    /// Ends the current server for good, in an order that never signals a recycled pid:
    /// 1. SIGKILL to the process group (helpers the server forked) and to the server. The
    ///    server is not reaped yet, so its pid, which is the group id, is still ours.
    /// 2. The watchdog is killed and reaped before its pipe is closed, so it never acts.
    /// 3. Only then the server is reaped and its pid freed.
    ///
    /// Returns the exit status, or `None` when there was no server or `wait` failed.
    fn finish(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // Errors are ignored on purpose: the group may hold only the exited (zombie)
        // server, and `kill(1)` failing then changes nothing; `child.kill` below is the
        // fallback that does not need `kill(1)`.
        let _ = send_signal_to_group(self.pid, "KILL");
        // Fails only when the server already exited; `wait` reaps it either way.
        let _ = child.kill();
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.disarm();
        }
        let status = child.wait().ok();
        self.exited = status;
        status
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

/// The watchdog's script. `$0` is `sh`; the process group id arrives on stdin as the
/// first line, after the server was spawned. The first `read` failing means the test
/// process died before that: there is nothing to kill. The second `read` returns only at
/// EOF, i.e. when every write end of the pipe is closed, which happens when the test
/// process exits or dies (only the test process holds the write end). Signals a terminal
/// or CI job sends to the test's process group do not reach the watchdog (it has its own
/// group), and it ignores the usual termination signals on top: it must outlive the test.
const WATCHDOG_SCRIPT: &str = r#"trap '' HUP INT QUIT TERM
read pgid || exit 0
case $pgid in ''|*[!0-9]*|0|1) exit 1 ;; esac
read _
kill -s KILL -- -"$pgid"
"#;

/// Spawns `command` so that it cannot outlive the test process, and returns it with its
/// armed [`Watchdog`]. Every server the harness starts goes through here.
///
/// Why: a test process killed by SIGKILL or a CI timeout runs no destructors, so
/// `ServerProcess`'s `Drop` never stops its servers; they would keep ports, memory and
/// temp directories until someone kills them by hand. Why not `PR_SET_PDEATHSIG`: it
/// needs `unsafe` (`pre_exec`), which the workspace forbids, and it fires when the
/// *thread* that forked exits, not the process; servers spawned from tokio's blocking
/// pool (threads that exit after 10 s idle) or from a finished test thread would be
/// killed early.
///
/// How: the server is spawned in its own process group (`process_group(0)`, so the
/// group id is its pid and helpers it forks are in it too). Before it, a watchdog
/// `sh` is spawned, also in a group of its own, with its stdin a pipe whose write end
/// only this process holds: Rust creates pipes with `O_CLOEXEC`, so no other child
/// (other servers, other watchdogs, clients) inherits the write end. The server's pid
/// is written into the pipe. When the test process dies for any reason the kernel
/// closes the write end, the watchdog's `read` sees EOF and it SIGKILLs the server's
/// process group. On a normal stop [`ServerProcess`] kills the group itself, then kills
/// and reaps the watchdog, and reaps the server last: the watchdog never runs `kill`
/// while the test process is alive, and when it does, the group id still belongs to
/// the server, since the server is only reaped after the watchdog is gone.
///
/// Remaining windows: a test process killed between spawning the server and writing its
/// pid (one `write` call) leaks that server; if the test dies while the server has
/// already exited but is not yet reaped, the server is reaped by init and its group id
/// is free by the time the watchdog runs, so the watchdog could only hit a process
/// group that took the same number within those microseconds.
///
/// # Errors
/// When `sh` is missing, either process cannot be spawned, or the pid cannot be
/// handed to the watchdog (the server is then killed and reaped).
pub fn spawn_guarded(command: &mut Command) -> Result<(Child, Watchdog)> {
    let sh = find_binary("sh", "dash")?;
    let mut watchdog = Command::new(sh)
        .arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("spawning the watchdog sh")?;
    let Some(pipe) = watchdog.stdin.take() else {
        // Cannot happen with `Stdio::piped()`; the watchdog is useless without its pipe.
        let _ = watchdog.kill();
        let _ = watchdog.wait();
        bail!("the watchdog has no stdin pipe");
    };
    let mut watchdog = Watchdog {
        child: watchdog,
        pipe,
    };
    // On failure the watchdog is dropped: killed and reaped.
    let mut child = command.process_group(0).spawn()?;
    if let Err(e) = writeln!(watchdog.pipe, "{}", child.id()) {
        // Errors ignored: the server is killed and reaped in any case; the watchdog
        // reads EOF when dropped and exits without killing (its first read failed).
        let _ = child.kill();
        let _ = child.wait();
        drop(watchdog);
        return Err(e).context("handing the server pid to its watchdog");
    }
    Ok((child, watchdog))
}

/// The watchdog of one server spawned by [`spawn_guarded`]: an `sh` that SIGKILLs the
/// server's process group when the test process dies. Dropping it (or
/// [`disarm`](Self::disarm)) kills and reaps the watchdog *before* its pipe is closed, so
/// it never acts; do that before reaping the server.
#[derive(Debug)]
pub struct Watchdog {
    child: Child,
    /// The write end of the watchdog's stdin; closing it (by dying) is the signal.
    pipe: std::process::ChildStdin,
}

impl Watchdog {
    /// Pid of the watchdog `sh`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills and reaps the watchdog without letting it act.
    pub fn disarm(self) {
        drop(self);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // The fields drop after this body, so the pipe closes only once the watchdog is
        // dead. Errors ignored: `kill` fails only when it already exited, `wait` then
        // reaps it or fails in a way we cannot act on.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the unreaped child `pid` is still running, from `/proc/<pid>/stat`: a zombie
/// (exited, not reaped) or a missing entry counts as not running. Unlike `try_wait` this
/// does not reap, so the pid stays reserved for signals.
/// The state letter of each thread of process `pid` (`/proc/<pid>/task/*/stat`, in the
/// format of the process's own stat); empty when the process is gone.
fn thread_states(pid: u32) -> Vec<char> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| read_stat(&t.ok()?.path().join("stat")).map(|s| s.state))
        .collect()
}

fn leader_running(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|stat| stat.is_running())
}

/// The fields of `/proc/<pid>/stat` the harness and its tests look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// One letter: `R`, `S`, `D`, `T`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// Process group id.
    pub pgid: u32,
    /// Start time in clock ticks since boot: with the pid, it names one process, since a
    /// recycled pid has a later start time.
    pub start_time: u64,
    /// User + system CPU time so far, in clock ticks (USER_HZ, 100 on Linux): abuse tests
    /// read it twice to show a daemon does not spin.
    pub cpu_ticks: u64,
}

impl ProcStat {
    /// Neither a zombie nor dead.
    pub fn is_running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Reads `/proc/<pid>/stat`; `None` when there is no such process (or it is unreadable).
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    read_stat(Path::new(&format!("/proc/{pid}/stat")))
}

/// Reads a stat file of a process or thread; `None` when it is gone or unreadable.
fn read_stat(path: &Path) -> Option<ProcStat> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces and ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state); field N is `fields[N - 3]`.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgid: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
        cpu_ticks: fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?,
    })
}

/// Resident memory of process `pid` (`None`: this process), in bytes, from `VmRSS` of
/// `/proc/<pid>/status`; `None` when it cannot be read.
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(kib * 1024)
}

/// Pids of the running processes in process group `pgid` (zombies left out).
pub fn process_group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_stat(pid).is_some_and(|s| s.pgid == pgid && s.is_running()))
        .collect()
}

fn send_signal_to_group(pgid: u32, signal: &str) -> Result<()> {
    if pgid <= 1 {
        bail!("refusing to signal process group {pgid}");
    }
    let kill = find_binary("kill", "procps")?;
    let status = Command::new(kill)
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{signal} -- -{pgid} failed with {status}");
    }
    Ok(())
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

//! Servers never outlive their test process (issue 19, must-show 4).
//!
//! `killed_test_process_leaves_no_server_running` runs this test binary again as a child,
//! selecting only the `#[ignore]`d helper below, which starts a redis-server, a memcached,
//! a mariadbd and a server that forks helpers, prints their pids and sleeps. The parent
//! SIGKILLs the child, so no destructor runs, and checks that every one of those processes
//! (and every process in their process groups, and the watchdogs) is gone within a few
//! seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ocean_tests::servers::{
    find_binary, proc_stat, process_group_members, MariaDb, Memcached, RedisServer, ServerProcess,
};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Set in the child's environment; without it the helper returns at once, so
/// `cargo test -- --ignored` run by hand does not hang in it.
const HELPER_ENV: &str = "OCEAN_REAPER_HELPER";

/// The helper's test name, as libtest's `--exact` filter wants it.
const HELPER: &str = "helper_starts_servers_and_sleeps";

/// How long the servers get to disappear after the test process is killed.
const REAP_DEADLINE: Duration = Duration::from_secs(5);

/// Starts the servers, prints `SERVER <name> <pid> <watchdog pid>` and `DIR <path>` lines,
/// then `READY <own pid>`, and sleeps until killed. Run only by the test below.
#[tokio::test]
#[ignore = "a helper: killed_test_process_leaves_no_server_running runs it in a child and kills it"]
async fn helper_starts_servers_and_sleeps() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let mut redis = RedisServer::start().await.unwrap();
    let mut memcached = Memcached::start().await.unwrap();
    let mut mariadb = MariaDb::start().await.unwrap();

    // A server that forks helpers, spawned from a thread that then exits: the servers
    // must survive their spawning thread (the PR_SET_PDEATHSIG trap) and die with the
    // process, helpers included.
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_path_buf();
    let mut forking = std::thread::spawn(move || {
        let sh = find_binary("sh", "dash").unwrap();
        ServerProcess::spawn(
            "forking sh",
            sh,
            vec!["-c".into(), "sleep 600 & sleep 600 & wait".into()],
            &dir_path,
            dir_path.join("out.log"),
            Vec::new(),
        )
        .unwrap()
    })
    .join()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_group_members(forking.pid()).len() < 3 {
        assert!(Instant::now() < deadline, "the forking sh did not fork");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for process in [
        redis.process_mut(),
        memcached.process_mut(),
        mariadb.process_mut(),
        &mut forking,
    ] {
        println!(
            "SERVER {} {} {}",
            process.name().replace(' ', "_"),
            process.pid(),
            process.watchdog_pid().unwrap()
        );
    }
    for path in [redis.dir(), memcached.dir(), mariadb.dir(), dir.path()] {
        println!("DIR {}", path.display());
    }
    println!("READY {}", std::process::id());
    std::future::pending::<()>().await;
}

/// A process named by pid and start time, so a recycled pid is not mistaken for it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Proc {
    what: String,
    pid: u32,
    start_time: u64,
}

impl Proc {
    fn of(what: String, pid: u32) -> Proc {
        let stat = proc_stat(pid).unwrap_or_else(|| panic!("{what} (pid {pid}) is not running"));
        assert!(
            stat.is_running(),
            "{what} (pid {pid}) is not running: {stat:?}"
        );
        Proc {
            what,
            pid,
            start_time: stat.start_time,
        }
    }

    /// Still this process and not a zombie. (Zombies count as gone: in a container whose
    /// pid 1 does not reap orphans they stay in /proc forever, running nothing.)
    fn is_running(&self) -> bool {
        proc_stat(self.pid).is_some_and(|s| s.start_time == self.start_time && s.is_running())
    }
}

/// The `pipe:[inode]` links of a process's open file descriptors, with the fd numbers.
fn pipes_of(pid: u32) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            let link = link.to_str()?.to_string();
            link.starts_with("pipe:").then_some((fd, link))
        })
        .collect()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[tokio::test]
async fn killed_test_process_leaves_no_server_running() {
    let exe = std::env::current_exe().unwrap();
    let mut child = tokio::process::Command::new(exe)
        .args([HELPER, "--exact", "--nocapture", "--ignored"])
        .env(HELPER_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut servers: Vec<(String, u32, u32)> = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    let helper_pid: u32 = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the helper exited before READY (its stderr is above)");
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["SERVER", name, pid, watchdog] => servers.push((
                    name.to_string(),
                    pid.parse().unwrap(),
                    watchdog.parse().unwrap(),
                )),
                ["DIR", path] => dirs.push(PathBuf::from(path)),
                ["READY", pid] => return pid.parse().unwrap(),
                _ => {}
            }
        }
    })
    .await
    .expect("the helper did not start its servers within 120 s");
    assert_eq!(helper_pid, child.id().unwrap());
    assert_eq!(servers.len(), 4, "{servers:?}");

    // Everything that must die with the helper: each server, whatever else is in its
    // process group (forked helpers), and the watchdogs.
    let mut watched = BTreeSet::new();
    for (name, pid, watchdog) in &servers {
        let members = process_group_members(*pid);
        assert!(members.contains(pid), "{name} {pid} leads its own group");
        eprintln!("{name}: pid {pid}, process group {members:?}, watchdog {watchdog}");
        if name == "forking_sh" {
            assert!(members.len() >= 3, "forking sh has its sleeps: {members:?}");
        }
        for member in members {
            watched.insert(Proc::of(format!("{name} group member"), member));
        }
        watched.insert(Proc::of(format!("watchdog of {name}"), *watchdog));
    }

    // Only the helper holds the write end of each watchdog's pipe: no server, helper of a
    // server or other watchdog inherited it (else the watchdog would never see EOF).
    for (name, _, watchdog) in &servers {
        let stdin = pipes_of(*watchdog)
            .into_iter()
            .find(|(fd, _)| *fd == 0)
            .map(|(_, link)| link)
            .unwrap_or_else(|| panic!("watchdog of {name} has no pipe on stdin"));
        assert!(
            pipes_of(helper_pid).iter().any(|(_, l)| *l == stdin),
            "the test process holds the write end of {stdin} (watchdog of {name})"
        );
        for p in &watched {
            let holders: Vec<u32> = pipes_of(p.pid)
                .into_iter()
                .filter(|(fd, l)| *l == stdin && !(p.pid == *watchdog && *fd == 0))
                .map(|(fd, _)| fd)
                .collect();
            assert!(
                holders.is_empty(),
                "{} (pid {}) holds {stdin}, the pipe of the watchdog of {name}, on fds {holders:?}",
                p.what,
                p.pid
            );
        }
    }

    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "helper killed by SIGKILL: {status:?}"
    );
    let killed_at = Instant::now();

    let mut left: Vec<&Proc> = watched.iter().filter(|p| p.is_running()).collect();
    while !left.is_empty() && killed_at.elapsed() < REAP_DEADLINE {
        tokio::time::sleep(Duration::from_millis(20)).await;
        left.retain(|p| p.is_running());
    }
    let report: Vec<String> = left
        .iter()
        .map(|p| format!("{} pid {}: {}", p.what, p.pid, cmdline(p.pid)))
        .collect();
    // Clean up after a failure too, so one broken run does not leak servers into the next.
    for p in &left {
        // Best effort: the assertion below reports the failure either way.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &p.pid.to_string()])
            .status();
    }
    for dir in &dirs {
        // The helper's temp dirs, left behind since its destructors never ran; best effort.
        let _ = std::fs::remove_dir_all(dir);
    }
    assert!(
        report.is_empty(),
        "still running {REAP_DEADLINE:?} after the test process was killed:\n{}",
        report.join("\n")
    );
    eprintln!(
        "all {} processes gone {:?} after the SIGKILL",
        watched.len(),
        killed_at.elapsed()
    );
}

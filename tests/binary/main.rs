//! Smoke tests of the built `ocean` binary, as a new user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const OCEAN: &str = env!("CARGO_BIN_EXE_ocean");

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(OCEAN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn help_lists_subcommands_and_documents_every_flag() {
    let (ok, text) = run(&["--help"]);
    assert!(ok, "{text}");
    assert!(text.contains("control") && text.contains("up"), "{text}");
    let (ok, text) = run(&["control", "--help"]);
    assert!(ok);
    for flag in [
        "--marathon",
        "--apps-file",
        "--config",
        "--listen",
        "--resync",
        "--poll-while-down",
        "--debounce",
        "--marathon-timeout",
        "--token-file",
        "--max-drop",
        "--drop-hold",
        "--domain",
    ] {
        assert!(
            text.contains(flag),
            "control --help does not document {flag}:\n{text}"
        );
    }
}

#[test]
fn bad_config_exits_non_zero_naming_the_problem() {
    let (ok, text) = run(&["control"]);
    assert!(!ok);
    assert!(
        text.contains("--marathon URL or --apps-file FILE"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("control.toml");
    std::fs::write(&cfg, "[guard]\nmax_drop = 2.0\n").unwrap();
    let (ok, text) = run(&[
        "control",
        "--apps-file",
        "x.json",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(text.contains("guard.max_drop"), "{text}");
}

/// A child process that is killed if the test fails before it is terminated.
struct Proc(Option<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `ocean up` and returns the child and control's address from its banner.
fn start_up(args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(OCEAN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no banner from ocean up");
        let Some(Ok(line)) = lines.next() else {
            let status = child.wait().unwrap();
            panic!("ocean up exited early: {status}");
        };
        if let Some(rest) = line.trim().strip_prefix("control") {
            let url = rest.split_whitespace().next().unwrap().to_string();
            // Keep draining stdout so the child never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (Proc(Some(child)), url);
        }
    }
}

fn get(url: &str) -> (u16, String) {
    // reqwest is built without a bundled crypto provider; ocean installs ring.
    ocean_core::http::init_tls();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match reqwest::get(url).await {
                Ok(r) if r.status() != 503 => {
                    return (r.status().as_u16(), r.text().await.unwrap())
                }
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Ok(r) => return (r.status().as_u16(), r.text().await.unwrap()),
                Err(e) => panic!("{url}: {e}"),
            }
        }
    })
}

fn terminate(mut proc: Proc) {
    let mut child = proc.0.take().unwrap();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "ocean exited with {status} after SIGTERM");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ocean did not exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ocean_up_serves_the_bundled_example_and_stops_on_sigterm() {
    // The README's first command, exactly: `ocean up` with no arguments (port 7070).
    let (child, url) = start_up(&["up"]);
    assert_eq!(url, "http://127.0.0.1:7070");
    let (status, body) = get(&format!("{url}/v1/tables/dns"));
    assert_eq!(status, 200, "{body}");
    let dns: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dns["domain"], "mesos");
    // An app in nested groups of the example, under its Mesos-DNS name.
    assert!(
        dns["names"]["web-browser-miui.marathon.mesos."]["a"].is_array(),
        "{}",
        &body[..500.min(body.len())]
    );
    let (_, redis) = get(&format!("{url}/v1/tables/redis"));
    assert!(redis.contains("\"sessions\""), "{redis}");
    let (_, problems) = get(&format!("{url}/v1/problems"));
    assert!(problems.contains("OCEAN_PORT=\\\"99999\\\""), "{problems}");
    // The README's dig line: ocean dns answers the example's names.
    let dig = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            "8053",
            "+short",
            "web-browser-miui.marathon.mesos",
        ])
        .output()
        .expect("dig: install the Debian package bind9-dnsutils");
    let ips = String::from_utf8_lossy(&dig.stdout);
    assert_eq!(ips.lines().count(), 4, "{ips}");
    terminate(child);
}

#[test]
fn ocean_up_with_a_config_file() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("up.toml");
    std::fs::write(
        &up,
        format!("[control]\nlisten = \"127.0.0.1:0\"\napps_file = \"{examples}/marathon-apps.json\"\nconfig = \"{examples}/control.toml\"\n"),
    )
    .unwrap();
    let (child, url) = start_up(&["up", "--config", up.to_str().unwrap()]);
    let (status, body) = get(&format!("{url}/v1/tables/mysql"));
    assert_eq!(status, 200);
    let mysql: serde_json::Value = serde_json::from_str(&body).unwrap();
    let schemas: Vec<&str> = mysql["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["schema"].as_str().unwrap())
        .collect();
    assert_eq!(schemas, vec!["key", "orders"]);
    terminate(child);
}

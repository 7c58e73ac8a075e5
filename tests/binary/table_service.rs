//! The locked table service as an operator runs it: `ocean control` refuses an open API off
//! loopback, and `ocean dns` follows control over TLS with a scoped token.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ocean_tests::fake_marathon::{app, task};
use ocean_tests::pki::Pki;
use ocean_tests::servers::free_port;

use super::{dig_a, OCEAN};

/// Kills the child when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // Already exited is fine: this only makes sure nothing outlives the test.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `ocean ARGS` and waits at most `limit` for it to exit.
fn run_with_limit(args: &[&str], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let child = Command::new(OCEAN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    while child.0.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < limit,
            "ocean {args:?} still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    let Killed(c) = &mut child;
    let out = Output {
        status: c.wait().unwrap(),
        stdout: read_all(c.stdout.take()),
        stderr: read_all(c.stderr.take()),
    };
    (out, elapsed)
}

fn read_all(r: Option<impl std::io::Read>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut r) = r {
        r.read_to_end(&mut buf).unwrap();
    }
    buf
}

fn apps_json(dir: &Path, ip: &str) -> std::path::PathBuf {
    let mut web = app("/web", serde_json::json!({}), 10080);
    web["tasks"] = serde_json::json!([task("/web", 1, ip, &[31001])]);
    let path = dir.join("apps.json");
    // Written whole then renamed, so control never reads half a file.
    let tmp = dir.join("apps.json.tmp");
    std::fs::write(&tmp, serde_json::json!({ "apps": [web] }).to_string()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

#[test]
fn control_off_loopback_without_a_token_exits_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let apps = apps_json(dir.path(), "127.0.1.1");
    let apps = apps.to_str().unwrap();

    let (out, took) = run_with_limit(
        &["control", "--listen", "0.0.0.0:0", "--apps-file", apps],
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without a token: {stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?} to refuse");
    assert!(
        stderr.contains("--token-file") && stderr.contains("[[api.tokens]]"),
        "{stderr}"
    );
    assert!(stderr.contains("0.0.0.0:0"), "{stderr}");
    assert!(!stderr.contains("control listening"), "{stderr}");

    // Proof that the check comes before binding: on a port someone else holds, the error
    // is still the missing token, while with a token the same command fails to bind.
    let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let listen = format!("0.0.0.0:{}", held.local_addr().unwrap().port());
    let (out, _) = run_with_limit(
        &["control", "--listen", &listen, "--apps-file", apps],
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--token-file") && !stderr.contains("cannot listen"),
        "{stderr}"
    );
    let token = dir.path().join("api.token");
    std::fs::write(&token, "a-token\n").unwrap();
    let (out, _) = run_with_limit(
        &[
            "control",
            "--listen",
            &listen,
            "--apps-file",
            apps,
            "--token-file",
            token.to_str().unwrap(),
        ],
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot listen"), "{stderr}");
    drop(held);
}

fn wait_for_a(port: u16, name: &str, want: &[&str], limit: Duration, logs: &Path) -> Duration {
    let started = Instant::now();
    loop {
        let got = dig_a(port, name);
        if got == want {
            return started.elapsed();
        }
        if started.elapsed() > limit {
            let log = |n: &str| std::fs::read_to_string(logs.join(n)).unwrap_or_default();
            panic!(
                "{name} answered {got:?}, not {want:?}, after {limit:?}\n--- control:\n{}\n--- dns:\n{}",
                log("control.log"),
                log("dns.log")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn_logged(args: &[&str], log: &Path) -> Killed {
    let log = std::fs::File::create(log).unwrap();
    Killed(
        Command::new(OCEAN)
            .args(["--log-format", "json"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

#[test]
fn ocean_dns_follows_control_over_tls_with_a_dns_scoped_token() {
    let pki = Pki::generate().unwrap();
    let dir = pki.dir();
    let apps = apps_json(dir, "127.0.1.1");
    std::fs::write(dir.join("dns.token"), "dns-token-for-this-host\n").unwrap();
    std::fs::write(
        dir.join("control.toml"),
        "[[api.tokens]]\nfile = \"dns.token\"\ntables = [\"dns\"]\n",
    )
    .unwrap();
    let control_port = free_port().unwrap();
    let dns_port = free_port().unwrap();
    let control_url = format!("https://127.0.0.1:{control_port}");
    let s = |p: &Path| p.to_str().unwrap().to_string();

    let _control = spawn_logged(
        &[
            "control",
            "--listen",
            &format!("127.0.0.1:{control_port}"),
            "--apps-file",
            &s(&apps),
            "--config",
            &s(&dir.join("control.toml")),
            "--tls-cert",
            &s(&pki.cert),
            "--tls-key",
            &s(&pki.key),
        ],
        &dir.join("control.log"),
    );
    let _dns = spawn_logged(
        &[
            "dns",
            "--listen",
            &format!("127.0.0.1:{dns_port}"),
            "--no-http",
            "--control",
            &control_url,
            "--control-ca",
            &s(&pki.ca),
            "--control-token-file",
            &s(&dir.join("dns.token")),
            "--long-poll-wait",
            "30s",
        ],
        &dir.join("dns.log"),
    );
    let name = "web.marathon.mesos";
    wait_for_a(dns_port, name, &["127.0.1.1"], Duration::from_secs(20), dir);
    // A change in Marathon's state reaches ocean dns over the TLS long-poll.
    apps_json(dir, "127.0.1.2");
    let took = wait_for_a(dns_port, name, &["127.0.1.2"], Duration::from_secs(5), dir);
    eprintln!("apps file changed -> dig answers the new address over TLS: {took:?}");
    let control_log = std::fs::read_to_string(dir.join("control.log")).unwrap();
    assert!(
        control_log.contains(r#""tls":true"#),
        "control did not say it serves TLS:\n{control_log}"
    );
    // The token is in no log line.
    let dns_log = std::fs::read_to_string(dir.join("dns.log")).unwrap();
    assert!(
        !control_log.contains("dns-token-for-this-host")
            && !dns_log.contains("dns-token-for-this-host")
    );
}

#[test]
fn ocean_up_proxies_read_a_control_that_requires_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    apps_json(d, "127.0.1.1");
    std::fs::write(d.join("dns.token"), "only-for-remote-dns\n").unwrap();
    std::fs::write(
        d.join("control.toml"),
        "[[api.tokens]]\nfile = \"dns.token\"\ntables = [\"dns\"]\n",
    )
    .unwrap();
    let dns_port = free_port().unwrap();
    let http_port = free_port().unwrap();
    std::fs::write(
        d.join("up.toml"),
        format!(
            "[control]\nlisten = \"127.0.0.1:0\"\napps_file = \"apps.json\"\nconfig = \"control.toml\"\n\
             [dns]\nlisten = \"127.0.0.1:{dns_port}\"\nhttp = \"127.0.0.1:{http_port}\"\n"
        ),
    )
    .unwrap();
    let (child, url, _) = super::start_up(&["up", "--config", d.join("up.toml").to_str().unwrap()]);
    // The API wants a token from outside ...
    let (status, body) = super::get(&format!("{url}/v1/tables/dns"));
    assert_eq!(status, 401, "{body}");
    // ... and the in-process dns has its own: it serves the table.
    wait_for_a(
        dns_port,
        "web.marathon.mesos",
        &["127.0.1.1"],
        Duration::from_secs(10),
        d,
    );
    super::terminate(child);
}

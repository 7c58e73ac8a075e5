//! dnsperf (Debian package `dnsperf`) as the DNS tests run it: a rate-limited load with one
//! line per answer (`-v`), killed if a test fails half way, and its report parsed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts dnsperf against `server` with the queries in `queries` for `seconds` at `qps` at
/// most, writing its output to `out`.
///
/// # Panics
/// When dnsperf cannot be run (naming the package to install).
pub fn spawn(server: SocketAddr, queries: &Path, seconds: u64, qps: u32, out: &Path) -> KillOnDrop {
    let file = std::fs::File::create(out).expect("dnsperf output file");
    let child = Command::new("dnsperf")
        .args(["-s", &server.ip().to_string(), "-p", &server.port().to_string()])
        .arg("-d")
        .arg(queries)
        .args(["-l", &seconds.to_string()])
        .args(["-c", "2", "-q", "50", "-t", "2"])
        .args(["-Q", &qps.to_string()])
        // One line per answer: its rcode and name.
        .arg("-v")
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().expect("dnsperf output file")))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run dnsperf ({e}): install the Debian package dnsperf (apt-get install dnsperf)")
        });
    KillOnDrop(Some(child))
}

/// Waits for dnsperf to end by itself and parses its report; also returns the report's
/// statistics text for failure messages.
///
/// # Panics
/// When dnsperf fails or its output cannot be read.
pub async fn finish(mut child: KillOnDrop, out: &Path) -> (Report, String) {
    let mut c = child.0.take().expect("dnsperf already waited for");
    let status = tokio::task::spawn_blocking(move || c.wait())
        .await
        .expect("dnsperf waiter")
        .expect("wait for dnsperf");
    let text = std::fs::read_to_string(out).expect("dnsperf output");
    assert!(status.success(), "dnsperf failed ({status}):\n{text}");
    let r = parse_report(&text);
    let tail = text[text.find("Statistics:").unwrap_or(0)..].to_string();
    (r, tail)
}

/// Kills dnsperf if the test fails half way.
pub struct KillOnDrop(pub Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What dnsperf printed, parsed.
#[derive(Debug, Default)]
pub struct Report {
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
    pub rcodes: BTreeMap<String, u64>,
    /// Per-query lines (`-v`): rcode, name, type.
    pub answers: Vec<(String, String, String)>,
}

fn field(text: &str, label: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in dnsperf's output:\n{text}"));
    line[line.find(label).unwrap() + label.len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {label:?} in {line:?}"))
}

impl Report {
    /// At least 1000 queries, every one answered, with the right rcode: NXDOMAIN for the
    /// names that start with `gone-` (the query files' names that never exist), NOERROR
    /// for every other. `tail` (dnsperf's statistics) goes into the failure messages.
    ///
    /// # Panics
    /// When any of that does not hold.
    pub fn assert_every_answer_right(&self, tail: &str) {
        assert!(
            self.sent >= 1000,
            "dnsperf sent only {} queries:\n{tail}",
            self.sent
        );
        assert_eq!(self.lost, 0, "queries lost:\n{tail}");
        assert_eq!(self.completed, self.sent, "queries not completed:\n{tail}");
        let unexpected: Vec<&String> = self
            .rcodes
            .keys()
            .filter(|c| !["NOERROR", "NXDOMAIN"].contains(&c.as_str()))
            .collect();
        assert!(
            unexpected.is_empty(),
            "response codes other than NOERROR/NXDOMAIN:\n{tail}"
        );
        assert!(
            self.rcodes.get("NXDOMAIN").copied().unwrap_or(0) > 0,
            "no NXDOMAIN for the gone-* names:\n{tail}"
        );
        assert_eq!(
            self.answers.len() as u64,
            self.completed,
            "dnsperf -v printed one line per answer:\n{tail}"
        );
        let wrong: Vec<&(String, String, String)> = self
            .answers
            .iter()
            .filter(|(code, name, _)| {
                let want = if name.starts_with("gone-") {
                    "NXDOMAIN"
                } else {
                    "NOERROR"
                };
                code != want
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{} of {} answers had the wrong rcode, e.g. {:?}",
            wrong.len(),
            self.answers.len(),
            &wrong[..wrong.len().min(10)]
        );
    }
}

pub fn parse_report(text: &str) -> Report {
    let mut r = Report {
        sent: field(text, "Queries sent:"),
        completed: field(text, "Queries completed:"),
        lost: field(text, "Queries lost:"),
        ..Default::default()
    };
    if let Some(line) = text
        .lines()
        .find(|l| l.trim_start().starts_with("Response codes:"))
    {
        // "Response codes:       NOERROR 223174 (90.00%), NXDOMAIN 24802 (10.00%)"
        let list = line.split_once(':').unwrap().1;
        for part in list.split(',') {
            let mut w = part.split_whitespace();
            if let (Some(code), Some(n)) = (w.next(), w.next()) {
                r.rcodes.insert(code.to_string(), n.parse().unwrap());
            }
        }
    }
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("> ") {
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.len() >= 3 {
                r.answers
                    .push((f[0].into(), f[1].trim_end_matches('.').into(), f[2].into()));
            }
        }
    }
    r
}

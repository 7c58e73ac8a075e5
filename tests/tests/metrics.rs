//! Every metric the workspace records has a `# HELP` description of the same type and a
//! row in docs/metrics.md (issue 13). The per-daemon tests (`<crate>/tests/metrics.rs`)
//! check the rendered `/metrics` of what they exercise; this one reads the sources, so a
//! metric only an error path records is covered too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const KINDS: [&str; 3] = ["counter", "gauge", "histogram"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The string literal starting (after whitespace) at `s`, if it names an ocean metric.
fn metric_name(s: &str) -> Option<&str> {
    let s = s.trim_start().strip_prefix('"')?;
    let name = &s[..s.find('"')?];
    (name.starts_with("ocean_")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
    .then_some(name)
}

/// (recorded name -> kind, described name -> kind) in `src`, test modules left out.
fn scan(
    src: &str,
    recorded: &mut BTreeMap<String, String>,
    described: &mut BTreeMap<String, String>,
) {
    let src = src.split("#[cfg(test)]").next().unwrap_or("");
    for kind in KINDS {
        let mac = format!("{kind}!(");
        for (i, _) in src.match_indices(&mac) {
            let Some(name) = metric_name(&src[i + mac.len()..]) else {
                continue;
            };
            let target = if src[..i].ends_with("describe_") {
                &mut *described
            } else {
                &mut *recorded
            };
            target.insert(name.to_string(), kind.to_string());
        }
    }
    // Names recorded through a variable: `("ocean_dns_truncated_total", &mut self.truncated)`.
    for (i, _) in src.match_indices("(\"ocean_") {
        if let Some(name) = metric_name(&src[i + 1..]) {
            if src[i + 1 + name.len() + 2..]
                .trim_start()
                .starts_with(", &mut")
            {
                recorded.insert(name.to_string(), "counter".to_string());
            }
        }
    }
}

#[test]
fn every_recorded_metric_is_described_and_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for krate in [
        "core",
        "control",
        "dns",
        "redis-router",
        "memcached-router",
        "mysql-proxy",
        "lvs-sync",
        "src",
    ] {
        let dir = if krate == "src" {
            root.join("src")
        } else {
            root.join(krate).join("src")
        };
        rust_files(&dir, &mut files);
    }
    let (mut recorded, mut described) = (BTreeMap::new(), BTreeMap::new());
    for f in &files {
        scan(
            &std::fs::read_to_string(f).unwrap(),
            &mut recorded,
            &mut described,
        );
    }
    assert!(
        recorded.len() > 50,
        "the scan found too little: {recorded:?}"
    );
    let docs = std::fs::read_to_string(root.join("docs/metrics.md")).unwrap();
    let mut problems = BTreeSet::new();
    for (name, kind) in &recorded {
        match described.get(name) {
            None => problems.insert(format!("{name}: recorded, no describe_{kind}!")),
            Some(k) if k != kind => {
                problems.insert(format!("{name}: a {kind}, described as a {k}"))
            }
            Some(_) => false,
        };
        if !docs.contains(&format!("`{name}`")) {
            problems.insert(format!("{name}: not in docs/metrics.md"));
        }
    }
    for name in described.keys().filter(|n| !recorded.contains_key(*n)) {
        problems.insert(format!("{name}: described, never recorded"));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

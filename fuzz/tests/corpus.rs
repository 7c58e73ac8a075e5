//! Replays every seed in `corpus/<target>/` through its target, on stable, without AFL:
//! each must run without a panic. Then a fixed-seed stream of random and mutated inputs per
//! target, so a broken invariant shows up here before anyone runs AFL.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use ocean_fuzz::TARGETS;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    files.sort();
    files
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect()
}

#[test]
fn every_seed_runs_without_panic() {
    let mut failed = Vec::new();
    for (name, target) in TARGETS {
        let seeds = seeds(name);
        assert!(
            !seeds.is_empty(),
            "{name}: no seeds in {}",
            corpus(name).display()
        );
        for (path, data) in seeds {
            if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "seeds that panic: {failed:#?}");
}

#[test]
fn every_target_has_a_binary() {
    let bins = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(bins, TARGETS.len());
    for (name, _) in TARGETS {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("src/bin/{name}.rs"));
        assert!(bin.is_file(), "{}", bin.display());
    }
}

/// Random bytes and byte-flipped seeds, a fixed sequence: 300 inputs per target.
#[test]
fn mutated_seeds_run_without_panic() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for (name, target) in TARGETS {
        let seeds = seeds(name);
        for i in 0..300 {
            let mut data = if i % 3 == 0 || seeds.is_empty() {
                let len = (next() % 256) as usize;
                (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                seeds[(next() as usize) % seeds.len()].1.clone()
            };
            for _ in 0..1 + next() % 4 {
                if data.is_empty() {
                    break;
                }
                let at = (next() as usize) % data.len();
                match next() % 3 {
                    0 => data[at] ^= 1 << (next() % 8),
                    1 => data.truncate(at),
                    _ => data[at] = next() as u8,
                }
            }
            if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                panic!("{name} panics on {data:02x?}");
            }
        }
    }
}

/// Writes `corpus/table_json/derived_*.json`: the five tables control derives from
/// `examples/marathon-apps.json` with `examples/control.toml`, as proxies receive them.
/// Run by hand (`cargo test -- --ignored write_derived_table_seeds`) after the example
/// changes.
#[test]
#[ignore]
fn write_derived_table_seeds() {
    use ocean_control::config::{FileConfig, Source};
    use ocean_control::derive::derive_all;
    use ocean_control::marathon::model::parse_apps;
    use ocean_control::state::{normalize, HealthMemory, Resolved};
    use ocean_core::table::Table;

    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let body = std::fs::read(examples.join("marathon-apps.json")).unwrap_or_default();
    let (apps, _) = parse_apps(&body).unwrap_or_default();
    let state = normalize(&apps, &Resolved::new(), &mut HealthMemory::default());
    let mut config = ocean_control::Config::new(Source::File("unused".into()));
    let file = FileConfig::load(&examples.join("control.toml"))
        .unwrap_or_else(|e| panic!("control.toml: {e}"));
    file.apply(&examples, &mut config)
        .unwrap_or_else(|e| panic!("control.toml: {e}"));
    let d = derive_all(&state, &config.derive);
    let bodies = [
        ("dns", d.dns.canonical_body()),
        ("redis", d.redis.canonical_body()),
        ("memcached", d.memcached.canonical_body()),
        ("mysql", d.mysql.canonical_body()),
        ("lvs", d.lvs.canonical_body()),
    ];
    for (kind, body) in bodies {
        let body = body.unwrap_or_else(|e| panic!("{kind}: {e}"));
        let path = corpus("table_json").join(format!("derived_{kind}.json"));
        std::fs::write(&path, body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

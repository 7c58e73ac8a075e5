//! The process-wide Prometheus recorder.
//!
//! Every daemon records through the `metrics` facade; `/metrics` renders this recorder.
//! `ocean up` runs several daemons in one process and they share it: series carry labels
//! (`kind`, `cluster`, `pool`, ...) that tell them apart.
//!
//! # Why our own recorder
//! metrics-exporter-prometheus renders a histogram without configured buckets as a summary,
//! and it has no way to delete one labelled series: a memcached server removed from the
//! table kept `ocean_memcached_server_up 1` forever (issue 13). Its only eviction is
//! `idle_timeout`, which drops a series nobody touched for a while: a healthy idle backend's
//! `up` gauge would vanish, and tests would have to wait for the clock. So this module is a
//! small recorder over metrics-util's [`Registry`]:
//! - every histogram is a Prometheus histogram; its buckets come from [`BUCKETS`], the one
//!   place where they are chosen per protocol (a histogram matching no entry gets
//!   [`DEFAULT_BUCKETS`]);
//! - `describe_*!` descriptions become `# HELP` lines;
//! - [`remove_series`] deletes the series of one backend at once, when the daemon applies
//!   a table without it; [`SeriesLease`] does the same when the last of several owners
//!   (one per worker thread) lets go.
//!
//! A handle (`Counter`, `Gauge`, `Histogram`) taken before its series was removed keeps
//! working but records into a detached cell nobody renders; the next `counter!` with the
//! same labels starts a fresh series at zero, which Prometheus reads as a counter reset.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use metrics::atomics::AtomicU64;
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_util::registry::{Registry, Storage};

/// How a metric name is matched to a bucket layout in [`BUCKETS`].
#[derive(Debug, Clone, Copy)]
pub enum Matcher {
    /// The whole name.
    Full(&'static str),
    /// Names starting with this.
    Prefix(&'static str),
    /// Names ending with this.
    Suffix(&'static str),
}

impl Matcher {
    fn matches(self, name: &str) -> bool {
        match self {
            Matcher::Full(s) => name == s,
            Matcher::Prefix(s) => name.starts_with(s),
            Matcher::Suffix(s) => name.ends_with(s),
        }
    }
}

/// DNS answers from the pre-encoded zone: 10 µs .. 100 ms.
pub const DNS_ANSWER_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1,
];
/// Redis commands and memcached server round trips: 50 µs .. 1 s.
pub const CACHE_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];
/// MySQL logins and queries, DNS forwarding, zone builds: 100 µs .. 10 s.
pub const SLOW_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Control's Marathon sync and derive, lvs-sync's reconcile: 1 ms .. 30 s.
pub const CONTROL_BUCKETS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Prometheus' client default, for a histogram no entry of [`BUCKETS`] matches.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket upper bounds (seconds) per histogram; the first match wins. The one place where
/// buckets are chosen: a new latency histogram gets an entry here.
pub const BUCKETS: &[(Matcher, &[f64])] = &[
    (
        Matcher::Full("ocean_dns_answer_seconds"),
        DNS_ANSWER_BUCKETS,
    ),
    (Matcher::Prefix("ocean_dns_"), SLOW_BUCKETS),
    (Matcher::Prefix("ocean_redis_"), CACHE_BUCKETS),
    (Matcher::Prefix("ocean_memcached_"), CACHE_BUCKETS),
    (Matcher::Prefix("ocean_mysql_"), SLOW_BUCKETS),
    (Matcher::Prefix("ocean_control_"), CONTROL_BUCKETS),
    (Matcher::Prefix("ocean_lvs_"), CONTROL_BUCKETS),
];

/// The bucket bounds a histogram named `name` gets.
pub fn buckets_for(name: &str) -> &'static [f64] {
    BUCKETS
        .iter()
        .find(|(m, _)| m.matches(name))
        .map_or(DEFAULT_BUCKETS, |(_, b)| b)
}

/// A fixed-bucket histogram: one atomic count per bucket (the last is `+Inf`) and the sum.
#[derive(Debug)]
pub struct Buckets {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    /// The sum as `f64` bits.
    sum: AtomicU64,
}

impl Buckets {
    fn new(bounds: &'static [f64]) -> Buckets {
        Buckets {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        self.record_many(value, 1);
    }

    /// One bucket search and one update of each cell for `count` equal values (a batch of
    /// replies that completed together).
    fn record_many(&self, value: f64, count: usize) {
        let i = self.bounds.partition_point(|b| *b < value);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(count as u64, Ordering::Relaxed);
        }
        let added = value * count as f64;
        // The closure always returns Some, so fetch_update cannot fail.
        let _always_ok = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + added).to_bits())
            });
    }
}

/// Creates the cells: histograms get the buckets [`buckets_for`] their name.
#[derive(Debug)]
struct Cells;

impl Storage<Key> for Cells {
    type Counter = Arc<AtomicU64>;
    type Gauge = Arc<AtomicU64>;
    type Histogram = Arc<Buckets>;

    fn counter(&self, _: &Key) -> Self::Counter {
        Arc::new(AtomicU64::new(0))
    }

    fn gauge(&self, _: &Key) -> Self::Gauge {
        Arc::new(AtomicU64::new(0f64.to_bits()))
    }

    fn histogram(&self, key: &Key) -> Self::Histogram {
        Arc::new(Buckets::new(buckets_for(key.name())))
    }
}

/// The recorder's state: series and their descriptions.
pub struct Metrics {
    registry: Registry<Key, Cells>,
    help: RwLock<HashMap<String, (SharedString, Option<Unit>)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The `Recorder` installed as global: a reference to the static [`Metrics`].
#[derive(Debug, Clone, Copy)]
struct Handle(&'static Metrics);

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            registry: Registry::new(Cells),
            help: RwLock::new(HashMap::new()),
        }
    }

    fn describe(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        let mut help = self.help.write().unwrap_or_else(PoisonError::into_inner);
        help.insert(key.as_str().to_string(), (description, unit));
    }

    /// Renders every series in the Prometheus text format (0.0.4), sorted by name and labels;
    /// labels in the order they were given.
    pub fn render(&self) -> String {
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        self.registry.visit_counters(|key, c| {
            let value = c.load(Ordering::Relaxed);
            family(&mut families, key, "counter")
                .series
                .insert(labels(key), Value::Counter(value));
        });
        self.registry.visit_gauges(|key, g| {
            let value = f64::from_bits(g.load(Ordering::Relaxed));
            family(&mut families, key, "gauge")
                .series
                .insert(labels(key), Value::Gauge(value));
        });
        self.registry.visit_histograms(|key, h| {
            family(&mut families, key, "histogram")
                .series
                .insert(labels(key), Value::Histogram(h.clone()));
        });
        let help = self.help.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::with_capacity(families.len() * 256);
        for (name, fam) in &families {
            if let Some((desc, _unit)) = help.get(name) {
                let desc = desc.replace('\\', "\\\\").replace('\n', "\\n");
                let _infallible = writeln!(out, "# HELP {name} {desc}");
            }
            let _infallible = writeln!(out, "# TYPE {name} {}", fam.kind);
            for (labels, value) in &fam.series {
                write_series(&mut out, name, labels, value);
            }
        }
        out
    }

    /// Deletes every series whose name starts with `prefix` and whose labels include all of
    /// `labels`; returns how many.
    pub fn remove_series(&self, prefix: &str, labels: &[(&str, &str)]) -> usize {
        let hit = |key: &Key| {
            key.name().starts_with(prefix)
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
        };
        let mut n = 0;
        self.registry.retain_counters(|k, _| {
            let gone = hit(k);
            n += usize::from(gone);
            !gone
        });
        self.registry.retain_gauges(|k, _| {
            let gone = hit(k);
            n += usize::from(gone);
            !gone
        });
        self.registry.retain_histograms(|k, _| {
            let gone = hit(k);
            n += usize::from(gone);
            !gone
        });
        n
    }
}

struct Family {
    kind: &'static str,
    series: BTreeMap<Vec<(String, String)>, Value>,
}

enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(Arc<Buckets>),
}

fn family<'a>(
    families: &'a mut BTreeMap<String, Family>,
    key: &Key,
    kind: &'static str,
) -> &'a mut Family {
    families
        .entry(key.name().to_string())
        .or_insert_with(|| Family {
            kind,
            series: BTreeMap::new(),
        })
}

/// The labels of `key` in the order the call site gave them (what tests and dashboards
/// grep for).
fn labels(key: &Key) -> Vec<(String, String)> {
    key.labels()
        .map(|l| (l.key().to_string(), l.value().to_string()))
        .collect()
}

fn write_labels(out: &mut String, labels: &[(String, String)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    let extra = le.map(|v| ("le", v));
    for (k, v) in labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(extra)
    {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for ch in v.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn write_series(out: &mut String, name: &str, labels: &[(String, String)], value: &Value) {
    match value {
        Value::Counter(v) => {
            out.push_str(name);
            write_labels(out, labels, None);
            let _infallible = writeln!(out, " {v}");
        }
        Value::Gauge(v) => {
            out.push_str(name);
            write_labels(out, labels, None);
            let _infallible = writeln!(out, " {}", float(*v));
        }
        Value::Histogram(h) => {
            let mut cumulative = 0u64;
            let bounds = h.bounds.iter().map(|b| float(*b)).chain(["+Inf".into()]);
            for (bound, count) in bounds.zip(h.counts.iter()) {
                cumulative += count.load(Ordering::Relaxed);
                out.push_str(name);
                out.push_str("_bucket");
                write_labels(out, labels, Some(&bound));
                let _infallible = writeln!(out, " {cumulative}");
            }
            out.push_str(name);
            out.push_str("_sum");
            write_labels(out, labels, None);
            let sum = f64::from_bits(h.sum.load(Ordering::Relaxed));
            let _infallible = writeln!(out, " {}", float(sum));
            out.push_str(name);
            out.push_str("_count");
            write_labels(out, labels, None);
            let _infallible = writeln!(out, " {cumulative}");
        }
    }
}

/// A float as Prometheus writes one (`+Inf`, `-Inf`, `NaN`, else Rust's shortest form).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

impl Recorder for Handle {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe(key, unit, description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();
static INSTALLED: OnceLock<()> = OnceLock::new();

/// Installs the recorder on first call (and describes core's own metrics) and returns it.
///
/// If another recorder is already global (only possible in tests that install their own),
/// the facade records there and this one renders only what is recorded through it.
pub fn handle() -> &'static Metrics {
    let m = METRICS.get_or_init(Metrics::new);
    INSTALLED.get_or_init(|| {
        if metrics::set_global_recorder(Handle(m)).is_err() {
            tracing::debug!("a metrics recorder was already installed; /metrics renders ours");
        }
        describe();
    });
    m
}

/// Renders every metric in the Prometheus text format.
pub fn render() -> String {
    handle().render()
}

/// Deletes the series of one backend (or one cluster, pool, database): every series whose
/// name starts with `prefix` and whose labels include all of `labels`. Call it when a table
/// without the backend is applied, from the one task that applies tables; with several
/// owners (worker threads) use [`SeriesLease`]. Returns how many series were deleted.
pub fn remove_series(prefix: &str, labels: &[(&str, &str)]) -> usize {
    handle().remove_series(prefix, labels)
}

type LeaseKey = (&'static str, Vec<(String, String)>);

static LEASES: OnceLock<Mutex<HashMap<LeaseKey, usize>>> = OnceLock::new();

/// A claim on the series of one label set, shared by several owners (say, one per worker
/// thread serving a cluster). The series under `prefix` with those labels are deleted when
/// the last lease is dropped.
///
/// Take the lease *before* registering handles: a lease dropped concurrently then finds the
/// count above zero and deletes nothing, so a backend that leaves and comes back keeps a
/// live series.
#[derive(Debug)]
pub struct SeriesLease {
    key: LeaseKey,
}

impl SeriesLease {
    /// Counts one more owner of the series under `prefix` with `labels`.
    pub fn new(prefix: &'static str, labels: &[(&str, &str)]) -> SeriesLease {
        let key = (
            prefix,
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let leases = LEASES.get_or_init(Default::default);
        let mut map = leases.lock().unwrap_or_else(PoisonError::into_inner);
        *map.entry(key.clone()).or_insert(0) += 1;
        SeriesLease { key }
    }
}

impl Drop for SeriesLease {
    fn drop(&mut self) {
        let leases = LEASES.get_or_init(Default::default);
        let mut map = leases.lock().unwrap_or_else(PoisonError::into_inner);
        let last = match map.get_mut(&self.key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => true,
        };
        if last {
            map.remove(&self.key);
            let labels: Vec<(&str, &str)> = self
                .key
                .1
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            // Under the lock: a new lease waits until the old series are gone.
            remove_series(self.key.0, &labels);
        }
    }
}

/// Names of the metric families in `text` (Prometheus text format) that have a `# TYPE`
/// line but no `# HELP` line: what a test asserts is empty.
pub fn undescribed(text: &str) -> Vec<String> {
    let helped: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .filter(|n| !helped.contains(n))
        .map(str::to_string)
        .collect()
}

/// Describes the metrics ocean-core records itself (listeners, table subscriber). Called
/// by [`handle`]; idempotent.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "ocean_connections_accepted_total",
        Unit::Count,
        "Client connections accepted, per daemon."
    );
    describe_gauge!(
        "ocean_connections_open",
        Unit::Count,
        "Client connections open now, per daemon."
    );
    describe_counter!(
        "ocean_connections_refused_total",
        Unit::Count,
        "Client connections refused at accept (reason=max_clients: the permit cap), per daemon."
    );
    describe_counter!(
        "ocean_accept_errors_total",
        Unit::Count,
        "accept() errors per daemon and kind (no_descriptors, no_memory, aborted, other)."
    );
    describe_counter!(
        "ocean_table_updates_total",
        Unit::Count,
        "Tables received by a proxy's subscriber, per kind and result (accepted, unchanged, refused)."
    );
    describe_counter!(
        "ocean_table_deltas_total",
        Unit::Count,
        "Deltas received from control, per kind and result (applied, or refused: the whole table is fetched instead)."
    );
    describe_counter!(
        "ocean_table_control_switches_total",
        Unit::Count,
        "Moves of a proxy's subscriber from one control replica to another, per kind (a replica failed, fell behind, or a preferred one came back)."
    );
    describe_gauge!(
        "ocean_table_backends",
        Unit::Count,
        "Backends in the table a proxy applied last, per kind."
    );
    describe_gauge!(
        "ocean_table_etag_prefix",
        Unit::Count,
        "The first 8 hex digits of the applied table's ETag as a number, per kind: equal across proxies on the same table."
    );
    describe_gauge!(
        "ocean_table_accepted_timestamp_seconds",
        Unit::Seconds,
        "Unix time the applied table was accepted, per kind."
    );
    describe_counter!(
        "ocean_table_source_errors_total",
        Unit::Count,
        "Failures to read a table, per kind and source (control, file)."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private() -> &'static Metrics {
        Box::leak(Box::new(Metrics::new()))
    }

    #[test]
    fn histograms_render_buckets_per_protocol() {
        let m = private();
        let r = Handle(m);
        let meta = metrics::Metadata::new("t", metrics::Level::INFO, None);
        let h = r.register_histogram(&Key::from_name("ocean_dns_answer_seconds"), &meta);
        h.record(0.000_02);
        h.record(3.0);
        let text = m.render();
        assert!(text.contains("# TYPE ocean_dns_answer_seconds histogram\n"));
        assert!(text.contains("ocean_dns_answer_seconds_bucket{le=\"0.00001\"} 0\n"));
        assert!(text.contains("ocean_dns_answer_seconds_bucket{le=\"0.000025\"} 1\n"));
        assert!(text.contains("ocean_dns_answer_seconds_bucket{le=\"0.1\"} 1\n"));
        assert!(text.contains("ocean_dns_answer_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("ocean_dns_answer_seconds_sum 3.00002\n"));
        assert!(text.contains("ocean_dns_answer_seconds_count 2\n"));
    }

    #[test]
    fn record_many_counts_as_that_many_records() {
        let m = private();
        let r = Handle(m);
        let meta = metrics::Metadata::new("t", metrics::Level::INFO, None);
        let many = r.register_histogram(&Key::from_name("ocean_redis_command_seconds"), &meta);
        let one_by_one = r.register_histogram(&Key::from_name("ocean_redis_other_seconds"), &meta);
        many.record_many(0.000_3, 16);
        many.record(2.0);
        for _ in 0..16 {
            one_by_one.record(0.000_3);
        }
        one_by_one.record(2.0);
        let text = m.render();
        let series = |name: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with(name))
                .map(|l| l.trim_start_matches(name).to_string())
                .collect()
        };
        let a = series("ocean_redis_command_seconds");
        assert!(a.iter().any(|l| l == "_count 17"), "{text}");
        assert_eq!(a, series("ocean_redis_other_seconds"), "{text}");
    }

    #[test]
    fn every_latency_histogram_has_its_own_buckets() {
        for (name, want) in [
            ("ocean_dns_answer_seconds", DNS_ANSWER_BUCKETS),
            ("ocean_dns_forward_seconds", SLOW_BUCKETS),
            ("ocean_dns_zone_build_seconds", SLOW_BUCKETS),
            ("ocean_redis_command_seconds", CACHE_BUCKETS),
            ("ocean_memcached_server_latency_seconds", CACHE_BUCKETS),
            ("ocean_mysql_backend_login_seconds", SLOW_BUCKETS),
            ("ocean_control_sync_duration_seconds", CONTROL_BUCKETS),
            ("ocean_lvs_reconcile_seconds", CONTROL_BUCKETS),
        ] {
            assert_eq!(buckets_for(name), want, "{name}");
        }
        for b in [
            DNS_ANSWER_BUCKETS,
            CACHE_BUCKETS,
            SLOW_BUCKETS,
            CONTROL_BUCKETS,
            DEFAULT_BUCKETS,
        ] {
            assert!(b.windows(2).all(|w| w[0] < w[1]), "sorted: {b:?}");
        }
    }

    #[test]
    fn help_lines_and_label_escaping() {
        let m = private();
        let r = Handle(m);
        let meta = metrics::Metadata::new("t", metrics::Level::INFO, None);
        r.describe_counter("x_total".into(), Some(Unit::Count), "Things.".into());
        let key = Key::from_parts("x_total", vec![metrics::Label::new("a", "q\"b\\")]);
        r.register_counter(&key, &meta).increment(2);
        r.register_gauge(&Key::from_name("y"), &meta).set(1.5);
        let text = m.render();
        assert!(text.contains("# HELP x_total Things.\n# TYPE x_total counter\n"));
        assert!(text.contains("x_total{a=\"q\\\"b\\\\\"} 2\n"), "{text}");
        assert!(text.contains("y 1.5\n"));
        assert_eq!(undescribed(&text), vec!["y".to_string()]);
    }

    #[test]
    fn removing_a_backend_deletes_only_its_series() {
        let m = private();
        let r = Handle(m);
        let meta = metrics::Metadata::new("t", metrics::Level::INFO, None);
        for server in ["a:1", "b:1"] {
            let labels = vec![
                metrics::Label::new("pool", "p"),
                metrics::Label::new("server", server),
            ];
            r.register_gauge(&Key::from_parts("ocean_x_up", labels.clone()), &meta)
                .set(1.0);
            r.register_histogram(&Key::from_parts("ocean_x_seconds", labels), &meta)
                .record(0.1);
        }
        assert_eq!(
            m.remove_series("ocean_x_", &[("pool", "p"), ("server", "a:1")]),
            2
        );
        let text = m.render();
        assert!(!text.contains("a:1"), "{text}");
        assert!(text.contains("ocean_x_up{pool=\"p\",server=\"b:1\"} 1\n"));
        assert_eq!(m.remove_series("ocean_x_", &[("server", "nope")]), 0);
    }

    #[test]
    fn a_lease_removes_series_when_the_last_owner_drops() {
        let labels = [("cluster", "lease-test")];
        let a = SeriesLease::new("ocean_lease_test_", &labels);
        let b = SeriesLease::new("ocean_lease_test_", &labels);
        handle();
        metrics::counter!("ocean_lease_test_total", "cluster" => "lease-test").increment(1);
        let here = |t: &str| t.contains("ocean_lease_test_total{cluster=\"lease-test\"}");
        drop(a);
        // Another recorder may be global in this test binary: only check ours if it is.
        let ours = here(&render());
        drop(b);
        if ours {
            assert!(!here(&render()));
        }
    }
}

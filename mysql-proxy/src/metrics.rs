//! The proxy's Prometheus metrics: their descriptions, and the series that leave with a
//! job or database the table no longer has.

use std::time::Duration;

use crate::route::Index;

/// Every series of the proxy starts with this.
const PREFIX: &str = "ocean_mysql_";

/// Describes the proxy's metrics (`# HELP`); called once at start. The list is
/// docs/metrics.md's mysql-proxy section.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "ocean_mysql_logins_total",
        Unit::Count,
        "Client login attempts, per job (empty when unknown or before the handshake) and result."
    );
    describe_histogram!(
        "ocean_mysql_backend_login_seconds",
        Unit::Seconds,
        "Time to connect and log in to a backend for a client, per database (successful logins)."
    );
    describe_histogram!(
        "ocean_mysql_query_seconds",
        Unit::Seconds,
        "Command latency through the proxy, from the command's first byte sent to the backend to the last byte of its response relayed, per job, database and command (query, execute, prepare, other)."
    );
    describe_counter!(
        "ocean_mysql_query_errors_total",
        Unit::Count,
        "Commands the backend answered with an ERR packet (or whose result ended in one), per job, database and command (query, execute, prepare, other)."
    );
    describe_gauge!(
        "ocean_mysql_jobs_broken_password",
        Unit::Count,
        "Jobs in the applied table whose password hashes do not decode (refused until fixed)."
    );
    describe_gauge!(
        "ocean_mysql_sessions",
        Unit::Count,
        "Open relayed sessions, per job and database."
    );
    describe_counter!(
        "ocean_mysql_bytes_total",
        Unit::Bytes,
        "Bytes relayed, per job, database and direction (to_backend, to_client)."
    );
    describe_counter!(
        "ocean_mysql_sessions_closed_total",
        Unit::Count,
        "Relayed sessions ended, per job, database and reason."
    );
    describe_gauge!(
        "ocean_mysql_writable_candidates",
        Unit::Count,
        "Candidates (OCEAN_MYSQL_ROLE=auto) that answered writable at the last probe, per database; more than 1 is a split brain to page about."
    );
    describe_counter!(
        "ocean_mysql_pool_logins_total",
        Unit::Count,
        "Client logins by whether a pooled backend connection was reused (result=reused) or a new backend login was needed (result=new)."
    );
    describe_counter!(
        "ocean_mysql_pool_closed_total",
        Unit::Count,
        "Backend connections closed instead of kept for reuse, by reason: stale, idle, full, reset_failed, unrouted."
    );
    describe_counter!(
        "ocean_mysql_pool_waits_total",
        Unit::Count,
        "Multiplexed commands that found all pool_max connections of their server busy and waited (up to --pool-wait, then ERR 1040)."
    );
    describe_counter!(
        "ocean_mysql_pinned_total",
        Unit::Count,
        "Multiplexed sessions that keep their backend connection from then on, by what pinned them: transaction, temp_table, user_var, session_var, lock, prepared_statement, schema, session_function, multi_statement, write, statement, command, large_packet, lost (docs/mysql-proxy.md)."
    );
    describe_gauge!(
        "ocean_mysql_pool_busy",
        Unit::Count,
        "Backend connections multiplexed sessions hold now (a command running, or a pinned session), per database."
    );
    describe_gauge!(
        "ocean_mysql_pool_idle",
        Unit::Count,
        "Idle backend connections kept for reuse."
    );
    describe_counter!(
        "ocean_mysql_primary_changes_total",
        Unit::Count,
        "Times primary discovery moved a database's writes (to another candidate or to none), per database."
    );
}

/// Records one successful backend login of `database` that took `took`.
pub fn backend_login(database: &str, took: Duration) {
    metrics::histogram!("ocean_mysql_backend_login_seconds", "database" => database.to_string())
        .record(took.as_secs_f64());
}

/// Primary discovery's last round for `database`: how many candidates answered writable.
pub fn writable_candidates(database: &str, n: usize) {
    metrics::gauge!("ocean_mysql_writable_candidates", "database" => database.to_string())
        .set(n as f64);
}

/// Primary discovery moved `database`'s writes.
pub fn primary_change(database: &str) {
    metrics::counter!("ocean_mysql_primary_changes_total", "database" => database.to_string())
        .increment(1);
}

/// A login of `database` took a pooled backend connection (`reused`) or needed a new one.
pub fn pool_login(database: &str, reused: bool) {
    let result = if reused { "reused" } else { "new" };
    metrics::counter!("ocean_mysql_pool_logins_total", "database" => database.to_string(), "result" => result)
        .increment(1);
}

/// `n` backend connections of `database` closed instead of kept: `reason` is `stale`
/// (closed by the server meanwhile), `idle` (`--pool-idle-timeout`), `full`,
/// `reset_failed` or `unrouted` (the table no longer routes there).
pub fn pool_closed(database: &str, reason: &'static str, n: u64) {
    metrics::counter!("ocean_mysql_pool_closed_total", "database" => database.to_string(), "reason" => reason)
        .increment(n);
}

/// A multiplexed session of `database` found every connection of its server busy.
pub fn pool_wait(database: &str) {
    metrics::counter!("ocean_mysql_pool_waits_total", "database" => database.to_string())
        .increment(1);
}

/// A multiplexed session of `job` on `database` keeps its connection from now on, for
/// `reason` ([`crate::connection::pinning::PinReason`]).
pub fn pinned(job: &str, database: &str, reason: &'static str) {
    metrics::counter!("ocean_mysql_pinned_total", "job" => job.to_string(), "database" => database.to_string(), "reason" => reason)
        .increment(1);
}

/// Backend connections of `database` in use by multiplexed sessions (a command running,
/// or a pinned session): the handle the busy permit counts with.
pub fn pool_busy(database: &str) -> metrics::Gauge {
    metrics::gauge!("ocean_mysql_pool_busy", "database" => database.to_string())
}

/// Idle backend connections kept for `database`.
pub fn pool_idle(database: &str, n: usize) {
    metrics::gauge!("ocean_mysql_pool_idle", "database" => database.to_string()).set(n as f64);
}

/// Deletes the series of every job and database in `old` that `new` no longer has; run by
/// the one task that applies tables, before it stores `new`.
pub fn forget_removed(old: Option<&Index>, new: &Index) {
    let Some(old) = old else { return };
    for job in old.jobs.keys().filter(|j| !new.jobs.contains_key(*j)) {
        ocean_core::metrics::remove_series(PREFIX, &[("job", job)]);
    }
    for db in old
        .databases
        .keys()
        .filter(|d| !new.databases.contains_key(*d))
    {
        ocean_core::metrics::remove_series(PREFIX, &[("database", db)]);
    }
}

/// Whether `job` and `database` are both in the applied table: a session that outlived
/// its job or database records nothing that would bring their series back.
pub fn still_listed(index: Option<&Index>, job: &str, database: &str) -> bool {
    index.is_some_and(|i| i.jobs.contains_key(job) && i.databases.contains_key(database))
}

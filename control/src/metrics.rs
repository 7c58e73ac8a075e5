//! Control's Prometheus metrics: their descriptions (`# HELP`). Every per-kind series has
//! one of the five fixed table kinds as its label, so none outlives what it describes.

/// Describes control's metrics; called once at start. The list is docs/metrics.md's
/// control section.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "ocean_control_syncs_total",
        Unit::Count,
        "Syncs from Marathon (or the state file), per result (ok, error)."
    );
    describe_histogram!(
        "ocean_control_sync_duration_seconds",
        Unit::Seconds,
        "Time of one successful sync: fetch, resolve, derive, guard, publish."
    );
    describe_histogram!(
        "ocean_control_derive_seconds",
        Unit::Seconds,
        "Time to derive every table from the normalized Marathon state."
    );
    describe_histogram!(
        "ocean_control_sync_stage_seconds",
        Unit::Seconds,
        "Time of each stage of a successful sync: fetch (Marathon or the file, and parsing), normalize, derive, publish (guard, serialize, ETag, hand to the long-polls)."
    );
    describe_counter!(
        "ocean_control_derives_total",
        Unit::Count,
        "Derives of every table, per how the dns names were made (patched: only the apps that changed since the last sync; whole: every app)."
    );
    describe_counter!(
        "ocean_control_dns_tables_recycled_total",
        Unit::Count,
        "Patched derives that rewrote the stale names of the dns table published before the current one, instead of copying every name into a new table."
    );
    describe_counter!(
        "ocean_control_table_buffers_reused_total",
        Unit::Count,
        "Tables serialized into the buffers of the version the last publish replaced, instead of fresh memory (a response still holding that version makes the next one allocate)."
    );
    describe_counter!(
        "ocean_control_normalizes_total",
        Unit::Count,
        "Normalizes of Marathon's apps, per how (patched: only the apps events named, the rest taken from the last sync; whole: every app)."
    );
    describe_gauge!(
        "ocean_control_last_sync_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the last successful sync."
    );
    describe_gauge!(
        "ocean_control_marathon_sync_age_seconds",
        Unit::Seconds,
        "Seconds since the last successful sync (set when /metrics is scraped)."
    );
    describe_counter!(
        "ocean_control_marathon_fetches_total",
        Unit::Count,
        "Successful fetches from Marathon, per what (list: every app; app: one app that events named)."
    );
    describe_gauge!(
        "ocean_control_view_lag_seconds",
        Unit::Seconds,
        "How far the published tables may be behind Marathon: 0 while the event stream is up and every event is synced (set when /metrics is scraped)."
    );
    describe_gauge!(
        "ocean_control_marathon_consecutive_failures",
        Unit::Count,
        "Syncs failed in a row since the last success (set when /metrics is scraped)."
    );
    describe_gauge!(
        "ocean_control_event_stream_up",
        Unit::Count,
        "1 while the Marathon event stream (/v2/events) is connected, else 0."
    );
    describe_counter!(
        "ocean_control_marathon_events_total",
        Unit::Count,
        "Marathon events received, per event type."
    );
    describe_gauge!(
        "ocean_control_table_held",
        Unit::Count,
        "Pools the guard holds at their last published state, per table kind."
    );
    describe_gauge!(
        "ocean_control_table_backends",
        Unit::Count,
        "Backends in the published table, per kind."
    );
    describe_gauge!(
        "ocean_control_table_bytes",
        Unit::Bytes,
        "Size of the published table's JSON, per kind."
    );
    describe_counter!(
        "ocean_control_table_bytes_sent_total",
        Unit::Bytes,
        "Table bodies sent to subscribers, per kind and encoding (delta for ?since= answers, gzip when the subscriber accepts it, else identity)."
    );
    describe_counter!(
        "ocean_control_table_deltas_total",
        Unit::Count,
        "Answers to ?since=, per kind and result (delta, or full when the history did not reach back)."
    );
    describe_gauge!(
        "ocean_control_table_etag_prefix",
        Unit::Count,
        "The first 8 hex digits of the published table's ETag as a number, per kind."
    );
    describe_counter!(
        "ocean_control_table_publishes_total",
        Unit::Count,
        "Tables published (a changed ETag), per kind."
    );
    describe_counter!(
        "ocean_control_table_requests_total",
        Unit::Count,
        "GET /v1/tables/{kind} answered, per kind and status (200, 304)."
    );
    describe_gauge!(
        "ocean_control_subscribers",
        Unit::Count,
        "Proxies polling a table recently, per kind (set when /metrics is scraped)."
    );
    describe_gauge!(
        "ocean_control_subscribers_lagging",
        Unit::Count,
        "Subscribers whose applied ETag is not the current one, per kind (set when /metrics is scraped)."
    );
    describe_counter!(
        "ocean_control_unauthorized_total",
        Unit::Count,
        "API requests refused with 401 (no or unknown token)."
    );
    describe_counter!(
        "ocean_control_forbidden_total",
        Unit::Count,
        "API requests refused with 403, per resource kind (a table kind or api) and reason (scope, plaintext)."
    );
    describe_counter!(
        "ocean_control_tls_handshake_failures_total",
        Unit::Count,
        "TLS handshakes on the API port that failed, per reason (error, timeout)."
    );
}

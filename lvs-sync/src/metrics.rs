//! lvs-sync's Prometheus metrics: their descriptions (`# HELP`). lvs-sync has no series per
//! virtual service (the counts are totals), so none outlives a service that left the table.

/// Describes lvs-sync's metrics; called once at start. The list is docs/metrics.md's
/// lvs-sync section.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        "ocean_lvs_reconcile_seconds",
        Unit::Seconds,
        "Time of one reconcile: read the kernel's IPVS table, plan, apply, verify."
    );
    describe_gauge!(
        "ocean_lvs_services",
        Unit::Count,
        "Virtual services lvs-sync owns after the last reconcile."
    );
    describe_gauge!(
        "ocean_lvs_destinations",
        Unit::Count,
        "Real servers of the owned virtual services after the last reconcile."
    );
    describe_gauge!(
        "ocean_lvs_refused_entries",
        Unit::Count,
        "Table entries refused on their own (and skipped) in the last reconcile."
    );
    describe_counter!(
        "ocean_lvs_writes_total",
        Unit::Count,
        "IPVS changes written to the kernel."
    );
    describe_counter!(
        "ocean_lvs_operations_total",
        Unit::Count,
        "IPVS changes written, per kind (add_service, edit_service, del_service, add_dest, edit_dest, del_dest)."
    );
    describe_counter!(
        "ocean_lvs_drift_repaired_total",
        Unit::Count,
        "Changes a resync made to repair the kernel's table drifting from an unchanged table."
    );
    describe_counter!(
        "ocean_lvs_errors_total",
        Unit::Count,
        "Reconcile failures, per stage (read, plan, state, table, apply, verify, host_addrs)."
    );
    describe_counter!(
        "ocean_lvs_tables_refused_total",
        Unit::Count,
        "Whole tables refused, per reason (max_services)."
    );
}

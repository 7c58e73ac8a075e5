//! The process-wide Prometheus recorder.
//!
//! Every daemon records through the `metrics` facade; `/metrics` renders this recorder.
//! `ocean up` runs several daemons in one process and they share it: series carry labels
//! (`kind`, `cluster`, `pool`, ...) that tell them apart.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first call and returns its handle.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        match builder.install_recorder() {
            Ok(h) => h,
            // Another recorder is already global (only possible in tests that install their
            // own): keep a private one so rendering still works.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

/// Renders every metric in the Prometheus text format.
pub fn render() -> String {
    handle().render()
}

//! # ocean-lvs-sync
//!
//! Keeps the kernel's IPVS table equal to the virtual services Marathon apps declare (the
//! `lvs` table), idempotently and beside other writers.
//!
//! # Layout
//! - [`model`]: IPVS state as data (services, destinations), the desired state built from a
//!   table (refusing dangerous VIPs whatever the table says), and an in-memory IPVS for tests.
//! - [`host`]: this host's own addresses (getifaddrs), which are never VIPs.
//! - [`plan`]: the reconcile engine: current + desired + ownership + drain state -> the
//!   minimal list of operations.
//!
//! - [`netlink`]: IPVS over generic netlink (hand-encoded messages over `netlink-sys`).
//! - [`backend`]: netlink, dry-run, ipvsadm-restore (and the in-memory model for tests).
//! - [`reconcile`]: one read-plan-apply-verify round with ownership memory and metrics.
//! - [`daemon`]: `Args`, `Config`, `start`/`run`, `--once`.

pub mod backend;
pub mod daemon;
pub mod host;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod plan;
pub mod reconcile;

pub use daemon::{run, run_once, start, Args, Config, Running};

#[cfg(test)]
mod tests;

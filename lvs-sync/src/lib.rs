//! # ocean-lvs-sync
//!
//! Keeps the kernel's IPVS table equal to the virtual services Marathon apps declare (the
//! `lvs` table), idempotently and beside other writers.
//!
//! # Layout
//! - [`model`]: IPVS state as data (services, destinations), the desired state built from a
//!   table, and an in-memory IPVS for tests.
//! - [`plan`]: the reconcile engine: current + desired + ownership + drain state -> the
//!   minimal list of operations.
//!
//! The kernel backends (netlink, dry-run, ipvsadm-restore) and the daemon come with issue 7.

pub mod model;
pub mod plan;

#[cfg(test)]
mod tests;

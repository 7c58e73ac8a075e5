//! Backend side: connections to cluster nodes, their pools, and the slot map.
//!
//! - [`backend`]: one node connection: the shared multiplexed [`SharedConn`] every client of
//!   a worker uses, and the [`DedicatedConn`] a client in a stateful mode pins.
//! - [`cluster`]: one cluster: its nodes, the slot map (swapped whole with `ArcSwap`) and
//!   its refresher, and the bounded pool of dedicated connections.

pub mod backend;
pub mod cluster;

pub use backend::{
    connect, one_shot, BackendError, BackendOpts, DedicatedConn, Failure, Job, JobResult, Reach,
    SharedConn,
};
pub use cluster::{Cluster, ClusterOpts, Lease, Node, SlotMap};

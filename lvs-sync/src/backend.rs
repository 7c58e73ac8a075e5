//! Where a plan goes: the kernel over netlink, or text for an operator.
//!
//! - [`Backend::Netlink`]: reads and writes the kernel's table.
//! - [`Backend::DryRun`]: reads nothing; starts from an empty table (the assumed state) and
//!   prints `ipvsadm ...` commands that make each change, keeping the assumed state so the
//!   next reconcile prints only what changed since.
//! - [`Backend::IpvsadmRestore`]: the same, printed as `ipvsadm-restore` input lines.
//! - [`Backend::Memory`]: the in-memory model, for tests.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::model::{InMemoryIpvs, Ipvs, IpvsError};
use crate::netlink::{NetlinkError, NetlinkIpvs};
use crate::plan::{IpvsWrite, Op};

/// Which backend `--backend` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// The kernel, over generic netlink.
    Netlink,
    /// Print the `ipvsadm` commands that would make each change; touch nothing.
    DryRun,
    /// Print the changes as `ipvsadm-restore` input; touch nothing.
    IpvsadmRestore,
}

/// Where printing backends write: stdout, or a buffer a test reads.
#[derive(Clone)]
pub enum Output {
    Stdout,
    Buffer(Arc<Mutex<Vec<u8>>>),
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Stdout => f.write_str("Stdout"),
            Output::Buffer(_) => f.write_str("Buffer"),
        }
    }
}

impl Output {
    fn line(&self, line: &str) -> Result<(), IpvsError> {
        let r = match self {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}").and_then(|_| out.flush())
            }
            Output::Buffer(b) => match b.lock() {
                Ok(mut b) => writeln!(b, "{line}"),
                Err(_) => Ok(()),
            },
        };
        r.map_err(|e| IpvsError::Other(format!("writing the plan: {e}")))
    }
}

/// A backend, opened.
#[derive(Debug)]
pub enum Backend {
    Netlink(NetlinkIpvs),
    DryRun { assumed: InMemoryIpvs, out: Output },
    IpvsadmRestore { assumed: InMemoryIpvs, out: Output },
    Memory(Arc<Mutex<InMemoryIpvs>>),
}

/// A read of the table that failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("the in-memory table's lock is poisoned")]
    Poisoned,
}

impl Backend {
    /// Opens `kind`; printing backends write to `out`.
    ///
    /// # Errors
    /// The netlink backend fails when the kernel has no IPVS or the socket cannot be opened.
    pub fn open(kind: BackendKind, out: Output) -> Result<Self, NetlinkError> {
        Ok(match kind {
            BackendKind::Netlink => Backend::Netlink(NetlinkIpvs::open()?),
            BackendKind::DryRun => Backend::DryRun {
                assumed: InMemoryIpvs::new(),
                out,
            },
            BackendKind::IpvsadmRestore => Backend::IpvsadmRestore {
                assumed: InMemoryIpvs::new(),
                out,
            },
        })
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Netlink(_) => "netlink",
            Backend::DryRun { .. } => "dry-run",
            Backend::IpvsadmRestore { .. } => "ipvsadm-restore",
            Backend::Memory(_) => "memory",
        }
    }

    /// Whether applying changes the kernel (and so whether changes are kernel changes to
    /// log and count).
    pub fn is_kernel(&self) -> bool {
        matches!(self, Backend::Netlink(_) | Backend::Memory(_))
    }

    /// The whole table (for printing backends, the assumed state).
    ///
    /// # Errors
    /// Netlink errors.
    pub fn read(&mut self) -> Result<Ipvs, ReadError> {
        match self {
            Backend::Netlink(n) => Ok(n.read()?),
            Backend::DryRun { assumed, .. } | Backend::IpvsadmRestore { assumed, .. } => {
                Ok(assumed.services().clone())
            }
            Backend::Memory(m) => m
                .lock()
                .map(|m| m.services().clone())
                .map_err(|_| ReadError::Poisoned),
        }
    }
}

impl IpvsWrite for Backend {
    fn apply(&mut self, op: &Op) -> Result<(), IpvsError> {
        match self {
            Backend::Netlink(n) => n.apply_op(op),
            Backend::DryRun { assumed, out } => {
                assumed.apply(op)?;
                out.line(&format!("ipvsadm {op}"))
            }
            Backend::IpvsadmRestore { assumed, out } => {
                assumed.apply(op)?;
                out.line(&op.to_string())
            }
            Backend::Memory(m) => match m.lock() {
                Ok(mut m) => m.apply(op),
                Err(_) => Err(IpvsError::Other("in-memory table lock poisoned".into())),
            },
        }
    }
}

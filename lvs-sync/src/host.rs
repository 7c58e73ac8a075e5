//! This host's own addresses: never VIPs (see [`crate::model::refused_vip`]).
//!
//! Read with `getifaddrs(3)` through nix's safe wrapper when the reconciler starts and again
//! before every reconcile, so an address added later (DHCP, a new interface) is refused too.

use std::net::IpAddr;

/// Where the reconciler gets this host's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAddrs {
    /// Every address of every interface, from `getifaddrs` (what the daemon uses).
    System,
    /// A fixed list (tests, and hosts whose addresses are given on the command line).
    Fixed(Vec<IpAddr>),
}

/// Why this host's addresses could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading this host's addresses (getifaddrs): {0}")]
pub struct HostAddrsError(#[from] nix::Error);

impl HostAddrs {
    /// The addresses now.
    ///
    /// # Errors
    /// `getifaddrs` failed ([`HostAddrs::System`] only).
    pub fn read(&self) -> Result<Vec<IpAddr>, HostAddrsError> {
        match self {
            HostAddrs::Fixed(v) => Ok(v.clone()),
            HostAddrs::System => system(),
        }
    }
}

/// Every IPv4 and IPv6 address of every interface, sorted, without duplicates.
fn system() -> Result<Vec<IpAddr>, HostAddrsError> {
    let mut out: Vec<IpAddr> = nix::ifaddrs::getifaddrs()?
        .filter_map(|i| {
            let a = i.address?;
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_system_list_has_loopback_and_the_fixed_list_is_itself() {
        let sys = HostAddrs::System.read().unwrap();
        assert!(
            sys.contains(&IpAddr::from([127, 0, 0, 1])),
            "getifaddrs without 127.0.0.1: {sys:?}"
        );
        let fixed = vec!["192.0.2.9".parse().unwrap()];
        assert_eq!(HostAddrs::Fixed(fixed.clone()).read().unwrap(), fixed);
    }
}

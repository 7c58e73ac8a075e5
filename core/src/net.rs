//! Networks in CIDR notation: one type for every daemon's flags, config and tables.
//!
//! [`ipnet`] does the arithmetic. This adds the two rules Ocean needs everywhere, so that
//! no two daemons disagree on them:
//! - a bare address is a host network (`10.0.0.1` is `10.0.0.1/32`);
//! - an IPv4-mapped IPv6 address is the IPv4 address (`::ffff:10.0.0.1` is `10.0.0.1`),
//!   on both sides of every check: a dual-stack socket reports IPv4 peers that way.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// A network such as `10.99.0.0/24` or `fd00::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr(IpNet);

/// A string that is not a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {input:?}: {reason}")]
pub struct CidrError {
    pub input: String,
    pub reason: String,
}

impl Cidr {
    /// The network as `ipnet` has it (IPv4-mapped networks already turned into IPv4).
    pub fn net(&self) -> IpNet {
        self.0
    }

    /// The prefix length: the larger, the more specific.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// Whether `ip` lies in this network; never across address families, and an
    /// IPv4-mapped `ip` counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| CidrError {
            input: s.to_string(),
            reason,
        };
        let t = s.trim();
        let net = match t.split_once('/') {
            Some(_) => t.parse::<IpNet>().map_err(|e| err(e.to_string()))?,
            None => IpNet::from(
                t.parse::<IpAddr>()
                    .map_err(|_| err("not an IP address or network".into()))?,
            ),
        };
        Ok(Cidr(canonical(net)))
    }
}

impl TryFrom<String> for Cidr {
    type Error = CidrError;
    fn try_from(s: String) -> Result<Self, CidrError> {
        s.parse()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `::ffff:10.0.0.0/104` is `10.0.0.0/8`.
fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn bare_addresses_are_host_networks() {
        assert_eq!(c("10.0.0.1").to_string(), "10.0.0.1/32");
        assert_eq!(c("fd00::1").to_string(), "fd00::1/128");
        assert!(c("10.0.0.1").contains("10.0.0.1".parse().unwrap()));
        assert!(!c("10.0.0.1").contains("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn v4_mapped_addresses_are_ipv4_on_both_sides() {
        let net = c("10.0.0.0/8");
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("::ffff:11.1.2.3".parse().unwrap()));
        assert_eq!(c("::ffff:10.0.0.0/104"), net);
        assert!(c("::ffff:10.0.0.0/104").contains("10.9.9.9".parse().unwrap()));
        assert!(!c("fd00::/8").contains("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn bad_networks_say_why() {
        for bad in ["10.0.0.0/33", "bogus/8", "10.0.0.0/x", "", "::/129"] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert_eq!(e.input, bad);
        }
        assert_eq!(c("0.0.0.0/0").prefix_len(), 0);
    }
}

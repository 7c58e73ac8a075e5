//! The EDNS Client Subnet option (RFC 7871): read from a query, written back in the
//! answer's OPT record. Its own module because both the query parser and the encoder use it.

/// An EDNS Client Subnet option: the network of the client a resolver asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecs {
    /// 1: IPv4, 2: IPv6.
    pub family: u16,
    pub source_len: u8,
    /// The address, bits past `source_len` cleared.
    pub addr: std::net::IpAddr,
    /// Set by the responder when it used the option: echo it with this SCOPE
    /// PREFIX-LENGTH (how much of the address the answer depends on).
    pub scope: Option<u8>,
}

/// EDNS option code of Client Subnet.
pub const OPT_ECS: u16 = 8;

impl Ecs {
    /// Reads an ECS option's data (after code and length).
    pub fn parse(data: &[u8]) -> Result<Ecs, &'static str> {
        let (Some(family), Some(&source_len), Some(addr)) =
            (data.get(..2), data.get(2), data.get(4..))
        else {
            return Err("client subnet option shorter than 4 bytes");
        };
        let family = u16::from_be_bytes([family[0], family[1]]);
        let max = match family {
            1 => 32,
            2 => 128,
            _ => return Err("client subnet family is not IPv4 or IPv6"),
        };
        if source_len > max {
            return Err("client subnet source prefix longer than the address");
        }
        if addr.len() != usize::from(source_len).div_ceil(8) {
            return Err("client subnet address length does not match its prefix");
        }
        let addr = if family == 1 {
            let mut b = [0u8; 4];
            b[..addr.len()].copy_from_slice(addr);
            let a = u32::from_be_bytes(b)
                & u32::MAX
                    .checked_shl(32 - u32::from(source_len))
                    .unwrap_or(0);
            std::net::IpAddr::from(a.to_be_bytes())
        } else {
            let mut b = [0u8; 16];
            b[..addr.len()].copy_from_slice(addr);
            let a = u128::from_be_bytes(b)
                & u128::MAX
                    .checked_shl(128 - u32::from(source_len))
                    .unwrap_or(0);
            std::net::IpAddr::from(a.to_be_bytes())
        };
        Ok(Ecs {
            family,
            source_len,
            addr,
            scope: None,
        })
    }

    /// The address bytes on the wire: `source_len` rounded up to whole bytes.
    pub fn addr_bytes(&self) -> Vec<u8> {
        let n = usize::from(self.source_len).div_ceil(8);
        let all: Vec<u8> = match self.addr {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        };
        all.get(..n).map(<[u8]>::to_vec).unwrap_or(all)
    }
}

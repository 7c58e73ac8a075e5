//! Table bodies on the wire: control serves a full table gzip-compressed to a subscriber
//! that sends `Accept-Encoding: gzip` (JSON of addresses and names compresses ~10x), and the
//! subscriber inflates it, never past a bound.

use std::io::{Read, Write};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

/// The largest table a subscriber inflates (a 100k-task dns table is ~130 MB).
pub const MAX_INFLATED: u64 = 1 << 30;

/// `body` gzip-compressed (level 6: the table is compressed once per publish).
pub fn compress(body: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 8), Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

/// Inflates a gzip body of at most `limit` bytes once inflated.
///
/// # Errors
/// Not gzip, truncated, or larger than `limit` inflated.
pub fn inflate(body: &[u8], limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(8).min(64 << 20));
    GzDecoder::new(body)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "the table inflates past {limit} bytes"
        )));
    }
    Ok(out)
}

/// Whether an `Accept-Encoding` header value accepts gzip (`gzip`, `gzip;q=0.5`, `*`; not
/// `gzip;q=0`).
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_table_round_trips_and_a_bomb_is_refused() {
        let body: Vec<u8> = (0..100_000)
            .flat_map(|i| {
                format!("{{\"web-{i}.marathon.mesos.\":{{\"a\":[\"10.0.0.1\"]}}}},").into_bytes()
            })
            .collect();
        let z = compress(&body);
        assert!(z.len() * 5 < body.len(), "{} -> {}", body.len(), z.len());
        assert_eq!(inflate(&z, MAX_INFLATED).unwrap(), body);
        assert!(
            inflate(&z, body.len() as u64 - 1).is_err(),
            "past the bound"
        );
        assert!(inflate(b"{\"not\":\"gzip\"}", MAX_INFLATED).is_err());
        assert!(
            inflate(&z[..z.len() / 2], MAX_INFLATED).is_err(),
            "truncated"
        );
    }

    #[test]
    fn accept_encoding_is_read_as_http_says() {
        for yes in ["gzip", "gzip, deflate", "br;q=1.0, gzip;q=0.5", "*", "GZIP"] {
            assert!(accepts_gzip(yes), "{yes}");
        }
        for no in ["", "identity", "deflate, br", "gzip;q=0", "gzip; q=0.0"] {
            assert!(!accepts_gzip(no), "{no}");
        }
    }
}

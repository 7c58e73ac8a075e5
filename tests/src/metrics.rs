//! `/metrics` for the per-daemon metrics tests (issue 13): scrape an admin port, check that
//! every metric family has `# HELP`, and pick out series.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body of `GET /metrics` on `addr` (HTTP/1.1, `Connection: close`).
pub async fn scrape(addr: SocketAddr) -> Result<String> {
    let (status, body) = get(addr, "/metrics").await?;
    if !status.starts_with("HTTP/1.1 200") {
        bail!("GET /metrics: {status}");
    }
    Ok(body)
}

/// `GET path` on an admin port: its status line and body (chunked bodies joined).
pub async fn get(addr: SocketAddr, path: &str) -> Result<(String, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(request.as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        anyhow::Ok(out)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), get)
        .await
        .with_context(|| format!("GET {path} timed out"))??;
    let (head, body) = raw.split_once("\r\n\r\n").context("no HTTP header")?;
    let status = head.lines().next().unwrap_or_default().to_string();
    // A chunked body: keep the chunk payloads only.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).context("chunk size")?;
            if n == 0 {
                break;
            }
            out.push_str(tail.get(..n).context("short chunk")?);
            rest = tail.get(n + 2..).unwrap_or("");
        }
        return Ok((status, out));
    }
    Ok((status, body.to_string()))
}

/// Metric families in `text` with a `# TYPE` line but no `# HELP` line.
pub fn undescribed(text: &str) -> Vec<String> {
    ocean_core::metrics::undescribed(text)
}

/// The sample lines of `text` whose name is `name` or `name` plus a histogram suffix
/// (`_bucket`, `_sum`, `_count`) and that contain every one of `needles` (for example
/// `server="127.0.0.1:11211"`).
pub fn series<'a>(text: &'a str, name: &str, needles: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let n = l.split(['{', ' ']).next().unwrap_or("");
            n == name
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| n.strip_suffix(s) == Some(name))
        })
        .filter(|l| needles.iter().all(|x| l.contains(x)))
        .collect()
}

/// The number of the first sample line [`series`] finds, if any.
pub fn value(text: &str, name: &str, needles: &[&str]) -> Option<f64> {
    series(text, name, needles)
        .first()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

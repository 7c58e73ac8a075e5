//! `ocean status`: control's status page for a terminal (aligned text) or a script (`--json`).
//!
//! It reads control's `/v1/status`, the same data the page at `/` shows: the tables with
//! ETag, size and age; the subscribers, lagging ones first; the problems; the apps; the last
//! Marathon sync. Strings that came from Marathon or from a subscriber are printed with
//! control characters escaped, so an app id cannot move the cursor or recolour the terminal.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

/// `ocean status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Control's base URL (`http://` or `https://`).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:7070")]
    control: url::Url,
    /// A file holding control's API token. The status reads every table's metadata, the
    /// apps and the subscribers, so it needs an unscoped token (one without `tables`).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// For an `https://` control: trust only the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    control_ca: Option<PathBuf>,
    /// Print control's JSON (`/v1/status`) instead of text.
    #[arg(long)]
    json: bool,
    /// How long to wait for control's answer.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Fetches control's status and prints it.
///
/// # Errors
/// Control cannot be reached, refuses the token (401/403), or answers something that is not
/// its status JSON; the message names the URL.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let url = args
        .control
        .join("v1/status")
        .with_context(|| format!("--control {}", args.control))?;
    let mut builder =
        ocean_core::http::client_builder(Duration::from_secs(3)).timeout(args.timeout);
    if let Some(ca) = &args.control_ca {
        builder = ocean_core::http::trust_only(
            builder,
            ocean_core::tls::PemFile::new("--control-ca", ca),
        )?;
    }
    let client = builder.build().context("building the HTTP client")?;
    let mut req = client.get(url.clone());
    if let Some(path) = &args.token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("--token-file {}", path.display()))?;
        let token = ocean_core::secret::Secret::new(token.trim().to_string());
        req = req.bearer_auth(token.expose());
    }
    let resp = req.send().await.with_context(|| format!("GET {url}"))?;
    let code = resp.status();
    let body = resp.text().await.with_context(|| format!("GET {url}"))?;
    if !code.is_success() {
        anyhow::bail!("GET {url}: {code}: {}", body.trim());
    }
    let status: Value =
        serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(args.control.as_str(), &status));
    }
    Ok(())
}

/// A string from the network, safe to print on a terminal: control characters escaped.
fn clean(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => clean(s),
        other => clean(&other.to_string()),
    }
}

fn short(v: &Value) -> String {
    match v.as_str() {
        Some(s) => clean(s.get(..12).unwrap_or(s)),
        None => "-".into(),
    }
}

fn age(v: &Value) -> String {
    match v.as_u64() {
        Some(s) => ocean_core::status_page::human_age(Duration::from_secs(s)),
        None => "-".into(),
    }
}

/// Rows padded to their widest cell, two spaces between columns.
fn aligned(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            out.push_str(c);
            if i < last {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(c.chars().count());
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The text `ocean status` prints for control's `/v1/status` JSON.
pub fn render(control: &str, s: &Value) -> String {
    let mut out = String::new();
    let health = &s["health"];
    out.push_str(&format!(
        "control {}  {}{}\n",
        clean(control),
        text(&health["status"]),
        health["reason"]
            .as_str()
            .map(|r| format!(": {}", clean(r)))
            .unwrap_or_default()
    ));
    let sync = &s["sync"];
    let now = s["generated_unix"].as_u64().unwrap_or(0);
    let last = match sync["last_success_unix"].as_u64() {
        Some(t) => format!(
            "{} ago",
            ocean_core::status_page::human_age(Duration::from_secs(now.saturating_sub(t)))
        ),
        None => "never".into(),
    };
    out.push_str(&format!(
        "last Marathon sync {last} from {}; {} apps, {} tasks; event stream {}\n",
        text(&sync["source"]),
        text(&sync["apps"]),
        text(&sync["tasks"]),
        match (
            sync["event_stream_up"].as_bool() == Some(true),
            sync["source"]
                .as_str()
                .unwrap_or("")
                .starts_with("marathon"),
        ) {
            (true, _) => "up",
            (false, true) => "down",
            (false, false) => "none (not Marathon)",
        }
    ));
    if let Some(e) = sync["last_error"].as_str() {
        out.push_str(&format!(
            "last sync error ({} in a row): {}\n",
            text(&sync["consecutive_failures"]),
            clean(e)
        ));
    }
    for h in list(&sync["held"]) {
        out.push_str(&format!("held: {}\n", text(&h["message"])));
    }

    let tables: Vec<Vec<String>> = list(&s["tables"])
        .iter()
        .map(|t| {
            vec![
                text(&t["kind"]),
                short(&t["etag"]),
                text(&t["bytes"]),
                text(&t["backends"]),
                age(&t["age_s"]),
                match t["lagging"].as_u64() {
                    Some(n) if n > 0 => format!("{} ({n} lagging)", text(&t["subscribers"])),
                    _ => text(&t["subscribers"]),
                },
            ]
        })
        .collect();
    out.push_str(&format!("\nTABLES ({})\n", tables.len()));
    out.push_str(&aligned(
        &["TABLE", "ETAG", "BYTES", "BACKENDS", "AGE", "SUBSCRIBERS"],
        &tables,
    ));

    // Control sends them lagging first; sorted again so the order is this tool's promise.
    let mut subs: Vec<&Value> = list(&s["subscribers"]).iter().collect();
    subs.sort_by_key(|v| v["lagging"].as_bool() != Some(true));
    let lagging = subs
        .iter()
        .filter(|v| v["lagging"].as_bool() == Some(true))
        .count();
    let rows: Vec<Vec<String>> = subs
        .iter()
        .map(|v| {
            let lagging = v["lagging"].as_bool() == Some(true);
            vec![
                if lagging { "LAGGING" } else { "ok" }.to_string(),
                text(&v["kind"]),
                text(&v["id"]),
                text(&v["addr"]),
                short(&v["running"]),
                short(&v["current"]),
                if lagging {
                    match v["behind_s"].as_u64() {
                        Some(_) => age(&v["behind_s"]),
                        None => "?".into(),
                    }
                } else {
                    "-".into()
                },
                format!("{} ago", age(&v["last_seen_s_ago"])),
                match v["last_refusal_reason"].as_str() {
                    Some(r) => clean(r),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    out.push_str(&format!(
        "\nSUBSCRIBERS ({}, {lagging} lagging)\n",
        rows.len()
    ));
    out.push_str(&aligned(
        &[
            "STATE",
            "TABLE",
            "SUBSCRIBER",
            "ADDRESS",
            "APPLIED",
            "CURRENT",
            "BEHIND",
            "LAST SEEN",
            "LAST REFUSAL",
        ],
        &rows,
    ));

    let problems: Vec<Vec<String>> = list(&s["problems"])
        .iter()
        .map(|p| vec![text(&p["app"]), text(&p["table"]), text(&p["message"])])
        .collect();
    out.push_str(&format!("\nPROBLEMS ({})\n", problems.len()));
    out.push_str(&aligned(&["APP", "TABLE", "PROBLEM"], &problems));

    let apps: Vec<Vec<String>> = list(&s["apps"])
        .iter()
        .map(|a| {
            vec![
                text(&a["id"]),
                text(&a["tasks"]),
                text(&a["backends"]),
                text(&a["problems"]),
            ]
        })
        .collect();
    out.push_str(&format!("\nAPPS ({})\n", apps.len()));
    out.push_str(&aligned(&["APP", "TASKS", "BACKENDS", "PROBLEMS"], &apps));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("/web\x1b[31m\n"), "/web\\u{1b}[31m\\n");
        assert_eq!(clean("/miui/browser/web"), "/miui/browser/web");
    }

    #[test]
    fn columns_line_up() {
        let t = aligned(
            &["A", "BB"],
            &[
                vec!["long".into(), "x".into()],
                vec!["s".into(), "y".into()],
            ],
        );
        assert_eq!(t, "A     BB\nlong  x\ns     y\n");
    }
}

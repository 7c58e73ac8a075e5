//! The HTML status pages every Ocean daemon serves at `/`: control's view of the platform and
//! each proxy's view of itself on its admin port.
//!
//! Server-rendered, one request, no JavaScript and no external resources (inline CSS only):
//! the page works in a terminal browser and behind a strict CSP. Everything shown that
//! came from outside the process (app ids, labels, problem text, subscriber ids, error
//! messages) goes through [`escape`]; the helpers here escape every cell they are given, so
//! a caller cannot forget.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// `s` with the five characters that mean something in HTML (text or a quoted attribute)
/// replaced by entities.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A duration for people: `0s`, `42s`, `3m 5s`, `2h 10m`, `3d 4h`.
pub fn human_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Seconds since the Unix epoch now (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How long ago `unix` seconds was, for people (`12s ago`); `never` for `None`.
pub fn ago(unix: Option<u64>) -> String {
    match unix {
        Some(t) => format!(
            "{} ago",
            human_age(Duration::from_secs(unix_now().saturating_sub(t)))
        ),
        None => "never".into(),
    }
}

/// The first 12 hex digits of an ETag: enough to tell versions apart on a screen.
pub fn short_etag(etag: &str) -> &str {
    etag.get(..12).unwrap_or(etag)
}

/// How a row or a badge looks: the colour of its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Ok,
    Warn,
    Bad,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Plain => "",
            Tone::Ok => "ok",
            Tone::Warn => "warn",
            Tone::Bad => "bad",
        }
    }
}

/// A badge: a short coloured word (`ok`, `stale`, `lagging`), escaped.
pub fn badge(text: &str, tone: Tone) -> Html {
    Html(format!(
        "<span class=\"badge {}\">{}</span>",
        tone.class(),
        escape(text)
    ))
}

/// Markup that is already safe (built by these helpers from escaped text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Html(String);

impl Html {
    /// Text, escaped.
    pub fn text(s: &str) -> Html {
        Html(escape(s))
    }

    /// Text in a monospace `<code>`, escaped (ETags, addresses).
    pub fn code(s: &str) -> Html {
        Html(format!("<code>{}</code>", escape(s)))
    }

    /// An ETag, shortened to [`short_etag`] with the whole one as the tooltip.
    pub fn etag(etag: &str) -> Html {
        Html(format!(
            "<code title=\"{}\">{}</code>",
            escape(etag),
            escape(short_etag(etag))
        ))
    }

    /// The markup.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Html {
    fn from(s: &str) -> Html {
        Html::text(s)
    }
}

impl From<String> for Html {
    fn from(s: String) -> Html {
        Html::text(&s)
    }
}

/// One HTML table: a header row and rows of cells.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<(Tone, Vec<Html>)>,
    empty: String,
}

impl Table {
    /// A table with these column names; `empty` is shown when it has no rows.
    pub fn new(headers: &[&str], empty: &str) -> Table {
        Table {
            headers: headers.iter().map(|h| escape(h)).collect(),
            rows: Vec::new(),
            empty: escape(empty),
        }
    }

    /// Adds a row; `tone` colours it.
    pub fn row(&mut self, tone: Tone, cells: Vec<Html>) {
        self.rows.push((tone, cells));
    }

    /// The number of rows so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table's markup (or the `empty` line).
    pub fn render(&self) -> Html {
        if self.rows.is_empty() {
            return Html(format!("<p class=\"empty\">{}</p>", self.empty));
        }
        let mut out = String::from("<table><thead><tr>");
        for h in &self.headers {
            let _ = write!(out, "<th>{h}</th>"); // writing to a String cannot fail
        }
        out.push_str("</tr></thead><tbody>");
        for (tone, cells) in &self.rows {
            match tone {
                Tone::Plain => out.push_str("<tr>"),
                t => {
                    let _ = write!(out, "<tr class=\"{}\">", t.class()); // cannot fail
                }
            }
            for c in cells {
                let _ = write!(out, "<td>{}</td>", c.0); // cannot fail
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table>");
        Html(out)
    }
}

/// A list of `name: value` facts (a definition list).
pub fn facts(items: &[(&str, Html)]) -> Html {
    let mut out = String::from("<dl>");
    for (k, v) in items {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", escape(k), v.0); // cannot fail
    }
    out.push_str("</dl>");
    Html(out)
}

/// A section: a heading (with an `id` for links) and its content.
pub fn section(id: &str, heading: &str, content: Html) -> Html {
    Html(format!(
        "<section id=\"{}\"><h2>{}</h2>{}</section>",
        escape(id),
        escape(heading),
        content.0
    ))
}

/// Pieces of markup one after the other.
pub fn concat(parts: impl IntoIterator<Item = Html>) -> Html {
    Html(parts.into_iter().map(|h| h.0).collect())
}

const CSS: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:80em;padding:0 1em;color:#1d2330;background:#fafbfc}\
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.6em 0 .5em;border-bottom:1px solid #d8dde6;padding-bottom:.2em}\
.sub{color:#5b6475;margin:0 0 1em}\
table{border-collapse:collapse;width:100%;background:#fff}\
th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #e6e9ef;vertical-align:top}\
th{background:#eef1f6;font-weight:600}\
tr.bad td{background:#fdecec}tr.warn td{background:#fff7e0}\
code{font:12px ui-monospace,monospace}\
.badge{display:inline-block;padding:0 .5em;border-radius:.6em;font-size:.85em;font-weight:600;background:#e6e9ef}\
.badge.ok{background:#dff3e4;color:#17602a}.badge.warn{background:#fff0c2;color:#7a5400}.badge.bad{background:#fbd5d5;color:#8a1c1c}\
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em;margin:0}dt{color:#5b6475}dd{margin:0}\
.empty{color:#5b6475;font-style:italic}\
footer{margin-top:2em;color:#8a92a3;font-size:.85em}";

/// A whole page: `title` in `<title>` and `<h1>`, a `subtitle` line under it, then `body`.
/// Refreshes itself every `refresh_s` seconds with a `<meta http-equiv="refresh">` (no script).
pub fn page(title: &str, subtitle: Html, body: Html, refresh_s: u32) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"{refresh_s}\">\
<title>{t}</title><style>{CSS}</style></head>\
<body><h1>{t}</h1><p class=\"sub\">{sub}</p>{body}\
<footer>ocean {v} · rendered at {now} (Unix time) · refreshes every {refresh_s}s</footer>\
</body></html>\n",
        t = escape(title),
        sub = subtitle.0,
        body = body.0,
        v = env!("CARGO_PKG_VERSION"),
        now = unix_now(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_makes_markup_text() {
        assert_eq!(
            escape(r#"<script>alert("x&y")</script>'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
        assert_eq!(escape("/miui/browser/web"), "/miui/browser/web");
    }

    #[test]
    fn every_cell_and_header_is_escaped() {
        let mut t = Table::new(&["<b>app</b>"], "none");
        t.row(
            Tone::Bad,
            vec![Html::from("<script>x</script>"), Html::code("<i>")],
        );
        let html = t.render();
        assert!(!html.as_str().contains("<script>"), "{}", html.as_str());
        assert!(html.as_str().contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(html.as_str().contains("<th>&lt;b&gt;app&lt;/b&gt;</th>"));
        assert!(html.as_str().contains("<tr class=\"bad\">"));
        assert_eq!(
            Html::etag("0123456789abcdef\"").as_str(),
            "<code title=\"0123456789abcdef&quot;\">0123456789ab</code>"
        );
        let empty = Table::new(&["a"], "no <rows>").render();
        assert_eq!(empty.as_str(), "<p class=\"empty\">no &lt;rows&gt;</p>");
    }

    #[test]
    fn the_page_has_no_script_and_escapes_its_title() {
        let p = page("<x>", Html::text("a&b"), Html::text("body"), 10);
        assert!(!p.contains("<script"));
        assert!(p.contains("<title>&lt;x&gt;</title>"));
        assert!(p.contains("a&amp;b"));
    }

    #[test]
    fn ages_read_like_people_write_them() {
        assert_eq!(human_age(Duration::from_secs(0)), "0s");
        assert_eq!(human_age(Duration::from_secs(185)), "3m 5s");
        assert_eq!(human_age(Duration::from_secs(7800)), "2h 10m");
        assert_eq!(human_age(Duration::from_secs(273_600)), "3d 4h");
        assert_eq!(short_etag("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_etag("abc"), "abc");
    }
}

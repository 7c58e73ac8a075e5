//! Control's status: what `/` and `/ui` show as HTML and `/v1/status` serves as JSON (the
//! JSON `ocean status` prints): the tables with ETag, size and age; the apps and their
//! problems; the subscribers, lagging ones first; the last Marathon sync.
//!
//! One [`Status`] is collected per request from [`Shared`] and rendered; nothing is cached.
//! Every string that came from Marathon (app ids, labels, problem text) or from a subscriber
//! (its id, refusal reason) is escaped by [`ocean_core::status_page`]'s helpers.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ocean_core::status_page::{self as page, Html, Table, Tone};
use ocean_core::table::TableKind;
use serde::Serialize;

use crate::derive::Problem;
use crate::shared::{Shared, SyncStatus};
use crate::subscribers::{lagging_first, SubscriberView};

/// Everything the status page shows; `/v1/status` serves it as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// When this was collected (Unix seconds).
    pub generated_unix: u64,
    /// What `/healthz` answers: `status` (`ok`, `stale`, `held`, `starting`) and why.
    pub health: serde_json::Value,
    /// The last Marathon (or file) sync.
    pub sync: SyncStatus,
    /// The published tables, in [`TableKind::ALL`] order.
    pub tables: Vec<TableMeta>,
    /// The apps of the last sync, those with problems first.
    pub apps: Vec<AppSummary>,
    /// What `/v1/problems` lists.
    pub problems: Vec<Problem>,
    /// What `/v1/subscribers` lists, lagging ones first (then by kind and id).
    pub subscribers: Vec<SubscriberView>,
}

/// One published table, without its body.
#[derive(Debug, Clone, Serialize)]
pub struct TableMeta {
    pub kind: TableKind,
    pub etag: String,
    /// The size of its JSON body.
    pub bytes: usize,
    pub backends: usize,
    /// When it was published (Unix seconds).
    pub published_unix: u64,
    /// Seconds since it was published.
    pub age_s: u64,
    pub subscribers: usize,
    pub lagging: usize,
}

/// One Marathon app as the page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct AppSummary {
    pub id: String,
    pub tasks: usize,
    /// Tasks that count as backends (running, healthy where checked, addressable).
    pub backends: usize,
    /// Its `OCEAN_*` labels (the ones control reads).
    pub labels: BTreeMap<String, String>,
    /// How many lines of `/v1/problems` name it.
    pub problems: usize,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Collects the status now. `health` is what `/healthz` answers (see
/// [`crate::server::health`]).
pub fn collect(shared: &Shared, health: serde_json::Value) -> Status {
    let now = SystemTime::now();
    let tables = shared.store.snapshot();
    let mut subscribers = shared.subscribers.list(&tables);
    lagging_first(&mut subscribers);
    let problems: Vec<Problem> = (**shared.problems.load()).clone();
    let state = shared.state.load();
    let mut apps: Vec<AppSummary> = state
        .apps
        .iter()
        .map(|a| AppSummary {
            id: a.id.clone(),
            tasks: a.tasks.len(),
            backends: a.tasks.iter().filter(|t| t.counts()).count(),
            labels: a
                .labels
                .iter()
                .filter(|(k, _)| k.starts_with("OCEAN_"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            problems: problems
                .iter()
                .filter(|p| p.app.as_deref() == Some(a.id.as_str()))
                .count(),
        })
        .collect();
    apps.sort_by(|a, b| (a.problems == 0, &a.id).cmp(&(b.problems == 0, &b.id)));
    let tables = TableKind::ALL
        .iter()
        .filter_map(|k| tables.get(k).map(|s| (*k, s)))
        .map(|(kind, s)| TableMeta {
            kind,
            etag: s.etag.clone(),
            bytes: s.body.len(),
            backends: s.backends,
            published_unix: unix(s.published_at),
            age_s: now
                .duration_since(s.published_at)
                .unwrap_or_default()
                .as_secs(),
            subscribers: subscribers.iter().filter(|v| v.kind == kind).count(),
            lagging: subscribers
                .iter()
                .filter(|v| v.kind == kind && v.lagging)
                .count(),
        })
        .collect();
    Status {
        generated_unix: unix(now),
        health,
        sync: shared.status(),
        tables,
        apps,
        problems,
        subscribers,
    }
}

fn age(s: u64) -> String {
    page::human_age(Duration::from_secs(s))
}

/// The HTML page of `status`.
pub fn render(status: &Status) -> String {
    let health = status.health["status"].as_str().unwrap_or("unknown");
    let tone = match health {
        "ok" => Tone::Ok,
        "stale" | "held" => Tone::Warn,
        _ => Tone::Bad,
    };
    let mut subtitle = vec![page::badge(health, tone)];
    if let Some(r) = status.health["reason"].as_str() {
        subtitle.push(Html::text(&format!(" {r}")));
    }
    subtitle.push(Html::text(&format!(
        " · last Marathon sync {}",
        page::ago(status.sync.last_success_unix)
    )));
    page::page(
        "ocean control",
        page::concat(subtitle),
        page::concat([
            page::section("sync", "Marathon sync", sync_facts(&status.sync)),
            page::section("tables", "Tables", tables(status)),
            page::section(
                "subscribers",
                &format!(
                    "Subscribers ({}, {} lagging)",
                    status.subscribers.len(),
                    status.subscribers.iter().filter(|s| s.lagging).count()
                ),
                subscribers(&status.subscribers),
            ),
            page::section(
                "problems",
                &format!("Problems ({})", status.problems.len()),
                problems(&status.problems),
            ),
            page::section(
                "apps",
                &format!("Apps ({})", status.apps.len()),
                apps(&status.apps),
            ),
        ]),
        10,
    )
}

fn sync_facts(s: &SyncStatus) -> Html {
    let mut items: Vec<(&str, Html)> = vec![
        ("source", Html::text(&s.source)),
        (
            "last success",
            Html::text(&match s.last_success_unix {
                Some(t) => format!("{} (Unix {t})", page::ago(Some(t))),
                None => "never".into(),
            }),
        ),
        ("last attempt", Html::text(&page::ago(s.last_attempt_unix))),
        (
            "event stream",
            match (s.event_stream_up, s.source.starts_with("marathon")) {
                (true, _) => page::badge("up", Tone::Ok),
                (false, true) => page::badge("down", Tone::Warn),
                (false, false) => Html::text("none (not Marathon)"),
            },
        ),
        (
            "apps, tasks",
            Html::text(&format!("{}, {}", s.apps, s.tasks)),
        ),
    ];
    if let Some(e) = &s.last_error {
        items.push((
            "last error",
            Html::text(&format!("{e} ({} in a row)", s.consecutive_failures)),
        ));
    }
    for h in &s.held {
        items.push(("held by the drop guard", Html::text(&h.message)));
    }
    page::facts(&items)
}

fn tables(status: &Status) -> Html {
    let mut t = Table::new(
        &[
            "table",
            "ETag",
            "size (bytes)",
            "backends",
            "age",
            "subscribers",
        ],
        "no table published yet",
    );
    for m in &status.tables {
        let subs = if m.lagging > 0 {
            page::concat([
                Html::text(&format!("{} ", m.subscribers)),
                page::badge(&format!("{} lagging", m.lagging), Tone::Warn),
            ])
        } else {
            Html::text(&m.subscribers.to_string())
        };
        t.row(
            Tone::Plain,
            vec![
                Html::text(m.kind.as_str()),
                Html::code(&m.etag),
                Html::text(&m.bytes.to_string()),
                Html::text(&m.backends.to_string()),
                Html::text(&age(m.age_s)),
                subs,
            ],
        );
    }
    t.render()
}

/// Rows of the subscribers table on the page; the rest are counted and left to
/// `/v1/subscribers?offset=`, so the page stays small at a thousand subscribers.
const SUBSCRIBER_ROWS: usize = 200;

fn subscribers(all: &[SubscriberView]) -> Html {
    let list = all.get(..SUBSCRIBER_ROWS).unwrap_or(all);
    let mut t = Table::new(
        &[
            "table",
            "subscriber",
            "address",
            "state",
            "applied ETag",
            "lag",
            "last seen",
            "last refusal",
        ],
        "no proxy has polled this control",
    );
    for s in list {
        let (word, tone) = match (s.lagging, &s.running) {
            (true, None) => ("no table", Tone::Bad),
            (true, Some(_)) => ("lagging", Tone::Bad),
            (false, _) => ("in sync", Tone::Ok),
        };
        let lag = match (s.lagging, s.behind_s) {
            (false, _) => "—".to_string(),
            (true, Some(b)) => format!("behind {} for {}", short(&s.current), age(b)),
            (true, None) => format!("behind {}", short(&s.current)),
        };
        let refusal = match (&s.last_refused, &s.last_refusal_reason) {
            (Some(e), Some(r)) => format!("{}: {r}", page::short_etag(e)),
            (Some(e), None) => page::short_etag(e).to_string(),
            (None, _) => String::new(),
        };
        t.row(
            if s.lagging { Tone::Bad } else { Tone::Plain },
            vec![
                Html::text(s.kind.as_str()),
                Html::text(&s.id),
                Html::code(s.addr.as_deref().unwrap_or("")),
                page::badge(word, tone),
                match &s.running {
                    Some(e) => Html::etag(e),
                    None => Html::text("none"),
                },
                Html::text(&lag),
                Html::text(&format!("{} ago", age(s.last_seen_s_ago))),
                Html::text(&refusal),
            ],
        );
    }
    if all.len() > list.len() {
        return page::concat([
            t.render(),
            Html::text(&format!(
                "… and {} more: /v1/subscribers?offset={SUBSCRIBER_ROWS}",
                all.len() - list.len()
            )),
        ]);
    }
    t.render()
}

fn short(etag: &Option<String>) -> String {
    etag.as_deref()
        .map(page::short_etag)
        .unwrap_or("")
        .to_string()
}

fn problems(list: &[Problem]) -> Html {
    let mut t = Table::new(&["app", "table", "problem"], "no problems");
    for p in list {
        t.row(
            Tone::Warn,
            vec![
                Html::text(p.app.as_deref().unwrap_or("")),
                Html::text(p.table.map(|k| k.as_str()).unwrap_or("")),
                Html::text(&p.message),
            ],
        );
    }
    t.render()
}

fn apps(list: &[AppSummary]) -> Html {
    let mut t = Table::new(
        &["app", "tasks", "backends", "Ocean labels", "problems"],
        "no apps",
    );
    for a in list {
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        t.row(
            if a.problems > 0 {
                Tone::Warn
            } else {
                Tone::Plain
            },
            vec![
                Html::text(&a.id),
                Html::text(&a.tasks.to_string()),
                Html::text(&a.backends.to_string()),
                Html::code(&labels.join(" ")),
                if a.problems > 0 {
                    page::badge(&a.problems.to_string(), Tone::Warn)
                } else {
                    Html::text("0")
                },
            ],
        );
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: &str, lagging: bool) -> SubscriberView {
        SubscriberView {
            kind: TableKind::Dns,
            id: id.into(),
            addr: Some("127.0.0.1:1".into()),
            running: Some(if lagging { "old" } else { "new" }.into()),
            current: Some("new".into()),
            lagging,
            last_refused: None,
            last_refusal_reason: None,
            last_seen_s_ago: 1,
            in_sync_s_ago: None,
            behind_s: lagging.then_some(5),
            polls: 1,
        }
    }

    #[test]
    fn strings_from_marathon_render_as_text() {
        let evil = "/x<script>alert(1)</script>";
        let status = Status {
            generated_unix: 0,
            health: serde_json::json!({"status": "ok"}),
            sync: SyncStatus::default(),
            tables: Vec::new(),
            apps: vec![AppSummary {
                id: evil.into(),
                tasks: 1,
                backends: 1,
                labels: BTreeMap::from([(
                    "OCEAN_PORT".to_string(),
                    "<img src=x onerror=alert(2)>".to_string(),
                )]),
                problems: 1,
            }],
            problems: vec![Problem::for_app(
                evil,
                TableKind::Redis,
                "OCEAN_PORT=\"<script>alert(3)</script>\" is not a port",
            )],
            subscribers: vec![sub("<b>box</b>", true)],
        };
        let html = render(&status);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("/x&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("OCEAN_PORT=&quot;&lt;script&gt;alert(3)&lt;/script&gt;&quot;"));
        assert!(html.contains("&lt;b&gt;box&lt;/b&gt;"));
    }

    /// A healthy status with nothing but `subscribers`.
    fn with_subscribers(subscribers: Vec<SubscriberView>) -> Status {
        Status {
            generated_unix: 0,
            health: serde_json::json!({"status": "ok"}),
            sync: SyncStatus::default(),
            tables: Vec::new(),
            apps: Vec::new(),
            problems: Vec::new(),
            subscribers,
        }
    }

    #[test]
    fn lagging_subscribers_come_first() {
        let status = with_subscribers(vec![sub("a-in-sync", false), sub("z-lagging", true)]);
        // `collect` sorts; `render` keeps the order it is given.
        let mut sorted = status.subscribers.clone();
        lagging_first(&mut sorted);
        assert_eq!(sorted[0].id, "z-lagging");
        let html = render(&Status {
            subscribers: sorted,
            ..status
        });
        assert!(html.find("z-lagging") < html.find("a-in-sync"));
        assert!(html.contains("behind new for 5s"));
    }

    #[test]
    fn a_thousand_subscribers_show_the_first_rows_and_a_count() {
        let mut list: Vec<_> = (0..1000)
            .map(|i| sub(&format!("proxy-{i:04}"), i == 999))
            .collect();
        lagging_first(&mut list);
        let html = render(&with_subscribers(list));
        assert!(html.contains("Subscribers (1000, 1 lagging)"));
        assert!(html.contains("proxy-0999"), "the lagging one is shown");
        assert!(html.contains("proxy-0198") && !html.contains("proxy-0199"));
        assert!(html.contains("… and 800 more: /v1/subscribers?offset=200"));
    }
}

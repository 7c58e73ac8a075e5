//! DNS names for load balancers: `OCEAN_DNS_NAMES=api.shop.example.com,...` on an app with
//! `OCEAN_ELB` answers A/AAAA with its VIPs, and with its `OCEAN_ELB_VIEW_<VIEW>` VIPs to
//! the clients of that `[dns.views]` view.
//!
//! A name is published while its app is in Marathon, whatever its task count: the virtual
//! service exists as long as the app does, and lvs-sync drains it when it has no tasks.
//! Only VIPs the app owns (`[lvs] vips`, as for lvs) are published; refused VIPs are
//! reported by the lvs derive, not again here.
//!
//! A name must lie in a `[dns.zones."ZONE"]` whose `apps` covers the app (the most
//! specific zone decides); a name claimed by two apps is published by neither.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ocean_core::table::dns::{check_fqdn, DnsRecords, DnsTable};
use ocean_core::table::TableKind;

use super::dns::DnsSettings;
use super::lvs::{self, Service};
use super::Problem;
use crate::ownership::{self, VipRange};
use crate::state::{App, State};

const LABEL: &str = "OCEAN_DNS_NAMES";

/// The records of one app's names: the default ones and, per view index, those of the
/// views whose VIPs differ.
struct Answer {
    default: DnsRecords,
    views: Vec<(usize, DnsRecords)>,
}

/// A/AAAA of the distinct VIPs of `services` that the app owns.
fn records(ranges: &[VipRange], app: &App, services: &[Service]) -> DnsRecords {
    let mut r = DnsRecords::default();
    for (vip, _, _) in services {
        let vip = ownership::canonical(*vip);
        if lvs::judge_vip(ranges, app, vip).is_err() {
            continue;
        }
        match vip {
            IpAddr::V4(v4) => r.a.push(v4),
            IpAddr::V6(v6) => r.aaaa.push(v6),
        }
    }
    r.a.sort();
    r.a.dedup();
    r.aaaa.sort();
    r.aaaa.dedup();
    r
}

/// What the app's names answer, or why it has nothing to answer with.
fn answer(app: &App, s: &DnsSettings, ranges: &[VipRange]) -> Result<Answer, String> {
    let elb = match lvs::parse_app(app, &s.views) {
        Ok(Some(elb)) => elb,
        Ok(None) => return Err(format!("{LABEL} needs OCEAN_ELB on the same app")),
        Err(e) => return Err(format!("{LABEL}: the app's OCEAN_ELB is not valid ({e})")),
    };
    let default = records(ranges, app, &elb.services);
    if default.is_empty() {
        return Err(format!(
            "{LABEL}: no VIP of OCEAN_ELB is the app's (see its lvs problems)"
        ));
    }
    let mut views = Vec::new();
    for (i, _, services) in &elb.views {
        let r = records(ranges, app, services);
        // A view with no VIP of its own left answers as the default: leave it out.
        if !r.is_empty() && r != default {
            views.push((*i, r));
        }
    }
    Ok(Answer { default, views })
}

/// The zone that decides who may publish `name` (fully qualified): the longest configured
/// zone it lies in.
fn zone_of<'a>(s: &'a DnsSettings, name: &str) -> Option<&'a str> {
    s.zones
        .keys()
        .filter(|z| {
            let apex = format!("{z}.");
            name == apex
                || name
                    .strip_suffix(apex.as_str())
                    .is_some_and(|h| h.ends_with('.'))
        })
        .max_by_key(|z| z.len())
        .map(String::as_str)
}

/// Checks one name of the label: lowercase, fully qualified, in a zone the app owns.
fn judge_name(s: &DnsSettings, app: &App, raw: &str) -> Result<String, String> {
    let name = format!("{}.", raw.trim_end_matches('.').to_ascii_lowercase());
    check_fqdn(&name).map_err(|e| format!("{LABEL}={raw}: not a DNS name: {e}"))?;
    // check_fqdn allows any printable ASCII; a hostname is letters, digits, '-' and '_'.
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("{LABEL}={raw}: not a DNS name: it contains {c:?}"));
    }
    let Some(zone) = zone_of(s, &name) else {
        return Err(format!(
            "{LABEL}={name}: refused: it lies in no [dns.zones] zone of control.toml"
        ));
    };
    let apps = &s.zones[zone];
    if !ownership::any_covers(apps, &app.id) {
        return Err(format!(
            "{LABEL}={name}: refused by [dns.zones.{zone:?}] apps = [{}], which does not cover this app",
            ownership::list(apps)
        ));
    }
    Ok(name)
}

/// Adds the load balancers' names to `table` (already holding the Mesos-DNS names and the
/// configured views, in `s.views` order); returns the names it added.
pub fn derive(
    state: &State,
    s: &DnsSettings,
    ranges: &[VipRange],
    table: &mut DnsTable,
    problems: &mut Vec<Problem>,
) -> Vec<String> {
    let mut added = Vec::new();
    let mut claims: BTreeMap<String, Vec<&App>> = BTreeMap::new();
    let mut answers: BTreeMap<&str, Answer> = BTreeMap::new();
    for app in &state.apps {
        let Some(label) = app.labels.get(LABEL) else {
            continue;
        };
        let a = match answer(app, s, ranges) {
            Ok(a) => a,
            Err(e) => {
                problems.push(Problem::app(app, TableKind::Dns, e));
                continue;
            }
        };
        answers.insert(app.id.as_str(), a);
        for raw in label.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match judge_name(s, app, raw) {
                Ok(name) => {
                    let c = claims.entry(name).or_default();
                    if !c.iter().any(|a| a.id == app.id) {
                        c.push(app);
                    }
                }
                Err(e) => problems.push(Problem::app(app, TableKind::Dns, e)),
            }
        }
    }
    for (name, apps) in claims {
        if let [app] = apps.as_slice() {
            // Mesos-DNS names come first: a zone under the domain must not shadow them.
            if table.names.contains_key(&name) {
                problems.push(Problem::app(
                    app,
                    TableKind::Dns,
                    format!("{LABEL}={name}: refused: Mesos-DNS already publishes this name"),
                ));
                continue;
            }
            let a = &answers[app.id.as_str()];
            table.names.insert(name.clone(), a.default.clone());
            added.push(name.clone());
            for (i, r) in &a.views {
                if let Some(v) = table.views.get_mut(*i) {
                    v.names.insert(name.clone(), r.clone());
                }
            }
            continue;
        }
        // Neither wins by order: the name is refused for all until one owner is left.
        let ids: Vec<&str> = apps.iter().map(|a| a.id.as_str()).collect();
        for app in &apps {
            problems.push(Problem::app(
                app,
                TableKind::Dns,
                format!(
                    "{LABEL}={name}: conflict: claimed by {}; published by neither",
                    ids.join(", ")
                ),
            ));
        }
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::dns::{self, ViewSettings};
    use crate::derive::fixtures::{state, task};
    use crate::ownership::AppPrefix;
    use ocean_core::table::Table;

    fn settings() -> DnsSettings {
        let p = |s: &str| AppPrefix::parse(s).unwrap();
        let view = |name: &str, net: &str| ViewSettings {
            name: name.into(),
            networks: vec![net.parse().unwrap()],
        };
        DnsSettings {
            views: vec![
                view("unicom", "10.1.0.0/16"),
                view("china-telecom", "10.2.0.0/16"),
            ],
            zones: [
                ("shop.example.com".to_string(), vec![p("/lb/")]),
                ("example.com".to_string(), vec![p("/web/")]),
            ]
            .into(),
            ..Default::default()
        }
    }

    fn ranges() -> Vec<VipRange> {
        vec![
            VipRange {
                cidr: "10.99.0.0/16".parse().unwrap(),
                apps: vec![AppPrefix::parse("/lb/").unwrap()],
            },
            VipRange {
                cidr: "fd00::/64".parse().unwrap(),
                apps: vec![AppPrefix::parse("/lb/").unwrap()],
            },
        ]
    }

    fn run(apps: &str) -> (DnsTable, Vec<String>) {
        let json = format!(r#"{{"apps":[{apps}]}}"#);
        let st = state(&json);
        let s = settings();
        let mut problems = Vec::new();
        let mut t = dns::derive(&st, &s, &mut problems);
        derive(&st, &s, &ranges(), &mut t, &mut problems);
        t.validate().unwrap();
        let msgs = problems
            .iter()
            .map(|p| format!("{}: {}", p.app.as_deref().unwrap_or("-"), p.message))
            .collect();
        (t, msgs)
    }

    fn ips(r: Option<&DnsRecords>) -> Vec<String> {
        r.map(|r| {
            r.a.iter()
                .map(ToString::to_string)
                .chain(r.aaaa.iter().map(ToString::to_string))
                .collect()
        })
        .unwrap_or_default()
    }

    #[test]
    fn names_answer_the_vips_by_default_and_the_views_vips_in_their_view() {
        let (t, msgs) = run(&format!(
            r#"{{"id":"/lb/api","labels":{{"OCEAN_ELB":"10.99.0.1:80/tcp,10.99.0.1:443,[fd00::1]:80",
            "OCEAN_ELB_VIEW_UNICOM":"10.99.1.1:80,10.99.1.2:443",
            "OCEAN_ELB_VIEW_CHINA_TELECOM":"10.99.0.1:80,[fd00::1]:80",
            "OCEAN_DNS_NAMES":"API.shop.example.com, api2.shop.example.com."}},"tasks":[{}]}}"#,
            task("a.1", "10.0.0.1", &[31000])
        ));
        assert!(msgs.is_empty(), "{msgs:?}");
        assert_eq!(t.zones, vec!["example.com", "shop.example.com"]);
        for name in ["api.shop.example.com.", "api2.shop.example.com."] {
            assert_eq!(ips(t.names.get(name)), vec!["10.99.0.1", "fd00::1"]);
            assert_eq!(
                ips(t.views[0].names.get(name)),
                vec!["10.99.1.1", "10.99.1.2"]
            );
        }
        // The views in configured order; telecom answers as the default: nothing of its own.
        let views: Vec<(&str, &[String])> = t
            .views
            .iter()
            .map(|v| (v.name.as_str(), v.networks.as_slice()))
            .collect();
        assert_eq!(
            views,
            vec![
                ("unicom", &["10.1.0.0/16".to_string()][..]),
                ("china-telecom", &["10.2.0.0/16".to_string()][..])
            ]
        );
        assert!(t.views[1].names.is_empty(), "{:?}", t.views[1]);
    }

    #[test]
    fn names_outside_the_apps_zones_and_malformed_names_are_refused_one_by_one() {
        let (t, msgs) = run(&format!(
            r#"{{"id":"/lb/api","labels":{{"OCEAN_ELB":"10.99.0.1:80",
            "OCEAN_DNS_NAMES":"api.shop.example.com,www.example.com,api.other.org,bad!name.shop.example.com,a..shop.example.com"}},"tasks":[{}]}}"#,
            task("a.1", "10.0.0.1", &[31000])
        ));
        assert_eq!(
            t.names
                .keys()
                .filter(|n| n.contains("example"))
                .collect::<Vec<_>>(),
            vec!["api.shop.example.com."]
        );
        assert_eq!(
            msgs,
            vec![
                "/lb/api: OCEAN_DNS_NAMES=www.example.com.: refused by [dns.zones.\"example.com\"] apps = [\"/web/\"], which does not cover this app",
                "/lb/api: OCEAN_DNS_NAMES=api.other.org.: refused: it lies in no [dns.zones] zone of control.toml",
                "/lb/api: OCEAN_DNS_NAMES=bad!name.shop.example.com: not a DNS name: it contains '!'",
                "/lb/api: OCEAN_DNS_NAMES=a..shop.example.com: not a DNS name: name has an empty label",
            ]
        );
    }

    #[test]
    fn a_name_claimed_by_two_apps_is_published_by_neither() {
        let (t, msgs) = run(&format!(
            r#"{{"id":"/lb/a","labels":{{"OCEAN_ELB":"10.99.0.1:80","OCEAN_DNS_NAMES":"api.shop.example.com,a.shop.example.com"}},"tasks":[{}]}},
            {{"id":"/lb/b","labels":{{"OCEAN_ELB":"10.99.0.2:80","OCEAN_DNS_NAMES":"api.shop.example.com"}},"tasks":[{}]}}"#,
            task("a.1", "10.0.0.1", &[31000]),
            task("b.1", "10.0.0.2", &[31000]),
        ));
        assert!(!t.names.contains_key("api.shop.example.com."));
        assert_eq!(ips(t.names.get("a.shop.example.com.")), vec!["10.99.0.1"]);
        assert_eq!(
            msgs,
            vec![
                "/lb/a: OCEAN_DNS_NAMES=api.shop.example.com.: conflict: claimed by /lb/a, /lb/b; published by neither",
                "/lb/b: OCEAN_DNS_NAMES=api.shop.example.com.: conflict: claimed by /lb/a, /lb/b; published by neither",
            ]
        );
    }

    #[test]
    fn names_need_an_owned_elb_and_view_vips_must_be_owned_too() {
        let (t, msgs) = run(
            r#"{"id":"/lb/none","labels":{"OCEAN_DNS_NAMES":"none.shop.example.com"},"tasks":[]},
            {"id":"/lb/bad","labels":{"OCEAN_ELB":"nope","OCEAN_DNS_NAMES":"bad.shop.example.com"},"tasks":[]},
            {"id":"/lb/stolen","labels":{"OCEAN_ELB":"10.50.0.1:80","OCEAN_DNS_NAMES":"stolen.shop.example.com"},"tasks":[]},
            {"id":"/lb/view","labels":{"OCEAN_ELB":"10.99.0.1:80","OCEAN_ELB_VIEW_UNICOM":"10.50.0.9:80",
             "OCEAN_ELB_VIEW_MARS":"10.99.0.7:80","OCEAN_DNS_NAMES":"view.shop.example.com"},"tasks":[]}"#,
        );
        for n in ["none", "bad", "stolen"] {
            assert!(!t.names.contains_key(&format!("{n}.shop.example.com.")));
        }
        // The refused view VIP (reported by lvs) leaves the view answering as the default;
        // a task count of zero does not matter.
        assert_eq!(
            ips(t.names.get("view.shop.example.com.")),
            vec!["10.99.0.1"]
        );
        assert!(t.views.iter().all(|v| v.names.is_empty()), "{:?}", t.views);
        assert_eq!(
            msgs,
            vec![
                "/lb/bad: OCEAN_DNS_NAMES: the app's OCEAN_ELB is not valid (OCEAN_ELB: \"nope\" is not VIP:PORT/PROTO (IPv6 as [addr]:port))",
                "/lb/none: OCEAN_DNS_NAMES needs OCEAN_ELB on the same app",
                "/lb/stolen: OCEAN_DNS_NAMES: no VIP of OCEAN_ELB is the app's (see its lvs problems)",
            ]
        );
    }

    #[test]
    fn mesos_dns_names_are_not_shadowed() {
        let mut s = settings();
        s.zones.insert(
            "marathon.mesos".into(),
            vec![AppPrefix::parse("/lb/").unwrap()],
        );
        let json = format!(
            r#"{{"apps":[{{"id":"/web","tasks":[{}]}},
            {{"id":"/lb/x","labels":{{"OCEAN_ELB":"10.99.0.1:80","OCEAN_DNS_NAMES":"web.marathon.mesos,lb.marathon.mesos"}},"tasks":[]}}]}}"#,
            task("w.1", "10.0.0.1", &[31000])
        );
        let st = state(&json);
        let mut problems = Vec::new();
        let mut t = dns::derive(&st, &s, &mut problems);
        derive(&st, &s, &ranges(), &mut t, &mut problems);
        t.validate().unwrap();
        assert_eq!(ips(t.names.get("web.marathon.mesos.")), vec!["10.0.0.1"]);
        assert_eq!(ips(t.names.get("lb.marathon.mesos.")), vec!["10.99.0.1"]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0]
            .message
            .contains("web.marathon.mesos.: refused: Mesos-DNS already publishes"));
    }
}

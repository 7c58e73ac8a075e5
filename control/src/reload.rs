//! SIGHUP: build control's config again from its sources (flags, control.toml and the
//! secret and token files it names), swap in what may change while running, republish.
//!
//! Changes live: ownership rules (databases, jobs, Redis clusters, memcached pools, VIP
//! ranges), MySQL credentials and job passwords (a rotated password file), `domain` and
//! `[dns]`, `[guard]`, the API tokens (a rotated token file) and the TLS certificate. The
//! sync loop reads [`Live`] at each sync and the API reads [`Shared::tokens`] at each
//! request; a reload stores new ones and asks for a sync at once, whose tables get new ETags
//! only where their content changed.
//!
//! Needs a restart: what binds a socket or opens a source (`--listen`, the Marathon URLs or
//! apps file, `--marathon-ca`), `--state-dir`, the TLS file names, the timing flags. When the
//! rebuilt config differs there, the reload logs it and keeps the running value.
//!
//! A config that does not load or validate changes nothing: the error is the reload's
//! result (logged and counted by [`ocean_core::reload`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use ocean_core::tls::ServerCert;
use tokio::sync::mpsc;

use crate::config::{Config, Source};
use crate::derive::DeriveConfig;
use crate::guard::GuardConfig;
use crate::shared::Shared;

/// What the sync loop reads at each sync and a reload may replace.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    pub derive: DeriveConfig,
    pub guard: GuardConfig,
}

impl Live {
    pub fn of(config: &Config) -> Live {
        Live {
            derive: config.derive.clone(),
            guard: config.guard,
        }
    }
}

/// Control's reloader: the config it runs and the handles a reload swaps.
pub struct Reloader {
    /// The running config: live parts as last applied, the rest as started.
    running: Config,
    live: Arc<ArcSwap<Live>>,
    shared: Arc<Shared>,
    cert: Option<Arc<ServerCert>>,
    /// The sync loop's wake-up: a reload that changed something asks for a sync now.
    dirty: mpsc::Sender<()>,
}

impl Reloader {
    pub fn new(
        running: Config,
        live: Arc<ArcSwap<Live>>,
        shared: Arc<Shared>,
        cert: Option<Arc<ServerCert>>,
        dirty: mpsc::Sender<()>,
    ) -> Self {
        Reloader {
            running,
            live,
            shared,
            cert,
            dirty,
        }
    }

    /// One SIGHUP: returns what changed (names of settings, never values).
    ///
    /// # Errors
    /// The config cannot be built again (an unreadable or invalid control.toml, a missing
    /// secret or token file, a config that does not validate) or the certificate cannot be
    /// read; nothing is applied then.
    pub fn reload(&mut self) -> anyhow::Result<Vec<String>> {
        // Everything is read and checked before anything is applied.
        let fresh = match &self.running.rebuild {
            Some(r) => Some(r.build().context("control config")?),
            None => None,
        };
        let mut changed = Vec::new();
        if let Some(cert) = &self.cert {
            if cert.reload()? {
                changed.push("--tls-cert/--tls-key".to_string());
            }
        }
        let Some(fresh) = fresh else {
            return Ok(changed);
        };
        for setting in needs_restart(&self.running, &fresh) {
            tracing::warn!(
                setting,
                "reload: changed, but takes a restart to apply; keeping the running value"
            );
        }
        let live = live_changes(&self.running, &fresh);
        if live.is_empty() {
            return Ok(changed);
        }
        self.shared.tokens.store(Arc::new(fresh.tokens.clone()));
        self.live.store(Arc::new(Live::of(&fresh)));
        self.running.tokens = fresh.tokens;
        self.running.derive = fresh.derive;
        self.running.guard = fresh.guard;
        // Full: a sync is pending already, and it reads the new config.
        let _ = self.dirty.try_send(());
        changed.extend(live);
        Ok(changed)
    }
}

/// Settings of `fresh` that differ from `running` and cannot change without a restart.
pub fn needs_restart(running: &Config, fresh: &Config) -> Vec<&'static str> {
    let same_source = match (&running.source, &fresh.source) {
        (Source::Marathon(a), Source::Marathon(b)) => a == b,
        (Source::File(a), Source::File(b)) => a == b,
        (Source::Static { name: a, body: x }, Source::Static { name: b, body: y }) => {
            a == b && x == y
        }
        _ => false,
    };
    let tls = |c: &Config| c.tls.as_ref().map(|t| (t.cert.clone(), t.key.clone()));
    [
        (running.listen != fresh.listen, "--listen"),
        (!same_source, "--marathon/--apps-file"),
        (running.marathon_ca != fresh.marathon_ca, "--marathon-ca"),
        (running.state_dir != fresh.state_dir, "--state-dir"),
        (
            tls(running) != tls(fresh),
            "--tls-cert/--tls-key (file names)",
        ),
        (
            running.allow_plaintext_secrets != fresh.allow_plaintext_secrets,
            "--allow-plaintext-secrets",
        ),
        (running.resync != fresh.resync, "--resync"),
        (
            running.poll_while_down != fresh.poll_while_down,
            "--poll-while-down",
        ),
        (running.debounce != fresh.debounce, "--debounce"),
        (
            running.marathon_timeout != fresh.marathon_timeout,
            "--marathon-timeout",
        ),
        (running.max_wait != fresh.max_wait, "max wait"),
        (
            running.delta_history != fresh.delta_history,
            "--delta-history",
        ),
    ]
    .into_iter()
    .filter_map(|(differs, name)| differs.then_some(name))
    .collect()
}

/// The live settings that differ, named as in control.toml.
pub fn live_changes(running: &Config, fresh: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let (a, b) = (&running.derive, &fresh.derive);
    if a.dns != b.dns {
        out.push("domain/[dns]".to_string());
    }
    if running.guard != fresh.guard {
        out.push("[guard]".to_string());
    }
    for name in keys(&a.mysql.databases, &b.mysql.databases) {
        let (x, y) = (a.mysql.databases.get(name), b.mysql.databases.get(name));
        let field = format!("mysql.databases.\"{name}\"");
        match (x, y) {
            (Some(x), Some(y)) => {
                if x.rw != y.rw || x.ro != y.ro {
                    out.push(format!("{field} credentials"));
                }
                if x.schema != y.schema || x.apps != y.apps || x.allow != y.allow {
                    out.push(format!("{field} schema/apps/allow"));
                }
            }
            _ => out.push(field),
        }
    }
    let mut jobs = keys(&a.mysql.jobs, &b.mysql.jobs);
    jobs.extend(keys(&a.mysql.job_owners, &b.mysql.job_owners));
    jobs.extend(keys(&a.mysql.job_cert_cns, &b.mysql.job_cert_cns));
    for name in jobs {
        let (m, n) = (&a.mysql, &b.mysql);
        if m.jobs.get(name) != n.jobs.get(name)
            || m.job_owners.get(name) != n.job_owners.get(name)
            || m.job_cert_cns.get(name) != n.job_cert_cns.get(name)
        {
            out.push(format!("mysql.jobs.\"{name}\""));
        }
    }
    for name in keys(&a.owners.redis_clusters, &b.owners.redis_clusters) {
        if a.owners.redis_clusters.get(name) != b.owners.redis_clusters.get(name) {
            out.push(format!("redis.clusters.\"{name}\""));
        }
    }
    for name in keys(&a.owners.memcached_pools, &b.owners.memcached_pools) {
        if a.owners.memcached_pools.get(name) != b.owners.memcached_pools.get(name) {
            out.push(format!("memcached.pools.\"{name}\""));
        }
    }
    if a.owners.vips != b.owners.vips {
        out.push("lvs.vips".to_string());
    }
    let origins: BTreeSet<&str> = running
        .tokens
        .iter()
        .chain(&fresh.tokens)
        .map(|t| t.origin.as_str())
        .collect();
    for origin in origins {
        let of = |c: &Config| {
            c.tokens
                .iter()
                .filter(|t| t.origin == origin)
                .cloned()
                .collect::<Vec<_>>()
        };
        if of(running) != of(fresh) {
            out.push(format!("token {origin}"));
        }
    }
    out
}

/// The keys of both maps, each once, in order.
fn keys<'a, V>(a: &'a BTreeMap<String, V>, b: &'a BTreeMap<String, V>) -> BTreeSet<&'a str> {
    a.keys().chain(b.keys()).map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ocean_core::secret::Secret;
    use ocean_core::table::mysql::Credentials;

    use super::*;
    use crate::api_auth::ApiToken;
    use crate::derive::mysql::DatabaseConfig;
    use crate::ownership::AppPrefix;

    fn config() -> Config {
        let mut c = Config::new(Source::File("apps.json".into()));
        c.derive.mysql.databases.insert(
            "/a/b/c".into(),
            DatabaseConfig::new(
                Credentials {
                    user: "u".into(),
                    password: "old-secret".into(),
                },
                None,
            ),
        );
        c.tokens
            .push(ApiToken::new("--token-file", &Secret::new("t1".into()), None).unwrap());
        c
    }

    #[test]
    fn live_changes_name_the_setting_and_never_the_secret() {
        let old = config();
        assert!(live_changes(&old, &old.clone()).is_empty());
        let mut new = old.clone();
        if let Some(db) = new.derive.mysql.databases.get_mut("/a/b/c") {
            db.rw.password = "new-secret".into();
        }
        new.tokens = vec![ApiToken::new("--token-file", &Secret::new("t2".into()), None).unwrap()];
        let apps = AppPrefix::parse("/cache/").unwrap();
        new.derive
            .owners
            .redis_clusters
            .insert("sessions".into(), vec![apps]);
        new.guard.drop_hold = Duration::from_secs(1);
        let changes = live_changes(&old, &new);
        assert_eq!(
            changes,
            [
                "[guard]",
                "mysql.databases.\"/a/b/c\" credentials",
                "redis.clusters.\"sessions\"",
                "token --token-file",
            ]
        );
        assert!(!format!("{changes:?}").contains("secret"));
        assert!(needs_restart(&old, &new).is_empty());
    }

    #[test]
    fn dns_views_and_zones_are_live_settings() {
        let old = config();
        let mut new = old.clone();
        new.derive.dns.views.push(crate::derive::dns::ViewSettings {
            name: "unicom".into(),
            networks: vec!["10.1.0.0/16".parse().unwrap()],
        });
        assert_eq!(live_changes(&old, &new), ["domain/[dns]"]);
        let mut new = old.clone();
        new.derive.dns.zones.insert(
            "shop.example.com".into(),
            vec![AppPrefix::parse("/lb/").unwrap()],
        );
        assert_eq!(live_changes(&old, &new), ["domain/[dns]"]);
        assert!(needs_restart(&old, &new).is_empty());
    }

    #[test]
    fn socket_and_source_changes_need_a_restart() {
        let old = config();
        let mut new = old.clone();
        new.listen = "127.0.0.1:1".parse().unwrap();
        new.source = Source::File("other.json".into());
        assert_eq!(
            needs_restart(&old, &new),
            ["--listen", "--marathon/--apps-file"]
        );
    }
}

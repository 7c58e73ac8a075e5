//! Marathon's JSON, as `GET /v2/apps?embed=apps.tasks` returns it (1.4 and 1.5+ shapes).
//!
//! Parsing is lenient where Marathon versions differ (missing fields default) and strict
//! about the envelope: a body that is not `{"apps": [...]}` is an error. Each app is parsed
//! on its own, so one app with an odd shape is reported and skipped while the rest count.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Why an apps response could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("response is not Marathon's apps JSON: {0}")]
    Envelope(#[from] serde_json::Error),
}

/// An apps list as parsed: the apps, and those that could not be used.
pub type ParsedApps = (Vec<App>, Vec<BadApp>);

/// One app that could not be parsed, with the reason.
#[derive(Debug, Clone)]
pub struct BadApp {
    pub id: Option<String>,
    pub reason: String,
}

/// The envelope, each app kept as its unparsed JSON text (borrowed from the body): each
/// is then parsed straight into [`App`], with no `serde_json::Value` tree in between (at
/// 100k tasks that tree was a second, larger copy of the response and most of the parse).
#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    apps: Vec<&'a serde_json::value::RawValue>,
}

/// Just the id of an app that did not parse, to name it in the problem.
#[derive(Debug, Deserialize)]
struct AppId {
    id: Option<String>,
}

/// Parses an apps response; apps that fail to parse come back in the second list.
pub fn parse_apps(body: &[u8]) -> Result<ParsedApps, ModelError> {
    let env: Envelope = serde_json::from_slice(body)?;
    let mut apps = Vec::with_capacity(env.apps.len());
    let mut bad = Vec::new();
    for raw in env.apps {
        match parse_one(raw) {
            Ok(app) => apps.push(app),
            Err(b) => bad.push(b),
        }
    }
    Ok((apps, bad))
}

/// [`parse_apps`] for a body read from `reader` as it arrives: each app's text is read,
/// parsed and dropped before the next, so the whole response is never held beside its
/// parsed apps (66 MB at 100k tasks). For Marathon's re-list, streamed from the HTTP body.
pub fn parse_apps_from(reader: impl std::io::Read) -> Result<ParsedApps, ModelError> {
    /// The `apps` array, parsed element by element as the reader yields it.
    struct Streamed(Vec<App>, Vec<BadApp>);

    impl<'de> Deserialize<'de> for Streamed {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Each;
            impl<'de> serde::de::Visitor<'de> for Each {
                type Value = Streamed;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an array of apps")
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<Streamed, A::Error> {
                    let mut out = Streamed(Vec::new(), Vec::new());
                    while let Some(raw) = seq.next_element::<Box<serde_json::value::RawValue>>()? {
                        match parse_one(&raw) {
                            Ok(app) => out.0.push(app),
                            Err(b) => out.1.push(b),
                        }
                    }
                    Ok(out)
                }
            }
            d.deserialize_seq(Each)
        }
    }

    #[derive(Deserialize)]
    struct StreamedEnvelope {
        apps: Streamed,
    }

    let env: StreamedEnvelope =
        serde_json::from_reader(std::io::BufReader::with_capacity(64 << 10, reader))?;
    Ok((env.apps.0, env.apps.1))
}

/// One app's JSON: the app, or why it cannot be used.
fn parse_one(raw: &serde_json::value::RawValue) -> Result<App, BadApp> {
    match serde_json::from_str::<App>(raw.get()) {
        Ok(app) if app.id.starts_with('/') => Ok(app),
        Ok(app) => Err(BadApp {
            id: Some(app.id),
            reason: "app id does not start with '/'".into(),
        }),
        Err(e) => Err(BadApp {
            id: serde_json::from_str::<AppId>(raw.get())
                .ok()
                .and_then(|a| a.id),
            reason: e.to_string(),
        }),
    }
}

/// `GET /v2/apps/{id}?embed=app.tasks`: one app.
#[derive(Debug, Deserialize)]
struct OneApp<'a> {
    #[serde(borrow)]
    app: &'a serde_json::value::RawValue,
}

/// Parses one app's response: the app, or why it cannot be used (as [`parse_apps`] reports
/// an app that does not parse).
///
/// # Errors
/// A body that is not `{"app": {...}}`.
pub fn parse_app(body: &[u8]) -> Result<Result<App, BadApp>, ModelError> {
    let one: OneApp = serde_json::from_slice(body)?;
    Ok(parse_one(one.app))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub id: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub instances: Option<u64>,
    /// Marathon 1.x host-networking ports.
    #[serde(default)]
    pub port_definitions: Option<Vec<PortDefinition>>,
    /// Legacy service ports (Marathon 1.4 sends them beside portDefinitions).
    #[serde(default)]
    pub ports: Option<Vec<u32>>,
    #[serde(default)]
    pub container: Option<Container>,
    /// Marathon 1.5+ networking.
    #[serde(default)]
    pub networks: Option<Vec<Network>>,
    /// Marathon 1.4 IP-per-task.
    #[serde(default)]
    pub ip_address: Option<IpAddressSpec>,
    #[serde(default)]
    pub health_checks: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub tasks: Option<Vec<Task>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub docker: Option<Docker>,
    /// Marathon 1.5+ place of port mappings.
    #[serde(default)]
    pub port_mappings: Option<Vec<PortMapping>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Docker {
    /// Marathon 1.4: BRIDGE, HOST, USER.
    #[serde(default)]
    pub network: Option<String>,
    /// Marathon 1.4 place of port mappings.
    #[serde(default)]
    pub port_mappings: Option<Vec<PortMapping>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(default)]
    pub container_port: Option<u32>,
    #[serde(default)]
    pub host_port: Option<u32>,
    #[serde(default)]
    pub service_port: Option<u32>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Network {
    /// `host`, `container/bridge` or `container`.
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IpAddressSpec {
    #[serde(default)]
    pub discovery: Option<Discovery>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    #[serde(default)]
    pub ports: Vec<DiscoveryPort>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DiscoveryPort {
    #[serde(default)]
    pub number: Option<u32>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub ip_addresses: Option<Vec<TaskIpAddress>>,
    #[serde(default)]
    pub ports: Option<Vec<u32>>,
    #[serde(default)]
    pub slave_id: Option<String>,
    /// Absent in Marathon before 1.x, which listed only launched tasks.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub health_check_results: Option<Vec<HealthCheckResult>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskIpAddress {
    pub ip_address: String,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckResult {
    #[serde(default)]
    pub alive: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_marathon_15_and_14_responses() {
        for file in ["marathon15_apps.json", "zdd_apps.json"] {
            let path = format!(
                "{}/tests/fixtures/marathon/{file}",
                env!("CARGO_MANIFEST_DIR")
            );
            let Ok(body) = std::fs::read(&path) else {
                panic!("fixture {path} missing");
            };
            let (apps, bad) = parse_apps(&body).unwrap_or_default_for_test();
            assert!(bad.is_empty(), "{file}: {bad:?}");
            assert!(!apps.is_empty(), "{file}");
            assert!(apps
                .iter()
                .all(|a| a.tasks.as_ref().is_some_and(|t| !t.is_empty())));
        }
    }

    #[test]
    fn a_bad_app_is_skipped_and_the_rest_count() {
        let body = br#"{"apps":[{"id":"/ok"},{"id":"/bad","labels":{"a":1}},{"id":"noslash"}]}"#;
        let (apps, bad) = parse_apps(body).unwrap_or_default_for_test();
        assert_eq!(apps.len(), 1);
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].id.as_deref(), Some("/bad"));
    }

    #[test]
    fn a_broken_envelope_is_an_error() {
        assert!(parse_apps(b"<html>").is_err());
        assert!(parse_apps(br#"{"app":[]}"#).is_err());
        assert!(parse_apps(br#"{"apps":{}}"#).is_err());
    }

    /// A reader that hands out at most `step` bytes a call, as a slow network would.
    struct Trickle<'a> {
        rest: &'a [u8],
        step: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.rest.len());
            buf[..n].copy_from_slice(&self.rest[..n]);
            self.rest = &self.rest[n..];
            Ok(n)
        }
    }

    /// Streamed or whole, a body parses to the same apps and bad apps, or both refuse it,
    /// however the reader cuts it.
    #[test]
    fn a_streamed_body_parses_as_the_whole_one() {
        let fixture = |f: &str| {
            std::fs::read(format!(
                "{}/tests/fixtures/marathon/{f}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        };
        let bodies: Vec<Vec<u8>> = vec![
            fixture("marathon15_apps.json"),
            fixture("zdd_apps.json"),
            br#"{"apps":[{"id":"/ok"},{"id":"/bad","labels":{"a":1}},{"id":"noslash"}],"x":[1]}"#
                .to_vec(),
            br#"{"apps":[]}"#.to_vec(),
            b"<html>".to_vec(),
            br#"{"app":[]}"#.to_vec(),
            br#"{"apps":{}}"#.to_vec(),
            br#"{"apps":[{"id":"/ok"}"#.to_vec(),
            br#"{"apps":[{"id":"/ok"}]} trailing"#.to_vec(),
        ];
        for body in &bodies {
            let whole = format!("{:?}", parse_apps(body).map_err(|_| ()));
            for step in [1, 7, 4096] {
                let streamed = parse_apps_from(Trickle { rest: body, step });
                assert_eq!(
                    format!("{:?}", streamed.map_err(|_| ())),
                    whole,
                    "step {step}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(60)])
                );
            }
        }
    }

    trait OrDefault {
        fn unwrap_or_default_for_test(self) -> (Vec<App>, Vec<BadApp>);
    }
    impl OrDefault for Result<(Vec<App>, Vec<BadApp>), ModelError> {
        fn unwrap_or_default_for_test(self) -> (Vec<App>, Vec<BadApp>) {
            match self {
                Ok(v) => v,
                Err(e) => panic!("{e}"),
            }
        }
    }
}

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
pub fn parse_apps(body: &[u8]) -> Result<(Vec<App>, Vec<BadApp>), ModelError> {
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

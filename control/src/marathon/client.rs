//! Marathon's REST API: the apps with their tasks, from the elected leader.
//!
//! Several Marathon URLs may be given (one per master). Each sync starts at the instance that
//! answered last; an instance whose `/v2/info` says it is not the elected leader is skipped,
//! as is one that times out, so a partitioned standby never feeds control a stale view.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ocean_core::tls::{PemFile, TlsError};

use super::model::{parse_apps_from, ModelError, ParsedApps};
use url::Url;

/// Why a sync from Marathon failed.
#[derive(Debug, thiserror::Error)]
pub enum MarathonError {
    #[error("{url}: {source}")]
    Http {
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: HTTP {status}")]
    Status {
        url: Url,
        status: reqwest::StatusCode,
    },
    #[error("{url}: not the elected leader (/v2/info says elected=false)")]
    NotLeader { url: Url },
    #[error("{url}: /v2/info is not JSON: {message}")]
    Info { url: Url, message: String },
    #[error("no Marathon URL configured")]
    NoUrls,
    #[error("{url}: reading the apps was interrupted (shutting down)")]
    Interrupted { url: Url },
}

/// Why the Marathon client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Ca(#[from] TlsError),
    #[error("HTTP client for Marathon: {0}")]
    Build(reqwest::Error),
}

/// The chunks of a response body, as the blocking parser reads them.
struct Chunks {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Chunks {
    fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> Chunks {
        Chunks {
            rx,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                // The sender is done: the end of the body.
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A client for one or more Marathon instances.
#[derive(Debug)]
pub struct MarathonClient {
    urls: Vec<Url>,
    client: reqwest::Client,
    current: AtomicUsize,
}

/// Joins `path` to a base URL that may itself have a path (`http://h/marathon`).
pub fn join(base: &Url, path: &str) -> Url {
    let mut u = base.clone();
    u.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
    u.set_query(None);
    u
}

impl MarathonClient {
    /// `timeout` bounds each request (connect, `/v2/info` and the apps listing).
    /// `ca`: CA certificates (PEM, `--marathon-ca`) an https Marathon must chain to,
    /// instead of the system's trust store.
    ///
    /// # Errors
    /// An unusable CA file, or a client reqwest cannot build.
    pub fn new(urls: Vec<Url>, timeout: Duration, ca: Option<&Path>) -> Result<Self, ClientError> {
        let mut builder = ocean_core::http::client_builder(timeout.min(Duration::from_secs(2)))
            .timeout(timeout)
            .tcp_keepalive(Duration::from_secs(30));
        if let Some(ca) = ca {
            builder = ocean_core::http::trust_only(builder, PemFile::new("--marathon-ca", ca))?;
        }
        let client = builder.build().map_err(ClientError::Build)?;
        Ok(MarathonClient {
            urls,
            client,
            current: AtomicUsize::new(0),
        })
    }

    /// The instance that answered last (where the event stream should connect).
    pub fn current(&self) -> Option<&Url> {
        let n = self.urls.len();
        (n > 0).then(|| &self.urls[self.current.load(Ordering::Relaxed) % n])
    }

    /// Moves to the next instance (after the event stream failed on this one).
    pub fn rotate(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    /// The HTTP client, shared with the event stream (which sets no total timeout per request).
    pub fn http(&self) -> &reqwest::Client {
        &self.client
    }

    /// Fetches `GET /v2/apps?embed=apps.tasks` from the first instance that is the elected
    /// leader and answers, parsing the body as it arrives ([`parse_apps_from`], on a
    /// blocking thread): the 66 MB of 100k tasks are never held whole beside their parsed
    /// apps. Returns the parse (an instance that answers something else than apps JSON is
    /// still the one that answered) and the instance.
    pub async fn fetch_apps(&self) -> Result<(Result<ParsedApps, ModelError>, Url), MarathonError> {
        let n = self.urls.len();
        if n == 0 {
            return Err(MarathonError::NoUrls);
        }
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let base = &self.urls[idx];
            let result = async {
                self.check_leader(base).await?;
                let mut url = join(base, "/v2/apps");
                url.set_query(Some("embed=apps.tasks"));
                self.get_apps(url).await
            }
            .await;
            match result {
                Ok(parsed) => {
                    self.current.store(idx, Ordering::Relaxed);
                    return Ok((parsed, base.clone()));
                }
                Err(e) => {
                    tracing::debug!(marathon = %base, error = %e, "marathon instance unusable");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(MarathonError::NoUrls))
    }

    /// GETs an apps list and parses it chunk by chunk as it arrives.
    async fn get_apps(&self, url: Url) -> Result<Result<ParsedApps, ModelError>, MarathonError> {
        let mut resp = self.send(&url).await?;
        // A few chunks in flight: reading waits for the parser, so memory stays bounded.
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let parse = tokio::task::spawn_blocking(move || parse_apps_from(Chunks::new(rx)));
        let read = loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    // A closed channel: the parser has its answer (an error) already.
                    if tx.send(Ok(chunk)).await.is_err() {
                        break Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(source) => {
                    let _ = tx
                        .send(Err(std::io::Error::other("the body was cut")))
                        .await;
                    break Err(source);
                }
            }
        };
        drop(tx);
        let parsed = match parse.await {
            Ok(parsed) => parsed,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return Err(MarathonError::Interrupted { url }),
        };
        read.map_err(|source| MarathonError::Http { url, source })?;
        Ok(parsed)
    }

    /// Fetches `GET /v2/apps/{id}?embed=app.tasks` from the instance the last list came
    /// from, if it is still the elected leader; `None` when Marathon says there is no such
    /// app (404).
    pub async fn fetch_app(&self, id: &str) -> Result<Option<Bytes>, MarathonError> {
        let base = self.current().ok_or(MarathonError::NoUrls)?.clone();
        self.check_leader(&base).await?;
        let mut url = join(&base, &format!("/v2/apps{id}"));
        url.set_query(Some("embed=app.tasks"));
        match self.get(url).await {
            Ok(body) => Ok(Some(body)),
            Err(MarathonError::Status { status, .. })
                if status == reqwest::StatusCode::NOT_FOUND =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// GETs `url` as JSON; any status but 2xx is an error.
    async fn get(&self, url: Url) -> Result<Bytes, MarathonError> {
        let resp = self.send(&url).await?;
        resp.bytes()
            .await
            .map_err(|source| MarathonError::Http { url, source })
    }

    /// Sends `GET url` for JSON; the response once its status is 2xx.
    async fn send(&self, url: &Url) -> Result<reqwest::Response, MarathonError> {
        let resp = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|source| MarathonError::Http {
                url: url.clone(),
                source,
            })?;
        if !resp.status().is_success() {
            return Err(MarathonError::Status {
                url: url.clone(),
                status: resp.status(),
            });
        }
        Ok(resp)
    }

    async fn check_leader(&self, base: &Url) -> Result<(), MarathonError> {
        let url = join(base, "/v2/info");
        let body = self.get(url.clone()).await?;
        let info: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| MarathonError::Info {
                url: url.clone(),
                message: e.to_string(),
            })?;
        // Marathon reports `elected: true` only on the leader. An instance that omits the
        // field (very old versions) is trusted.
        if info.get("elected").and_then(|e| e.as_bool()) == Some(false) {
            return Err(MarathonError::NotLeader { url: base.clone() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_a_base_path() {
        let base = Url::parse("http://m:8080/marathon/").unwrap();
        assert_eq!(
            join(&base, "/v2/info").as_str(),
            "http://m:8080/marathon/v2/info"
        );
        let base = Url::parse("http://m:8080").unwrap();
        assert_eq!(join(&base, "/v2/apps").as_str(), "http://m:8080/v2/apps");
    }
}

//! A client loop for resharding and failover tests: SET/GET/MGET through the router,
//! checking every value, counting errors with timestamps.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What the load saw.
#[derive(Debug, Default)]
pub struct LoadStats {
    pub ops: AtomicU64,
    pub errors: AtomicU64,
    /// (time, message) of errors, first 50.
    pub error_log: Mutex<Vec<(Instant, String)>>,
    /// Completion times of successful ops on `watched` keys.
    pub watched_ok: Mutex<Vec<Instant>>,
}

impl LoadStats {
    fn error(&self, msg: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut log) = self.error_log.lock() {
            if log.len() < 50 {
                log.push((Instant::now(), msg));
            }
        }
    }
}

/// Runs `workers` loops until `stop`; keys are `load:{0..keys}`; `watched` keys also
/// record their successes.
pub fn spawn_load(
    addr: SocketAddr,
    workers: usize,
    keys: usize,
    watched: Vec<String>,
    stop: Arc<AtomicBool>,
    stats: Arc<LoadStats>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|w| {
            let stop = stop.clone();
            let stats = stats.clone();
            let watched = watched.clone();
            tokio::spawn(async move {
                let Ok(client) = redis::Client::open(format!("redis://{addr}/")) else {
                    stats.error("bad url".into());
                    return;
                };
                let mut con = match client.get_multiplexed_async_connection().await {
                    Ok(c) => c,
                    Err(e) => {
                        stats.error(format!("connect: {e}"));
                        return;
                    }
                };
                let mut i: usize = w * 7919;
                while !stop.load(Ordering::Relaxed) {
                    i = i.wrapping_add(1);
                    // Each worker writes its own keys, so a GET sees its own SET.
                    let n = (i % (keys / workers).max(1)) * workers + w;
                    let key = if w == 0 && !watched.is_empty() {
                        watched[i % watched.len()].clone()
                    } else {
                        format!("load:{n}")
                    };
                    let val = format!("v{i}");
                    let r: redis::RedisResult<()> = redis::cmd("SET")
                        .arg(&key)
                        .arg(&val)
                        .query_async(&mut con)
                        .await;
                    if let Err(e) = r {
                        stats.error(format!("SET {key}: {e}"));
                        continue;
                    }
                    let got: redis::RedisResult<Option<String>> =
                        redis::cmd("GET").arg(&key).query_async(&mut con).await;
                    match got {
                        Ok(Some(v)) if v == val => {
                            if w == 0 && !watched.is_empty() {
                                if let Ok(mut t) = stats.watched_ok.lock() {
                                    t.push(Instant::now());
                                }
                            }
                        }
                        Ok(other) => stats.error(format!("GET {key}: {other:?}, wanted {val}")),
                        Err(e) => stats.error(format!("GET {key}: {e}")),
                    }
                    let mkeys: Vec<String> = (0..5)
                        .map(|j| format!("load:{}", (n + j * 97) % keys))
                        .collect();
                    let m: redis::RedisResult<Vec<Option<String>>> =
                        redis::cmd("MGET").arg(&mkeys).query_async(&mut con).await;
                    match m {
                        Ok(v) if v.len() == 5 => {}
                        Ok(v) => stats.error(format!("MGET: {} values", v.len())),
                        Err(e) => stats.error(format!("MGET: {e}")),
                    }
                    stats.ops.fetch_add(3, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

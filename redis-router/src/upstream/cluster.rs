//! One Redis Cluster as a worker sees it: its nodes (with their shared and dedicated
//! connections), the slot map, and the refresher that keeps the map current.
//!
//! The map is read lock-free on every command (`ArcSwap`). Refreshes come from MOVED
//! replies, failed connections and a timer; they are debounced: at most one in flight, and
//! requests arriving meanwhile fold into one more refresh after it.
//!
//! Coverage: a slot is covered when its master is in the map and reachable. A master is
//! unreachable once its shared connections have failed (connect error, lost connection,
//! command timeout) for [`ClusterOpts::down_after`] without a connect succeeding since;
//! a master the last `CLUSTER SHARDS` reports as failed is left out of the map, so its
//! slots have no master at all. Every refresh probes each master (a `PING` on a shared
//! connection, which reconnects a closed one), a failure asks for a refresh at once, and
//! while anything is uncovered or failing the refresher runs every
//! [`ClusterOpts::recheck_interval`] instead of every [`ClusterOpts::refresh_interval`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::backend::{
    one_shot, BackendError, BackendOpts, DedicatedConn, Failure, Job, Reach, SharedConn,
};
use crate::proto::{parse, Protocol, Request, Value};
use crate::slot::{Placement, Shards, SLOTS};

/// Per-cluster tuning shared by its workers.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    /// Shared (multiplexed) connections per node and protocol.
    pub conns_per_node: usize,
    /// Dedicated connections per node at most (idle plus in use).
    pub max_dedicated: usize,
    /// Idle dedicated connections kept per node.
    pub max_idle_dedicated: usize,
    /// How often the slot map is refreshed without a reason.
    pub refresh_interval: Duration,
    /// Least time between two refreshes.
    pub refresh_debounce: Duration,
    /// How long a master's connections fail (with none succeeding) before its slots count
    /// as uncovered.
    pub down_after: Duration,
    /// How often the map is refreshed and the masters probed while a slot is uncovered or
    /// a master's connections are failing.
    pub recheck_interval: Duration,
    /// Send read-only commands to replicas (round robin), with `READONLY` on every
    /// backend connection.
    pub read_from_replicas: bool,
    /// Backend connection options.
    pub backend: Arc<BackendOpts>,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            conns_per_node: 1,
            max_dedicated: 512,
            max_idle_dedicated: 16,
            refresh_interval: Duration::from_secs(10),
            refresh_debounce: Duration::from_millis(100),
            down_after: Duration::from_secs(1),
            recheck_interval: Duration::from_secs(1),
            read_from_replicas: false,
            backend: Arc::new(BackendOpts::default()),
        }
    }
}

/// A node and its connections.
#[derive(Debug)]
pub struct Node {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: [Vec<SharedConn>; 2],
    next: AtomicUsize,
    idle: Mutex<Vec<DedicatedConn>>,
    dedicated: Arc<Semaphore>,
    reach: Arc<Reach>,
}

impl Node {
    fn new(addr: SocketAddr, opts: &ClusterOpts, refresh: &Arc<Notify>) -> Node {
        let reach = Reach::new(refresh.clone());
        let conns = |p| {
            (0..opts.conns_per_node.max(1))
                .map(|_| SharedConn::spawn(addr, p, opts.backend.clone(), reach.clone()))
                .collect()
        };
        let shared = [conns(Protocol::Resp2), conns(Protocol::Resp3)];
        Node {
            addr,
            reach,
            shared,
            next: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            dedicated: Arc::new(Semaphore::new(opts.max_dedicated.max(1))),
        }
    }

    /// A shared connection for `proto`, round robin.
    pub fn shared(&self, proto: Protocol) -> &SharedConn {
        let list = &self.shared[usize::from(proto == Protocol::Resp3)];
        let i = self.next.fetch_add(1, Ordering::Relaxed) % list.len().max(1);
        // `list` is never empty (conns_per_node >= 1).
        &list[i.min(list.len() - 1)]
    }

    /// Since when (and why) this node's connections have been failing, if they are.
    pub fn failure(&self) -> Option<Failure> {
        self.reach.failure()
    }

    /// Sends a `PING` on a shared connection, not waiting for the answer: it connects (or
    /// reconnects) the connection, and the connection tells [`Reach`] how that went.
    fn probe(&self) {
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let job = Job {
            bytes: Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"),
            replies: 1,
            skip_first: false,
            tx,
        };
        // A full queue means the connection is busy: its traffic is probe enough.
        let _ = self.shared(Protocol::Resp2).try_send(job);
    }
}

/// A dedicated connection on loan, with its pool slot.
#[derive(Debug)]
pub struct Lease {
    /// The connection.
    pub conn: DedicatedConn,
    node: Arc<Node>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// Gives a clean connection back to its node's idle list (or closes it when full).
    pub fn release(self, max_idle: usize) {
        if !self.conn.is_idle() {
            return;
        }
        if let Ok(mut idle) = self.node.idle.lock() {
            if idle.len() < max_idle {
                idle.push(self.conn);
            }
        }
    }
}

/// The slot map: masters (sorted by address) and each slot's master.
#[derive(Debug)]
pub struct SlotMap {
    /// Masters owning slots, sorted by address (SCAN walks them in this order); a sharded
    /// pool's servers in configuration order.
    pub masters: Vec<Arc<Node>>,
    /// Index into `masters`; `u16::MAX` for an unserved slot.
    pub slots: Vec<u16>,
    /// Each master's replicas (same index as `masters`); empty unless replicas are read.
    pub replicas: Vec<Vec<Arc<Node>>>,
    /// A sharded pool's placement (`None`: a Redis Cluster's CRC16 slots). It lives in the
    /// map so that a reload swaps the servers and where keys go in one store.
    pub shards: Option<Arc<Shards>>,
    /// Sharded: the slot of server 0 (see [`SlotMap::sharded`]).
    pub base: u16,
}

/// Half the slots: a sharded map's servers start at slot 0 or here, alternately.
const HALF: u16 = SLOTS / 2;

impl SlotMap {
    fn empty() -> SlotMap {
        SlotMap {
            masters: Vec::new(),
            slots: vec![u16::MAX; usize::from(SLOTS)],
            replicas: Vec::new(),
            shards: None,
            base: 0,
        }
    }

    /// A sharded pool's map: `masters` in configuration order, server `i` at slot
    /// `base + i`, every other slot spread as `slot % n` (keyless commands pick any slot).
    ///
    /// The map it replaces (`previous`) used the other half of the slots when both pools
    /// fit in one (8192 servers): a slot computed with the previous placement, by a
    /// request that reaches the new map (queued in a batch, say), still names its server,
    /// which keeps serving it while it is in the pool. A server that left has no slot; its
    /// stragglers go where `slot % n` sends them.
    fn sharded(
        masters: Vec<Arc<Node>>,
        shards: Arc<Shards>,
        previous: Option<&SlotMap>,
    ) -> SlotMap {
        let n = masters.len();
        let prev = previous.filter(|p| p.shards.is_some());
        let fits = |len: usize| len <= usize::from(HALF);
        let base = match prev {
            Some(p) if p.base == 0 && fits(p.masters.len()) && fits(n) => HALF,
            _ => 0,
        };
        let mut slots: Vec<u16> = (0..SLOTS)
            .map(|s| u16::try_from(usize::from(s) % n.max(1)).unwrap_or(0))
            .collect();
        if let Some(p) = prev.filter(|p| p.base != base) {
            for (i, old) in p.masters.iter().enumerate() {
                let now = masters.iter().position(|m| m.addr == old.addr);
                let (Some(j), Some(x)) = (now, slots.get_mut(usize::from(p.base) + i)) else {
                    continue;
                };
                *x = u16::try_from(j).unwrap_or(0);
            }
        }
        for i in 0..n {
            if let Some(x) = slots.get_mut(usize::from(base) + i) {
                *x = u16::try_from(i).unwrap_or(0);
            }
        }
        SlotMap {
            replicas: vec![Vec::new(); n],
            masters,
            slots,
            shards: Some(shards),
            base,
        }
    }

    /// How keys map to slots in this map.
    pub fn placement(&self) -> Placement<'_> {
        match &self.shards {
            Some(shards) => Placement::Sharded {
                shards,
                base: self.base,
            },
            None => Placement::Slots,
        }
    }

    /// The master serving `slot`.
    pub fn node(&self, slot: u16) -> Option<&Arc<Node>> {
        let i = *self.slots.get(usize::from(slot))?;
        self.masters.get(usize::from(i))
    }

    /// A replica of `slot`'s master, chosen by `pick`; `None` when it has none.
    pub fn replica(&self, slot: u16, pick: usize) -> Option<&Arc<Node>> {
        let i = *self.slots.get(usize::from(slot))?;
        let list = self.replicas.get(usize::from(i))?;
        list.get(pick % list.len().max(1))
    }

    /// Slots with an owner.
    pub fn covered(&self) -> usize {
        self.slots.iter().filter(|&&i| i != u16::MAX).count()
    }

    /// Which slots have no reachable master at `now` (`true`: uncovered, one per slot),
    /// and the masters counted unreachable: failing for at least `down_after`.
    pub fn uncovered(
        &self,
        now: Instant,
        down_after: Duration,
    ) -> (Vec<bool>, Vec<(SocketAddr, Failure)>) {
        let down: Vec<Option<Failure>> = self
            .masters
            .iter()
            .map(|n| {
                n.failure()
                    .filter(|f| now.saturating_duration_since(f.since) >= down_after)
            })
            .collect();
        let slots = self
            .slots
            .iter()
            .map(|&i| i == u16::MAX || down.get(usize::from(i)).is_none_or(Option::is_some))
            .collect();
        let down = self
            .masters
            .iter()
            .zip(down)
            .filter_map(|(n, f)| Some((n.addr, f?)))
            .collect();
        (slots, down)
    }
}

/// One cluster in one worker.
#[derive(Debug)]
pub struct Cluster {
    /// The cluster's name (`standalone` outside table mode).
    pub name: String,
    /// Tuning.
    pub opts: ClusterOpts,
    seeds: Mutex<Vec<SocketAddr>>,
    map: ArcSwap<SlotMap>,
    nodes: Mutex<HashMap<SocketAddr, Arc<Node>>>,
    refresh: Arc<Notify>,
    refreshed: Notify,
    /// Completed refreshes.
    pub refreshes: AtomicU64,
    /// A sharded pool (its placement is in the map), not a Redis Cluster.
    sharded: bool,
    /// The worker's runtime, where node connections run (a reshard may come from another
    /// thread).
    runtime: Option<tokio::runtime::Handle>,
    /// Connected clients.
    pub clients: AtomicUsize,
    next_client_id: AtomicU64,
    next_replica: AtomicUsize,
}

impl Cluster {
    /// A cluster with no map yet; [`Cluster::spawn_refresher`] fetches it.
    pub fn new(name: String, seeds: Vec<SocketAddr>, opts: ClusterOpts) -> Arc<Cluster> {
        Cluster::create(name, seeds, opts, false)
    }

    /// A sharded pool of standalone servers (twemproxy's model): `servers` in
    /// configuration order, the placement's server index `i` being slot `i` of the map,
    /// served by server `i` (see [`SlotMap::sharded`]). There is no slot map to fetch; the
    /// refresher only probes the servers. Must be called on the worker's runtime.
    pub fn sharded(
        name: String,
        servers: Vec<SocketAddr>,
        shards: Arc<Shards>,
        opts: ClusterOpts,
    ) -> Arc<Cluster> {
        let cluster = Cluster::create(name, servers.clone(), opts, true);
        let masters: Vec<Arc<Node>> = servers.iter().map(|a| cluster.node(*a)).collect();
        cluster
            .map
            .store(Arc::new(SlotMap::sharded(masters, shards, None)));
        cluster
    }

    /// Replaces a sharded pool's servers and placement (a reload of its file): one new map
    /// with both, stored at once. Servers that stay keep their node and connections; a
    /// server that left is no longer probed nor given requests, and its connections close
    /// once the requests already queued on them are answered. Clients stay connected.
    /// Callable from any thread (new nodes' connections run on the worker's runtime). A
    /// Redis Cluster (whose map comes from the cluster) is left alone: `false`.
    pub fn reshard(&self, servers: &[SocketAddr], shards: Arc<Shards>) -> bool {
        if !self.sharded {
            return false;
        }
        let _runtime = self.runtime.as_ref().map(tokio::runtime::Handle::enter);
        // The node lock orders reshards: each builds on the map the last one stored.
        let Ok(mut nodes) = self.nodes.lock() else {
            return false;
        };
        let masters: Vec<Arc<Node>> = servers
            .iter()
            .map(|a| {
                nodes
                    .entry(*a)
                    .or_insert_with(|| Arc::new(Node::new(*a, &self.opts, &self.refresh)))
                    .clone()
            })
            .collect();
        nodes.retain(|a, _| servers.contains(a));
        let previous = self.map.load_full();
        self.map
            .store(Arc::new(SlotMap::sharded(masters, shards, Some(&previous))));
        drop(nodes);
        if let Ok(mut seeds) = self.seeds.lock() {
            *seeds = servers.to_vec();
        }
        // The refresher probes the new servers now rather than at its next tick.
        self.request_refresh();
        true
    }

    fn create(
        name: String,
        seeds: Vec<SocketAddr>,
        opts: ClusterOpts,
        sharded: bool,
    ) -> Arc<Cluster> {
        Arc::new(Cluster {
            name,
            opts,
            seeds: Mutex::new(seeds),
            map: ArcSwap::from_pointee(SlotMap::empty()),
            nodes: Mutex::new(HashMap::new()),
            refresh: Arc::new(Notify::new()),
            refreshed: Notify::new(),
            refreshes: AtomicU64::new(0),
            sharded,
            runtime: tokio::runtime::Handle::try_current().ok(),
            clients: AtomicUsize::new(0),
            next_client_id: AtomicU64::new(1),
            next_replica: AtomicUsize::new(0),
        })
    }

    /// A new client id.
    pub fn client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The current slot map.
    pub fn map(&self) -> Arc<SlotMap> {
        self.map.load_full()
    }

    /// Whether this is a sharded pool (no cluster to ask for a slot map).
    pub fn is_sharded(&self) -> bool {
        self.sharded
    }

    /// Runs `f` with how keys map to slots: CRC16 for a Redis Cluster (no map load), a
    /// sharded pool's current placement (read from the map, lock-free). Compute slots
    /// inside `f`; route them with [`Self::with_slot`].
    pub fn with_placement<R>(&self, f: impl FnOnce(&Placement<'_>) -> R) -> R {
        if !self.sharded {
            return f(&Placement::Slots);
        }
        let map = self.map.load();
        f(&map.placement())
    }

    /// The slot of one key (see [`Self::with_placement`]).
    pub fn slot_of(&self, key: &[u8]) -> u16 {
        self.with_placement(|p| p.slot(key))
    }

    /// The node serving `slot`, without touching reference counts of the map.
    pub fn with_slot<R>(&self, slot: u16, f: impl FnOnce(Option<&Arc<Node>>) -> R) -> R {
        let map = self.map.load();
        f(map.node(slot))
    }

    /// A replica of `slot`'s master, round robin, when replicas are read.
    pub fn replica_for(&self, slot: u16) -> Option<SocketAddr> {
        if !self.opts.read_from_replicas {
            return None;
        }
        let pick = self.next_replica.fetch_add(1, Ordering::Relaxed);
        self.map.load().replica(slot, pick).map(|n| n.addr)
    }

    /// The node at `addr`, created on first use (MOVED/ASK may name a node the map lacks).
    pub fn node(&self, addr: SocketAddr) -> Arc<Node> {
        let Ok(mut nodes) = self.nodes.lock() else {
            return Arc::new(Node::new(addr, &self.opts, &self.refresh));
        };
        nodes
            .entry(addr)
            .or_insert_with(|| Arc::new(Node::new(addr, &self.opts, &self.refresh)))
            .clone()
    }

    /// Replaces the seeds (table mode) and asks for a refresh.
    pub fn set_seeds(&self, seeds: Vec<SocketAddr>) {
        if let Ok(mut s) = self.seeds.lock() {
            *s = seeds;
        }
        self.request_refresh();
    }

    /// Asks the refresher for a new map (debounced).
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Waits for the next completed refresh, at most `timeout`.
    pub async fn wait_refresh(&self, timeout: Duration) {
        let notified = self.refreshed.notified();
        self.request_refresh();
        // A refresh or the end of the wait: either way, go on.
        let _ = tokio::time::timeout(timeout, notified).await;
    }

    /// Runs the refresher until `cancel` fires: once at start, then on request and on a
    /// timer, never more often than the debounce interval. After each refresh every master
    /// is probed; the timer is [`ClusterOpts::recheck_interval`] while [`Self::degraded`].
    pub fn spawn_refresher(self: &Arc<Self>, cancel: CancellationToken) {
        let cluster = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = cluster.refresh_now().await {
                    tracing::warn!(cluster = %cluster.name, error = %e, "slot map refresh failed");
                    metrics::counter!("ocean_redis_slot_refresh_errors_total").increment(1);
                }
                for n in &cluster.map().masters {
                    n.probe();
                }
                cluster.refreshed.notify_waiters();
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(cluster.opts.refresh_debounce) => {}
                }
                let next = if cluster.degraded() {
                    cluster.opts.recheck_interval
                } else {
                    cluster.opts.refresh_interval
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = cluster.refresh.notified() => {}
                    _ = tokio::time::sleep(next) => {}
                }
            }
        });
    }

    /// Whether a slot has no master in the map or a master's connections are failing
    /// (however briefly): the refresher then rechecks every `recheck_interval`.
    pub fn degraded(&self) -> bool {
        let map = self.map.load();
        map.slots.contains(&u16::MAX) || map.masters.iter().any(|n| n.failure().is_some())
    }

    /// Fetches the map from the known masters, then the seeds; the first answer wins.
    ///
    /// # Errors
    /// When no node answers with a map.
    pub async fn refresh_now(&self) -> anyhow::Result<()> {
        if self.sharded {
            // The map is the configuration; the refresher's probes are what matters.
            return Ok(());
        }
        // Masters whose connections fail are asked last (a blackholed one costs a timeout).
        let mut masters: Vec<(bool, SocketAddr)> = self
            .map()
            .masters
            .iter()
            .map(|n| (n.failure().is_some(), n.addr))
            .collect();
        masters.sort();
        let mut candidates: Vec<SocketAddr> = masters.into_iter().map(|(_, a)| a).collect();
        if let Ok(seeds) = self.seeds.lock() {
            for s in seeds.iter() {
                if !candidates.contains(s) {
                    candidates.push(*s);
                }
            }
        }
        let mut last = anyhow::anyhow!("no seeds");
        for addr in candidates {
            match self.fetch_map(addr).await {
                Ok(ranges) if !ranges.is_empty() => {
                    self.install(ranges);
                    return Ok(());
                }
                Ok(_) => last = anyhow::anyhow!("{addr} knows no slots"),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn fetch_map(&self, addr: SocketAddr) -> anyhow::Result<Vec<Range>> {
        let opts = &self.opts.backend;
        let shards = one_shot(addr, Request::new(["CLUSTER", "SHARDS"]), opts).await?;
        if shards.first() != Some(&b'-') {
            if let Some(r) = parse(&shards).and_then(|v| parse_shards(&v, addr, opts.tls.is_some()))
            {
                return Ok(r);
            }
        }
        let slots = one_shot(addr, Request::new(["CLUSTER", "SLOTS"]), opts).await?;
        parse(&slots)
            .and_then(|v| parse_slots(&v, addr))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{addr}: CLUSTER SLOTS answered {}",
                    String::from_utf8_lossy(&slots).trim_end()
                )
            })
    }

    fn install(&self, ranges: Vec<Range>) {
        let mut addrs: Vec<SocketAddr> = ranges.iter().map(|r| r.2).collect();
        addrs.sort();
        addrs.dedup();
        let masters: Vec<Arc<Node>> = addrs.iter().map(|a| self.node(*a)).collect();
        let mut replicas: Vec<Vec<Arc<Node>>> = vec![Vec::new(); addrs.len()];
        let mut keep = addrs.clone();
        let mut slots = vec![u16::MAX; usize::from(SLOTS)];
        for (start, end, addr, reps) in ranges {
            let Ok(i) = addrs.binary_search(&addr) else {
                continue;
            };
            if self.opts.read_from_replicas {
                if let Some(list) = replicas.get_mut(i) {
                    for r in reps {
                        if !list.iter().any(|n| n.addr == r) {
                            list.push(self.node(r));
                            keep.push(r);
                        }
                    }
                }
            }
            for s in start..=end.min(SLOTS - 1) {
                if let Some(x) = slots.get_mut(usize::from(s)) {
                    *x = i as u16;
                }
            }
        }
        // Forget nodes that left the map (their connections close when the last in-flight
        // request lets go of them).
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.retain(|a, _| keep.contains(a));
        }
        self.map.store(Arc::new(SlotMap {
            masters,
            slots,
            replicas,
            shards: None,
            base: 0,
        }));
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ocean_redis_slot_refreshes_total").increment(1);
    }

    /// Takes a dedicated connection to `node` for `proto`, waiting up to the connect
    /// timeout for a pool slot.
    ///
    /// # Errors
    /// When the pool stays full or the connection fails.
    pub async fn lease(&self, node: Arc<Node>, proto: Protocol) -> Result<Lease, BackendError> {
        let opts = &self.opts.backend;
        let permit =
            tokio::time::timeout(opts.connect_timeout, node.dedicated.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(|| {
                    BackendError::Connect(node.addr, "dedicated connection pool full".into())
                })?;
        let reused = node.idle.lock().ok().and_then(|mut idle| {
            let i = idle.iter().rposition(|c| c.proto == proto)?;
            Some(idle.swap_remove(i))
        });
        let conn = match reused {
            Some(c) => c,
            None => DedicatedConn::open(node.addr, proto, opts).await?,
        };
        Ok(Lease {
            conn,
            node,
            _permit: permit,
        })
    }
}

/// A slot range, its master and its replicas.
type Range = (u16, u16, SocketAddr, Vec<SocketAddr>);

fn parse_addr(host: &[u8], port: i64, fallback: SocketAddr) -> Option<SocketAddr> {
    let port = u16::try_from(port).ok()?;
    let host = std::str::from_utf8(host).ok()?;
    if host.is_empty() || host == "?" {
        // An empty host means "the address you reached me on".
        return Some(SocketAddr::new(fallback.ip(), port));
    }
    host.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

/// `CLUSTER SLOTS`: `[[start, end, [ip, port, id, ...], replicas...], ...]`.
fn parse_slots(v: &Value, from: SocketAddr) -> Option<Vec<Range>> {
    let mut out = Vec::new();
    for range in v.as_array()? {
        let r = range.as_array()?;
        let start = u16::try_from(r.first()?.as_int()?).ok()?;
        let end = u16::try_from(r.get(1)?.as_int()?).ok()?;
        let master = r.get(2)?.as_array()?;
        let addr = parse_addr(master.first()?.as_bytes()?, master.get(1)?.as_int()?, from)?;
        let replicas = r
            .get(3..)
            .unwrap_or_default()
            .iter()
            .filter_map(|n| {
                let n = n.as_array()?;
                parse_addr(n.first()?.as_bytes()?, n.get(1)?.as_int()?, from)
            })
            .collect();
        out.push((start, end, addr, replicas));
    }
    Some(out)
}

fn field<'a>(pairs: &'a [Value], name: &str) -> Option<&'a Value> {
    pairs
        .chunks(2)
        .find(|kv| kv.first().and_then(Value::as_bytes).map(|b| &b[..]) == Some(name.as_bytes()))
        .and_then(|kv| kv.get(1))
}

/// `CLUSTER SHARDS`: `[{slots: [s, e, ...], nodes: [{ip, port, role, health, ...}]}, ...]`.
/// With `tls` (TLS to backends), a node's `tls-port` is preferred over its `port`.
fn parse_shards(v: &Value, from: SocketAddr, tls: bool) -> Option<Vec<Range>> {
    let port_of = |n: &[Value]| {
        let (first, second) = if tls {
            ("tls-port", "port")
        } else {
            ("port", "tls-port")
        };
        field(n, first)
            .or_else(|| field(n, second))
            .and_then(Value::as_int)
    };
    let mut out = Vec::new();
    for shard in v.as_array()? {
        let shard = shard.as_array()?;
        let slots = field(shard, "slots")?.as_array()?;
        let nodes = field(shard, "nodes")?.as_array()?;
        let master = nodes.iter().filter_map(Value::as_array).find(|n| {
            // Redis sends `fail` (cluster.c); its docs say `failed`: either one.
            field(n, "role").and_then(Value::as_bytes).map(|b| &b[..]) == Some(b"master")
                && !matches!(
                    field(n, "health").and_then(Value::as_bytes).map(|b| &b[..]),
                    Some(b"fail" | b"failed")
                )
        });
        let Some(master) = master else { continue };
        let host = field(master, "ip")
            .or_else(|| field(master, "endpoint"))
            .and_then(Value::as_bytes)
            .cloned()
            .unwrap_or_else(Bytes::new);
        let port = port_of(master)?;
        let addr = parse_addr(&host, port, from)?;
        let replicas: Vec<SocketAddr> = nodes
            .iter()
            .filter_map(Value::as_array)
            .filter(|n| {
                // A fresh replica says `loading` until its offset moves; one really
                // loading answers -LOADING and the read is retried on the master.
                field(n, "role").and_then(Value::as_bytes).map(|b| &b[..]) == Some(b"replica")
                    && !matches!(
                        field(n, "health").and_then(Value::as_bytes).map(|b| &b[..]),
                        Some(b"fail" | b"failed")
                    )
            })
            .filter_map(|n| {
                let host = field(n, "ip")
                    .or_else(|| field(n, "endpoint"))
                    .and_then(Value::as_bytes)?;
                parse_addr(host, port_of(n)?, from)
            })
            .collect();
        for pair in slots.chunks(2) {
            let start = u16::try_from(pair.first()?.as_int()?).ok()?;
            let end = u16::try_from(pair.get(1)?.as_int()?).ok()?;
            out.push((start, end, addr, replicas.clone()));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ocean_core::placement::ketama::{Distribution, KeyHash, Ring};

    fn pool(servers: &[SocketAddr], distribution: Distribution) -> Arc<Shards> {
        let named: Vec<(String, u32)> = servers.iter().map(|a| (a.to_string(), 1)).collect();
        Arc::new(Shards {
            ring: Ring::with_distribution(&named, KeyHash::Md5, distribution),
            hash_tag: None,
        })
    }

    fn addr_of(c: &Cluster, slot: u16) -> Option<SocketAddr> {
        c.with_slot(slot, |n| n.map(|n| n.addr))
    }

    /// Nothing listens on these: connections open on a request only, and none is sent.
    fn addrs(ports: &[u16]) -> Vec<SocketAddr> {
        ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect()
    }

    #[tokio::test]
    async fn reshard_swaps_servers_and_placement_in_one_map() {
        let keys: Vec<String> = (0..2000).map(|i| format!("key:{i}")).collect();
        let first = addrs(&[1, 2]);
        let c = Cluster::sharded(
            "t".into(),
            first.clone(),
            pool(&first, Distribution::Ketama),
            ClusterOpts::default(),
        );
        assert!(c.is_sharded());
        let gone = Arc::downgrade(&c.map().masters[0]);
        let kept = c.map().masters[1].clone();
        let before: Vec<u16> = keys.iter().map(|k| c.slot_of(k.as_bytes())).collect();
        for (k, s) in keys.iter().zip(&before) {
            let want = first[pool(&first, Distribution::Ketama).server(k.as_bytes())];
            assert_eq!(addr_of(&c, *s), Some(want), "{k}");
        }

        // From another thread, as a reload does: the new nodes' connections run on this
        // runtime.
        let second = addrs(&[2, 3, 4]);
        let shards = pool(&second, Distribution::Modula);
        let applied = std::thread::scope(|t| {
            t.spawn(|| c.reshard(&second, shards.clone()))
                .join()
                .unwrap()
        });
        assert!(applied);
        let map = c.map();
        let masters: Vec<SocketAddr> = map.masters.iter().map(|n| n.addr).collect();
        assert_eq!(masters, second);
        assert!(
            Arc::ptr_eq(&map.masters[0], &kept),
            "a server that stays keeps its node"
        );
        drop(map);
        assert!(
            gone.upgrade().is_none(),
            "the removed server's node is dropped"
        );
        assert!(c.nodes.lock().unwrap().keys().all(|a| second.contains(a)));
        let mut per_server = [0usize; 3];
        for k in &keys {
            let i = shards.server(k.as_bytes());
            per_server[i] += 1;
            assert_eq!(addr_of(&c, c.slot_of(k.as_bytes())), Some(second[i]), "{k}");
        }
        assert!(per_server.iter().all(|&n| n > 300), "{per_server:?}");
        // A slot computed before the reshard: its server when it stayed, else a server of
        // the new pool, never the one removed.
        for (k, s) in keys.iter().zip(&before) {
            let a = addr_of(&c, *s).unwrap();
            let was = first[pool(&first, Distribution::Ketama).server(k.as_bytes())];
            if second.contains(&was) {
                assert_eq!(a, was, "{k}");
            } else {
                assert!(second.contains(&a), "{k} -> {a}");
            }
        }
        // Every slot is served (keyless commands pick any).
        assert_eq!(c.map().covered(), usize::from(SLOTS));

        // Once more, back to the first half of the slots: still right.
        let third = addrs(&[4, 5]);
        let shards = pool(&third, Distribution::Ketama);
        assert!(c.reshard(&third, shards.clone()));
        for k in &keys {
            let want = third[shards.server(k.as_bytes())];
            assert_eq!(addr_of(&c, c.slot_of(k.as_bytes())), Some(want), "{k}");
        }

        // A Redis Cluster's map is the cluster's: no reshard.
        let cluster = Cluster::new("rc".into(), first.clone(), ClusterOpts::default());
        assert!(!cluster.reshard(&second, pool(&second, Distribution::Ketama)));
        assert_eq!(cluster.slot_of(b"foo"), 12182);
    }

    #[test]
    fn parses_slots_and_shards() {
        let from: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let slots = Bytes::from_static(
            b"*1\r\n*4\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7001\r\n$2\r\nid\r\n*3\r\n$9\r\n127.0.0.1\r\n:7004\r\n$2\r\nid\r\n",
        );
        let r = parse_slots(&parse(&slots).unwrap(), from).unwrap();
        assert_eq!(
            r,
            vec![(
                0,
                5460,
                "127.0.0.1:7001".parse().unwrap(),
                vec!["127.0.0.1:7004".parse().unwrap()]
            )]
        );
        let shards = Bytes::from_static(
            b"*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:10\r\n$5\r\nnodes\r\n*1\r\n*8\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n:7002\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$6\r\nhealth\r\n$6\r\nonline\r\n",
        );
        let r = parse_shards(&parse(&shards).unwrap(), from, false).unwrap();
        assert_eq!(r, vec![(0, 10, "127.0.0.1:7002".parse().unwrap(), vec![])]);
    }
}

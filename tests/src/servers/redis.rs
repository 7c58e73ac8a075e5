//! `redis-server`: standalone servers and Redis Clusters built with `redis-cli --cluster`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;

use super::process::{NotReady, ServerProcess};
use super::resp::{self, Resp, RespClient};
use super::{find_binary, free_port, loopback, server_dir, READY_TIMEOUT, START_ATTEMPTS};

/// Number of hash slots in a Redis Cluster.
pub const CLUSTER_SLOTS: usize = 16384;

/// How long [`RedisCluster::start`] waits for `cluster_state:ok` everywhere.
pub const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(45);

/// A `redis-server` on 127.0.0.1 in its own temp dir, without persistence
/// (`--save "" --appendonly no`), with `DEBUG` allowed from loopback
/// (`--enable-debug-command local`, so tests can `DEBUG SLEEP` to fake a slow backend),
/// and `--repl-diskless-sync-delay 0` so replicas sync at once.
///
/// Dropping it stops the server (SIGTERM, then SIGKILL) and removes its directory.
#[derive(Debug)]
pub struct RedisServer {
    // Field order matters: the process is stopped before its directory is removed.
    process: ServerProcess,
    addr: SocketAddr,
    cluster_port: Option<u16>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a standalone server on a free port and waits until it answers `PING`.
    ///
    /// # Errors
    /// When `redis-server` is not installed, or the server does not answer within 20 s
    /// (the error quotes its log).
    pub async fn start() -> Result<Self> {
        Self::start_with::<&str>(&[]).await
    }

    /// Like [`start`](Self::start) with extra command-line arguments appended, e.g.
    /// `&["--maxmemory", "10mb"]`. When they contain `--cluster-enabled`, a free cluster
    /// bus port is chosen too and passed as `--cluster-port`.
    ///
    /// # Errors
    /// As [`start`](Self::start); bad arguments make the server exit, and the error
    /// quotes its complaint.
    pub async fn start_with<S: AsRef<OsStr>>(extra_args: &[S]) -> Result<Self> {
        let extra: Vec<OsString> = extra_args.iter().map(|a| a.as_ref().to_owned()).collect();
        let cluster = extra.iter().any(|a| a == "--cluster-enabled");
        let program = find_binary("redis-server", "redis-server")?;
        let dir = server_dir("ocean-redis-")?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let cluster_port = if cluster { Some(free_port()?) } else { None };
            let mut args: Vec<OsString> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                "",
                "--enable-debug-command",
                "local",
                // A replica's first full sync otherwise waits 5 s for more replicas.
                "--repl-diskless-sync-delay",
                "0",
            ]
            .iter()
            .map(OsString::from)
            .collect();
            args.push("--dir".into());
            args.push(dir.path().into());
            if let Some(cluster_port) = cluster_port {
                args.push("--cluster-port".into());
                args.push(cluster_port.to_string().into());
            }
            args.extend(extra.iter().cloned());
            let addr = loopback(port);
            let mut process = ServerProcess::spawn(
                format!("redis-server {addr}"),
                program.clone(),
                args,
                dir.path(),
                dir.path().join("redis.log"),
                Vec::new(),
            )?;
            match wait_redis_ready(&mut process, addr).await {
                Ok(()) => {
                    return Ok(RedisServer {
                        process,
                        addr,
                        cluster_port,
                        dir,
                    })
                }
                Err(NotReady::AddrInUse(e)) => last = Some(e),
                Err(NotReady::Failed(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("redis-server: no start attempt made")))
    }

    /// The address clients connect to (`127.0.0.1:port`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The cluster bus port, for cluster nodes.
    pub fn cluster_port(&self) -> Option<u16> {
        self.cluster_port
    }

    /// The server's working directory (holds `redis.log` and, in a cluster, `nodes.conf`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Opens a new connection to the server.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn client(&self) -> Result<RespClient> {
        RespClient::connect(self.addr).await
    }

    /// Sends one command on a fresh connection and returns the reply.
    ///
    /// # Errors
    /// On connection or protocol errors (an error *reply* is `Ok(Resp::Error(_))`).
    pub async fn cmd<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Resp> {
        resp::command(self.addr, args).await
    }

    /// Starts the server again on the same ports and directory after
    /// [`stop`](Self::stop) or [`kill`](Self::kill); a cluster node rejoins with its
    /// `nodes.conf`. Waits until it answers `PING`.
    ///
    /// # Errors
    /// When it is still running, or does not come back (its port may have been taken).
    pub async fn restart(&mut self) -> Result<()> {
        self.process.respawn()?;
        wait_redis_ready(&mut self.process, self.addr)
            .await
            .map_err(NotReady::into_error)
    }
}

async fn wait_redis_ready(process: &mut ServerProcess, addr: SocketAddr) -> Result<(), NotReady> {
    process
        .wait_ready(READY_TIMEOUT, move || async move {
            match resp::command(addr, &["PING"]).await? {
                Resp::Simple(s) if s == "PONG" => Ok(()),
                other => bail!("PING answered {other:?}"),
            }
        })
        .await
}

super::impl_process_controls!(RedisServer);

/// A Redis Cluster of `masters` masters with `replicas_per_master` replicas each, every
/// node a [`RedisServer`] started with `--cluster-enabled yes --cluster-node-timeout 2000`.
///
/// [`start`](Self::start) returns once every node reports `cluster_state:ok` with all
/// 16384 slots assigned, every node knows every other and sees the same masters, and
/// every replica's link to its master is up.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    masters: Vec<SocketAddr>,
    replicas: BTreeMap<SocketAddr, SocketAddr>,
}

/// Who is master and who replicates whom, as one node sees the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterTopology {
    /// Masters that own at least one slot and are not flagged failed, sorted.
    pub masters: Vec<SocketAddr>,
    /// Replica address to its master's address.
    pub replicas: BTreeMap<SocketAddr, SocketAddr>,
}

impl RedisCluster {
    /// Starts `masters * (1 + replicas_per_master)` nodes in parallel, joins them with
    /// `redis-cli --cluster create ... --cluster-replicas N --cluster-yes`, and waits
    /// (up to 45 s) until the cluster is fully up.
    ///
    /// # Errors
    /// When `masters < 3` (`redis-cli` requires three), a binary is missing (the error
    /// names the Debian package: `redis-server` or `redis-tools`), a node does not start,
    /// `redis-cli` fails, or the cluster does not converge (the error says which check).
    pub async fn start(masters: usize, replicas_per_master: usize) -> Result<Self> {
        if masters < 3 {
            bail!("redis-cli --cluster create needs at least 3 masters, got {masters}");
        }
        let redis_cli = find_binary("redis-cli", "redis-tools")?;
        let total = masters * (1 + replicas_per_master);
        let nodes = futures_util::future::try_join_all((0..total).map(|_| {
            RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ])
        }))
        .await?;

        let mut cmd = tokio::process::Command::new(&redis_cli);
        cmd.arg("--cluster").arg("create");
        for node in &nodes {
            cmd.arg(node.addr().to_string());
        }
        cmd.arg("--cluster-replicas")
            .arg(replicas_per_master.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(CLUSTER_READY_TIMEOUT, cmd.output())
            .await
            .map_err(|_| anyhow!("redis-cli --cluster create timed out"))?
            .context("running redis-cli --cluster create")?;
        if !output.status.success() {
            bail!(
                "redis-cli --cluster create failed with {}:\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }

        let mut cluster = RedisCluster {
            nodes,
            masters: Vec::new(),
            replicas: BTreeMap::new(),
        };
        let topology = cluster.wait_ok(CLUSTER_READY_TIMEOUT).await?;
        if topology.masters.len() != masters || topology.replicas.len() != total - masters {
            bail!(
                "cluster came up with {} masters and {} replicas, wanted {masters} and {}",
                topology.masters.len(),
                topology.replicas.len(),
                total - masters
            );
        }
        cluster.masters = topology.masters;
        cluster.replicas = topology.replicas;
        Ok(cluster)
    }

    /// Every node's address, in start order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(RedisServer::addr).collect()
    }

    /// The masters when the cluster came up, sorted. After a failover this is stale: ask
    /// [`topology`](Self::topology).
    pub fn master_addrs(&self) -> Vec<SocketAddr> {
        self.masters.clone()
    }

    /// The replicas when the cluster came up, sorted.
    pub fn replica_addrs(&self) -> Vec<SocketAddr> {
        self.replicas.keys().copied().collect()
    }

    /// The replicas of `master` when the cluster came up.
    pub fn replicas_of(&self, master: SocketAddr) -> Vec<SocketAddr> {
        self.replicas
            .iter()
            .filter(|(_, m)| **m == master)
            .map(|(r, _)| *r)
            .collect()
    }

    /// All nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The node listening on `addr`.
    pub fn node(&self, addr: SocketAddr) -> Option<&RedisServer> {
        self.nodes.iter().find(|n| n.addr() == addr)
    }

    /// The node listening on `addr`, to stop, kill, pause or restart it.
    pub fn node_mut(&mut self, addr: SocketAddr) -> Option<&mut RedisServer> {
        self.nodes.iter_mut().find(|n| n.addr() == addr)
    }

    /// The topology as the node at `addr` sees it now (`CLUSTER NODES`).
    ///
    /// # Errors
    /// When the node cannot be asked or answers something unparsable.
    pub async fn topology_from(addr: SocketAddr) -> Result<ClusterTopology> {
        let reply = resp::command(addr, &["CLUSTER", "NODES"]).await?;
        let text = reply
            .as_str()
            .ok_or_else(|| anyhow!("CLUSTER NODES on {addr} answered {reply:?}"))?;
        parse_cluster_nodes(text)
    }

    /// The topology as the first running node sees it now.
    ///
    /// # Errors
    /// When no node answers.
    pub async fn topology(&mut self) -> Result<ClusterTopology> {
        let mut last = anyhow!("no running node");
        for node in &mut self.nodes {
            if !node.is_running() {
                continue;
            }
            match Self::topology_from(node.addr()).await {
                Ok(t) => return Ok(t),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Waits until every running node reports `cluster_state:ok` with all slots assigned
    /// and ok, knows all nodes, and sees the same masters and replicas (every running
    /// node one or the other), and every replica's link to its master is up. Use it after a failover or a restart; returns the topology.
    ///
    /// # Errors
    /// On timeout, naming the last check that failed.
    pub async fn wait_ok(&mut self, timeout: Duration) -> Result<ClusterTopology> {
        let started = Instant::now();
        loop {
            let last = match self.check_ok().await {
                Ok(topology) => return Ok(topology),
                Err(e) => e,
            };
            if started.elapsed() > timeout {
                return Err(last.context(format!("Redis Cluster not ok after {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn check_ok(&mut self) -> Result<ClusterTopology> {
        let total = self.nodes.len();
        let mut running = Vec::new();
        for node in &mut self.nodes {
            if node.is_running() {
                running.push(node.addr());
            }
        }
        let mut agreed: Option<ClusterTopology> = None;
        for &addr in &running {
            let reply = resp::command(addr, &["CLUSTER", "INFO"]).await?;
            let info = reply
                .as_str()
                .ok_or_else(|| anyhow!("CLUSTER INFO on {addr} answered {reply:?}"))?;
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .map(str::trim)
                    .unwrap_or("")
            };
            let slots = CLUSTER_SLOTS.to_string();
            if field("cluster_state") != "ok"
                || field("cluster_slots_assigned") != slots
                || field("cluster_slots_ok") != slots
                || field("cluster_known_nodes") != total.to_string()
            {
                bail!("{addr} not ready yet: {}", info.replace("\r\n", " "));
            }
            let topology = Self::topology_from(addr).await?;
            // Right after `--cluster create` a replica can still look like a master
            // without slots to some nodes: wait until each one is classified.
            if topology.masters.len() + topology.replicas.len() != running.len() {
                bail!(
                    "{addr} does not see every running node as master or replica yet: {topology:?}"
                );
            }
            match &agreed {
                None => agreed = Some(topology),
                Some(first) if *first != topology => {
                    bail!("{addr} sees {topology:?}, another node sees {first:?}")
                }
                Some(_) => {}
            }
        }
        let topology = agreed.ok_or_else(|| anyhow!("no running node"))?;
        for (&replica, &master) in &topology.replicas {
            if !running.contains(&replica) {
                continue;
            }
            let role = resp::command(replica, &["ROLE"]).await?;
            let state = role
                .as_array()
                .and_then(|r| r.get(3))
                .and_then(Resp::as_str);
            if state != Some("connected") {
                bail!("replica {replica} of {master} not synced yet: ROLE {role:?}");
            }
        }
        Ok(topology)
    }
}

/// Parses `CLUSTER NODES` output.
fn parse_cluster_nodes(text: &str) -> Result<ClusterTopology> {
    struct Node {
        addr: SocketAddr,
        master_id: String,
        is_master: bool,
        has_slots: bool,
        failed: bool,
    }
    let mut by_id = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(id), Some(addr), Some(flags), Some(master_id)) =
            (fields.first(), fields.get(1), fields.get(2), fields.get(3))
        else {
            bail!("short CLUSTER NODES line {line:?}");
        };
        let addr_part = addr.split(['@', ',']).next().unwrap_or("");
        let Ok(addr) = addr_part.parse::<SocketAddr>() else {
            // A node still in handshake can show as ":0@0"; it is not part of the cluster.
            continue;
        };
        let flags: BTreeSet<&str> = flags.split(',').collect();
        by_id.insert(
            id.to_string(),
            Node {
                addr,
                master_id: master_id.to_string(),
                is_master: flags.contains("master"),
                has_slots: fields.len() > 8,
                failed: flags.contains("fail") || flags.contains("noaddr"),
            },
        );
    }
    let mut topology = ClusterTopology::default();
    for node in by_id.values() {
        if node.failed {
            continue;
        }
        if node.is_master && node.has_slots {
            topology.masters.push(node.addr);
        } else if !node.is_master {
            if let Some(master) = by_id.get(&node.master_id) {
                topology.replicas.insert(node.addr, master.addr);
            }
        }
    }
    topology.masters.sort();
    Ok(topology)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes() {
        let text = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002,host master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7003@17003 master - 0 0 3 connected 10923-16383
d4 127.0.0.1:7004@17004 slave a1 0 0 1 connected
e5 127.0.0.1:7005@17005 master,fail - 0 0 4 connected
f6 :0@0 handshake - 0 0 0 connected
";
        let t = parse_cluster_nodes(text).unwrap();
        assert_eq!(t.masters.len(), 3);
        assert_eq!(
            t.replicas.get(&"127.0.0.1:7004".parse().unwrap()),
            Some(&"127.0.0.1:7001".parse().unwrap())
        );
    }
}

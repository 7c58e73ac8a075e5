//! The command table: what the router needs to know to route a command.
//!
//! For each command: its arity (as in `COMMAND`: positive = exact, negative = at least),
//! [`Flags`], its key positions (the legacy `first`, `last`, `step` of `COMMAND` plus the
//! special cases `COMMAND` calls "movablekeys": numkeys arguments, `STREAMS`, `STORE`,
//! `KEYS`, keyed subcommands), and how a multi-key command splits across slots ([`Split`]).
//!
//! Lookup is case-insensitive and allocation-free: the name lowercased on the stack, then
//! one hash lookup in a map of the table built once. The table stays sorted by lowercase
//! name and unique (a unit test checks both) for `COMMAND`'s listing.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use rustc_hash::FxBuildHasher;

use crate::proto::Request;
use crate::slot::Placement;

/// Command properties, a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags(u32);

impl Flags {
    /// Reads data, never writes (may go to a replica with `--read-from-replicas`).
    pub const READONLY: Flags = Flags(1);
    /// May modify data.
    pub const WRITE: Flags = Flags(1 << 1);
    /// May block the connection (BLPOP, XREAD BLOCK, ...): needs a dedicated connection.
    pub const BLOCKING: Flags = Flags(1 << 2);
    /// Pub/sub: puts the connection in subscriber mode, or publishes.
    pub const PUBSUB: Flags = Flags(1 << 3);
    /// MULTI/EXEC/WATCH family: pins the client to a backend connection.
    pub const TRANSACTION: Flags = Flags(1 << 4);
    /// Administrative; not routed to backends on a client's behalf.
    pub const ADMIN: Flags = Flags(1 << 5);
    /// Answered by the proxy itself (PING, ECHO, HELLO, SELECT, COMMAND, CLIENT, INFO, ...).
    pub const PROXY: Flags = Flags(1 << 6);
    /// Runs on every master and merges (KEYS, SCAN, DBSIZE, FLUSHALL, ...).
    pub const ALL_NODES: Flags = Flags(1 << 7);
    /// Runs a script or function.
    pub const SCRIPT: Flags = Flags(1 << 8);
    /// A container whose first argument is a subcommand (OBJECT, XINFO, CONFIG, ...).
    pub const CONTAINER: Flags = Flags(1 << 9);
    /// Keys are sharded pub/sub channels (SPUBLISH, SSUBSCRIBE).
    pub const SHARD_CHANNEL: Flags = Flags(1 << 10);

    /// The empty set.
    pub const NONE: Flags = Flags(0);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union.
    pub const fn or(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.or(rhs)
    }
}

/// Where the keys are, beyond the legacy `first`/`last`/`step` range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// Keys are `first..=last` by `step` (`last` < 0 counts from the end); none if
    /// `first == 0`.
    Range,
    /// `args[numkeys]` says how many keys follow from `args[first]`; plus `args[dest]` when
    /// set (EVAL: 2, 3; ZUNIONSTORE: dest 1, 2, 3; LMPOP: 1, 2; BLMPOP: 2, 3).
    NumKeys {
        /// Index of the count.
        numkeys: usize,
        /// Index of the first counted key.
        first: usize,
        /// Index of a destination key before the count.
        dest: Option<usize>,
    },
    /// Keys are the first half of the arguments after the `STREAMS` keyword, searched from
    /// `from` (XREAD: 1, XREADGROUP: 4).
    Streams {
        /// Index the keyword search starts at.
        from: usize,
    },
    /// MIGRATE: `args[3]`, or when it is empty, the arguments after `KEYS`.
    Migrate,
    /// SORT: key 1 and the argument after `STORE`.
    Sort,
    /// GEORADIUS*: key 1 and the argument after `STORE`/`STOREDIST`, searched from `from`.
    GeoStore {
        /// Index the keyword search starts at.
        from: usize,
    },
    /// A container whose listed subcommands take a key at index 2 (OBJECT ENCODING key).
    SubcommandKey(&'static [&'static str]),
}

/// How a command whose keys span several slots is executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// All keys must share one slot; otherwise reply [`CrossSlot`].
    SameSlot,
    /// MGET: one sub-command per slot, replies concatenated back in key order.
    ConcatArrays,
    /// MSET: key/value pairs split per slot; `+OK` when every part answers `+OK`.
    AllOk,
    /// DEL, UNLINK, EXISTS, TOUCH: split per slot; the integer replies are summed.
    SumIntegers,
}

/// One command's routing facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lowercase name.
    pub name: &'static str,
    /// As in `COMMAND`: `n` exactly n arguments (name included), `-n` at least n.
    pub arity: i16,
    /// Properties.
    pub flags: Flags,
    /// Legacy first key index as in `COMMAND` (0: none).
    pub first: i16,
    /// Legacy last key index (negative: from the end).
    pub last: i16,
    /// Legacy key step.
    pub step: i16,
    /// Key positions beyond the legacy range.
    pub keys: KeySpec,
    /// Multi-slot policy.
    pub split: Split,
}

impl CommandSpec {
    /// Whether `argc` arguments (name included) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let a = self.arity.unsigned_abs() as usize;
        if self.arity >= 0 {
            argc == a
        } else {
            argc >= a
        }
    }

    /// Whether keys sit elsewhere than the legacy range (`movablekeys` in `COMMAND`).
    pub fn movable_keys(&self) -> bool {
        !matches!(self.keys, KeySpec::Range)
    }

    const fn k(mut self, keys: KeySpec) -> Self {
        self.keys = keys;
        self
    }

    const fn s(mut self, split: Split) -> Self {
        self.split = split;
        self
    }
}

const fn c(
    name: &'static str,
    arity: i16,
    flags: Flags,
    first: i16,
    last: i16,
    step: i16,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        first,
        last,
        step,
        keys: KeySpec::Range,
        split: Split::SameSlot,
    }
}

const R: Flags = Flags::READONLY;
const W: Flags = Flags::WRITE;
const B: Flags = Flags::BLOCKING.or(Flags::WRITE);
const P: Flags = Flags::PUBSUB;
const T: Flags = Flags::TRANSACTION;
const A: Flags = Flags::ADMIN;
const X: Flags = Flags::PROXY;
const ALL: Flags = Flags::ALL_NODES;
const S: Flags = Flags::SCRIPT;
const CT: Flags = Flags::CONTAINER;
const N: Flags = Flags::NONE;

const fn nk(numkeys: usize, first: usize) -> KeySpec {
    KeySpec::NumKeys {
        numkeys,
        first,
        dest: None,
    }
}

const fn nk_dest(numkeys: usize, first: usize) -> KeySpec {
    KeySpec::NumKeys {
        numkeys,
        first,
        dest: Some(1),
    }
}

/// The table, sorted by name.
static COMMANDS: &[CommandSpec] = &[
    // BEGIN TABLE (kept sorted)
    c("acl", -2, A.or(CT), 0, 0, 0),
    c("append", 3, W, 1, 1, 1),
    c("asking", 1, X, 0, 0, 0),
    c("auth", -2, X, 0, 0, 0),
    c("bgrewriteaof", 1, A, 0, 0, 0),
    c("bgsave", -1, A, 0, 0, 0),
    c("bitcount", -2, R, 1, 1, 1),
    c("bitfield", -2, W, 1, 1, 1),
    c("bitfield_ro", -2, R, 1, 1, 1),
    c("bitop", -4, W, 2, -1, 1),
    c("bitpos", -3, R, 1, 1, 1),
    c("blmove", 6, B, 1, 2, 1),
    c("blmpop", -5, B, 0, 0, 0).k(nk(2, 3)),
    c("blpop", -3, B, 1, -2, 1),
    c("brpop", -3, B, 1, -2, 1),
    c("brpoplpush", 4, B, 1, 2, 1),
    c("bzmpop", -5, B, 0, 0, 0).k(nk(2, 3)),
    c("bzpopmax", -3, B, 1, -2, 1),
    c("bzpopmin", -3, B, 1, -2, 1),
    c("client", -2, X.or(CT), 0, 0, 0),
    c("cluster", -2, A.or(CT), 0, 0, 0),
    c("command", -1, X.or(CT), 0, 0, 0),
    c("config", -2, A.or(CT), 0, 0, 0),
    c("copy", -3, W, 1, 2, 1),
    c("dbsize", 1, R.or(ALL), 0, 0, 0),
    c("debug", -2, A, 0, 0, 0),
    c("decr", 2, W, 1, 1, 1),
    c("decrby", 3, W, 1, 1, 1),
    c("del", -2, W, 1, -1, 1).s(Split::SumIntegers),
    c("discard", 1, T, 0, 0, 0),
    c("dump", 2, R, 1, 1, 1),
    c("echo", 2, X, 0, 0, 0),
    c("eval", -3, S, 0, 0, 0).k(nk(2, 3)),
    c("eval_ro", -3, S.or(R), 0, 0, 0).k(nk(2, 3)),
    c("evalsha", -3, S, 0, 0, 0).k(nk(2, 3)),
    c("evalsha_ro", -3, S.or(R), 0, 0, 0).k(nk(2, 3)),
    c("exec", 1, T, 0, 0, 0),
    c("exists", -2, R, 1, -1, 1).s(Split::SumIntegers),
    c("expire", -3, W, 1, 1, 1),
    c("expireat", -3, W, 1, 1, 1),
    c("expiretime", 2, R, 1, 1, 1),
    c("failover", -1, A, 0, 0, 0),
    c("fcall", -3, S, 0, 0, 0).k(nk(2, 3)),
    c("fcall_ro", -3, S.or(R), 0, 0, 0).k(nk(2, 3)),
    c("flushall", -1, W.or(ALL), 0, 0, 0),
    c("flushdb", -1, W.or(ALL), 0, 0, 0),
    c("function", -2, S.or(CT).or(ALL), 0, 0, 0),
    c("geoadd", -5, W, 1, 1, 1),
    c("geodist", -4, R, 1, 1, 1),
    c("geohash", -2, R, 1, 1, 1),
    c("geopos", -2, R, 1, 1, 1),
    c("georadius", -6, W, 1, 1, 1).k(KeySpec::GeoStore { from: 6 }),
    c("georadius_ro", -6, R, 1, 1, 1),
    c("georadiusbymember", -5, W, 1, 1, 1).k(KeySpec::GeoStore { from: 5 }),
    c("georadiusbymember_ro", -5, R, 1, 1, 1),
    c("geosearch", -7, R, 1, 1, 1),
    c("geosearchstore", -8, W, 1, 2, 1),
    c("get", 2, R, 1, 1, 1),
    c("getbit", 3, R, 1, 1, 1),
    c("getdel", 2, W, 1, 1, 1),
    c("getex", -2, W, 1, 1, 1),
    c("getrange", 4, R, 1, 1, 1),
    c("getset", 3, W, 1, 1, 1),
    c("hdel", -3, W, 1, 1, 1),
    c("hello", -1, X, 0, 0, 0),
    c("hexists", 3, R, 1, 1, 1),
    c("hget", 3, R, 1, 1, 1),
    c("hgetall", 2, R, 1, 1, 1),
    c("hincrby", 4, W, 1, 1, 1),
    c("hincrbyfloat", 4, W, 1, 1, 1),
    c("hkeys", 2, R, 1, 1, 1),
    c("hlen", 2, R, 1, 1, 1),
    c("hmget", -3, R, 1, 1, 1),
    c("hmset", -4, W, 1, 1, 1),
    c("hrandfield", -2, R, 1, 1, 1),
    c("hscan", -3, R, 1, 1, 1),
    c("hset", -4, W, 1, 1, 1),
    c("hsetnx", 4, W, 1, 1, 1),
    c("hstrlen", 3, R, 1, 1, 1),
    c("hvals", 2, R, 1, 1, 1),
    c("incr", 2, W, 1, 1, 1),
    c("incrby", 3, W, 1, 1, 1),
    c("incrbyfloat", 3, W, 1, 1, 1),
    c("info", -1, X, 0, 0, 0),
    c("keys", 2, R.or(ALL), 0, 0, 0),
    c("lastsave", 1, A, 0, 0, 0),
    c("latency", -2, A.or(CT), 0, 0, 0),
    c("lcs", -3, R, 1, 2, 1),
    c("lindex", 3, R, 1, 1, 1),
    c("linsert", 5, W, 1, 1, 1),
    c("llen", 2, R, 1, 1, 1),
    c("lmove", 5, W, 1, 2, 1),
    c("lmpop", -4, W, 0, 0, 0).k(nk(1, 2)),
    c("lolwut", -1, R, 0, 0, 0),
    c("lpop", -2, W, 1, 1, 1),
    c("lpos", -3, R, 1, 1, 1),
    c("lpush", -3, W, 1, 1, 1),
    c("lpushx", -3, W, 1, 1, 1),
    c("lrange", 4, R, 1, 1, 1),
    c("lrem", 4, W, 1, 1, 1),
    c("lset", 4, W, 1, 1, 1),
    c("ltrim", 4, W, 1, 1, 1),
    c("memory", -2, R.or(CT), 0, 0, 0).k(KeySpec::SubcommandKey(&["usage"])),
    c("mget", -2, R, 1, -1, 1).s(Split::ConcatArrays),
    c("migrate", -6, W.or(A), 3, 3, 1).k(KeySpec::Migrate),
    c("module", -2, A.or(CT), 0, 0, 0),
    c("monitor", 1, A, 0, 0, 0),
    c("move", 3, W, 1, 1, 1),
    c("mset", -3, W, 1, -1, 2).s(Split::AllOk),
    c("msetnx", -3, W, 1, -1, 2),
    c("multi", 1, T, 0, 0, 0),
    c("object", -2, R.or(CT), 0, 0, 0).k(KeySpec::SubcommandKey(&[
        "encoding", "freq", "idletime", "refcount",
    ])),
    c("persist", 2, W, 1, 1, 1),
    c("pexpire", -3, W, 1, 1, 1),
    c("pexpireat", -3, W, 1, 1, 1),
    c("pexpiretime", 2, R, 1, 1, 1),
    c("pfadd", -2, W, 1, 1, 1),
    c("pfcount", -2, R, 1, -1, 1),
    c("pfdebug", 3, W.or(A), 2, 2, 1),
    c("pfmerge", -2, W, 1, -1, 1),
    c("pfselftest", 1, A, 0, 0, 0),
    c("ping", -1, X, 0, 0, 0),
    c("psetex", 4, W, 1, 1, 1),
    c("psubscribe", -2, P, 0, 0, 0),
    c("psync", -3, A, 0, 0, 0),
    c("pttl", 2, R, 1, 1, 1),
    c("publish", 3, P, 0, 0, 0),
    c("pubsub", -2, P.or(CT), 0, 0, 0),
    c("punsubscribe", -1, P, 0, 0, 0),
    c("quit", -1, X, 0, 0, 0),
    c("randomkey", 1, R, 0, 0, 0),
    c("readonly", 1, X, 0, 0, 0),
    c("readwrite", 1, X, 0, 0, 0),
    c("rename", 3, W, 1, 2, 1),
    c("renamenx", 3, W, 1, 2, 1),
    c("replconf", -1, A, 0, 0, 0),
    c("replicaof", 3, A, 0, 0, 0),
    c("reset", 1, X, 0, 0, 0),
    c("restore", -4, W, 1, 1, 1),
    c("restore-asking", -4, W.or(A), 1, 1, 1),
    c("role", 1, A, 0, 0, 0),
    c("rpop", -2, W, 1, 1, 1),
    c("rpoplpush", 3, W, 1, 2, 1),
    c("rpush", -3, W, 1, 1, 1),
    c("rpushx", -3, W, 1, 1, 1),
    c("sadd", -3, W, 1, 1, 1),
    c("save", 1, A, 0, 0, 0),
    c("scan", -2, R.or(ALL), 0, 0, 0),
    c("scard", 2, R, 1, 1, 1),
    c("script", -2, S.or(CT).or(ALL), 0, 0, 0),
    c("sdiff", -2, R, 1, -1, 1),
    c("sdiffstore", -3, W, 1, -1, 1),
    c("select", 2, X, 0, 0, 0),
    c("set", -3, W, 1, 1, 1),
    c("setbit", 4, W, 1, 1, 1),
    c("setex", 4, W, 1, 1, 1),
    c("setnx", 3, W, 1, 1, 1),
    c("setrange", 4, W, 1, 1, 1),
    c("shutdown", -1, A, 0, 0, 0),
    c("sinter", -2, R, 1, -1, 1),
    c("sintercard", -3, R, 0, 0, 0).k(nk(1, 2)),
    c("sinterstore", -3, W, 1, -1, 1),
    c("sismember", 3, R, 1, 1, 1),
    c("slaveof", 3, A, 0, 0, 0),
    c("slowlog", -2, A.or(CT), 0, 0, 0),
    c("smembers", 2, R, 1, 1, 1),
    c("smismember", -3, R, 1, 1, 1),
    c("smove", 4, W, 1, 2, 1),
    c("sort", -2, W, 1, 1, 1).k(KeySpec::Sort),
    c("sort_ro", -2, R, 1, 1, 1).k(KeySpec::Sort),
    c("spop", -2, W, 1, 1, 1),
    c("spublish", 3, P.or(Flags::SHARD_CHANNEL), 1, 1, 1),
    c("srandmember", -2, R, 1, 1, 1),
    c("srem", -3, W, 1, 1, 1),
    c("sscan", -3, R, 1, 1, 1),
    c("ssubscribe", -2, P.or(Flags::SHARD_CHANNEL), 1, -1, 1),
    c("strlen", 2, R, 1, 1, 1),
    c("subscribe", -2, P, 0, 0, 0),
    c("substr", 4, R, 1, 1, 1),
    c("sunion", -2, R, 1, -1, 1),
    c("sunionstore", -3, W, 1, -1, 1),
    c("sunsubscribe", -1, P.or(Flags::SHARD_CHANNEL), 1, -1, 1),
    c("swapdb", 3, W.or(A), 0, 0, 0),
    c("sync", 1, A, 0, 0, 0),
    c("time", 1, N, 0, 0, 0),
    c("touch", -2, R, 1, -1, 1).s(Split::SumIntegers),
    c("ttl", 2, R, 1, 1, 1),
    c("type", 2, R, 1, 1, 1),
    c("unlink", -2, W, 1, -1, 1).s(Split::SumIntegers),
    c("unsubscribe", -1, P, 0, 0, 0),
    c("unwatch", 1, T, 0, 0, 0),
    c("wait", 3, N, 0, 0, 0),
    c("watch", -2, T, 1, -1, 1),
    c("xack", -4, W, 1, 1, 1),
    c("xadd", -5, W, 1, 1, 1),
    c("xautoclaim", -6, W, 1, 1, 1),
    c("xclaim", -6, W, 1, 1, 1),
    c("xdel", -3, W, 1, 1, 1),
    c("xgroup", -2, W.or(CT), 0, 0, 0).k(KeySpec::SubcommandKey(&[
        "create",
        "createconsumer",
        "delconsumer",
        "destroy",
        "setid",
    ])),
    c("xinfo", -2, R.or(CT), 0, 0, 0).k(KeySpec::SubcommandKey(&["consumers", "groups", "stream"])),
    c("xlen", 2, R, 1, 1, 1),
    c("xpending", -3, R, 1, 1, 1),
    c("xrange", -4, R, 1, 1, 1),
    c("xread", -4, R.or(Flags::BLOCKING), 0, 0, 0).k(KeySpec::Streams { from: 1 }),
    c("xreadgroup", -7, B, 0, 0, 0).k(KeySpec::Streams { from: 4 }),
    c("xrevrange", -4, R, 1, 1, 1),
    c("xsetid", -3, W, 1, 1, 1),
    c("xtrim", -4, W, 1, 1, 1),
    c("zadd", -4, W, 1, 1, 1),
    c("zcard", 2, R, 1, 1, 1),
    c("zcount", 4, R, 1, 1, 1),
    c("zdiff", -3, R, 0, 0, 0).k(nk(1, 2)),
    c("zdiffstore", -4, W, 1, 1, 1).k(nk_dest(2, 3)),
    c("zincrby", 4, W, 1, 1, 1),
    c("zinter", -3, R, 0, 0, 0).k(nk(1, 2)),
    c("zintercard", -3, R, 0, 0, 0).k(nk(1, 2)),
    c("zinterstore", -4, W, 1, 1, 1).k(nk_dest(2, 3)),
    c("zlexcount", 4, R, 1, 1, 1),
    c("zmpop", -4, W, 0, 0, 0).k(nk(1, 2)),
    c("zmscore", -3, R, 1, 1, 1),
    c("zpopmax", -2, W, 1, 1, 1),
    c("zpopmin", -2, W, 1, 1, 1),
    c("zrandmember", -2, R, 1, 1, 1),
    c("zrange", -4, R, 1, 1, 1),
    c("zrangebylex", -4, R, 1, 1, 1),
    c("zrangebyscore", -4, R, 1, 1, 1),
    c("zrangestore", -5, W, 1, 2, 1),
    c("zrank", 3, R, 1, 1, 1),
    c("zrem", -3, W, 1, 1, 1),
    c("zremrangebylex", 4, W, 1, 1, 1),
    c("zremrangebyrank", 4, W, 1, 1, 1),
    c("zremrangebyscore", 4, W, 1, 1, 1),
    c("zrevrange", -4, R, 1, 1, 1),
    c("zrevrangebylex", -4, R, 1, 1, 1),
    c("zrevrangebyscore", -4, R, 1, 1, 1),
    c("zrevrank", 3, R, 1, 1, 1),
    c("zscan", -3, R, 1, 1, 1),
    c("zscore", 3, R, 1, 1, 1),
    c("zunion", -3, R, 0, 0, 0).k(nk(1, 2)),
    c("zunionstore", -4, W, 1, 1, 1).k(nk_dest(2, 3)),
    // END TABLE
];

/// Every command in the table, sorted by name.
pub fn all() -> &'static [CommandSpec] {
    COMMANDS
}

/// Longer than every name in the table: a longer name is no command.
const NAME_MAX: usize = 32;

/// The table by name. A hash lookup is one hash of a short name and one compare; the
/// binary search it replaces made about nine `memcmp` calls per request (7% of the
/// router's instructions per GET at `-P 16`).
fn by_name() -> &'static HashMap<&'static [u8], &'static CommandSpec, FxBuildHasher> {
    static BY_NAME: OnceLock<HashMap<&'static [u8], &'static CommandSpec, FxBuildHasher>> =
        OnceLock::new();
    BY_NAME.get_or_init(|| COMMANDS.iter().map(|c| (c.name.as_bytes(), c)).collect())
}

/// Looks a command up by name, in any case, without allocating: the name is lowercased
/// once into a stack buffer (a per-byte lowercasing compare was 3.5% of the router's CPU
/// at `-P 16`), then looked up by hash.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    let mut buf = [0u8; NAME_MAX];
    let lower = buf.get_mut(..name.len())?;
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    let lower: &[u8] = lower;
    by_name().get(lower).copied()
}

/// Why the keys of a request could not be found. The daemon may instead send such a
/// request to any node and relay redis's own error, which is exact for every command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not in the table.
    #[error("ERR unknown command '{0}'")]
    UnknownCommand(String),
    /// Wrong argument count for the command.
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(&'static str),
    /// A numkeys argument that is not a number, is not positive where it must be, or
    /// counts more keys than there are arguments.
    #[error("ERR Number of keys can't be greater than number of args")]
    InvalidNumKeys,
    /// A keyword (`STREAMS`) missing or its arguments unbalanced.
    #[error("ERR syntax error")]
    Syntax,
}

/// Keys spanning several slots for a command whose keys must share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("CROSSSLOT Keys in request don't hash to the same slot")]
pub struct CrossSlot;

/// An arithmetic run of argument indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    next: usize,
    /// Exclusive.
    end: usize,
    step: usize,
}

impl Run {
    const EMPTY: Run = Run {
        next: 0,
        end: 0,
        step: 1,
    };

    fn one(i: usize) -> Run {
        Run {
            next: i,
            end: i + 1,
            step: 1,
        }
    }
}

/// The key arguments of one request, in order; an iterator of byte slices borrowed from it.
#[derive(Debug, Clone)]
pub struct Keys<'a> {
    args: &'a [Bytes],
    runs: [Run; 2],
}

impl<'a> Keys<'a> {
    /// Argument indices of the keys, in order.
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.runs
            .iter()
            .flat_map(|r| (r.next..r.end).step_by(r.step.max(1)))
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.runs.iter().all(|r| r.next >= r.end)
    }
}

impl<'a> Iterator for Keys<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        for run in &mut self.runs {
            while run.next < run.end {
                let i = run.next;
                run.next += run.step.max(1);
                if let Some(a) = self.args.get(i) {
                    return Some(&a[..]);
                }
            }
        }
        None
    }
}

fn eq_ignore_case(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn parse_count(arg: Option<&Bytes>) -> Option<usize> {
    let s = std::str::from_utf8(arg?).ok()?;
    s.parse::<i64>().ok().and_then(|n| usize::try_from(n).ok())
}

/// The keys of `req` by its command's table entry.
///
/// # Errors
/// [`KeyError`] for an unknown command, a wrong argument count or malformed key arguments.
pub fn keys(req: &Request) -> Result<Keys<'_>, KeyError> {
    let spec = lookup(req.name()).ok_or_else(|| {
        KeyError::UnknownCommand(String::from_utf8_lossy(req.name()).into_owned())
    })?;
    keys_for(spec, &req.args)
}

/// The keys of `args` (command name first) for `spec`.
///
/// # Errors
/// As [`keys`], except for the unknown command.
pub fn keys_for<'a>(spec: &CommandSpec, args: &'a [Bytes]) -> Result<Keys<'a>, KeyError> {
    let argc = args.len();
    if !spec.arity_ok(argc) {
        return Err(KeyError::WrongArity(spec.name));
    }
    let mut runs = [Run::EMPTY; 2];
    match spec.keys {
        KeySpec::Range => {
            if spec.first > 0 {
                let first = spec.first as usize;
                let last = if spec.last < 0 {
                    argc as i64 + i64::from(spec.last)
                } else {
                    i64::from(spec.last)
                };
                let last = usize::try_from(last)
                    .unwrap_or(0)
                    .min(argc.saturating_sub(1));
                runs[0] = Run {
                    next: first,
                    end: last + 1,
                    step: spec.step.max(1) as usize,
                };
                // MSET-style steps need whole groups.
                let leftover = (argc - first) % spec.step.max(1) as usize;
                if leftover > 0 {
                    return Err(KeyError::WrongArity(spec.name));
                }
            }
        }
        KeySpec::NumKeys {
            numkeys,
            first,
            dest,
        } => {
            let n = parse_count(args.get(numkeys)).ok_or(KeyError::InvalidNumKeys)?;
            // EVAL allows 0 keys; the numkeys commands that take input keys need at least 1.
            if (n == 0 && !spec.flags.contains(Flags::SCRIPT)) || first + n > argc {
                return Err(KeyError::InvalidNumKeys);
            }
            if let Some(d) = dest {
                runs[0] = Run::one(d);
            }
            runs[1] = Run {
                next: first,
                end: first + n,
                step: 1,
            };
        }
        KeySpec::Streams { from } => {
            let kw = args
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, a)| eq_ignore_case(a, "streams"))
                .map(|(i, _)| i)
                .ok_or(KeyError::Syntax)?;
            let rest = argc - kw - 1;
            if rest == 0 || rest % 2 == 1 {
                return Err(KeyError::Syntax);
            }
            runs[0] = Run {
                next: kw + 1,
                end: kw + 1 + rest / 2,
                step: 1,
            };
        }
        KeySpec::Migrate => {
            let mut i = 6;
            let mut keys_at = None;
            while i < argc {
                let a = args.get(i).map(|a| &a[..]).unwrap_or_default();
                if eq_ignore_case(a, "auth") {
                    i += 1;
                } else if eq_ignore_case(a, "auth2") {
                    i += 2;
                } else if eq_ignore_case(a, "keys") {
                    keys_at = Some(i + 1);
                    break;
                }
                i += 1;
            }
            let key3_empty = args.get(3).is_some_and(|a| a.is_empty());
            match keys_at {
                Some(k) if key3_empty => {
                    runs[0] = Run {
                        next: k,
                        end: argc,
                        step: 1,
                    }
                }
                _ => runs[0] = Run::one(3),
            }
        }
        KeySpec::Sort => {
            runs[0] = Run::one(1);
            let mut i = 2;
            while i < argc {
                let a = args.get(i).map(|a| &a[..]).unwrap_or_default();
                if eq_ignore_case(a, "limit") {
                    i += 2;
                } else if eq_ignore_case(a, "get") || eq_ignore_case(a, "by") {
                    i += 1;
                } else if eq_ignore_case(a, "store") && i + 1 < argc {
                    runs[1] = Run::one(i + 1);
                }
                i += 1;
            }
        }
        KeySpec::GeoStore { from } => {
            runs[0] = Run::one(1);
            let mut i = from;
            while i < argc {
                let a = args.get(i).map(|a| &a[..]).unwrap_or_default();
                if (eq_ignore_case(a, "store") || eq_ignore_case(a, "storedist")) && i + 1 < argc {
                    runs[1] = Run::one(i + 1);
                    i += 1;
                }
                i += 1;
            }
        }
        KeySpec::SubcommandKey(subs) => {
            let sub = args.get(1).map(|a| &a[..]).unwrap_or_default();
            if argc > 2 && subs.iter().any(|s| eq_ignore_case(sub, s)) {
                runs[0] = Run::one(2);
            }
        }
    }
    Ok(Keys { args, runs })
}

/// The one slot all `keys` hash to; `Ok(None)` when there are none.
///
/// # Errors
/// [`CrossSlot`] when two keys hash to different slots.
pub fn same_slot<'k, I>(keys: I, placement: &Placement<'_>) -> Result<Option<u16>, CrossSlot>
where
    I: IntoIterator<Item = &'k [u8]>,
{
    let mut slot = None;
    for k in keys {
        let s = placement.slot(k);
        match slot {
            None => slot = Some(s),
            Some(prev) if prev != s => return Err(CrossSlot),
            Some(_) => {}
        }
    }
    Ok(slot)
}

/// Groups the key groups of a [`Split`] command by slot, preserving order within each slot:
/// returns `(slot, argument indices of the keys)` in order of each slot's first key. For
/// MSET, each index is a key whose value follows it.
pub fn group_by_slot(keys: &Keys<'_>, placement: &Placement<'_>) -> Vec<(u16, Vec<usize>)> {
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for i in keys.indices() {
        let Some(k) = keys.args.get(i) else { continue };
        let s = placement.slot(k);
        match groups.iter_mut().find(|(slot, _)| *slot == s) {
            Some((_, v)) => v.push(i),
            None => groups.push((s, vec![i])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::key_slot;

    fn req(s: &str) -> Request {
        Request::new(
            s.split(' ')
                .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                .collect::<Vec<_>>(),
        )
    }

    fn key_list(s: &str) -> Vec<String> {
        let r = req(s);
        keys(&r)
            .unwrap()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn table_sorted_lowercase_unique() {
        for w in COMMANDS.windows(2) {
            assert!(w[0].name < w[1].name, "{} !< {}", w[0].name, w[1].name);
        }
        for c in COMMANDS {
            assert_eq!(c.name, c.name.to_ascii_lowercase());
            assert!(lookup(c.name.as_bytes()).is_some());
        }
        assert!(COMMANDS.len() >= 200, "{}", COMMANDS.len());
    }

    #[test]
    fn lookup_any_case() {
        assert_eq!(lookup(b"GET").map(|c| c.name), Some("get"));
        assert_eq!(lookup(b"gEt").map(|c| c.name), Some("get"));
        assert_eq!(
            lookup(b"restore-ASKING").map(|c| c.name),
            Some("restore-asking")
        );
        assert!(lookup(b"nosuch").is_none());
        assert!(lookup(b"").is_none());
        assert!(lookup(b"ge").is_none());
        assert!(lookup(&[b'g'; NAME_MAX + 1]).is_none());
        assert!(COMMANDS.iter().all(|c| c.name.len() <= NAME_MAX));
        assert!(lookup(b"gett").is_none());
    }

    #[test]
    fn ranges() {
        assert_eq!(key_list("GET a"), ["a"]);
        assert_eq!(key_list("MGET a b c"), ["a", "b", "c"]);
        assert_eq!(key_list("MSET a 1 b 2"), ["a", "b"]);
        assert_eq!(key_list("BLPOP a b 0"), ["a", "b"]);
        assert_eq!(key_list("BITOP AND d a b"), ["d", "a", "b"]);
        assert_eq!(key_list("LMOVE a b LEFT RIGHT"), ["a", "b"]);
        assert!(key_list("PING").is_empty());
        assert!(keys(&req("PING")).unwrap().is_empty());
        assert_eq!(
            keys(&req("MSET a 1 b")).unwrap_err(),
            KeyError::WrongArity("mset")
        );
        assert_eq!(keys(&req("GET")).unwrap_err(), KeyError::WrongArity("get"));
        assert_eq!(
            keys(&req("GET a b")).unwrap_err(),
            KeyError::WrongArity("get")
        );
        assert_eq!(
            keys(&req("FOO a")).unwrap_err().to_string(),
            "ERR unknown command 'FOO'"
        );
        assert_eq!(
            KeyError::WrongArity("get").to_string(),
            "ERR wrong number of arguments for 'get' command"
        );
    }

    #[test]
    fn movable_keys() {
        assert_eq!(key_list("EVAL s 2 a b x y"), ["a", "b"]);
        assert!(key_list("EVAL s 0").is_empty());
        assert_eq!(
            keys(&req("EVAL s 3 a b")).unwrap_err(),
            KeyError::InvalidNumKeys
        );
        assert_eq!(
            keys(&req("EVAL s -1")).unwrap_err(),
            KeyError::InvalidNumKeys
        );
        assert_eq!(key_list("FCALL f 1 a x"), ["a"]);
        assert_eq!(key_list("ZUNIONSTORE d 2 a b WEIGHTS 1 2"), ["d", "a", "b"]);
        assert_eq!(key_list("ZUNION 2 a b"), ["a", "b"]);
        assert_eq!(
            keys(&req("ZUNION 0 a")).unwrap_err(),
            KeyError::InvalidNumKeys
        );
        assert_eq!(key_list("LMPOP 2 a b LEFT"), ["a", "b"]);
        assert_eq!(key_list("BLMPOP 0 2 a b LEFT"), ["a", "b"]);
        assert_eq!(key_list("BZMPOP 1 1 a MIN"), ["a"]);
        assert_eq!(key_list("SINTERCARD 2 a b LIMIT 1"), ["a", "b"]);
        assert_eq!(key_list("XREAD COUNT 2 STREAMS a b 0 0"), ["a", "b"]);
        assert_eq!(key_list("XREAD BLOCK 0 streams a $"), ["a"]);
        assert_eq!(key_list("XREADGROUP GROUP g c STREAMS a >"), ["a"]);
        assert_eq!(
            keys(&req("XREAD STREAMS a b 0")).unwrap_err(),
            KeyError::Syntax
        );
        assert_eq!(
            keys(&req("XREAD COUNT 2 a b")).unwrap_err(),
            KeyError::Syntax
        );
        assert_eq!(key_list("MIGRATE h 1 k 0 10"), ["k"]);
        assert_eq!(key_list("MIGRATE h 1  0 10 AUTH keys KEYS a b"), ["a", "b"]);
        assert_eq!(
            key_list("MIGRATE h 1  0 10 AUTH2 u keys KEYS a b"),
            ["a", "b"]
        );
        assert_eq!(
            key_list("SORT a BY w GET store LIMIT 0 1 STORE d"),
            ["a", "d"]
        );
        assert_eq!(key_list("SORT a"), ["a"]);
        assert_eq!(key_list("GEORADIUS a 1 2 3 km STORE d"), ["a", "d"]);
        assert_eq!(
            key_list("GEORADIUSBYMEMBER a store 3 km STOREDIST d"),
            ["a", "d"]
        );
        assert_eq!(key_list("OBJECT ENCODING a"), ["a"]);
        assert!(key_list("OBJECT HELP").is_empty());
        assert_eq!(key_list("MEMORY usage a SAMPLES 5"), ["a"]);
        assert!(key_list("MEMORY STATS").is_empty());
        assert_eq!(key_list("XINFO STREAM s FULL"), ["s"]);
        assert_eq!(key_list("XGROUP CREATE s g $"), ["s"]);
        assert!(lookup(b"eval").is_some_and(|c| c.movable_keys()));
        assert!(lookup(b"get").is_some_and(|c| !c.movable_keys()));
    }

    #[test]
    fn slots_and_split() {
        let r = req("MSETNX {u}a 1 {u}b 2");
        assert_eq!(
            same_slot(keys(&r).unwrap(), &Placement::Slots),
            Ok(Some(key_slot(b"u")))
        );
        let r = req("RENAME a b");
        assert_eq!(
            same_slot(keys(&r).unwrap(), &Placement::Slots),
            Err(CrossSlot)
        );
        assert_eq!(
            CrossSlot.to_string(),
            "CROSSSLOT Keys in request don't hash to the same slot"
        );
        assert_eq!(
            same_slot(keys(&req("PING")).unwrap(), &Placement::Slots),
            Ok(None)
        );
        assert_eq!(lookup(b"mget").map(|c| c.split), Some(Split::ConcatArrays));
        assert_eq!(lookup(b"mset").map(|c| c.split), Some(Split::AllOk));
        for n in [&b"del"[..], b"unlink", b"exists", b"touch"] {
            assert_eq!(lookup(n).map(|c| c.split), Some(Split::SumIntegers));
        }
        assert_eq!(
            lookup(b"sunionstore").map(|c| c.split),
            Some(Split::SameSlot)
        );
        let r = req("MGET a {a}x b a");
        let groups = group_by_slot(&keys(&r).unwrap(), &Placement::Slots);
        assert_eq!(
            groups,
            vec![(key_slot(b"a"), vec![1, 2, 4]), (key_slot(b"b"), vec![3])]
        );
        let r = req("MSET a 1 b 2 {a}c 3");
        let groups = group_by_slot(&keys(&r).unwrap(), &Placement::Slots);
        assert_eq!(
            groups,
            vec![(key_slot(b"a"), vec![1, 5]), (key_slot(b"b"), vec![3])]
        );
    }

    #[test]
    fn flags() {
        let f = |n: &str| lookup(n.as_bytes()).map(|c| c.flags).unwrap_or(Flags::NONE);
        assert!(f("blpop").contains(Flags::BLOCKING));
        assert!(f("get").contains(Flags::READONLY));
        assert!(f("set").contains(Flags::WRITE));
        assert!(f("subscribe").contains(Flags::PUBSUB));
        assert!(f("multi").contains(Flags::TRANSACTION));
        for n in [
            "ping", "echo", "quit", "select", "command", "client", "hello", "info",
        ] {
            assert!(f(n).contains(Flags::PROXY), "{n}");
        }
        assert!(f("keys").contains(Flags::ALL_NODES));
        assert!(f("ssubscribe").contains(Flags::SHARD_CHANNEL));
    }
}

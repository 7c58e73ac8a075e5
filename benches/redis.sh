#!/usr/bin/env bash
# Redis benchmark of `ocean redis-router` against direct access and twemproxy (not part of
# CI); see docs/redis-router.md, section "Performance".
#
#   benches/redis.sh                  # -t get,set,mget, -P 1 and -P 16, -c 50
#   benches/redis.sh --rounds 3       # repeat, report medians
#   benches/redis.sh --threads 2 --keep
#
# Targets, each on its own 127.0.0.1 port:
#   (a) direct: one redis-server
#   (b) twemproxy: nutcracker in front of (a)
#   (c) ocean-1: the router in front of a one-node cluster (cluster-enabled, all slots)
#   (d) ocean-3: the router in front of a 3-master cluster
#   (e) ocean-kt: the router in twemproxy's model (--mode ketama) in front of (a), as (b)
#       is: the like-for-like comparison with twemproxy, MGET above all (a cluster must
#       split a 10-key MGET into one command per slot, a sharded pool one per server)
# Prints ops/s per test, the ratios ocean/direct and ocean/twemproxy, and the router's CPU
# cost in microseconds per operation (from /proc/PID/stat).
# Needs redis-server, redis-cli, redis-benchmark (redis-server, redis-tools) and nutcracker.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CLIENTS=50
ROUNDS=1
THREADS=1
KEEP=0
N_P1=100000
N_P16=1000000

while (($#)); do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

for bin in redis-server redis-cli redis-benchmark nutcracker; do
    command -v "$bin" >/dev/null || { echo "missing $bin (apt-get install redis-server redis-tools nutcracker)" >&2; exit 1; }
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release -q -p ocean-redis-router --example redis_bench_server
ROUTER=$CARGO_TARGET_DIR/release/examples/redis_bench_server

WORK=$(mktemp -d /tmp/ocean-redis-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if ((KEEP)); then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap "exit 130" INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_redis() { # port [extra args...]
    local port=$1; shift
    mkdir -p "$WORK/redis-$port"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$WORK/redis-$port" --logfile "$WORK/redis-$port/log" "$@" &
    PIDS+=($!)
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.05; done
    echo "redis-server on $port did not start" >&2; exit 1
}

wait_cluster_ok() { # port
    for _ in $(seq 200); do
        redis-cli -p "$1" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && return
        sleep 0.1
    done
    echo "cluster on $1 not ok" >&2; exit 1
}

# (a) direct
P_DIRECT=$(free_port); start_redis "$P_DIRECT"
# (b) twemproxy
P_TWEM=$(free_port)
cat >"$WORK/nutcracker.yml" <<EOF
bench:
  listen: 127.0.0.1:$P_TWEM
  hash: fnv1a_64
  distribution: ketama
  redis: true
  auto_eject_hosts: false
  servers:
    - 127.0.0.1:$P_DIRECT:1
EOF
nutcracker -c "$WORK/nutcracker.yml" -o "$WORK/nutcracker.log" -s "$(free_port)" &
PIDS+=($!)
# (c) one-node cluster
# Cluster nodes get an explicit bus port (the default, port + 10000, may be taken or > 65535).
P_ONE=$(free_port); start_redis "$P_ONE" --cluster-enabled yes --cluster-port "$(free_port)" --cluster-config-file "$WORK/one-nodes.conf"
redis-cli -p "$P_ONE" cluster addslotsrange 0 16383 >/dev/null
wait_cluster_ok "$P_ONE"
# (d) three masters
P3=(); for i in 1 2 3; do p=$(free_port); P3+=("$p"); start_redis "$p" --cluster-enabled yes --cluster-port "$(free_port)" --cluster-config-file "$WORK/three-$p.conf"; done
redis-cli --cluster create "127.0.0.1:${P3[0]}" "127.0.0.1:${P3[1]}" "127.0.0.1:${P3[2]}" --cluster-yes >"$WORK/create.log" 2>&1
wait_cluster_ok "${P3[0]}"; wait_cluster_ok "${P3[1]}"; wait_cluster_ok "${P3[2]}"

start_router() { # listen-port seed
    "$ROUTER" --listen "127.0.0.1:$1" --seed "127.0.0.1:$2" --threads "$THREADS" >"$WORK/router-$1.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do redis-cli -p "$1" info 2>/dev/null | grep -q 'slots_covered:16384' && return; sleep 0.05; done
    echo "router on $1 not ready" >&2; cat "$WORK/router-$1.log" >&2; exit 1
}
P_O1=$(free_port); start_router "$P_O1" "$P_ONE"; PID_O1=${PIDS[-1]}
P_O3=$(free_port); start_router "$P_O3" "${P3[0]}"; PID_O3=${PIDS[-1]}
P_OK=$(free_port)
"$ROUTER" --listen "127.0.0.1:$P_OK" --mode ketama --seed "127.0.0.1:$P_DIRECT" --threads "$THREADS" >"$WORK/router-$P_OK.log" 2>&1 &
PIDS+=($!); PID_OK=$!
for _ in $(seq 100); do redis-cli -p "$P_OK" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
for _ in $(seq 50); do redis-cli -p "$P_TWEM" ping >/dev/null 2>&1 && break; sleep 0.05; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# redis-benchmark has no MGET test: MGET of 10 keys (in 10 different slots) is run as a
# custom command. Its keys are set first so the replies carry values.
MGET_KEYS=(key:1 key:2 key:3 key:4 key:5 key:6 key:7 key:8 key:9 key:10)

# bench target port pipeline -> "get set mget" ops/s
bench() {
    local port=$1 p=$2 n
    if ((p == 1)); then n=$N_P1; else n=$N_P16; fi
    {
        redis-benchmark -h 127.0.0.1 -p "$port" -t get,set -P "$p" -c "$CLIENTS" -n "$n" --csv 2>/dev/null
        redis-benchmark -h 127.0.0.1 -p "$port" -P "$p" -c "$CLIENTS" -n "$n" --csv MGET "${MGET_KEYS[@]}" 2>/dev/null
    } | awk -F'","' '/^"(GET|SET|MGET)/ { gsub(/"/, "", $1); gsub(/"/, "", $2); split($1, t, " "); r[t[1]] = $2 }
                     END { printf "%s %s %s\n", r["GET"], r["SET"], r["MGET"] }'
}

for port in "$P_DIRECT" "$P_TWEM" "$P_O1" "$P_O3" "$P_OK"; do
    args=(); for k in "${MGET_KEYS[@]}"; do args+=("$k" "value"); done
    for _ in $(seq 50); do redis-cli -p "$port" mset "${args[@]}" 2>/dev/null | grep -q OK && break; sleep 0.1; done
done
PID_TWEM=$(pgrep -f "nutcracker -c $WORK/nutcracker.yml" | head -1)

declare -A RESULTS
TARGETS=(direct twemproxy ocean-1 ocean-3 ocean-kt)
declare -A PORT=([direct]=$P_DIRECT [twemproxy]=$P_TWEM [ocean-1]=$P_O1 [ocean-3]=$P_O3 [ocean-kt]=$P_OK)
declare -A CPU
for round in $(seq "$ROUNDS"); do
    for p in 1 16; do
        for t in "${TARGETS[@]}"; do
            pid=""
            [[ $t == ocean-1 ]] && pid=$PID_O1
            [[ $t == ocean-3 ]] && pid=$PID_O3
            [[ $t == ocean-kt ]] && pid=$PID_OK
            [[ $t == twemproxy ]] && pid=$PID_TWEM
            [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
            r=$(bench "${PORT[$t]}" "$p")
            if [[ -n $pid ]]; then
                c1=$(cpu_ticks "$pid")
                n=$(( (p == 1 ? N_P1 : N_P16) * 3 ))  # ops in get + set + mget
                CPU[$t/$p]="${CPU[$t/$p]:-} $(awk -v d=$((c1 - c0)) -v tk="$TICK" -v n="$n" 'BEGIN { printf "%.2f", d / tk * 1e6 / n }')"
            fi
            RESULTS[$t/$p]="${RESULTS[$t/$p]:-}|$r"
            echo "round $round P$p $t: GET SET MGET = $r" >&2
        done
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print 0 }'; }
col() { # target/p index(1..3)
    echo "${RESULTS[$1]}" | tr '|' '\n' | grep -v '^$' | awk -v i="$2" '{ print $i }' | median
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

echo
printf "%-10s %-4s %12s %12s %12s\n" target P GET SET MGET
for p in 1 16; do
    for t in "${TARGETS[@]}"; do
        printf "%-10s %-4s %12s %12s %12s\n" "$t" "$p" "$(col "$t/$p" 1)" "$(col "$t/$p" 2)" "$(col "$t/$p" 3)"
    done
done
echo
printf "%-22s %-4s %8s %8s %8s\n" ratio P GET SET MGET
for p in 1 16; do
    for o in ocean-1 ocean-3 ocean-kt; do
        for base in direct twemproxy; do
            printf "%-22s %-4s %8s %8s %8s\n" "$o/$base" "$p" \
                "$(ratio "$(col "$o/$p" 1)" "$(col "$base/$p" 1)")" \
                "$(ratio "$(col "$o/$p" 2)" "$(col "$base/$p" 2)")" \
                "$(ratio "$(col "$o/$p" 3)" "$(col "$base/$p" 3)")"
        done
    done
done
echo
echo "proxy CPU, us per operation (median over rounds):"
for p in 1 16; do
    for o in twemproxy ocean-1 ocean-3 ocean-kt; do
        printf "  %-8s P%-3s %s\n" "$o" "$p" "$(echo "${CPU[$o/$p]}" | median)"
    done
done

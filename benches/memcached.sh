#!/usr/bin/env bash
# memcached load through ocean memcached-router vs memcached directly vs nutcracker
# (twemproxy). Not part of CI.
#
# Load: memcaslap, one thread, 50 connections, 90% get / 10% set, 32-byte keys, 100-byte
# values; and a multi-get variant (10 keys per get). Rows:
#   direct            memcaslap -> memcached
#   nutcracker        memcaslap -> nutcracker -> memcached
#   ocean 1 set       memcaslap -> ocean (one replica set; default --threads: one
#                     current_thread worker per CPU, SO_REUSEPORT) -> memcached
#   ocean 2 sets      the same with a second replica set (writes go to both)
#   ocean 3 servers   one replica set of three servers (ketama): a multi-get is split in
#                     up to three, one per server
#   ocean 1 set t1    one worker thread
#   ocean 1 set mt    tokio's multi-thread runtime (2 workers) instead
# Prints ops/s, p99 (memcaslap's log2 buckets), proxy CPU us/op and ratios to direct.
#
# Usage: benches/memcached.sh [seconds per run, default 10]
# Needs: memcached, nutcracker, memcaslap (Debian: memcached, nutcracker, libmemcached-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p ocean-memcached-router --example memcached_bench_server
ROUTER="$CARGO_TARGET_DIR/release/examples/memcached_bench_server"
MEMCASLAP=$(command -v memcaslap || echo /usr/bin/memcaslap)
PARSE="python3 benches/memcached/parse_memcaslap.py"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

M1=127.0.0.1:22122; M2=127.0.0.1:22123; M3=127.0.0.1:22124
NC=127.0.0.1:22130; OC=127.0.0.1:22140
USER_ARGS=(); [ "$(id -u)" = 0 ] && USER_ARGS=(-u root)
memcached "${USER_ARGS[@]}" -l 127.0.0.1 -p 22122 -U 0 -m 256 -t 2 & PIDS+=($!)
memcached "${USER_ARGS[@]}" -l 127.0.0.1 -p 22123 -U 0 -m 256 -t 2 & PIDS+=($!)
memcached "${USER_ARGS[@]}" -l 127.0.0.1 -p 22124 -U 0 -m 256 -t 2 & PIDS+=($!)
cat > "$WORK/nc.yml" <<YML
pool:
  listen: $NC
  hash: fnv1a_64
  distribution: ketama
  auto_eject_hosts: false
  timeout: 1000
  servers:
   - $M1:1
YML
nutcracker -c "$WORK/nc.yml" -s 22131 -a 127.0.0.1 -o "$WORK/nc.log" & PIDS+=($!)
sleep 1

printf 'key\n32 32 1\nvalue\n100 100 1\ncmd\n0 0.1\n1 0.9\n' > "$WORK/load.cfg"

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# run NAME ADDR PROXY_PID EXTRA_MEMCASLAP_ARGS...
declare -A OPS P99 CPU
run() {
  local name=$1 addr=$2 pid=$3; shift 3
  local t0=0; [ "$pid" != 0 ] && t0=$(cpu_ticks "$pid")
  local out; out=$("$MEMCASLAP" -s "$addr" -T 1 -c 50 -t "${DUR}s" -F "$WORK/load.cfg" -S "${DUR}s" "$@" 2>&1)
  local t1=0; [ "$pid" != 0 ] && t1=$(cpu_ticks "$pid")
  read -r ops p99 _avg <<<"$(echo "$out" | $PARSE)"
  OPS[$name]=$ops; P99[$name]=$p99
  if [ "$pid" != 0 ] && [ "$ops" -gt 0 ]; then
    CPU[$name]=$(( (t1 - t0) * 10000 * 1000 / (ops * DUR) ))  # ticks are 10 ms; x1000 = ns/op
  else
    CPU[$name]=-
  fi
}

start_ocean() { # args...; echoes pid
  "$ROUTER" --listen "$OC" "$@" >"$WORK/ocean.log" 2>&1 &
  local p=$!; PIDS+=($p)
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/22140) 2>/dev/null && break; sleep 0.1; done
  OCEAN_PID=$p
}
stop_ocean() { kill "$OCEAN_PID"; wait "$OCEAN_PID" 2>/dev/null || true; }

for variant in "get" "multiget"; do
  EXTRA=(); [ "$variant" = multiget ] && EXTRA=(-d 10)
  run "direct/$variant" "$M1" 0 "${EXTRA[@]}"
  run "nutcracker/$variant" "$NC" "$(pgrep -n -x nutcracker)" "${EXTRA[@]}"
  start_ocean --pool "a=$M1"; run "ocean 1 set/$variant" "$OC" "$OCEAN_PID" "${EXTRA[@]}"; stop_ocean
  start_ocean --pool "a=$M1" --pool "b=$M2"; run "ocean 2 sets/$variant" "$OC" "$OCEAN_PID" "${EXTRA[@]}"; stop_ocean
  start_ocean --pool "a=$M1,$M2,$M3"; run "ocean 3 servers/$variant" "$OC" "$OCEAN_PID" "${EXTRA[@]}"; stop_ocean
  start_ocean --pool "a=$M1" --threads 1; run "ocean 1 set t1/$variant" "$OC" "$OCEAN_PID" "${EXTRA[@]}"; stop_ocean
  BENCH_MULTI_THREAD=2 start_ocean --pool "a=$M1" --threads 0; run "ocean 1 set mt/$variant" "$OC" "$OCEAN_PID" "${EXTRA[@]}"; stop_ocean
done

printf '\n%-26s %10s %9s %12s %10s\n' "path/load" "ops/s" "p99(us)" "proxy ns/op" "vs direct"
for variant in get multiget; do
  d=${OPS[direct/$variant]}
  for name in direct nutcracker "ocean 1 set" "ocean 2 sets" "ocean 3 servers" "ocean 1 set t1" "ocean 1 set mt"; do
    k="$name/$variant"
    ratio=$(awk -v a="${OPS[$k]}" -v b="$d" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "-" }')
    printf '%-26s %10s %9s %12s %10s\n' "$k" "${OPS[$k]}" "${P99[$k]}" "${CPU[$k]}" "$ratio"
  done
done
for variant in get multiget; do
  awk -v o="${OPS[ocean 1 set/$variant]}" -v n="${OPS[nutcracker/$variant]}" -v t="${OPS[ocean 2 sets/$variant]}" -v v="$variant" \
    'BEGIN{ printf "%s: ocean/nutcracker %.2f, two sets/one set %.2f\n", v, o/n, t/o }'
done

#!/usr/bin/env bash
# sysbench oltp_point_select and oltp_read_only, 8 threads, against MariaDB directly,
# through haproxy (TCP mode) and through ocean mysql-proxy; prints qps, p95 and ratios.
# Then the connect-heavy load (mysql-proxy/examples/connect_load.rs: 16 clients each
# connect, run one point select and quit, in a loop), in connections per second; the
# proxy's database has pool_max = 64 (POOL_MAX=0: off), so its backend connections are
# reused.
# Each load runs REPEAT times (3), direct, haproxy and ocean back to back each time; the
# ratios printed last are the median over the repetitions with their range.
# Needs: mariadb-server, sysbench, haproxy. Not run in CI.
#   benches/mysql.sh            # 10 s per run
#   TIME=5 REPEAT=5 TABLE_SIZE=10000 CONNECT_CLIENTS=16 POOL_MAX=64 MULTIPLEX=1 benches/mysql.sh
#   THREADS=64 PROXY_THREADS=1 benches/mysql.sh   # 64 sysbench threads; a current_thread proxy
#   SYSBENCH=0 benches/mysql.sh                   # the connect-heavy load only
#   CONNECT=0 benches/mysql.sh                    # sysbench only
#   CONNECT_CLIENT=mysql_async benches/mysql.sh   # connect-heavy through the mysql_async
#                                                 # driver instead of the lean client
set -euo pipefail
cd "$(dirname "$0")/.."
TIME=${TIME:-10}
REPEAT=${REPEAT:-3}
TABLE_SIZE=${TABLE_SIZE:-10000}
THREADS=${THREADS:-8}
# 0: the `ocean` binary's runtime (multi_thread, a worker per CPU); 1: current_thread.
PROXY_THREADS=${PROXY_THREADS:-0}
CONNECT_CLIENTS=${CONNECT_CLIENTS:-16}
POOL_MAX=${POOL_MAX:-64}
MULTIPLEX=${MULTIPLEX:-0}
CONNECT_CLIENT=${CONNECT_CLIENT:-lean}
SYSBENCH=${SYSBENCH:-1}
CONNECT=${CONNECT:-1}
POOL_JSON=""; [ "$POOL_MAX" != 0 ] && POOL_JSON=", \"pool_max\": $POOL_MAX"
[ "$MULTIPLEX" = 1 ] && POOL_JSON="$POOL_JSON, \"multiplex\": true"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

for b in mariadbd mariadb-install-db sysbench haproxy; do
  command -v "$b" >/dev/null || { echo "missing $b (Debian: mariadb-server sysbench haproxy)" >&2; exit 1; }
done
cargo build -q --release -p ocean-mysql-proxy --example mysql_bench_server --example connect_load
# PROXY_BIN=... compares another build of the example (an A/B against an older commit).
PROXY_BIN=${PROXY_BIN:-$CARGO_TARGET_DIR/release/examples/mysql_bench_server}
LOAD_BIN=$CARGO_TARGET_DIR/release/examples/connect_load

W=$(mktemp -d /tmp/ocean-mysql-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

DB_PORT=$(free_port); HA_PORT=$(free_port); OC_PORT=$(free_port)
ROOT=(); [ "$(id -u)" = 0 ] && ROOT=(--user=root)
mariadb-install-db --no-defaults --datadir="$W/data" --auth-root-authentication-method=normal \
  --skip-test-db "${ROOT[@]}" >"$W/install.log" 2>&1
mariadbd --no-defaults --datadir="$W/data" --socket="$W/sock" --port="$DB_PORT" \
  --bind-address=127.0.0.1 --skip-name-resolve --log-error="$W/error.log" --pid-file="$W/pid" \
  --innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=0 --max-connections=500 \
  --performance-schema=OFF "${ROOT[@]}" &
DB_PID=$!
PIDS+=($DB_PID)
for _ in $(seq 100); do [ -S "$W/sock" ] && break; sleep 0.1; done
sql() { mariadb --no-defaults --protocol=SOCKET --socket="$W/sock" -uroot -e "$1"; }
sql "CREATE DATABASE sbtest; CREATE USER 'sb'@'127.0.0.1' IDENTIFIED BY 'sbpw';
     GRANT ALL ON sbtest.* TO 'sb'@'127.0.0.1';"

cat >"$W/haproxy.cfg" <<CFG
global
  maxconn 1000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen mysql
  bind 127.0.0.1:$HA_PORT
  server db 127.0.0.1:$DB_PORT
CFG
haproxy -f "$W/haproxy.cfg" -db >"$W/haproxy.log" 2>&1 &
HA_PID=$!
PIDS+=($HA_PID)

cat >"$W/mysql.json" <<JSON
{"databases": [{"name": "/bench/sb/main", "primary": "127.0.0.1:$DB_PORT", "replicas": [],
  "rw": {"user": "sb", "password": "sbpw"}, "schema": "sbtest"$POOL_JSON}],
 "jobs": [{"name": "bench", "ips": ["192.0.2.77"], "grants": [{"database": "/bench/sb/main", "access": "rw"}]}]}
JSON
# Every client here comes from 127.0.0.1: the per-IP cap on logins in progress (16, a
# defence against one host's flood) would refuse part of 64 sysbench threads starting.
"$PROXY_BIN" --listen "127.0.0.1:$OC_PORT" --table-file "$W/mysql.json" --host-ip 192.0.2.77 \
  --threads "$PROXY_THREADS" --max-prelogin-per-ip 1000 >"$W/ocean.log" 2>&1 &
OC_PID=$!
PIDS+=($OC_PID)
sleep 1.5
# One session first: its backend login shows the proxy what MariaDB offers (the metadata
# cache), which it then offers the clients that follow, as a proxy running for a while does.
mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P"$OC_PORT" -ubench --skip-ssl -e 'SELECT 1' sbtest >/dev/null

sb() { # port user password test action
  sysbench "$4" --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$1" --mysql-user="$2" \
    --mysql-password="$3" --mysql-db=sbtest --mysql-ssl=off --tables=4 --table-size="$TABLE_SIZE" \
    --threads="$THREADS" --time="$TIME" --report-interval=0 "$5"
}
sb "$DB_PORT" sb sbpw oltp_read_only prepare >"$W/prepare.log"

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# Sets the port, user, password and proxy process (none for direct) of a path.
path_target() {
  case $1 in
    direct)  port=$DB_PORT user=sb pw=sbpw pid= ;;
    haproxy) port=$HA_PORT user=sb pw=sbpw pid=$HA_PID ;;
    ocean)   port=$OC_PORT user=bench pw= pid=$OC_PID ;;
  esac
}
# "  ocean CPU 21.3 us/query": a process's CPU ticks from $2 to $3 per unit of work done.
proxy_cpu() { # name ticks_before ticks_after count unit
  awk -v t="$(($3 - $2))" -v n="$4" -v hz="$(getconf CLK_TCK)" -v p="$1" -v u="$5" \
    'BEGIN {printf "  %s CPU %.1f us/%s", p, t / hz * 1e6 / n, u}'
}
# Numbers (one per line) as their median and range: "1.02 (0.97-1.08)".
summary() {
  sort -g | awk '{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
    printf "%.2f (%.2f-%.2f)", m, v[1], v[NR]}'
}
# Each repetition's numerator over its denominator (space-separated lists), summarized.
ratios() { paste <(tr ' ' '\n' <<<"$1" | grep .) <(tr ' ' '\n' <<<"$2" | grep .) | awk '{print $1 / $2}' | summary; }
# Each repetition runs direct, haproxy and ocean back to back, and the ratios are taken
# within a repetition: this machine's speed drifts by tens of percent over minutes, so
# figures from far apart in time do not compare.
declare -A QPS P95
TESTS=(oltp_point_select oltp_read_only); [ "$SYSBENCH" = 0 ] && TESTS=()
for test in "${TESTS[@]}"; do
  for rep in $(seq "$REPEAT"); do
    for path in direct haproxy ocean; do
      path_target "$path"
      [ -n "$pid" ] && t0=$(cpu_ticks "$pid")
      d0=$(cpu_ticks "$DB_PID")
      out=$(sb "$port" "$user" "$pw" "$test" run 2>&1) || { echo "sysbench $test via $path failed:" >&2; echo "$out" >&2; exit 1; }
      [ -n "$pid" ] && t1=$(cpu_ticks "$pid")
      d1=$(cpu_ticks "$DB_PID")
      qps=$(echo "$out" | awk '/queries:/ {gsub(/\(/,"",$3); print $3}')
      p95=$(echo "$out" | awk '/95th percentile:/ {print $3}')
      QPS[$test.$path]+="$qps "
      P95[$test.$path]+="$p95 "
      errs=$(echo "$out" | awk '/ignored errors:/ {print $3}')
      extra=""
      queries=$(echo "$out" | awk '/queries:/ {print $2}')
      extra=$(proxy_cpu mariadbd "$d0" "$d1" "$queries" query)
      [ -n "$pid" ] && extra+=$(proxy_cpu "$path" "$t0" "$t1" "$queries" query)
      printf '%-18s %-8s run %s  qps %10s  p95 %7s ms  errors %s%s\n' "$test" "$path" "$rep" \
        "$qps" "$p95" "$errs" "$extra"
    done
  done
done
echo
for test in "${TESTS[@]}"; do
  printf '%-18s ocean/direct %s  ocean/haproxy %s  haproxy/direct %s  p95 ocean %s ms vs haproxy %s ms\n' \
    "$test" "$(ratios "${QPS[$test.ocean]}" "${QPS[$test.direct]}")" \
    "$(ratios "${QPS[$test.ocean]}" "${QPS[$test.haproxy]}")" \
    "$(ratios "${QPS[$test.haproxy]}" "${QPS[$test.direct]}")" \
    "$(tr ' ' '\n' <<<"${P95[$test.ocean]}" | grep . | summary)" \
    "$(tr ' ' '\n' <<<"${P95[$test.haproxy]}" | grep . | summary)"
done

echo
declare -A CPS
LOAD_FLAGS=(); [ "$CONNECT_CLIENT" = mysql_async ] && LOAD_FLAGS=(--mysql-async)
CONNECT_PATHS=(direct haproxy ocean); [ "$CONNECT" = 0 ] && CONNECT_PATHS=()
[ "$CONNECT" = 0 ] || for rep in $(seq "$REPEAT"); do
  for path in "${CONNECT_PATHS[@]}"; do
    path_target "$path"
    [ -n "$pid" ] && t0=$(cpu_ticks "$pid")
    d0=$(cpu_ticks "$DB_PID")
    out=$("$LOAD_BIN" "${LOAD_FLAGS[@]}" "127.0.0.1:$port" "$user" "$pw" sbtest "$CONNECT_CLIENTS" "$TIME" \
      'SELECT c FROM sbtest1 WHERE id = {id}') || { echo "connect_load via $path failed: $out" >&2; exit 1; }
    [ -n "$pid" ] && t1=$(cpu_ticks "$pid")
    d1=$(cpu_ticks "$DB_PID")
    cps=$(echo "$out" | awk '{for (i = 1; i < NF; i++) if ($i == "per_second") print $(i + 1)}')
    CPS[$path]+="$cps "
    errs=$(echo "$out" | awk '{for (i = 1; i < NF; i++) if ($i == "errors") print $(i + 1)}')
    extra=""
    conns=$(echo "$out" | awk '{print $2}')
    extra=$(proxy_cpu mariadbd "$d0" "$d1" "$conns" connection)
    [ -n "$pid" ] && extra+=$(proxy_cpu "$path" "$t0" "$t1" "$conns" connection)
    client_cpu=$(echo "$out" | awk '{for (i = 1; i < NF; i++) if ($i == "client_cpu_us") print $(i + 1)}')
    printf '%-18s %-8s run %s  conn/s %8s  errors %s  load tool CPU %s us/connection%s\n' connect-heavy \
      "$path" "$rep" "$cps" "$errs" "$client_cpu" "$extra"
  done
done
if [ "$CONNECT" != 0 ]; then
  printf '%-18s ocean/direct %s  ocean/haproxy %s  haproxy/direct %s\n' connect-heavy \
    "$(ratios "${CPS[ocean]}" "${CPS[direct]}")" "$(ratios "${CPS[ocean]}" "${CPS[haproxy]}")" \
    "$(ratios "${CPS[haproxy]}" "${CPS[direct]}")"
fi

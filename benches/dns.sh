#!/usr/bin/env bash
# DNS load benchmark of `ocean dns` against unbound and knot (not part of CI); see
# benches/README.md, section "dns".
#
#   benches/dns.sh                       # 300 apps x 4 tasks, dnsperf -l 10 -c 4 -q 200
#   benches/dns.sh --rounds 3            # repeat the whole sequence, report medians
#   benches/dns.sh --apps 1000 --tasks 5 --duration 20 --keep
#
# Runs, one after another, each on its own 127.0.0.1 port and with the same zone:
#   ocean dns --udp-workers 1, ocean dns --udp-workers 2, unbound (1 thread, local-data),
#   knotd (minimal config); then ocean dns --udp-workers 1, unbound and knot with A queries only.
# Installs dnsperf, unbound, knot and dig (bind9-dnsutils) with apt-get when missing and
# stops the services those packages start. Needs root for that; run on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

APPS=300
TASKS=4
DURATION=10
CLIENTS=4
OUTSTANDING=200
WARMUP=2
ROUNDS=1
KEEP=0

usage() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
    cat <<EOF

Options: --apps N ($APPS)  --tasks N per app ($TASKS)  --duration S ($DURATION)
         --clients N ($CLIENTS)  --outstanding N ($OUTSTANDING)  --warmup S ($WARMUP)
         --rounds N ($ROUNDS)
         --keep (keep the temp dir with configs, logs and dnsperf outputs)
EOF
}

while (($#)); do
    case "$1" in
        --apps) APPS=$2; shift 2 ;;
        --tasks) TASKS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --outstanding) OUTSTANDING=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

# ---- processes: every one this script starts is recorded and stopped on exit ----------
PIDS=()
WORK=""
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$WORK" ]; then
        if ((KEEP)); then
            echo "kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() {
    local pid=$1 keep=() p
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do
        [ "$p" = "$pid" ] || keep+=("$p")
    done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

# ---- packages ---------------------------------------------------------------------------
# Debian package -> a binary it ships.
declare -A NEED=([dnsperf]=dnsperf [unbound]=unbound [knot]=knotd [bind9-dnsutils]=dig)
missing=()
for pkg in "${!NEED[@]}"; do
    if ! command -v "${NEED[$pkg]}" >/dev/null 2>&1 && [ ! -x "/usr/sbin/${NEED[$pkg]}" ]; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    if [ "$(id -u)" != 0 ]; then
        echo "need root to apt-get install ${missing[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"
# The packages start system services on install (unbound on 127.0.0.1:53, knot); they
# would compete for the CPUs and must not stay behind.
for svc in unbound knot; do
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then
        service "$svc" stop >/dev/null 2>&1 || true
    fi
done

# ---- build and generate -----------------------------------------------------------------
cargo build --release --quiet
OCEAN=$ROOT/target/release/ocean

WORK=$(mktemp -d /tmp/ocean-dns-bench.XXXXXX)
OUT=$WORK/out
mkdir -p "$OUT" "$WORK/knot"
python3 "$ROOT/benches/dns/gen.py" --apps "$APPS" --tasks "$TASKS" --out "$WORK"

# A free 127.0.0.1 port for both UDP and TCP.
free_port() {
    python3 - <<'EOF'
import socket
while True:
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(port)
    break
EOF
}

# Waits until the server on $1 answers app0.marathon.mesos A (process $2 must live).
wait_ready() {
    local port=$1 pid=$2 name=$3 i
    for i in $(seq 1 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited; its log:" >&2
            cat "$WORK/$name.log" >&2 || true
            exit 1
        fi
        if [ -n "$(dig +short +time=1 +tries=1 @127.0.0.1 -p "$port" app0.marathon.mesos A 2>/dev/null)" ]; then
            return 0
        fi
        sleep 0.1
    done
    echo "$name did not answer on 127.0.0.1:$port within 10 s; its log:" >&2
    cat "$WORK/$name.log" >&2 || true
    exit 1
}

# Sets PID and PORT.
start_server() {
    local kind=$1
    PORT=$(free_port)
    case "$kind" in
        ocean1|ocean2)
            "$OCEAN" dns --table-file "$WORK/table.json" --listen "127.0.0.1:$PORT" --no-http \
                --udp-workers "${kind#ocean}" --log warn >"$WORK/$kind.log" 2>&1 &
            ;;
        unbound)
            sed -e "s|@PORT@|$PORT|" -e "s|@DIR@|$WORK|g" "$WORK/unbound.conf" >"$WORK/unbound-run.conf"
            unbound -d -c "$WORK/unbound-run.conf" >"$WORK/$kind.log" 2>&1 &
            ;;
        knot)
            cat >"$WORK/knot.conf" <<EOF
server:
    rundir: "$WORK/knot"
    pidfile: "$WORK/knot/knot.pid"
    listen: 127.0.0.1@$PORT
database:
    storage: "$WORK/knot"
control:
    listen: "$WORK/knot/knot.sock"
log:
  - target: stderr
    any: warning
zone:
  - domain: mesos.
    file: "$WORK/mesos.zone"
    journal-content: none
EOF
            knotd -c "$WORK/knot.conf" >"$WORK/$kind.log" 2>&1 &
            ;;
    esac
    PID=$!
    PIDS+=("$PID")
    wait_ready "$PORT" "$PID" "$kind"
}

cpu_ticks() {
    # utime + stime (fields 14 and 15); the command name (field 2) has no spaces here.
    awk '{print $14 + $15}' "/proc/$1/stat"
}

HZ=$(getconf CLK_TCK)

# run NAME SERVER QUERYFILE ROUND
run() {
    local name=$1 server=$2 queries=$3 round=$4 before after
    start_server "$server"
    if ((WARMUP > 0)); then
        dnsperf -s 127.0.0.1 -p "$PORT" -d "$queries" -l "$WARMUP" -c "$CLIENTS" -q "$OUTSTANDING" >/dev/null
    fi
    before=$(cpu_ticks "$PID")
    dnsperf -s 127.0.0.1 -p "$PORT" -d "$queries" -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" \
        >"$OUT/$name.$round.txt" 2>&1
    after=$(cpu_ticks "$PID")
    echo "$((after - before)) $HZ" >"$OUT/$name.$round.cpu"
    stop_pid "$PID"
    printf '  %-10s %s\n' "$name" "$(grep -E 'Queries per second' "$OUT/$name.$round.txt" | tr -s ' ')"
}

RUNS=(ocean1 ocean2 unbound knot ocean1-a unbound-a knot-a)

echo "dnsperf -l $DURATION -c $CLIENTS -q $OUTSTANDING (after a ${WARMUP}s warm-up), $(nproc) CPUs, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "unbound $(unbound -V 2>/dev/null | awk 'NR == 1 {print $2}'), knotd $(knotd -V 2>/dev/null | awk '{print $NF}'), dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ {print $2}')"
echo "ocean $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+changes')"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round/$ROUNDS"
    for r in "${RUNS[@]}"; do
        case "$r" in
            *-a) run "$r" "${r%-a}" "$WORK/queries-a.txt" "$round" ;;
            *) run "$r" "$r" "$WORK/queries.txt" "$round" ;;
        esac
    done
done

echo
python3 "$ROOT/benches/dns/report.py" "$OUT" "${RUNS[@]}"

#!/usr/bin/env python3
"""Prints the result table of benches/dns.sh from the dnsperf outputs it saved.

Reads DIR/<run>.<round>.txt (dnsperf's output) and DIR/<run>.<round>.cpu ("ticks clk_tck",
the server's utime+stime over the measured run) for the runs named on the command line,
in that order, and prints one markdown row per run: the median over rounds of qps, average
and max latency and CPU per query (qps also
as min-max over rounds), plus the ratios to unbound and knot (same round set).
"""

import re
import statistics
import sys
from pathlib import Path

LABELS = {
    "ocean1": "ocean dns, --udp-workers 1",
    "ocean2": "ocean dns, --udp-workers 2",
    "unbound": "unbound, 1 thread, local-data",
    "knot": "knot (knotd, default workers)",
    "ocean1-a": "ocean dns, --udp-workers 1, A only",
    "unbound-a": "unbound, A only",
    "knot-a": "knot, A only",
}


def parse(text):
    def num(pattern, cast=float):
        m = re.search(pattern, text)
        if not m:
            raise ValueError(f"no match for {pattern!r} in dnsperf output:\n{text}")
        return cast(m.group(1))

    codes = {}
    m = re.search(r"Response codes:\s*(.*)", text)
    if m:
        for code, n in re.findall(r"([A-Z]+) (\d+)", m.group(1)):
            codes[code] = int(n)
    return {
        "sent": num(r"Queries sent:\s+(\d+)", int),
        "completed": num(r"Queries completed:\s+(\d+)", int),
        "lost": num(r"Queries lost:\s+(\d+)", int),
        "qps": num(r"Queries per second:\s+([\d.]+)"),
        "avg": num(r"Average Latency \(s\):\s+([\d.]+)"),
        "max": num(r"Average Latency \(s\):.*max ([\d.]+)"),
        "codes": codes,
    }


def main():
    out = Path(sys.argv[1])
    runs = sys.argv[2:]
    res = {}
    for run in runs:
        rounds = []
        for f in sorted(out.glob(f"{run}.*.txt")):
            r = parse(f.read_text())
            cpu = f.with_suffix(".cpu")
            if cpu.exists() and r["completed"]:
                ticks, hz = map(int, cpu.read_text().split())
                r["cpu_us"] = ticks * 1e6 / hz / r["completed"]
            rounds.append(r)
        if rounds:
            res[run] = rounds

    def med(run, key):
        vals = [r[key] for r in res.get(run, []) if key in r]
        return statistics.median(vals) if vals else None

    n_rounds = max((len(v) for v in res.values()), default=0)
    print(f"medians of {n_rounds} round(s)" if n_rounds > 1 else "one round")
    print()
    qps_head = "qps (min-max)" if n_rounds > 1 else "qps"
    print(f"| run | {qps_head} | avg latency (ms) | max latency (ms) | lost | rcodes | CPU µs/query | vs unbound | vs knot |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        if run not in res:
            continue
        qps = med(run, "qps")
        # Ratios compare runs of the same query mix only.
        suffix = "-a" if run.endswith("-a") else ""
        ratios = []
        for peer in ("unbound", "knot"):
            bq = med(peer + suffix, "qps")
            ratios.append(f"{qps / bq:.2f}" if bq and not run.startswith(peer) else "")
        lost = sum(r["lost"] for r in res[run])
        codes = {}
        for r in res[run]:
            for c, n in r["codes"].items():
                codes[c] = codes.get(c, 0) + n
        total = sum(codes.values()) or 1
        rc = ", ".join(f"{c} {100 * n / total:.0f}%" for c, n in sorted(codes.items()))
        cpu = med(run, "cpu_us")
        qs = [r["qps"] for r in res[run]]
        spread = f" ({min(qs) / 1e3:.0f}-{max(qs) / 1e3:.0f}k)" if len(qs) > 1 else ""
        print(
            f"| {LABELS.get(run, run)} | {qps:,.0f}{spread} | {med(run, 'avg') * 1e3:.2f} | "
            f"{med(run, 'max') * 1e3:.2f} | {lost} | {rc} | "
            f"{'' if cpu is None else f'{cpu:.2f}'} | {ratios[0]} | {ratios[1]} |"
        )
    problems = [
        f"{run}: {r['lost']} lost, {r['completed']}/{r['sent']} completed"
        for run, rs in res.items()
        for r in rs
        if r["lost"] or r["completed"] != r["sent"]
    ]
    if problems:
        print()
        print("WARNING: queries lost:")
        for p in problems:
            print(f"  {p}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reads memcaslap output (run with -S) on stdin; prints "ops_per_s p99_us avg_us".

p99 comes from memcaslap's log2 latency histogram of all commands (Total Statistics):
the upper bound of the power-of-two bucket (memcaslap counts a latency of t us in bucket ceil(log2 t)) holding the 99th percentile, so it is coarse
(a factor of 2), which is what memcaslap offers.
"""
import re
import sys

text = sys.stdin.read()
tps = re.findall(r"TPS:\s*(\d+)", text)
total = text.rfind("Total Statistics")
block = text[total:] if total >= 0 else ""
avg = re.search(r"Avg:\s*([\d.]+)", block)
counts = {}
for m in re.finditer(r"^\s+(\d+):((?:\s+\d+)+)\s*$", block, re.M):
    base = int(m.group(1))
    for i, n in enumerate(m.group(2).split()):
        counts[base + i] = int(n)
p99 = 0
n = sum(counts.values())
if n:
    seen = 0
    for exp in sorted(counts):
        seen += counts[exp]
        if seen >= 0.99 * n:
            p99 = 2 ** exp
            break
print(tps[-1] if tps else 0, p99, avg.group(1) if avg else 0)

#!/usr/bin/env bash
# Our RESP reply decoder (redis-router/src/proto/reply.rs) against the redis-protocol
# crate's on the same frames: ns per frame for "check" (measure one reply to relay it) and
# "parse" (build a value), and theirs/ours. Not part of CI; run on an idle machine.
#
# Usage: benches/resp-decode.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ocean-redis-router --example resp_decode_bench
"${CARGO_TARGET_DIR:-target}/release/examples/resp_decode_bench"

#!/usr/bin/env bash
# Runs one fuzz target of fuzz/ under AFL++ on the stable toolchain (cargo-afl).
#
#   benches/fuzz.sh --list              names every target
#   benches/fuzz.sh TARGET SECONDS      fuzzes TARGET for SECONDS, then prints executions
#                                       per second, crashes and hangs; exits 1 on a crash
#
# Installs what is missing: cargo-afl from crates.io (`cargo install cargo-afl` builds its
# bundled AFL++ with gcc and make, into ~/.local/share/afl.rs), and `cargo afl config
# --build` when that runtime is absent. Nothing here is needed by CI: `cargo test` in fuzz/
# replays the seed corpus without AFL.
#
# Seeds: fuzz/corpus/TARGET (those up to 64 KB; the rest are replayed by `cargo test` only).
# Findings: fuzz/target/afl-out/TARGET/default/{crashes,hangs}; to keep a crash as a
# regression seed, copy it into fuzz/corpus/TARGET/ once fixed.
#
# Environment: FUZZ_MEMORY_MB (default 1024) caps the target's memory (afl-fuzz -m), so
# unbounded allocation shows up as a crash; FUZZ_TIMEOUT_MS (default 1000) is the hang
# threshold (afl-fuzz -t).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
fuzz=$root/fuzz

targets() {
    for f in "$fuzz"/src/bin/*.rs; do
        basename "$f" .rs
    done
}

usage() {
    echo "usage: $0 --list | TARGET SECONDS" >&2
    exit 2
}

if [ "${1:-}" = "--list" ]; then
    targets
    exit 0
fi
[ $# -eq 2 ] || usage
target=$1
seconds=$2
[[ $seconds =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || usage
if [ ! -f "$fuzz/src/bin/$target.rs" ]; then
    echo "unknown target $target; one of:" >&2
    targets >&2
    exit 2
fi

# cargo-afl and its AFL++ build.
if ! command -v cargo-afl >/dev/null 2>&1; then
    echo "== installing cargo-afl (builds AFL++ from its bundled source)"
    cargo install cargo-afl --locked
fi
if ! cargo afl --version 2>/dev/null | grep -q 'AFL++ version'; then
    echo "== building AFL++ for this toolchain"
    cargo afl config --build --force
fi

# The instrumented binary. Its own target dir: the RUSTFLAGS differ from a plain build.
# AFL_NO_CFG_FUZZING: build dependencies as they ship (no `cfg(fuzzing)` shortcuts).
export CARGO_TARGET_DIR=$fuzz/target/afl
echo "== building $target (cargo afl build --release)"
AFL_NO_CFG_FUZZING=1 cargo afl build --release --features afl \
    --manifest-path "$fuzz/Cargo.toml" --bin "$target"
bin=$CARGO_TARGET_DIR/release/$target

in=$fuzz/target/afl-in/$target
out=$fuzz/target/afl-out/$target
rm -rf "$in" "$out"
mkdir -p "$in" "$out"
find "$fuzz/corpus/$target" -maxdepth 1 -type f -size -64k -exec cp {} "$in/" \;
if [ -z "$(ls -A "$in")" ]; then
    echo "no seed under 64 KB in fuzz/corpus/$target" >&2
    exit 2
fi

# This sandbox cannot tune the CPU governor or core_pattern, and the cores are shared.
export AFL_SKIP_CPUFREQ=1
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_NO_AFFINITY=1
export AFL_NO_UI=1
export AFL_QUIET=1

echo "== fuzzing $target for ${seconds}s (output in ${out#"$root"/})"
status=0
cargo afl fuzz -V "$seconds" -m "${FUZZ_MEMORY_MB:-1024}" -t "${FUZZ_TIMEOUT_MS:-1000}" \
    -i "$in" -o "$out" -- "$bin" >"$out/afl-fuzz.log" 2>&1 || status=$?
stats=$out/default/fuzzer_stats
if [ ! -f "$stats" ]; then
    tail -n 40 "$out/afl-fuzz.log" >&2
    echo "afl-fuzz did not start (exit $status)" >&2
    exit 1
fi

stat() {
    awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"
}
execs=$(stat execs_done)
run_time=$(stat run_time)
crashes=$(stat saved_crashes)
hangs=$(stat saved_hangs)
corpus=$(stat corpus_count)
edges=$(stat edges_found)
per_sec=$((execs / (run_time > 0 ? run_time : 1)))
echo "== $target: ${run_time}s, $execs executions, $per_sec exec/s, corpus $corpus, edges $edges, crashes $crashes, hangs $hangs"
if [ "${crashes:-0}" -gt 0 ]; then
    echo "crashing inputs (replay: cargo test in fuzz/ after copying one into fuzz/corpus/$target/):" >&2
    ls "$out/default/crashes" >&2
    exit 1
fi

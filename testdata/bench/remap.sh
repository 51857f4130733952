#!/bin/sh
# Benchmark of the extent map and the remap engine: prints figures
# and ratios measured in one run. Needs root (loop devices, mount). Not a test.
# Usage: remap.sh [FILTER]  (default bench_remap::, both trials; bench_remap::extent_map
# for the extent map alone)
#   LOOPKIT_BENCH_MIB   size of the data file (default 512)
#   LOOPKIT_BENCH_READS random 4 KiB reads per thread, 32 threads (default 4000)
#   LOOPKIT_BENCH_ROUNDS rounds of extent-map lookups (default 5)
set -eu
cd "$(dirname "$0")/../.."
echo "machine: $(nproc) cores, $(grep MemTotal /proc/meminfo | tr -s ' '), kernel $(uname -r); load: $(cat /proc/loadavg)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
cargo build --release --bins --quiet
LOOPKIT_BIN="$PWD/target/release/loopkit" cargo test --release --quiet --test tests -- --ignored --test-threads 1 "${1:-bench_remap::}" 2>&1 | grep -v '^$'

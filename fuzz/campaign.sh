#!/bin/sh
# A fuzzing campaign: each target up to RUNS executions or SECONDS seconds (whichever comes
# first), one process, nice 19, corpora in fuzz/corpus/TARGET (kept between campaigns, so
# executions accumulate), crashes in fuzz/artifacts/TARGET. Appends one line per target to
# fuzz/campaigns.tsv (date, target, executions, seconds, exec/s, corpus units, peak RSS MiB,
# result, sanitizer, commit) — the figures docs/TESTING.md records.
#
# Built once with `cargo fuzz build -O --debug-assertions` (overflow checks on, see
# Cargo.toml) and the binaries run directly (`cargo fuzz run` would rebuild per target).
# Sanitizer: FUZZ_SANITIZER, default `none`. The fuzzed code is safe Rust (`unsafe` is
# confined to lib/sys.rs, lib/remap/engine.rs and lib/output/direct.rs, none of which a
# target reaches), so AddressSanitizer finds nothing there that a panic would not, and
# costs 3-10x in executions per second; FUZZ_SANITIZER=address runs with it.
# Usage: fuzz/campaign.sh [RUNS] [SECONDS] [TARGET...]   (defaults 10000000, 3600, all targets)
set -u
cd "$(dirname "$0")"
runs=${1:-10000000}; secs=${2:-3600}; shift 2 2>/dev/null || shift $#
targets=${*:-luks2_json fs_probe loopaes_keyfile dvdisaster_headers luks_header ext iso9660 open_verify repair rescue_map damage_map}
san=${FUZZ_SANITIZER:-none}
[ -d corpus ] || sh ./seed.sh
cargo +nightly fuzz build -O --debug-assertions -s "$san" --target-dir "target-$san" >/dev/null 2>&1 ||
    { echo "fuzz build failed" >&2; exit 2; }
bin=target-$san/x86_64-unknown-linux-gnu/release
rev=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
git diff --quiet HEAD -- ../lib 2>/dev/null || rev="$rev+dirty"
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log=$(mktemp)
    start=$(date +%s)
    nice -n 19 "$bin/$t" "corpus/$t" -runs="$runs" -max_total_time="$secs" -rss_limit_mb=2048 \
        -timeout=30 -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    end=$(date +%s)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
    units=$(ls "corpus/$t" | wc -l)
    el=$((end - start)); [ "$el" -gt 0 ] || el=1
    result=ok; [ "$rc" -eq 0 ] || result="FAILED rc=$rc (see artifacts/$t)"
    grep -q 'libFuzzer: run interrupted' "$log" && result="interrupted (SIGINT)"
    ls "artifacts/$t" | grep -q . && result="$result; artifacts: $(ls "artifacts/$t" | tr '\n' ' ')"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "${execs:-?}" "$el" \
        "$(( ${execs:-0} / el ))" "$units" "${rss:-?}" "$result" "$san" "$rev" | tee -a campaigns.tsv
    [ "$rc" -eq 0 ] || tail -40 "$log" >&2
    rm -f "$log"
done

#!/bin/sh
# Benchmark: what the safety checks of `attach --remap` cost — the state thread's lease poll
# (every 200 ms) and FIEMAP re-validation of the extent map (every second) — measured as fio
# throughput through the ublk device with them on (default) and off
# (`LOOPKIT_REMAP_REVALIDATE_MS=0`, a benchmark-only knob), in the QEMU guest of tests/vm/
# (TCG: absolute figures are meaningless, ratios within one run are not). Two images on an ext4
# virtio disk: `contiguous` (256 MiB written sequentially: a handful of extents) and
# `fragmented` (128 MiB written by 4 KiB O_DIRECT writes in random order: tens of thousands of
# extents, the worst case for re-validation). Workloads: 4 KiB random read and random write, QD32,
# libaio, direct. ROUNDS rounds, on/off order alternating, median per cell.
# Then, on the host, the CPU time of one re-validation of a 1 M-extent map
# (`bench_revalidate::revalidate_map_cost`, an ignored trial of the test binary).
#
# Usage: testdata/bench/remap-revalidate.sh [SUITE] [SECONDS] [ROUNDS]   (SUITE: trixie (default)
# or trixie-backports; SECONDS per fio run, default 5; ROUNDS default 5). Run as root. Prints
# Markdown.
set -eu
suite=${1:-trixie}
secs=${2:-5}
rounds=${3:-5}
root=$(cd "$(dirname "$0")/../.." && pwd)
lk="$root/target/release/loopkit"
[ -x "$lk" ] || (cd "$root" && cargo build --release --bins -q)
command -v fio >/dev/null || { echo "fio is not installed" >&2; exit 2; }
work=$(mktemp -d /var/tmp/loopkit-bench-reval.XXXXXX)
trap 'rm -rf "$work"' EXIT
truncate -s 512M "$work/ext4.img"
mkfs.ext4 -q -F "$work/ext4.img"
cp "$lk" "$work/loopkit"
cat >"$work/bench.sh" <<EOF
LK='$work/loopkit'
SECS=$secs
ROUNDS=$rounds
EOF
cat >>"$work/bench.sh" <<'EOF'
mkdir -p /tmp/h
mount -t ext4 /dev/vda /tmp/h
echo "kernel:$(uname -r)"
dd if=/dev/zero of=/tmp/h/contiguous bs=1M count=256 oflag=direct status=none
truncate -s 128M /tmp/h/fragmented
fio --name=frag --filename=/tmp/h/fragmented --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
    --iodepth=16 --size=128M --randrepeat=1 --output-format=terse >/dev/null
sync
echo "extents:contiguous=$(filefrag /tmp/h/contiguous | sed 's/.*: \([0-9]*\) extents\{0,1\} found/\1/')"
echo "extents:fragmented=$(filefrag /tmp/h/fragmented | sed 's/.*: \([0-9]*\) extents\{0,1\} found/\1/')"
one() { # IMAGE KNOB ROUND
    LOOPKIT_REMAP_REVALIDATE_MS=$2 "$LK" attach --remap "/tmp/h/$1" >/tmp/r.out 2>/tmp/r.err &
    for _ in $(seq 300); do [ -s /tmp/r.out ] && break; sleep 0.1; done
    dev=$(head -n 1 /tmp/r.out)
    grep -q "not remapping" /tmp/r.err && { echo "remap refused:" >&2; cat /tmp/r.err >&2; }
    echo none >/sys/block/$(basename "$dev")/queue/scheduler 2>/dev/null || true
    size=$(stat -c %s "/tmp/h/$1")
    for w in randread randwrite; do
        fio --name=b --filename="$dev" --ioengine=libaio --direct=1 --rw=$w --bs=4k --iodepth=32 \
            --time_based --runtime="$SECS" --ramp_time=1 --size="$size" --norandommap --randrepeat=1 \
            --output-format=json >/tmp/fio.json
        python3 -c 'import json,sys; j=json.load(open("/tmp/fio.json"))["jobs"][0]; print("result:%s:%s:%s:%s:%.0f" % (sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], j["read"]["iops"]+j["write"]["iops"]))' "$1" "$2" "$w" "$3"
    done
    "$LK" attach --list --json | python3 -c 'import json,sys; d=json.load(sys.stdin)["devices"]; print("state:%s" % (d[0]["remap"] if d else "none"))'
    "$LK" detach "$dev"
    wait
}
for r in $(seq "$ROUNDS"); do
    for img in contiguous fragmented; do
        if [ $((r % 2)) = 1 ]; then one $img 1000 $r; one $img 0 $r; else one $img 0 $r; one $img 1000 $r; fi
    done
done
umount /tmp/h
EOF
LOOPKIT_VM_SUITE=$suite flock /tmp/loopkit-vm.lock sh "$root/tests/vm/run.sh" -w "$work/job" -d "$work/ext4.img" -t 3600 -m 768 -c 2 "$work/bench.sh" >&2 || {
    tail -n 30 "$work/job/stderr" >&2
    exit 1
}
kernel=$(sed -n 's/^kernel://p' "$work/job/stdout")
echo "fio 4 KiB QD32 through \`attach --remap\` in the TCG guest, kernel $kernel, $secs s per run, $rounds rounds (median), $(date -u +%Y-%m-%d), host $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg):"
echo
sed -n 's/^extents:/extents: /p' "$work/job/stdout"
if grep -q '^state:' "$work/job/stdout" && grep '^state:' "$work/job/stdout" | grep -qv '^state:active$'; then
    echo "WARNING: remapping was not active at the end of some runs:"; grep '^state:' "$work/job/stdout" | sort | uniq -c
fi
echo
echo "| image | workload | checks on (IOPS) | checks off (IOPS) | on/off |"
echo "|---|---|---:|---:|---:|"
sed -n 's/^result://p' "$work/job/stdout" | python3 -c '
import sys, statistics
cells = {}
for line in sys.stdin:
    img, knob, w, _, iops = line.strip().split(":")
    cells.setdefault((img, w), {}).setdefault(knob, []).append(float(iops))
for (img, w), v in sorted(cells.items()):
    on, off = statistics.median(v.get("1000", [0])), statistics.median(v.get("0", [0]))
    print("| %s | 4k %s | %.0f | %.0f | %.3f |" % (img, w, on, off, on / off if off else float("nan")))
'
echo
echo "Host microbenchmark (one re-validation of a large map, this machine's kernel):"
echo
(cd "$root" && LOOPKIT_BIN="$lk" cargo test --release --locked --test tests -q -- --ignored --nocapture bench_revalidate:: 2>&1 | grep '^revalidate_map:' | sed 's/^/    /')

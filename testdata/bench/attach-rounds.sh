#!/bin/sh
# Benchmark: `loopkit attach --remap` against the kernel's own block paths in interleaved rounds,
# in the QEMU guest of tests/vm/ (TCG: absolute figures are meaningless, ratios inside one run are
# what the run is for). Same image, disks and fio jobs as testdata/bench/attach.sh (ext4 virtio
# disk holding a fully written 256 MiB image, a separate 256 MiB raw virtio disk, both
# `cache=none`; fio libaio, direct, scheduler none: 4 KiB random read QD32, 1 MiB sequential read
# QD4, 4 KiB random write QD32), restricted to the targets the remap figures compare:
#   raw                 the raw virtio disk
#   losetup-dio         `losetup --direct-io=on` on the image file
#   remap               this build's `attach --remap` (lease poll, state checks and map
#                       re-validation on: the default)
#   remap-nochecks      the same with `LOOPKIT_REMAP_REVALIDATE_MS=0` (no lease poll, state check
#                       or re-validation on the 200 ms timer; the per-write checks stay)
#   remap-baseline      with LOOPKIT_BASELINE=PATH: another build's `attach --remap` (e.g. the
#                       build before the durability and file-system-state changes)
# Every round runs every target once, in an order rotated by one target per round; the table is
# the median per cell, and the ratios are medians of the per-round ratios (each computed from
# runs minutes apart, not across rounds).
#
# Usage: testdata/bench/attach-rounds.sh [SUITE] [SECONDS] [ROUNDS]   (SUITE: trixie (6.12,
# default) or trixie-backports (7.x); SECONDS per fio run, default 4; ROUNDS default 3). Run as
# root. Prints Markdown.
set -eu
suite=${1:-trixie}
secs=${2:-4}
rounds=${3:-3}
root=$(cd "$(dirname "$0")/../.." && pwd)
lk="$root/target/release/loopkit"
[ -x "$lk" ] || (cd "$root" && cargo build --release --bins -q)
command -v fio >/dev/null || { echo "fio is not installed" >&2; exit 2; }
work=$(mktemp -d /var/tmp/loopkit-bench-rounds.XXXXXX)
trap 'rm -rf "$work"' EXIT
truncate -s 640M "$work/ext4.img"
mkfs.ext4 -q -F "$work/ext4.img"
truncate -s 256M "$work/raw.img"
dd if=/dev/zero of="$work/raw.img" bs=1M count=256 conv=notrunc status=none
# The guest runs private copies (a rebuild during the run must not change the binary under it).
cp "$lk" "$work/loopkit"
targets="raw losetup-dio remap remap-nochecks"
if [ -n "${LOOPKIT_BASELINE:-}" ]; then
    cp "$LOOPKIT_BASELINE" "$work/baseline"
    targets="$targets remap-baseline"
fi
cat >"$work/bench.sh" <<EOF
LK='$work/loopkit'
BASE='$work/baseline'
SECS=$secs
ROUNDS=$rounds
TARGETS='$targets'
EOF
cat >>"$work/bench.sh" <<'EOF'
mkdir -p /tmp/h
mount -t ext4 /dev/vda /tmp/h
dd if=/dev/zero of=/tmp/h/img bs=1M count=256 oflag=direct status=none
sync
run() { # TARGET-NAME DEVICE ROUND
    echo none >/sys/block/$(basename "$(readlink -f "$2")")/queue/scheduler 2>/dev/null || true
    for w in "randread 4k 32" "read 1M 4" "randwrite 4k 32"; do
        set -- "$1" "$2" "$3" $w
        fio --name=b --filename="$2" --ioengine=libaio --direct=1 --rw="$4" --bs="$5" --iodepth="$6" \
            --time_based --runtime="$SECS" --ramp_time=1 --size=256M --randrepeat=1 --norandommap \
            --output-format=json >/tmp/fio.json
        python3 -c 'import json,sys; j=json.load(open("/tmp/fio.json"))["jobs"][0]; r=j["read"]["iops"]+j["write"]["iops"]; b=(j["read"]["bw"]+j["write"]["bw"])/1024; print("result:%s:%s:%s:%.0f:%.1f" % (sys.argv[1], sys.argv[2], sys.argv[3], r, b))' "$1" "$3" "$4"
    done
}
remap() { # NAME BINARY KNOB ROUND
    if [ -n "$3" ]; then export LOOPKIT_REMAP_REVALIDATE_MS="$3"; fi
    "$2" attach --remap /tmp/h/img >/tmp/r.out 2>/tmp/r.err &
    unset LOOPKIT_REMAP_REVALIDATE_MS
    for _ in $(seq 300); do [ -s /tmp/r.out ] && break; sleep 0.1; done
    dev=$(head -n 1 /tmp/r.out)
    grep -q "not remapping" /tmp/r.err && { echo "remap refused:" >&2; cat /tmp/r.err >&2; }
    run "$1" "$dev" "$4"
    "$2" attach --list --json | python3 -c 'import json,sys; d=json.load(sys.stdin)["devices"]; print("state:%s:%s" % (sys.argv[1], d[0]["remap"] if d else "none"))' "$1"
    "$2" detach "$dev"
    wait
}
one() { # TARGET ROUND
    case $1 in
    raw) run raw /dev/vdb "$2" ;;
    losetup-dio) dev=$(losetup -f --show --direct-io=on /tmp/h/img); run losetup-dio "$dev" "$2"; losetup -d "$dev" ;;
    remap) remap remap "$LK" "" "$2" ;;
    remap-nochecks) remap remap-nochecks "$LK" 0 "$2" ;;
    remap-baseline) remap remap-baseline "$BASE" "" "$2" ;;
    esac
}
echo "kernel:$(uname -r)"
set -- $TARGETS
n=$#
for r in $(seq "$ROUNDS"); do
    # Rotate the order by one target per round.
    i=0
    for t in $TARGETS; do
        k=$(( (i + r - 1) % n + 1 ))
        eval "one \${$k} $r"
        i=$((i + 1))
    done
done
umount /tmp/h
EOF
load0=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date -u +%H:%M)
LOOPKIT_VM_SUITE=$suite flock /tmp/loopkit-vm.lock sh "$root/tests/vm/run.sh" -w "$work/job" -d "$work/ext4.img" -d "$work/raw.img" -t 3600 -m 1024 -c 2 "$work/bench.sh" >&2 || {
    tail -n 30 "$work/job/stderr" >&2
    exit 1
}
kernel=$(sed -n 's/^kernel://p' "$work/job/stdout")
echo "fio in the TCG guest, kernel $kernel, $secs s per run, $rounds interleaved rounds (median), $(date -u +%Y-%m-%d) $t0–$(date -u +%H:%M) UTC, host $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), load $load0 before, $(cut -d' ' -f1-3 /proc/loadavg) after:"
echo
if grep '^state:' "$work/job/stdout" | grep -qv ':active$'; then
    echo "WARNING: remapping was not active at the end of some runs:"; grep '^state:' "$work/job/stdout" | sort | uniq -c
fi
sed -n 's/^result://p' "$work/job/stdout" | python3 -c '
import sys, statistics
cells = {}   # (target, workload) -> {round: value}
order = []
for line in sys.stdin:
    t, r, w, iops, bw = line.strip().split(":")
    if t not in order:
        order.append(t)
    cells.setdefault((t, w), {})[r] = float(bw) if w == "read" else float(iops)
ws = ["randread", "read", "randwrite"]
med = lambda v: statistics.median(v) if v else float("nan")
print("| target | 4k randread QD32 IOPS | 1M seqread QD4 MiB/s | 4k randwrite QD32 IOPS |")
print("|---|---:|---:|---:|")
for t in order:
    print("| %s | %s |" % (t, " | ".join("%.0f" % med(list(cells.get((t, w), {}).values())) for w in ws)))
print()
def ratio(a, b, w):
    x, y = cells.get((a, w), {}), cells.get((b, w), {})
    return med([x[r] / y[r] for r in x if r in y and y[r] > 0])
pairs = [("remap", "raw"), ("remap", "losetup-dio"), ("remap", "remap-nochecks"), ("remap", "remap-baseline"), ("remap-baseline", "raw"), ("remap-baseline", "losetup-dio")]
print("| ratio (median of per-round ratios) | randread | seqread | randwrite |")
print("|---|---:|---:|---:|")
for a, b in pairs:
    if a in order and b in order:
        print("| %s / %s | %s |" % (a, b, " | ".join("%.2f" % ratio(a, b, w) for w in ws)))
print()
rounds = sorted({r for v in cells.values() for r in v}, key=int)
print("Single runs (randread IOPS / seqread MiB/s / randwrite IOPS):")
print()
print("| target | %s |" % " | ".join("round %s" % r for r in rounds))
print("|---|" + "---|" * len(rounds))
for t in order:
    print("| %s | %s |" % (t, " | ".join(" / ".join("%.0f" % cells.get((t, w), {}).get(r, float("nan")) for w in ws) for r in rounds)))
'

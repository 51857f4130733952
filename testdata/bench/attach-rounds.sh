#!/bin/sh
# Benchmark: `loopkit attach --remap` and `--decrypt` against the kernel's own block paths in
# interleaved rounds, in the QEMU guest of tests/vm/ (TCG: absolute figures are meaningless,
# ratios inside one run are what the run is for). Same image, disks and fio jobs as
# testdata/bench/attach.sh (ext4 virtio disk holding a fully written 256 MiB image, a separate
# 256 MiB raw virtio disk, both `cache=none`; fio libaio, direct, scheduler none: 4 KiB random
# read QD32, 1 MiB sequential read QD4, 4 KiB random write QD32, 1 MiB sequential write QD4),
# restricted to the targets the remap figures compare:
#   raw                 the raw virtio disk
#   losetup-dio         `losetup --direct-io=on` on the image file
#   remap               this build's `attach --remap` (default queues, checks on)
#   remap-nochecks      with ROUNDS_NOCHECKS=1 only: the same with `LOOPKIT_REMAP_REVALIDATE_MS=0`
#                       (no lease poll, state check or re-validation on the 200 ms timer)
#   remap-baseline      with LOOPKIT_BASELINE=PATH: another build's `attach --remap` (e.g. main's)
# and, 1 MiB sequential reads QD4 only, on a 128 MiB cryptoloop-style image (aes-cbc-plain,
# 256-bit key, ripemd160 passphrase hash; written by cryptsetup, ext4 inside):
#   crypt-dm            `cryptsetup open --type plain` over `losetup --direct-io=on`
#   crypt               this build's `attach --decrypt`
#   crypt-baseline      with LOOPKIT_BASELINE: that build's `attach --decrypt`
# Every round runs every target once; the order is rotated by one target per round and reversed
# on every other round. The tables are the median per cell, the ratios medians of the per-round
# ratios (each from runs minutes apart, not across rounds), and the server's CPU time (utime +
# stime of the attach process during the fio run and its 1 s ramp, ms per GiB moved; under TCG it includes the
# emulation of the virtual disk's notifications the server's submissions trigger).
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
. "$root/testdata/bench/attach-common.sh"
bench_setup rounds
targets="raw losetup-dio remap"
[ -n "${ROUNDS_NOCHECKS:-}" ] && targets="$targets remap-nochecks"
[ -n "${LOOPKIT_BASELINE:-}" ] && targets="$targets remap-baseline"
targets="$targets crypt-dm crypt"
if [ -n "${LOOPKIT_BASELINE:-}" ]; then
    cp "$LOOPKIT_BASELINE" "$work/baseline"
    targets="$targets crypt-baseline"
fi
cat >"$work/bench.sh" <<EOF
LK='$work/loopkit'
BASE='$work/baseline'
SECS=$secs
ROUNDS=$rounds
TARGETS='$targets'
EOF
bench_guest_image "$work/bench.sh"
cat >>"$work/bench.sh" <<'EOF'
# The --decrypt image: written through dm-crypt by cryptsetup itself, ext4 inside so that
# loopkit's detection confirms the parameters.
printf 'benchpass\n' >/tmp/pass
dd if=/dev/zero of=/tmp/h/enc bs=1M count=128 status=none
dev=$(losetup -f --show --direct-io=on /tmp/h/enc)
cryptsetup open --type plain --cipher aes-cbc-plain --key-size 256 --hash ripemd160 "$dev" benchenc </tmp/pass
mkfs.ext4 -q /dev/mapper/benchenc
cryptsetup close benchenc
losetup -d "$dev"
sync
cpu_of() { [ "$1" = 0 ] && echo 0 || awk '{print $14 + $15}' /proc/$1/stat; }
fio_one() { # TARGET-NAME DEVICE ROUND PID RW BS QD [SIZE]
    c0=$(cpu_of "$4")
    fio --name=b --filename="$2" --ioengine=libaio --direct=1 --rw="$5" --bs="$6" --iodepth="$7" \
        --time_based --runtime="$SECS" --ramp_time=1 --size="${8:-256M}" --randrepeat=1 --norandommap \
        --output-format=json >/tmp/fio.json
    c1=$(cpu_of "$4")
    python3 -c 'import json,sys; j=json.load(open("/tmp/fio.json"))["jobs"][0]; r=j["read"]["iops"]+j["write"]["iops"]; b=(j["read"]["bw"]+j["write"]["bw"])/1024; io=(j["read"]["io_bytes"]+j["write"]["io_bytes"])/2**30; cpu=(int(sys.argv[5])-int(sys.argv[4]))*1000/int(sys.argv[6]); print("result:%s:%s:%s%s:%.0f:%.1f:%s" % (sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[7], r, b, ("%.0f" % (cpu/io)) if int(sys.argv[4]) or int(sys.argv[5]) else "-"))' \
        "$1" "$3" "$5" "$c0" "$c1" "$(getconf CLK_TCK)" "$6"
}
run() { # TARGET-NAME DEVICE ROUND PID
    echo none >/sys/block/$(basename "$(readlink -f "$2")")/queue/scheduler 2>/dev/null || true
    for w in "randread 4k 32" "read 1M 4" "randwrite 4k 32" "write 1M 4"; do
        fio_one "$1" "$2" "$3" "$4" $w
    done
}
serve() { # IMAGE BINARY KNOB ARGS... (sets dev, pid)
    img=$1 bin=$2 knob=$3; shift 3
    if [ -n "$knob" ]; then export LOOPKIT_REMAP_REVALIDATE_MS="$knob"; fi
    "$bin" attach "$@" "$img" >/tmp/r.out 2>/tmp/r.err &
    pid=$!
    unset LOOPKIT_REMAP_REVALIDATE_MS
    for _ in $(seq 600); do [ -s /tmp/r.out ] && break; sleep 0.1; done
    dev=$(head -n 1 /tmp/r.out)
}
remap() { # NAME BINARY KNOB ROUND
    serve /tmp/h/img "$2" "$3" --remap
    grep -q "not remapping" /tmp/r.err && { echo "remap refused:" >&2; cat /tmp/r.err >&2; }
    run "$1" "$dev" "$4" "$pid"
    "$2" attach --list --json | python3 -c 'import json,sys; d=json.load(sys.stdin)["devices"]; print("state:%s:%s:queues %s" % (sys.argv[1], d[0]["remap"] if d else "none", d[0]["queues"] if d else "-"))' "$1"
    "$2" detach "$dev"
    wait
}
crypt() { # NAME BINARY ROUND
    serve /tmp/h/enc "$2" "" --decrypt --passphrase-file /tmp/pass
    fio_one "$1" "$dev" "$3" "$pid" read 1M 4 128M
    "$2" detach "$dev"
    wait
}
one() { # TARGET ROUND
    case $1 in
    raw) run raw /dev/vdb "$2" 0 ;;
    losetup-dio) dev=$(losetup -f --show --direct-io=on /tmp/h/img); run losetup-dio "$dev" "$2" 0; losetup -d "$dev" ;;
    remap) remap remap "$LK" "" "$2" ;;
    remap-nochecks) remap remap-nochecks "$LK" 0 "$2" ;;
    remap-baseline) remap remap-baseline "$BASE" "" "$2" ;;
    crypt-dm)
        ldev=$(losetup -f --show --direct-io=on /tmp/h/enc)
        cryptsetup open --type plain --cipher aes-cbc-plain --key-size 256 --hash ripemd160 "$ldev" benchenc </tmp/pass
        fio_one crypt-dm /dev/mapper/benchenc "$2" 0 read 1M 4 128M
        cryptsetup close benchenc
        losetup -d "$ldev" ;;
    crypt) crypt crypt "$LK" "$2" ;;
    crypt-baseline) crypt crypt-baseline "$BASE" "$2" ;;
    esac
}
echo "kernel:$(uname -r)"
set -- $TARGETS
n=$#
for r in $(seq "$ROUNDS"); do
    # Rotate the order by one target per round; every other round runs it backwards.
    order=""
    i=0
    for t in $TARGETS; do
        k=$(( (i + r - 1) % n + 1 ))
        eval "t=\${$k}"
        if [ $((r % 2)) = 0 ]; then order="$t $order"; else order="$order $t"; fi
        i=$((i + 1))
    done
    echo "order:$r:$order"
    for t in $order; do one "$t" "$r"; done
done
umount /tmp/h
EOF
load0=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date -u +%H:%M)
bench_vm "$work/bench.sh" 3600
kernel=$(sed -n 's/^kernel://p' "$work/job/stdout")
echo "fio in the TCG guest, kernel $kernel, $secs s per run, $rounds interleaved rounds (median), $(date -u +%Y-%m-%d) $t0–$(date -u +%H:%M) UTC, host $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), load $load0 before, $(cut -d' ' -f1-3 /proc/loadavg) after:"
echo
if grep '^state:' "$work/job/stdout" | grep -qv ':active:'; then
    echo "WARNING: remapping was not active at the end of some runs:"; grep '^state:' "$work/job/stdout" | sort | uniq -c
fi
grep '^order:' "$work/job/stdout" | sed 's/^order:\([0-9]*\):/round \1 order:/'
grep '^state:' "$work/job/stdout" | sort | uniq -c | sed 's/^/    /'
echo
sed -n 's/^result://p' "$work/job/stdout" | python3 -c '
import sys, statistics
cells, cpu = {}, {}   # (target, workload) -> {round: value}
order = []
for line in sys.stdin:
    t, r, w, iops, bw, c = line.strip().split(":")
    if t not in order:
        order.append(t)
    cells.setdefault((t, w), {})[r] = float(bw) if w.endswith("1M") else float(iops)
    if c != "-":
        cpu.setdefault((t, w), []).append(float(c))
ws = ["randread4k", "read1M", "randwrite4k", "write1M"]
names = {"randread4k": "4k randread QD32 IOPS", "read1M": "1M seqread QD4 MiB/s", "randwrite4k": "4k randwrite QD32 IOPS", "write1M": "1M seqwrite QD4 MiB/s"}
med = lambda v: statistics.median(v) if v else float("nan")
fmt = lambda v: "-" if v != v else "%.0f" % v
blocks = [t for t in order if not t.startswith("crypt")]
print("| target | %s |" % " | ".join(names[w] for w in ws))
print("|---|" + "---:|" * len(ws))
for t in blocks:
    print("| %s | %s |" % (t, " | ".join(fmt(med(list(cells.get((t, w), {}).values()))) for w in ws)))
print()
def ratio(a, b, w):
    x, y = cells.get((a, w), {}), cells.get((b, w), {})
    return med([x[r] / y[r] for r in x if r in y and y[r] > 0])
goals = {("remap", "raw"): "0.95", ("remap", "losetup-dio"): "1.00"}
pairs = [("remap", "raw"), ("remap", "losetup-dio"), ("remap", "remap-baseline"), ("remap-baseline", "raw"), ("remap-baseline", "losetup-dio"), ("remap", "remap-nochecks"), ("losetup-dio", "raw")]
print("| ratio (median of per-round ratios) | goal | randread | seqread | randwrite | seqwrite |")
print("|---|---:|---:|---:|---:|---:|")
for a, b in pairs:
    if a in order and b in order:
        print("| %s / %s | %s | %s |" % (a, b, goals.get((a, b), ""), " | ".join("%.2f" % ratio(a, b, w) for w in ws)))
print()
print("| server CPU, ms per GiB (median) | randread | seqread | randwrite | seqwrite |")
print("|---|---:|---:|---:|---:|")
for t in blocks:
    if any((t, w) in cpu for w in ws):
        print("| %s | %s |" % (t, " | ".join(fmt(med(cpu.get((t, w), []))) for w in ws)))
print()
crypts = [t for t in order if t.startswith("crypt")]
if crypts:
    print("| target (cryptoloop aes-cbc-plain 256) | 1M seqread QD4 MiB/s | server CPU ms/GiB |")
    print("|---|---:|---:|")
    for t in crypts:
        print("| %s | %s | %s |" % (t, fmt(med(list(cells.get((t, "read1M"), {}).values()))), fmt(med(cpu.get((t, "read1M"), [])))))
    print()
    for a, b, g in [("crypt", "crypt-dm", "0.90"), ("crypt", "crypt-baseline", ""), ("crypt-baseline", "crypt-dm", "")]:
        if a in order and b in order:
            print("ratio %s / %s (median of per-round ratios): %.2f%s" % (a, b, ratio(a, b, "read1M"), " (goal >= %s)" % g if g else ""))
    print()
rounds = sorted({r for v in cells.values() for r in v}, key=int)
print("Single runs (randread IOPS / seqread MiB/s / randwrite IOPS / seqwrite MiB/s; crypt: seqread MiB/s):")
print()
print("| target | %s |" % " | ".join("round %s" % r for r in rounds))
print("|---|" + "---|" * len(rounds))
for t in order:
    print("| %s | %s |" % (t, " | ".join(" / ".join(fmt(cells.get((t, w), {}).get(r, float("nan"))) for w in ws if (t, w) in cells) for r in rounds)))
'

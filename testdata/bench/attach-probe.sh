#!/bin/sh
# Diagnosis, not a benchmark table: where 1 MiB sequential reads through `attach --remap` lose.
# In the QEMU guest of tests/vm/ (same disks and image as testdata/bench/attach.sh: ext4 virtio
# disk /dev/vda holding a fully written 256 MiB image, raw virtio disk /dev/vdb), for each target
# it prints the device's queue limits (max_sectors_kb, max_hw_sectors_kb, max_segments,
# max_segment_size, nr_requests, hardware queues) and runs fio (libaio, direct) 1 MiB sequential
# reads QD4 and 4 KiB random reads QD32, recording the /sys/block/*/stat deltas of the target and
# of the disk below it (requests completed, KiB per request, requests merged) and the ublk
# server's CPU time (utime + stime of its process, ms per GiB moved).
#
# Targets: raw (vdb), losetup-dio (on the image), remap (this build: target/release/loopkit, or
# LOOPKIT_BIN=PATH) with its default queues, remap-q1 (the same with --queues 1), and with
# LOOPKIT_BASELINE=PATH remap-baseline (another build, e.g. main's).
#
# Usage: testdata/bench/attach-probe.sh [SUITE] [SECONDS]   (SUITE trixie = 6.12, copy path;
# trixie-backports = 7.x, zero copy; default 4 s per fio run). Run as root. Prints lines
# `limits:TARGET:...` and `io:TARGET:WORKLOAD:...`.
set -eu
suite=${1:-trixie}
secs=${2:-4}
root=$(cd "$(dirname "$0")/../.." && pwd)
lk=${LOOPKIT_BIN:-$root/target/release/loopkit}
. "$root/testdata/bench/attach-common.sh"
bench_setup probe
targets="raw losetup-dio remap remap-q1"
if [ -n "${LOOPKIT_BASELINE:-}" ]; then
    cp "$LOOPKIT_BASELINE" "$work/baseline"
    targets="$targets remap-baseline"
fi
cat >"$work/probe.sh" <<EOF
LK='$work/loopkit'
BASE='$work/baseline'
SECS=$secs
TARGETS='$targets'
EOF
bench_guest_image "$work/probe.sh"
cat >>"$work/probe.sh" <<'EOF'
sync
echo "kernel:$(uname -r)"
limits() { # NAME DEV
    b=$(basename "$(readlink -f "$2")")
    q=/sys/block/$b/queue
    hw=$(ls -d /sys/block/$b/mq/* 2>/dev/null | wc -l)
    echo "limits:$1:$b max_sectors_kb=$(cat $q/max_sectors_kb) max_hw_sectors_kb=$(cat $q/max_hw_sectors_kb) max_segments=$(cat $q/max_segments) max_segment_size=$(cat $q/max_segment_size) nr_requests=$(cat $q/nr_requests) hw_queues=$hw"
}
stat_of() { cat /sys/block/$1/stat; }
run() { # NAME DEV LOWER PID
    b=$(basename "$(readlink -f "$2")")
    echo none >/sys/block/$b/queue/scheduler 2>/dev/null || true
    limits "$1" "$2"
    for w in "read 1M 4" "randread 4k 32"; do
        set -- "$1" "$2" "$3" "$4" $w
        s0=$(stat_of "$b"); l0=$(stat_of "$3")
        c0=0; [ "$4" != 0 ] && c0=$(awk '{print $14 + $15}' /proc/$4/stat)
        fio --name=b --filename="$2" --ioengine=libaio --direct=1 --rw="$5" --bs="$6" --iodepth="$7" \
            --time_based --runtime="$SECS" --size=256M --randrepeat=1 --norandommap \
            --output-format=json >/tmp/fio.json
        s1=$(stat_of "$b"); l1=$(stat_of "$3")
        c1=0; [ "$4" != 0 ] && c1=$(awk '{print $14 + $15}' /proc/$4/stat)
        python3 - "$1" "$5" "$s0" "$s1" "$l0" "$l1" "$c0" "$c1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
name, w, s0, s1, l0, l1, c0, c1, hz = sys.argv[1:]
j = json.load(open("/tmp/fio.json"))["jobs"][0]["read"]
d = lambda a, b: [int(y) - int(x) for x, y in zip(a.split(), b.split())]
t, l = d(s0, s1), d(l0, l1)
# stat: reads completed, reads merged, sectors read, ms reading, ...
kib = lambda v: (v[2] / 2 / v[0]) if v[0] else 0
gib = t[2] * 512 / 2**30
cpu = (int(c1) - int(c0)) * 1000 / int(hz)
print("io:%s:%s:%.0f IOPS %.1f MiB/s; device: %d reads, %.0f KiB/req, %d merged; disk below: %d reads, %.0f KiB/req, %d merged; server CPU %.0f ms = %s ms/GiB"
      % (name, w, j["iops"], j["bw"] / 1024, t[0], kib(t), t[1], l[0], kib(l), l[1], cpu, ("%.0f" % (cpu / gib)) if gib and cpu else "-"))
PY
    done
}
remap() { # NAME BINARY ARGS...
    name=$1 bin=$2; shift 2
    "$bin" attach --remap "$@" /tmp/h/img >/tmp/r.out 2>/tmp/r.err &
    pid=$!
    for _ in $(seq 300); do [ -s /tmp/r.out ] && break; sleep 0.1; done
    dev=$(head -n 1 /tmp/r.out)
    grep -q "not remapping" /tmp/r.err && { echo "remap refused:" >&2; cat /tmp/r.err >&2; }
    echo "list:$name:$("$bin" attach --list --json | tr -d '\n' | cut -c1-600)"
    run "$name" "$dev" vda "$pid"
    "$bin" detach "$dev"
    wait
}
for t in $TARGETS; do
    case $t in
    raw) run raw /dev/vdb vdb 0 ;;
    losetup-dio) dev=$(losetup -f --show --direct-io=on /tmp/h/img); run losetup-dio "$dev" vda 0; losetup -d "$dev" ;;
    remap) remap remap "$LK" ;;
    remap-q1) remap remap-q1 "$LK" --queues 1 ;;
    remap-baseline) remap remap-baseline "$BASE" ;;
    esac
done
umount /tmp/h
EOF
bench_vm "$work/probe.sh" 1800
echo "host $(nproc) CPUs, $(date -u '+%Y-%m-%d %H:%M') UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
grep -E '^(kernel|limits|io|list):' "$work/job/stdout"

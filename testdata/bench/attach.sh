#!/bin/sh
# Benchmark: `loopkit attach` (file path) against the kernel's own block paths, in the
# QEMU guest of tests/vm/ (TCG: absolute figures are meaningless, ratios from one run are not).
# Targets, same VM run: the raw virtio disk, `losetup` buffered, `losetup --direct-io=on`, and
# `loopkit attach` and `loopkit attach --remap` over the same fully written image file on an
# ext4 virtio disk. Workloads (fio, libaio, direct, scheduler none):
# 4 KiB random read QD32, 1 MiB sequential read QD4, 4 KiB random write QD32; and 1 MiB
# sequential reads of a cryptoloop image through `loopkit attach --decrypt` against `cryptsetup
# open --type plain` over `losetup --direct-io=on`.
#
# Usage: testdata/bench/attach.sh [SUITE] [SECONDS]   (SUITE: trixie (6.12, default) or
# trixie-backports (7.x); SECONDS per fio run, default 8). Run as root. Prints Markdown.
set -eu
suite=${1:-trixie}
secs=${2:-8}
root=$(cd "$(dirname "$0")/../.." && pwd)
lk="$root/target/release/loopkit"
[ -x "$lk" ] || (cd "$root" && cargo build --release --bins -q)
. "$root/testdata/bench/attach-common.sh"
bench_setup attach
cat >"$work/bench.sh" <<EOF
LK='$work/loopkit'
SECS=$secs
EOF
bench_guest_image "$work/bench.sh"
cat >>"$work/bench.sh" <<'EOF'
sync
run() { # TARGET-NAME DEVICE
    for w in "randread 4k 32" "read 1M 4" "randwrite 4k 32"; do
        set -- "$1" "$2" $w
        echo none >/sys/block/$(basename "$(readlink -f "$2")")/queue/scheduler 2>/dev/null || true
        fio --name=b --filename="$2" --ioengine=libaio --direct=1 --rw="$3" --bs="$4" --iodepth="$5" \
            --time_based --runtime="$SECS" --ramp_time=1 --size=256M --randrepeat=1 --norandommap \
            --output-format=json >/tmp/fio.json
        python3 -c 'import json,sys; j=json.load(open("/tmp/fio.json"))["jobs"][0]; r=j["read"]["iops"]+j["write"]["iops"]; b=(j["read"]["bw"]+j["write"]["bw"])/1024; print("result:%s:%s %s:%.0f:%.1f" % (sys.argv[1], sys.argv[2], sys.argv[3], r, b))' "$1" "$3" "$4"
    done
}
echo "kernel:$(uname -r)"
run raw /dev/vdb
dev=$(losetup -f --show /tmp/h/img); run losetup-buffered "$dev"; losetup -d "$dev"
dev=$(losetup -f --show --direct-io=on /tmp/h/img); run losetup-dio "$dev"; losetup -d "$dev"
"$LK" attach /tmp/h/img >/tmp/a.out 2>/tmp/a.err &
for _ in $(seq 300); do [ -s /tmp/a.out ] && break; sleep 0.1; done
dev=$(head -n 1 /tmp/a.out)
path=$(awk '{print}' /tmp/a.err | sed -n 's/.*(read-write, \([a-z-]*\) path.*/\1/p')
run "loopkit-attach-$path" "$dev"
"$LK" detach "$dev"
wait
"$LK" attach --remap /tmp/h/img >/tmp/r.out 2>/tmp/r.err &
for _ in $(seq 300); do [ -s /tmp/r.out ] && break; sleep 0.1; done
dev=$(head -n 1 /tmp/r.out)
grep -q "not remapping" /tmp/r.err && { echo "remap refused:" >&2; cat /tmp/r.err >&2; }
run "loopkit-remap-$path" "$dev"
"$LK" detach "$dev"
wait
# --decrypt against dm-crypt: a cryptoloop-style image (aes-cbc-plain, 256-bit key from the
# passphrase by ripemd160, as Debian's losetup made them) written by cryptsetup itself, ext4
# inside so that loopkit's detection confirms the parameters; 1 MiB sequential reads.
printf 'benchpass\n' >/tmp/pass
dd if=/dev/zero of=/tmp/h/enc bs=1M count=128 status=none
dev=$(losetup -f --show --direct-io=on /tmp/h/enc)
cryptsetup open --type plain --cipher aes-cbc-plain --key-size 256 --hash ripemd160 "$dev" benchenc </tmp/pass
mkfs.ext4 -q /dev/mapper/benchenc
sync
run_one() { # NAME DEVICE
    fio --name=b --filename="$2" --ioengine=libaio --direct=1 --rw=read --bs=1M --iodepth=4 \
        --time_based --runtime="$SECS" --ramp_time=1 --output-format=json >/tmp/fio.json
    python3 -c 'import json,sys; j=json.load(open("/tmp/fio.json"))["jobs"][0]; print("dresult:%s:%.1f" % (sys.argv[1], j["read"]["bw"]/1024))' "$1"
}
run_one cryptsetup-plain-over-loop-dio /dev/mapper/benchenc
cryptsetup close benchenc
losetup -d "$dev"
"$LK" attach --decrypt --passphrase-file /tmp/pass /tmp/h/enc >/tmp/d.out 2>/tmp/d.err &
for _ in $(seq 600); do [ -s /tmp/d.out ] && break; sleep 0.1; done
dev=$(head -n 1 /tmp/d.out)
run_one loopkit-attach-decrypt "$dev"
"$LK" detach "$dev"
wait
"$LK" attach --remap --decrypt --passphrase-file /tmp/pass /tmp/h/enc >/tmp/rd.out 2>/tmp/rd.err &
for _ in $(seq 600); do [ -s /tmp/rd.out ] && break; sleep 0.1; done
dev=$(head -n 1 /tmp/rd.out)
run_one loopkit-remap-decrypt "$dev"
"$LK" detach "$dev"
wait
umount /tmp/h
EOF
bench_vm "$work/bench.sh" 1800
kernel=$(sed -n 's/^kernel://p' "$work/job/stdout")
echo "fio in the TCG guest, kernel $kernel, $secs s per run, $(date -u +%Y-%m-%d), host load $(cut -d' ' -f1-3 /proc/loadavg):"
echo
echo "| target | 4k randread QD32 IOPS | 1M seqread QD4 MiB/s | 4k randwrite QD32 IOPS |"
echo "|---|---:|---:|---:|"
sed -n 's/^result://p' "$work/job/stdout" | awk -F: '
    { split($2, w, " "); t[$1] = 1; order[$1] = (order[$1] ? order[$1] : ++n)
      if (w[1] == "randread") rr[$1] = $3; else if (w[1] == "read") sr[$1] = $4; else rw[$1] = $3 }
    END { for (k in t) name[order[k]] = k
          for (i = 1; i <= n; i++) { k = name[i]; printf "| %s | %s | %s | %s |\n", k, rr[k], sr[k], rw[k] }
          for (i = 1; i <= n; i++) { lk = name[i]
              if (lk ~ /^loopkit/ && rr["raw"] > 0 && rr["losetup-dio"] > 0)
                  printf "\nratios %s: vs raw %.2f / %.2f / %.2f; vs losetup --direct-io %.2f / %.2f / %.2f (randread / seqread / randwrite)\n",
                      lk, rr[lk]/rr["raw"], sr[lk]/sr["raw"], rw[lk]/rw["raw"], rr[lk]/rr["losetup-dio"], sr[lk]/sr["losetup-dio"], rw[lk]/rw["losetup-dio"] } }'
echo
echo "| target (cryptoloop aes-cbc-plain 256) | 1M seqread QD4 MiB/s |"
echo "|---|---:|"
sed -n 's/^dresult://p' "$work/job/stdout" | awk -F: '{ printf "| %s | %s |\n", $1, $2; v[$1] = $2 }
    END { if (v["cryptsetup-plain-over-loop-dio"] > 0) {
              printf "\nratio loopkit-attach-decrypt / cryptsetup plain over loop --direct-io: %.2f\n", v["loopkit-attach-decrypt"] / v["cryptsetup-plain-over-loop-dio"]
              printf "ratio loopkit-remap-decrypt / cryptsetup plain over loop --direct-io: %.2f\n", v["loopkit-remap-decrypt"] / v["cryptsetup-plain-over-loop-dio"] } }'

#!/bin/sh
# Benchmark: `loopkit verify --ecc-only` on an RS02-augmented image of >= 512 MiB versus,
# in the same run and over the same file, `dvdisaster -t` (the tool it replaces), and the
# single-stream MD5 bounds `openssl dgst -md5` and `md5sum` (RS02 verification must MD5 every
# byte: the data against mediumSum, the CRC area against crcSum, each ECC layer for eccSum).
# Warm page cache for all; best of 3 wall-clock runs each, CPU time of that run alongside.
# Usage: testdata/bench/ecc.sh [DATA_MB] [WORKDIR]   (default 205 MB of data -> ~616 MB image, /var/tmp)
# Prints Markdown for docs/PERFORMANCE.md.
set -eu
data_mb=${1:-205}
work=${2:-/var/tmp}/loopkit-bench-ecc
root=$(cd "$(dirname "$0")/../.." && pwd)
lk="$root/target/release/loopkit"
[ -x "$lk" ] || (cd "$root" && cargo build --release --bins -q)
command -v dvdisaster >/dev/null || { echo "dvdisaster is not installed" >&2; exit 2; }
mkdir -p "$work"
img="$work/rs02-${data_mb}mb.img"
if [ ! -f "$img" ]; then
    echo "building $img: $data_mb MB random data, dvdisaster RS02 sized for a CD (takes a minute or two)..." >&2
    head -c $((data_mb * 1000 * 1000)) /dev/urandom > "$img.tmp"
    # dvdisaster 0.79.5 can run away on tiny images; this one is large, but keep the guard rails.
    ( ulimit -f 2000000; timeout 1800 dvdisaster -i "$img.tmp" -mRS02 -c >/dev/null 2>&1 )
    mv "$img.tmp" "$img"
fi
bytes=$(stat -c %s "$img")
best() { # best of 3: prints "wall user+sys"
    b=""
    for _ in 1 2 3; do
        /usr/bin/time -f "%e %U %S" -o "$work/time" "$@" >/dev/null 2>&1 || true
        r=$(awk '{printf "%.2f %.2f", $1, $2 + $3}' "$work/time")
        w=${r%% *}
        if [ -z "$b" ] || [ "$(echo "$w < ${b%% *}" | bc -l)" = 1 ]; then b=$r; fi
    done
    echo "$b"
}
cat "$img" > /dev/null
r_lk=$(best "$lk" verify --ecc-only --quiet "$img")
r_dvd=$(best dvdisaster -i "$img" -t)
r_ossl=$(best openssl dgst -md5 "$img")
r_md5=$(best md5sum "$img")
mbps() { echo "scale=0; $bytes / ${1%% *} / 1000000" | bc -l; }
row() { echo "| $1 | ${2%% *} | ${2#* } | $(mbps "$2") |"; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg); date: $(date -u +%Y-%m-%d); image: $bytes bytes (RS02, $(dvdisaster -i "$img" -t 2>&1 | grep -o '[0-9]* roots' | head -1))"
echo "| what | wall s (best of 3) | CPU s | MB/s |"
echo "|---|---:|---:|---:|"
row "loopkit verify --ecc-only" "$r_lk"
row "dvdisaster -t" "$r_dvd"
row "openssl dgst -md5" "$r_ossl"
row "md5sum" "$r_md5"
echo "loopkit wall time / openssl dgst -md5: $(echo "scale=2; ${r_lk%% *} / ${r_ossl%% *}" | bc -l) (goal <= 1.10); dvdisaster / loopkit: $(echo "scale=2; ${r_dvd%% *} / ${r_lk%% *}" | bc -l)x"

#!/bin/sh
# Benchmark: `loopkit protect` versus `dvdisaster -c` (the tool it replaces), in the same run,
# on the same input file, with the same thread count (dvdisaster -x N; only its RS03 encoder
# uses threads), for an RS03 .ecc file (32 roots), an RS02 image sized for a CD and an RS01
# .ecc file (32 roots). Each pair of outputs is compared with cmp (the benchmark fails if they
# differ). Lower bound alongside: reading the input (cat > /dev/null, warm cache) plus writing
# as many bytes as the ECC output (dd from /dev/zero, fsync). Warm page cache; best of 3
# wall-clock runs, CPU time (user+sys) of that run alongside. loopkit's time includes what
# dvdisaster does not do: fsync of the output and reading it back through the verifier.
# dvdisaster runs under ulimit -f and a timeout.
# Usage: testdata/bench/protect.sh [DATA_MB] [THREADS] [WORKDIR]   (default 200 MB, all cores, /var/tmp)
# Prints Markdown for docs/PERFORMANCE.md.
set -eu
data_mb=${1:-200}
threads=${2:-$(nproc)}
work=${3:-/var/tmp}/loopkit-bench-protect
root=$(cd "$(dirname "$0")/../.." && pwd)
lk="$root/target/release/loopkit"
[ -x "$lk" ] || (cd "$root" && cargo build --release --bins -q)
command -v dvdisaster >/dev/null || { echo "dvdisaster is not installed" >&2; exit 2; }
mkdir -p "$work"
img="$work/input-${data_mb}mb.bin"
[ -f "$img" ] || head -c $((data_mb * 1000 * 1000 + 1234)) /dev/urandom > "$img"
export HOME="$work"
best() { # best of 3: prints "wall cpu" (cpu = user+sys of that run); $1: untimed setup command
    setup=$1; shift
    b=""
    for _ in 1 2 3; do
        sh -c "$setup"
        /usr/bin/time -f "%e %U %S" -o "$work/time" "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
        r=$(awk '{printf "%.2f %.2f", $1, $2 + $3}' "$work/time")
        if [ -z "$b" ] || [ "$(echo "${r%% *} < ${b%% *}" | bc -l)" = 1 ]; then b=$r; fi
    done
    echo "$b"
}
cat "$img" > /dev/null
echo "| case | loopkit wall (cpu) s | dvdisaster -c wall (cpu) s | speed-up wall (cpu) | read+write floor s | loopkit / floor |"
echo "|---|---:|---:|---:|---:|---:|"
run_case() { # name lk-setup lk-args dvd-setup dvd-args lk-out dvd-out
    name=$1 lsetup=$2 largs=$3 dsetup=$4 dargs=$5 lout=$6 dout=$7
    t_lk=$(best "$lsetup" sh -c "$lk protect -q --threads $threads $largs")
    t_dvd=$(best "$dsetup" sh -c "ulimit -f 8000000; timeout 3600 dvdisaster -x $threads $dargs")
    cmp "$lout" "$dout" || { echo "$name: outputs differ" >&2; exit 1; }
    out_bytes=$(stat -c %s "$lout")
    if [ "$name" != "RS01 .ecc, 32 roots" ] && [ "$name" != "RS03 .ecc, 32 roots" ]; then
        out_bytes=$((out_bytes - $(stat -c %s "$img")))
    fi
    t_floor=$(best "true" sh -c "cat '$img' > /dev/null; dd if=/dev/zero of='$work/floor.out' bs=1M count=$(( (out_bytes + 1048575) / 1048576 )) conv=fsync status=none")
    lw=${t_lk%% *} lc=${t_lk##* } dw=${t_dvd%% *} dc=${t_dvd##* } fw=${t_floor%% *}
    printf "| %s | %.2f (%.2f) | %.2f (%.2f) | %.1f× (%.1f×) | %.2f | %.1f× |\n" "$name" "$lw" "$lc" "$dw" "$dc" \
        "$(echo "$dw / $lw" | bc -l)" "$(echo "$dc / $lc" | bc -l)" "$fw" "$(echo "$lw / $fw" | bc -l)"
}
run_case "RS03 .ecc, 32 roots" "rm -f $work/l.ecc" "-e $work/l.ecc -n 32 $img" \
    "rm -f $work/d.ecc" "-i $img -e $work/d.ecc -mRS03 -o file -n 32 -c" "$work/l.ecc" "$work/d.ecc"
run_case "RS02 image, CD" "rm -f $work/l.img" "-m rs02 -o $work/l.img $img" \
    "cp $img $work/d.img" "-i $work/d.img -mRS02 -c" "$work/l.img" "$work/d.img"
run_case "RS01 .ecc, 32 roots" "rm -f $work/l1.ecc" "-m rs01 -e $work/l1.ecc -n 32 $img" \
    "rm -f $work/d1.ecc" "-i $img -e $work/d1.ecc -mRS01 -n 32 -c" "$work/l1.ecc" "$work/d1.ecc"
rm -f "$work"/l.ecc "$work"/d.ecc "$work"/l.img "$work"/d.img "$work"/l1.ecc "$work"/d1.ecc "$work/floor.out"
echo
echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $threads threads, $data_mb MB input, $(date -u +%Y-%m-%d)"

#!/bin/sh
# Benchmark: `loopkit protect` versus `dvdisaster -c` (the tool it replaces), in the same run,
# on the same input file, with the same thread count (dvdisaster -x N; only its RS03 encoder
# uses threads), for an RS03 .ecc file (32 roots), an RS03 augmented image and an RS02 image
# sized for a CD (the roots each tool picks for that medium) and an RS01 .ecc file (32 roots).
# Each pair of outputs is compared with cmp (the benchmark fails if they differ). Lower bound
# alongside, the floor: reading the input (cat > /dev/null, warm cache) plus writing as many
# bytes as the ECC part of the output (dd from /dev/zero, fsync); for augmented images a second
# floor writes the whole output (the copy of the image too, which loopkit -o must write).
# Warm page cache; three rounds, each running loopkit, dvdisaster and the floor once in turn
# (interleaved, so a change in the machine's load hits all three); the median wall-clock time
# and the median CPU time (user+sys) of the three are printed, with the load average.
# loopkit's time includes what dvdisaster does not do: fsync of the output and reading every
# byte written back from the device (O_DIRECT) to compare it with what was computed.
# dvdisaster runs under ulimit -f and a timeout.
# Usage: testdata/bench/protect.sh [DATA_MB] [THREADS] [WORKDIR]   (default 200 MB, all cores, /var/tmp;
# LOOPKIT_BIN: the loopkit binary, default target/release/loopkit; PROTECT_BENCH_CASES: a subset)
# Prints Markdown for docs/PERFORMANCE.md.
set -eu
data_mb=${1:-200}
threads=${2:-$(nproc)}
work=${3:-/var/tmp}/loopkit-bench-protect
root=$(cd "$(dirname "$0")/../.." && pwd)
lk=${LOOPKIT_BIN:-$root/target/release/loopkit}
[ -x "$lk" ] || (cd "$root" && cargo build --release --bins -q)
command -v dvdisaster >/dev/null || { echo "dvdisaster is not installed" >&2; exit 2; }
mkdir -p "$work"
img="$work/input-${data_mb}mb.bin"
[ -f "$img" ] || head -c $((data_mb * 1000 * 1000 + 1234)) /dev/urandom > "$img"
export HOME="$work"
once() { # one timed run: prints "wall cpu"; $1: untimed setup command
    sh -c "$1"; shift
    /usr/bin/time -f "%e %U %S" -o "$work/time" "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
    awk '{printf "%.2f %.2f", $1, $2 + $3}' "$work/time"
}
median3() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
cat "$img" > /dev/null
echo "| case | loopkit wall (cpu) s | dvdisaster -c wall (cpu) s | speed-up wall (cpu) | floor s | loopkit / floor | floor incl. copy s | loopkit / that | load avg |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
run_case() { # name lk-setup lk-args dvd-setup dvd-args lk-out dvd-out augmented(0/1)
    name=$1 lsetup=$2 largs=$3 dsetup=$4 dargs=$5 lout=$6 dout=$7 aug=$8
    load0=$(cut -d' ' -f1 /proc/loadavg)
    lw="" lc="" dw="" dc="" fw="" cw=""
    for _ in 1 2 3; do
        t=$(once "$lsetup" sh -c "$lk protect -q --threads $threads $largs"); lw="$lw ${t%% *}"; lc="$lc ${t##* }"
        t=$(once "$dsetup" sh -c "ulimit -f 8000000; timeout 3600 dvdisaster -x $threads $dargs"); dw="$dw ${t%% *}"; dc="$dc ${t##* }"
        cmp "$lout" "$dout" || { echo "$name: outputs differ" >&2; exit 1; }
        all=$(stat -c %s "$lout")
        ecc_bytes=$all
        [ "$aug" = 1 ] && ecc_bytes=$((all - $(stat -c %s "$img")))
        t=$(once true sh -c "cat '$img' > /dev/null; dd if=/dev/zero of='$work/floor.out' bs=1M count=$(( (ecc_bytes + 1048575) / 1048576 )) conv=fsync status=none"); fw="$fw ${t%% *}"
        if [ "$aug" = 1 ]; then
            t=$(once "rm -f $work/floor.out" sh -c "cat '$img' > /dev/null; dd if=/dev/zero of='$work/floor.out' bs=1M count=$(( (all + 1048575) / 1048576 )) conv=fsync status=none"); cw="$cw ${t%% *}"
        fi
        rm -f "$work/floor.out"
    done
    load1=$(cut -d' ' -f1 /proc/loadavg)
    # shellcheck disable=SC2086
    lw=$(median3 $lw) lc=$(median3 $lc) dw=$(median3 $dw) dc=$(median3 $dc) fw=$(median3 $fw)
    if [ "$aug" = 1 ]; then
        # shellcheck disable=SC2086
        cw=$(median3 $cw)
        copy=$(printf "%.2f | %.1f×" "$cw" "$(echo "$lw / $cw" | bc -l)")
    else
        copy="– | –"
    fi
    printf "| %s | %.2f (%.2f) | %.2f (%.2f) | %.1f× (%.1f×) | %.2f | %.1f× | %s | %s–%s |\n" "$name" "$lw" "$lc" "$dw" "$dc" \
        "$(echo "$dw / $lw" | bc -l)" "$(echo "$dc / $lc" | bc -l)" "$fw" "$(echo "$lw / $fw" | bc -l)" "$copy" "$load0" "$load1"
}
cases=${PROTECT_BENCH_CASES:-rs03e rs03a rs02 rs01}
for c in $cases; do
    case $c in
    rs03e) run_case "RS03 .ecc, 32 roots" "rm -f $work/l.ecc" "-e $work/l.ecc -n 32 $img" \
        "rm -f $work/d.ecc" "-i $img -e $work/d.ecc -mRS03 -o file -n 32 -c" "$work/l.ecc" "$work/d.ecc" 0 ;;
    rs03a) run_case "RS03 image, CD" "rm -f $work/l.img" "-o $work/l.img $img" \
        "rm -f $work/d.img; cp $img $work/d.img" "-i $work/d.img -mRS03 -c" "$work/l.img" "$work/d.img" 1 ;;
    rs02) run_case "RS02 image, CD" "rm -f $work/l.img" "-m rs02 -o $work/l.img $img" \
        "rm -f $work/d.img; cp $img $work/d.img" "-i $work/d.img -mRS02 -c" "$work/l.img" "$work/d.img" 1 ;;
    rs01) run_case "RS01 .ecc, 32 roots" "rm -f $work/l1.ecc" "-m rs01 -e $work/l1.ecc -n 32 $img" \
        "rm -f $work/d1.ecc" "-i $img -e $work/d1.ecc -mRS01 -n 32 -c" "$work/l1.ecc" "$work/d1.ecc" 0 ;;
    *) echo "unknown case $c (rs03e rs03a rs02 rs01)" >&2; exit 2 ;;
    esac
done
rm -f "$work"/l.ecc "$work"/d.ecc "$work"/l.img "$work"/d.img "$work"/l1.ecc "$work"/d1.ecc "$work/floor.out"
echo
echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $threads threads, $data_mb MB input, $(date -u +%Y-%m-%d)"

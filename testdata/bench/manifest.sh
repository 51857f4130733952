#!/bin/sh
# Benchmark: `loopkit manifest` of an ext3 image with >= 10 000 files versus, in the
# same run and on the same image, the debugfs baseline: `debugfs -R "rdump / OUT"` followed by
# `sha256sum` over every dumped file. Warm page cache for both; best of 3 wall-clock runs.
# Usage: testdata/bench/manifest.sh [FILES] [WORKDIR]     (default 10000 files, /var/tmp)
# Prints Markdown table rows for docs/PERFORMANCE.md. The image (~200 MiB, sparse) stays in
# WORKDIR for reruns; it is never made in the test suite.
set -eu
files=${1:-10000}
work=${2:-/var/tmp}/loopkit-bench-manifest
root=$(cd "$(dirname "$0")/../.." && pwd)
lk="$root/target/release/loopkit"
[ -x "$lk" ] || (cd "$root" && cargo build --release --bins -q)
mkdir -p "$work"
img="$work/ext3-${files}.img"
if [ ! -f "$img" ]; then
    echo "building $img (tree.py --profile bench, mkfs.ext3 -d)..." >&2
    rm -rf "$work/tree"
    python3 "$root/testdata/gen/tree.py" "$work/tree" --profile bench --files "$files" >/dev/null
    mb=$(( $(du -sm "$work/tree" | cut -f1) * 2 + 64 ))
    rm -f "$img"; truncate -s "${mb}M" "$img"
    mkfs.ext3 -q -F -N $(( files * 2 + 8192 )) -d "$work/tree" "$img"
    rm -rf "$work/tree"
fi
t() { # best of 3 wall-clock seconds
    best=""
    for _ in 1 2 3; do
        rm -rf "$work/out"
        s=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s.%N)
        d=$(echo "$e - $s" | bc -l)
        if [ -z "$best" ] || [ "$(echo "$d < $best" | bc -l)" = 1 ]; then best=$d; fi
    done
    echo "$best"
}
baseline() {
    mkdir "$work/out"
    debugfs -R "rdump / $work/out" "$img"
    find "$work/out" -type f -print0 | xargs -0 sha256sum >/dev/null
}
cat "$img" > /dev/null
t_lk=$(t "$lk" manifest --quiet -o "$work/m.json" --force "$img")
t_base=$(t baseline)
rm -rf "$work/out"
entries=$(grep -c '"path"' "$work/m.json")
bytes=$(stat -c %s "$img")
printf '| %s | %s entries, image %s MiB | loopkit manifest %.2f s | debugfs rdump + sha256sum %.2f s | %.1f× |\n' \
    "$(date -u +%Y-%m-%d)" "$entries" "$((bytes >> 20))" "$t_lk" "$t_base" "$(echo "$t_base / $t_lk" | bc -l)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM" >&2

#!/bin/sh
# Benchmark: reading files through `loopkit mount` versus, in the same run and on the same
# images, (1) the kernel's own ext3 driver on a loop device (`mount -o ro,loop`) and (2) fuse2fs
# (e2fsprogs' FUSE ext2/3/4 driver), and (3) a 1 GiB file inside a cryptoloop image read through
# the mount versus `loopkit verify`'s rate on that image.
#   (1)/(2): `find DIR -type f -exec sha256sum {} +` over the 10 000-file tree of
#            testdata/bench/manifest.sh (tree.py --profile bench, mkfs.ext3 -d). Goals: loopkit
#            ≤ 1.5× the kernel's time, ≥ 1.5× faster than fuse2fs.
#   (3):     `sha256sum FILE` and `cat FILE >/dev/null` through the mount; goal ≥ 0.8× verify's
#            MB/s.
# Run as root, the mount raises its read-ahead to 1 MiB (docs/CLI.md); the last row repeats `cat`
# with the kernel's default 128 KiB that a normal user's mount keeps (set back through sysfs
# after a first 1-byte read: the server raises it when the first file is opened).
# Every run mounts afresh (a cold file-system cache: the mounted tree's pages are new) over a
# warm page cache of the image file itself; best of 3 wall-clock runs. Needs root (loop mount).
# Usage: testdata/bench/mount.sh [FILES] [SIZE_MIB] [WORKDIR]   (default 10000, 1024, /var/tmp)
# Prints Markdown table rows for docs/PERFORMANCE.md; images stay in WORKDIR for reruns.
set -eu
files=${1:-10000}
size_mib=${2:-1024}
base=${3:-/var/tmp}
root=$(cd "$(dirname "$0")/../.." && pwd)
lk="$root/target/release/loopkit"
[ -x "$lk" ] || (cd "$root" && cargo build --release --bins -q)
work="$base/loopkit-bench-mount"
mkdir -p "$work/mnt"
mnt="$work/mnt"
cleanup() { umount "$mnt" 2>/dev/null || fusermount3 -u "$mnt" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# The 10 000-file ext3 image and the 1 GiB cryptoloop image of the other benchmarks.
# (Their scripts build them, then run their own benchmarks: only when an image is missing.)
img="$base/loopkit-bench-manifest/ext3-${files}.img"
[ -f "$img" ] || sh "$root/testdata/bench/manifest.sh" "$files" "$base" >/dev/null 2>&1 || true
[ -f "$img" ] || { echo "no $img (testdata/bench/manifest.sh failed)" >&2; exit 1; }

t() { # best of 3 wall-clock seconds of: mount ($1), run the rest, unmount
    how=$1; shift
    best=""
    for _ in 1 2 3; do
        case $how in
        kernel) mount -o ro,loop "$img" "$mnt" ;;
        fuse2fs) fuse2fs -o ro,fakeroot "$img" "$mnt" >/dev/null 2>&1 ;;
        loopkit) "$lk" mount "$img" "$mnt" 2>/dev/null ;;
        crypt) "$lk" mount "$cimg" "$mnt" --passphrase-file "$pass" 2>/dev/null ;;
        crypt128)
            "$lk" mount "$cimg" "$mnt" --passphrase-file "$pass" 2>/dev/null
            head -c 1 "$mnt/data.bin" >/dev/null
            echo 128 >"/sys/class/bdi/$(mountpoint -d "$mnt")/read_ahead_kb" ;;
        esac
        s=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s.%N)
        cleanup
        sleep 0.2
        d=$(echo "$e - $s" | bc -l)
        if [ -z "$best" ] || [ "$(echo "$d < $best" | bc -l)" = 1 ]; then best=$d; fi
    done
    echo "$best"
}
hash_tree() { find "$mnt" -type f -exec sha256sum {} + ; }
cat "$img" >/dev/null
t_kernel=$(t kernel hash_tree)
t_lk=$(t loopkit hash_tree)
t_f2fs=$(t fuse2fs hash_tree)
load=$(cut -d' ' -f1-3 /proc/loadavg)
printf '| %s (load %s) | %s files, ext3 | loopkit mount %.2f s | kernel loop mount %.2f s (%.2f×) | fuse2fs %.2f s (%.2f× faster) |\n' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$load" "$files" "$t_lk" "$t_kernel" "$(echo "$t_lk / $t_kernel" | bc -l)" \
    "$t_f2fs" "$(echo "$t_f2fs / $t_lk" | bc -l)"

# (3) one big file in a cryptoloop image (testdata/bench/verify.sh builds it).
cimg="$base/loopkit-bench-verify/cryptoloop-${size_mib}m.img"
pass="$base/loopkit-bench-verify/pass"
[ -f "$cimg" ] && [ -f "$pass" ] || sh "$root/testdata/bench/verify.sh" "$size_mib" "$base" >/dev/null 2>&1 || true
[ -f "$cimg" ] || { echo "no $cimg (testdata/bench/verify.sh failed)" >&2; exit 1; }
cat "$cimg" >/dev/null
bytes=$(stat -c %s "$cimg")
fbytes=$(( (size_mib - 64) * 1024 * 1024 ))
best=""
for _ in 1 2 3; do
    s=$(date +%s.%N); "$lk" verify --quiet --passphrase-file "$pass" "$cimg" >/dev/null 2>&1 || true; e=$(date +%s.%N)
    d=$(echo "$e - $s" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$d < $best" | bc -l)" = 1 ]; then best=$d; fi
done
t_verify=$best
t_sum=$(t crypt sha256sum "$mnt/data.bin")
t_cat=$(t crypt sh -c "cat '$mnt/data.bin' >/dev/null")
t_cat128=$(t crypt128 sh -c "cat '$mnt/data.bin' >/dev/null")
r_verify=$(echo "$bytes / $t_verify / 1000000" | bc -l)
r_sum=$(echo "$fbytes / $t_sum / 1000000" | bc -l)
r_cat=$(echo "$fbytes / $t_cat / 1000000" | bc -l)
load=$(cut -d' ' -f1-3 /proc/loadavg)
printf '| %s (load %s) | %s MiB file in a cryptoloop image | mount: sha256sum %.0f MB/s (%.2f×), cat %.0f MB/s (%.2f×) | loopkit verify %.0f MB/s |\n' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$load" "$((fbytes >> 20))" "$r_sum" "$(echo "$r_sum / $r_verify" | bc -l)" \
    "$r_cat" "$(echo "$r_cat / $r_verify" | bc -l)" "$r_verify"
r_cat128=$(echo "$fbytes / $t_cat128 / 1000000" | bc -l)
printf '| %s | same, read-ahead 128 KiB (a normal user'"'"'s mount) | cat %.0f MB/s (%.2f×) | loopkit verify %.0f MB/s |\n' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$r_cat128" "$(echo "$r_cat128 / $r_verify" | bc -l)" "$r_verify"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM, kernel $(uname -r)" >&2

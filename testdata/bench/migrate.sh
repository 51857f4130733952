#!/bin/sh
# Benchmark: `loopkit migrate --mode reencrypt` (cryptoloop -> LUKS2
# aes-xts-plain64, including the verification that reads the output back from the disk) on a
# >= 1 GiB cryptoloop image, versus a durable copy of the same file to the same file system in the
# same run: `cp IMAGE DEST` followed by `sync DEST` (an fsync of the copy only, so other users'
# dirty data on this shared machine is not counted against cp). Warm page cache for the source.
# The KDF is PBKDF2 with 1000 iterations so the figure is the data path, not the key slot.
# The same-traffic bound: migrate reads the source, writes the output and reads it back from
# the device, so each round also runs `dd` doing that traffic with no crypto — `dd if=IMAGE
# of=DEST bs=4M oflag=direct conv=fsync` then `dd if=DEST of=/dev/null bs=4M iflag=direct` — and
# the script prints loopkit's throughput as a fraction of it ("same-traffic ratio").
#
# RUNS (default 5) interleaved rounds; each round runs cp+sync, loopkit and, with
# LOOPKIT_BASELINE=/path/to/another/loopkit (e.g. main's build), that binary too, alternating the
# order between rounds. Medians of wall time, CPU seconds (user+sys) and peak RSS from
# /usr/bin/time -v; the 1-minute load average before each run is printed beside it.
# Also prints the SHA-256 rate of one thread (openssl speed) and the batched XTS throughput (1 and all cores) from the library's ignored bench test
# (skip with NO_XTS=1).
# Usage: testdata/bench/migrate.sh [SIZE_MIB] [WORKDIR] [RUNS]   (default 1024 MiB, /var/tmp, 5)
set -eu
size_mib=${1:-1024}
base=${2:-/var/tmp}
runs=${3:-5}
root=$(cd "$(dirname "$0")/../.." && pwd)
lk="$root/target/release/loopkit"
[ -x "$lk" ] || (cd "$root" && cargo build --release --bins -q)
work="$base/loopkit-bench-verify"
img="$work/cryptoloop-${size_mib}m.img"
pass="$work/pass"
# The source image is the one verify.sh builds (same generator, same place).
[ -f "$img" ] || sh "$root/testdata/bench/verify.sh" "$size_mib" "$base" >/dev/null 2>&1 || true
[ -f "$img" ] || { echo "no source image $img" >&2; exit 1; }
dest="$base/loopkit-bench-migrate"
rm -rf "$dest"; mkdir -p "$dest"
printf 'new benchmark passphrase' > "$dest/newpass"
bytes=$(stat -c %s "$img")
now() { date +%s.%N; }

# run NAME COMMAND...: one timed run; appends "wall cpu rss_kib load1" to $dest/NAME.runs.
run() {
    name=$1; shift
    cat "$img" > /dev/null
    load=$(cut -d' ' -f1 /proc/loadavg)
    s=$(now)
    /usr/bin/time -v -o "$dest/time.txt" "$@" > "$dest/out.txt"
    e=$(now)
    wall=$(echo "$e - $s" | bc -l)
    cpu=$(awk -F': ' '/User time/{u=$2} /System time/{s=$2} END{print u + s}' "$dest/time.txt")
    rss=$(awk -F': ' '/Maximum resident set size/{print $2}' "$dest/time.txt")
    echo "$wall $cpu $rss $load" >> "$dest/$name.runs"
    printf '%-10s wall %6.2f s  cpu %5.2f s  rss %6d KiB  load %s\n' "$name" "$wall" "$cpu" "$rss" "$load" >&2
}
# migrate NAME BINARY: one timed migration by BINARY.
migrate() {
    run "$1" "$2" migrate "$img" --to dmcrypt --mode reencrypt -o "$dest/new.img" --quiet --json \
        --passphrase-file "$pass" --new-passphrase-file "$dest/newpass" \
        --pbkdf pbkdf2 --pbkdf-force-iterations 1000
    grep -q '"sha256_match": *true' "$dest/out.txt" || { echo "$2: migration did not verify" >&2; cat "$dest/out.txt" >&2; exit 1; }
    rm -f "$dest/new.img"
}
round() {
    case $1 in
        cp) run cp+sync sh -c "$(command -v cp) '$img' '$dest/copy.img' && sync '$dest/copy.img'"; rm -f "$dest/copy.img" ;;
        dd) run dd-wr+rd sh -c "dd if='$img' of='$dest/dd.img' bs=4M oflag=direct conv=fsync status=none && dd if='$dest/dd.img' of=/dev/null bs=4M iflag=direct status=none"; rm -f "$dest/dd.img" ;;
        new) migrate loopkit "$lk" ;;
        base) migrate baseline "$LOOPKIT_BASELINE" ;;
    esac
    sync
}
i=1
while [ "$i" -le "$runs" ]; do
    if [ $((i % 2)) = 1 ]; then order="cp dd new base"; else order="base new dd cp"; fi
    for w in $order; do
        [ "$w" = base ] && [ -z "${LOOPKIT_BASELINE:-}" ] && continue
        round "$w"
    done
    i=$((i + 1))
done

# median COLUMN FILE
median() { cut -d' ' -f"$1" "$2" | sort -n | awk '{v[NR]=$1} END{print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
gib=$(echo "$bytes / 1073741824" | bc -l)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r); date: $(date -u '+%Y-%m-%d %H:%M UTC'); image: $bytes bytes; $runs interleaved runs; load average during the runs: $(cut -d' ' -f4 "$dest"/*.runs | sort -n | sed -n '1p;$p' | tr '\n' ' ')(min, max)"
echo "| what (median of $runs) | wall s | MB/s | CPU s (user+sys) | CPU s / GiB | peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|"
for n in cp+sync dd-wr+rd loopkit baseline; do
    f="$dest/$n.runs"
    [ -f "$f" ] || continue
    w=$(median 1 "$f"); c=$(median 2 "$f"); r=$(median 3 "$f")
    case $n in
        cp+sync) what="cp + sync (fsync of the copy)" ;;
        dd-wr+rd) what="dd write (O_DIRECT, fsync) + dd read-back (O_DIRECT): the same traffic" ;;
        loopkit) what="loopkit migrate --mode reencrypt (this build)" ;;
        baseline) what="loopkit migrate --mode reencrypt ($LOOPKIT_BASELINE)" ;;
    esac
    printf '| %s | %.2f | %.0f | %.2f | %.2f | %.1f |\n' "$what" "$w" "$(echo "$bytes / $w / 1000000" | bc -l)" "$c" \
        "$(echo "$c / $gib" | bc -l)" "$(echo "$r / 1024" | bc -l)"
done
t_cps=$(median 1 "$dest/cp+sync.runs"); t_lk=$(median 1 "$dest/loopkit.runs")
echo "ratio loopkit / (cp + sync) throughput: $(echo "scale=2; $t_cps / $t_lk" | bc -l)"
t_dd=$(median 1 "$dest/dd-wr+rd.runs")
echo "same-traffic ratio loopkit / (dd write + read-back) throughput: $(echo "scale=2; $t_dd / $t_lk" | bc -l)"
if [ -f "$dest/baseline.runs" ]; then
    t_b=$(median 1 "$dest/baseline.runs")
    echo "ratio baseline / (cp + sync) throughput: $(echo "scale=2; $t_cps / $t_b" | bc -l)"
    echo "CPU per GiB, loopkit / baseline: $(echo "scale=2; $(median 2 "$dest/loopkit.runs") / $(median 2 "$dest/baseline.runs")" | bc -l)"
fi
echo "all runs (wall cpu rss_kib load1):"
for f in "$dest"/*.runs; do echo "  $(basename "$f" .runs): $(tr '\n' ';' < "$f")"; done
rm -rf "$dest"
# The one serial stream of the migration: SHA-256 of the plaintext (OpenSSL's SHA-NI rate here,
# 1 MiB blocks, one thread) — the floor of migrate's wall time however many cores the rest uses.
if command -v openssl > /dev/null; then
    sha=$(openssl speed -evp sha256 -bytes 1048576 -seconds 2 2>/dev/null | awk '/^sha256/{print $NF}' | tr -d k)
    [ -n "$sha" ] && echo "SHA-256 (openssl speed -evp sha256, 1 MiB blocks, one thread): $(echo "scale=2; $sha / 1000000" | bc -l) GB/s, $(echo "scale=3; 1073741.824 / $sha" | bc -l) s per GiB"
fi
if [ -z "${NO_XTS:-}" ]; then
    echo "XTS (batched, aes-256, 512-byte sectors), in memory:"
    (cd "$root" && cargo test --release -q --lib crypto::xts::tests::throughput -- --ignored --nocapture 2>/dev/null | grep -E '^xts' || true)
fi

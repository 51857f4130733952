#!/bin/sh
# Benchmark (issue 5): `loopkit migrate --mode reencrypt` (cryptoloop -> LUKS2 aes-xts-plain64,
# including the verification pass that re-reads and hashes the output) on a >= 1 GiB cryptoloop
# image, versus `cp` of the same file to the same destination in the same run (with and without a
# final `sync`, since migrate makes its output durable). Warm page cache for the source.
# The KDF is set to PBKDF2 with 1000 iterations so the figure is the data path, not the key slot.
# Also prints the batched XTS throughput (1 and all cores) from the library's ignored bench test.
# Usage: testdata/bench/migrate.sh [SIZE_MIB] [WORKDIR]     (default 1024 MiB, /var/tmp)
set -eu
size_mib=${1:-1024}
base=${2:-/var/tmp}
root=$(cd "$(dirname "$0")/../.." && pwd)
lk="$root/target/release/loopkit"
[ -x "$lk" ] || (cd "$root" && cargo build --release --bins -q)
# The source image is the one verify.sh builds (same generator, same place).
sh "$root/testdata/bench/verify.sh" "$size_mib" "$base" >/dev/null 2>&1 || true
work="$base/loopkit-bench-verify"
img="$work/cryptoloop-${size_mib}m.img"
pass="$work/pass"
[ -f "$img" ] || { echo "no source image $img" >&2; exit 1; }
dest="$base/loopkit-bench-migrate"
rm -rf "$dest"; mkdir -p "$dest"
printf 'new benchmark passphrase' > "$dest/newpass"
bytes=$(stat -c %s "$img")
now() { date +%s.%N; }
cat "$img" > /dev/null
sync
s=$(now); /usr/bin/time -f "%U %S" -o "$dest/cp.cpu" cp "$img" "$dest/copy.img"; e=$(now); t_cp=$(echo "$e - $s" | bc -l)
s=$(now); sync; e=$(now); t_sync=$(echo "$e - $s" | bc -l)
rm -f "$dest/copy.img"; sync
cat "$img" > /dev/null
s=$(now)
/usr/bin/time -f "%U %S" -o "$dest/mig.cpu" "$lk" migrate "$img" --to dmcrypt --mode reencrypt -o "$dest/new.img" --quiet --json \
    --passphrase-file "$pass" --new-passphrase-file "$dest/newpass" \
    --pbkdf pbkdf2 --pbkdf-force-iterations 1000 > "$dest/report.json"
e=$(now); t_mig=$(echo "$e - $s" | bc -l)
cpu() { awk '{print $1 + $2}' "$1"; }
c_cp=$(cpu "$dest/cp.cpu"); c_mig=$(cpu "$dest/mig.cpu")
grep -q '"sha256_match": true' "$dest/report.json" || { echo "migration did not verify" >&2; cat "$dest/report.json" >&2; exit 1; }
rm -rf "$dest"
mbps() { echo "scale=0; $bytes / $1 / 1000000" | bc -l; }
t_cps=$(echo "$t_cp + $t_sync" | bc -l)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r); date: $(date -u +%Y-%m-%d); image: $bytes bytes; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| what | wall seconds (one run) | MB/s | CPU seconds (user+sys) |"
echo "|---|---:|---:|---:|"
echo "| cp (page cache, no sync) | $t_cp | $(mbps "$t_cp") | $c_cp |"
echo "| cp + sync | $t_cps | $(mbps "$t_cps") | |"
echo "| loopkit migrate --mode reencrypt (decrypt CBC + encrypt XTS + SHA-256, fdatasync, re-read + XTS decrypt + SHA-256) | $t_mig | $(mbps "$t_mig") | $c_mig |"
echo "ratio migrate / cp throughput: $(echo "scale=2; $t_cp / $t_mig" | bc -l); migrate / (cp + sync): $(echo "scale=2; $t_cps / $t_mig" | bc -l)"
echo "XTS (batched, aes-256, 512-byte sectors), in memory:"
(cd "$root" && cargo test --release -q --lib crypto::xts::tests::throughput -- --ignored --nocapture 2>/dev/null | grep -E '^xts' || true)

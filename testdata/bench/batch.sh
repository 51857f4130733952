#!/bin/sh
# Benchmark: batch verification of 20 cryptoloop images x 64 MiB, page cache warm:
# the batch's wall time versus the sum of single-image `loopkit verify` times (same run, same
# images) divided by the cores, and the per-image overhead (process, detection, catalog write)
# measured on 20 copies of the 1 MiB shipped sample.
# Usage: testdata/bench/batch.sh [COUNT] [SIZE_MIB] [WORKDIR]   (default 20, 64, /var/tmp)
# Prints lines for docs/PERFORMANCE.md. Disk: COUNT x SIZE_MIB (1.3 GiB by default), removed at the end.
set -eu
count=${1:-20}
size_mib=${2:-64}
work=${3:-/var/tmp}/loopkit-bench-batch
root=$(cd "$(dirname "$0")/../.." && pwd)
lk="$root/target/release/loopkit"
[ -x "$lk" ] || (cd "$root" && cargo build --release --bins -q)
rm -rf "$work"; mkdir -p "$work/images" "$work/tiny"
trap 'rm -rf "$work"' EXIT
pass="$work/pass"
printf 'benchmark passphrase\n' > "$pass"
one="$work/one.img"
echo "building one ${size_mib} MiB cryptoloop image (ext4 + random file, Python cryptography), $count copies..." >&2
mkdir -p "$work/tree"
head -c $(( (size_mib - 16) * 1024 * 1024 )) /dev/urandom > "$work/tree/data.bin"
truncate -s "${size_mib}M" "$work/plain.img"
mkfs.ext4 -q -F -d "$work/tree" "$work/plain.img"
python3 - "$work/plain.img" "$one" "$pass" <<'PY'
import hashlib, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
p = open(sys.argv[3], 'rb').read().split(b'\n')[0]
def rmd(d):
    try: return hashlib.new('ripemd160', d).digest()
    except ValueError:
        import subprocess; return subprocess.run(['openssl','dgst','-ripemd160','-binary'], input=d, capture_output=True).stdout
aes = algorithms.AES((rmd(p) + rmd(b'A' + p))[:32])
with open(sys.argv[1], 'rb') as fi, open(sys.argv[2], 'wb') as fo:
    k = 0
    while chunk := fi.read(1 << 20):
        out = bytearray()
        for i in range(0, len(chunk), 512):
            e = Cipher(aes, modes.CBC(k.to_bytes(4, 'little') + bytes(12))).encryptor()
            out += e.update(chunk[i:i+512]); k += 1
        fo.write(out)
PY
rm -rf "$work/tree" "$work/plain.img"
i=1
while [ "$i" -le "$count" ]; do
    cp "$one" "$work/images/img-$(printf %02d "$i").img"
    cp "$root/testdata/sample/archive-2008.img" "$work/tiny/s-$(printf %02d "$i").img"
    i=$((i + 1))
done
rm -f "$one"
now() { date +%s.%N; }
cat "$work/images/"*.img > /dev/null   # warm the page cache
cat "$work/tiny/"*.img > /dev/null
# Sum of single-image runs.
s=$(now)
for f in "$work/images/"*.img; do "$lk" verify --quiet --passphrase-file "$pass" "$f" > /dev/null; done
e=$(now); t_single=$(echo "$e - $s" | bc -l)
batch() { s=$(now); "$lk" verify --quiet "$@" > /dev/null || true; e=$(now); echo "$e - $s" | bc -l; }
t_batch=$(batch "$work/images" --passphrase-file "$pass")
t_batch2=$(batch "$work/images" --passphrase-file "$pass" --jobs "$(nproc)" --readers-per-device "$(nproc)")
t_batchcat=$(batch "$work/images" --passphrase-file "$pass" --catalog "$work/cat.jsonl")
# Per-image overhead: 20 tiny images (1 MiB sample, ~190 KiB allocated).
t_tiny_single=$(s=$(now); for f in "$work/tiny/"*.img; do "$lk" verify --quiet --passphrase-file "$root/testdata/sample/passphrase.txt" "$f" >/dev/null; done; e=$(now); echo "$e - $s" | bc -l)
t_tiny_batch=$(batch "$work/tiny" --passphrase-file "$root/testdata/sample/passphrase.txt" --catalog "$work/tiny-cat.jsonl")
t_tiny_batch_nocat=$(batch "$work/tiny" --passphrase-file "$root/testdata/sample/passphrase.txt")
cores=$(nproc)
echo "machine: $cores cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r); load before: $(cut -d' ' -f1-3 /proc/loadavg); date: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "| what ($count x $size_mib MiB cryptoloop, warm cache) | seconds |"
echo "|---|---:|"
echo "| sum of $count single-image verify runs | $t_single |"
echo "| sum / $cores cores (the goal's baseline) | $(echo "scale=3; $t_single / $cores" | bc -l) |"
echo "| batch, default jobs (one reader per disk) | $t_batch |"
echo "| batch, --jobs $cores --readers-per-device $cores | $t_batch2 |"
echo "| batch, default jobs, --catalog | $t_batchcat |"
echo "ratio batch(default) / (sum/cores): $(echo "scale=2; $t_batch * $cores / $t_single" | bc -l)"
echo "ratio batch(--jobs $cores) / (sum/cores): $(echo "scale=2; $t_batch2 * $cores / $t_single" | bc -l)"
echo "per-image: single process on the 1 MiB sample $(echo "scale=1; $t_tiny_single * 1000 / $count" | bc -l) ms; in a batch $(echo "scale=1; $t_tiny_batch_nocat * 1000 / $count" | bc -l) ms, with --catalog $(echo "scale=1; $t_tiny_batch * 1000 / $count" | bc -l) ms (all include verifying ~190 KiB)"

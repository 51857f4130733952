#!/bin/sh
# Benchmark: `loopkit verify` on a >= 1 GiB cryptoloop image versus, over the same bytes
# and in the same run, `openssl dgst -sha256` (the single-stream SHA-256 bound) and
# `openssl enc -d -aes-256-cbc -nopad` (AES-CBC decryption speed). Warm page cache for all.
# Usage: testdata/bench/verify.sh [SIZE_MIB] [WORKDIR]     (default 1024 MiB, /var/tmp)
# Prints a Markdown table row set for docs/PERFORMANCE.md.
set -eu
size_mib=${1:-1024}
work=${2:-/var/tmp}/loopkit-bench-verify
root=$(cd "$(dirname "$0")/../.." && pwd)
lk="$root/target/release/loopkit"
[ -x "$lk" ] || (cd "$root" && cargo build --release --bins -q)
mkdir -p "$work"
img="$work/cryptoloop-${size_mib}m.img"
pass="$work/pass"
printf 'benchmark passphrase\n' > "$pass"
if [ ! -f "$img" ]; then
    echo "building $img (mkfs.ext4 + one big random file, encrypted per sector by Python cryptography)..." >&2
    rm -rf "$work/tree" && mkdir -p "$work/tree"
    head -c $(( (size_mib - 64) * 1024 * 1024 )) /dev/urandom > "$work/tree/data.bin"
    plain="$work/plain.img"
    rm -f "$plain"; truncate -s "${size_mib}M" "$plain"
    mkfs.ext4 -q -F -d "$work/tree" "$plain"
    python3 - "$plain" "$img" "$pass" <<'PY'
import hashlib, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
p = open(sys.argv[3], 'rb').read().split(b'\n')[0]
def rmd(d):
    try: return hashlib.new('ripemd160', d).digest()
    except ValueError:
        import subprocess; return subprocess.run(['openssl','dgst','-ripemd160','-binary'], input=d, capture_output=True).stdout
key = (rmd(p) + rmd(b'A' + p))[:32]
aes = algorithms.AES(key)
with open(sys.argv[1], 'rb') as fi, open(sys.argv[2], 'wb') as fo:
    k = 0
    while True:
        chunk = fi.read(1 << 20)
        if not chunk: break
        out = bytearray()
        for i in range(0, len(chunk), 512):
            e = Cipher(aes, modes.CBC(k.to_bytes(4, 'little') + bytes(12))).encryptor()
            out += e.update(chunk[i:i+512]); k += 1
        fo.write(out)
PY
    rm -rf "$work/tree" "$plain"
fi
bytes=$(stat -c %s "$img")
t() { # best of 3 wall-clock seconds
    best=""
    for _ in 1 2 3; do
        s=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s.%N)
        d=$(echo "$e - $s" | bc -l)
        if [ -z "$best" ] || [ "$(echo "$d < $best" | bc -l)" = 1 ]; then best=$d; fi
    done
    echo "$best"
}
cat "$img" > /dev/null
t_lk=$(t "$lk" verify --quiet --passphrase-file "$pass" "$img")
t_sha=$(t openssl dgst -sha256 "$img")
t_cbc=$(t openssl enc -d -aes-256-cbc -nopad -K "$(printf '%064d' 1)" -iv 00000000000000000000000000000000 -in "$img" -out /dev/null)
# OpenSSL's in-memory SHA-256 rate (no file reading): the strictest single-stream bound.
sha_mem=$(openssl speed -seconds 3 -bytes 1048576 -evp sha256 2>/dev/null | awk '/^sha256/{print $2}' | tr -d k)
mbps() { echo "scale=0; $bytes / $1 / 1000000" | bc -l; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r); date: $(date -u +%Y-%m-%d); image: $bytes bytes"
echo "| what | seconds (best of 3) | MB/s |"
echo "|---|---:|---:|"
echo "| loopkit verify (read + AES-CBC decrypt + SHA-256 + fs check) | $t_lk | $(mbps "$t_lk") |"
echo "| openssl dgst -sha256 | $t_sha | $(mbps "$t_sha") |"
echo "| openssl enc -d -aes-256-cbc -nopad | $t_cbc | $(mbps "$t_cbc") |"
echo "| openssl speed -evp sha256 (in memory, 1 MiB blocks) | - | $(echo "scale=0; $sha_mem / 1000" | bc -l) |"
echo "ratio loopkit / openssl dgst -sha256 (same file): $(echo "scale=2; $t_sha / $t_lk" | bc -l)"
echo "ratio loopkit / openssl in-memory SHA-256: $(echo "scale=2; $bytes / $t_lk / ($sha_mem * 1000)" | bc -l)"

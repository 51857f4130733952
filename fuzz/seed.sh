#!/bin/sh
# Seed corpora for the fuzz targets from the same generators and tools the tests use as oracles:
# mkfs.ext2/ext4 -d, genisoimage -R -J, cryptsetup luksFormat (LUKS1/LUKS2 headers),
# testdata/gen/ecc.py (dvdisaster RS01/RS02/RS03), testdata/gen/tree.py (the file tree); and
# public test data fetched at seed time (never committed): e2fsprogs' test images (tests/*/
# image.gz, the damaged file systems e2fsck's regression suite repairs) and cryptsetup's LUKS2
# header validation suite (testdata/gen/cryptsetup-validation.sh), both from the installed
# packages' Debian sources (testdata/gen/apt-source.sh; skipped with a message where apt
# cannot reach a mirror).
# Usage: fuzz/seed.sh [CORPUS_DIR]   (default fuzz/corpus). Small files only (≤ 1 MiB each).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/fuzz/corpus}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for t in luks_header luks2_json dvdisaster_headers ext iso9660 loopaes_keyfile fs_probe open_verify repair rescue_map damage_map; do
    mkdir -p "$out/$t"
done
# A tiny tree: files (empty, small, with a hole), a symlink, a hard link, a 120-entry directory,
# a deep path. Kept small so the images are 128-512 KiB: the smaller the input, the more
# executions per second (and libFuzzer's mutations land in metadata, not in file data).
mkdir -p "$tmp/tree/big" "$tmp/tree/a/b/c/d"
printf 'hello\n' > "$tmp/tree/small.txt"; : > "$tmp/tree/empty"
dd if=/dev/urandom of="$tmp/tree/a/b/c/d/data.bin" bs=1k count=12 2>/dev/null
truncate -s 40k "$tmp/tree/sparse"; printf 'x' | dd of="$tmp/tree/sparse" bs=1 seek=30000 conv=notrunc 2>/dev/null
ln -s small.txt "$tmp/tree/link"; ln "$tmp/tree/small.txt" "$tmp/tree/hard"
i=0; while [ $i -lt 120 ]; do : > "$tmp/tree/big/entry-$i-with-a-longish-name"; i=$((i + 1)); done
# ext2 (1 KiB blocks, block maps), ext4 (extents, metadata_csum), ext4 with inline data;
# no journals (the seeds stay small).
mk() { truncate -s "$2" "$tmp/$1.img"; }
mk ext2 128k && mkfs.ext2 -q -F -b 1024 -N 160 -d "$tmp/tree" "$tmp/ext2.img"
mk ext4 512k && mkfs.ext4 -q -F -O ^has_journal -b 1024 -N 192 -d "$tmp/tree" "$tmp/ext4.img"
mk ext4i 512k && mkfs.ext4 -q -F -O ^has_journal,inline_data -b 1024 -N 192 -d "$tmp/tree" "$tmp/ext4i.img"
for fs in ext2 ext4 ext4i; do
    cp "$tmp/$fs.img" "$out/ext/$fs.img"
    head -c 4096 "$tmp/$fs.img" > "$out/fs_probe/$fs.head"
done
cp "$tmp/ext2.img" "$out/open_verify/ext2.img"
genisoimage -quiet -no-pad -R -J -o "$tmp/rr.iso" "$tmp/tree" 2>/dev/null || genisoimage -quiet -no-pad -R -o "$tmp/rr.iso" "$tmp/tree"
cp "$tmp/rr.iso" "$out/iso9660/rr-joliet.iso"
head -c 40960 "$tmp/rr.iso" > "$out/fs_probe/iso.head"
# open_verify runs with the passphrase "fuzz": a cryptoloop (util-linux SHA-256, AES-128) ext2
# so the key search finds a key and the encrypted path reaches the file-system checks.
printf 'fuzz' > "$tmp/fuzzpass"
python3 "$root/testdata/gen/legacy.py" encrypt --plain "$tmp/ext2.img" --scheme cryptoloop \
    --derivation sha256 --key-bits 128 --passphrase-file "$tmp/fuzzpass" --out "$out/open_verify/cryptoloop-ext2.img" >/dev/null
printf 'loopkit fuzz seed' > "$tmp/pass"
for v in luks1 luks2; do
    truncate -s 20M "$tmp/$v.img"
    cryptsetup luksFormat --batch-mode --type "$v" --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
        --key-file "$tmp/pass" "$tmp/$v.img" >/dev/null 2>&1 || continue
    head -c 65536 "$tmp/$v.img" > "$out/luks_header/$v.hdr"
    cp "$out/luks_header/$v.hdr" "$out/open_verify/$v.hdr"
done
if [ -f "$tmp/luks2.img" ]; then
    dd if="$tmp/luks2.img" bs=1 skip=4096 count=12288 2>/dev/null | tr -d '\000' > "$out/luks2_json/luks2.json"
fi
python3 - "$out/loopaes_keyfile" <<'PY'
import base64, hashlib, os, sys
d = sys.argv[1]
for n in (1, 64, 65):
    lines = [base64.b64encode(hashlib.sha512(b"line%d" % i).digest()[:45]).decode()[:60] for i in range(n)]
    open(os.path.join(d, "keys%d" % n), "w").write("\n".join(lines) + "\n")
PY
if command -v dvdisaster >/dev/null; then
    ecc() { timeout 120 python3 "$root/testdata/gen/ecc.py" "$@" >/dev/null 2>&1; }
    ulimit -f 131072
    if ecc iso --kib 2048 --out "$tmp/e.iso"; then
        for m in RS01 RS03; do
            ecc eccfile --image "$tmp/e.iso" --method $m --roots 32 --out "$tmp/e-$m.ecc" &&
                head -c 65536 "$tmp/e-$m.ecc" > "$out/dvdisaster_headers/$m.ecc" || true
        done
        # repair: a whole small .ecc file (its image is the input after the 4 KiB header).
        if ecc data --bytes 200000 --seed repair --out "$tmp/r.bin"; then
            for m in RS01 RS03; do
                ecc eccfile --image "$tmp/r.bin" --method $m --roots 32 --out "$out/repair/$m.ecc" || true
            done
        fi
        for m in RS02 RS03; do
            cp "$tmp/e.iso" "$tmp/a-$m.iso"
            ecc augment --image "$tmp/a-$m.iso" --method $m --roots 32 &&
                tail -c 262144 "$tmp/a-$m.iso" > "$out/dvdisaster_headers/$m.tail" || true
        done
    fi
fi
# Public test data. The cache is shared with the test suite's (target/cryptsetup-tests).
cache=${LOOPKIT_CRYPTSETUP_CACHE:-$root/target/cryptsetup-tests}
if e2src=$(sh "$root/testdata/gen/apt-source.sh" e2fsprogs "$cache" tests); then
    # e2fsprogs' images up to 512 KiB: ext (whole), fs_probe (superblock area), open_verify
    # (the 40 smallest).
    n=0
    for gz in "$e2src"/tests/*/image.gz; do
        name=e2fsprogs-$(basename "$(dirname "$gz")")
        gzip -dc "$gz" > "$tmp/e2.img" 2>/dev/null || continue
        [ "$(stat -c %s "$tmp/e2.img")" -le 524288 ] || continue
        cp "$tmp/e2.img" "$out/ext/$name"
        head -c 4096 "$tmp/e2.img" > "$out/fs_probe/$name"
        n=$((n + 1))
    done
    ls -S -r "$out/ext" | grep '^e2fsprogs-' | head -n 40 | while read -r f; do cp "$out/ext/$f" "$out/open_verify/$f"; done
    echo "seed: $n e2fsprogs test images ($(cat "$e2src/SOURCE"))" >&2
else
    echo "seed: no e2fsprogs test images (apt-source.sh could not fetch them)" >&2
fi
if sh "$root/testdata/gen/cryptsetup-validation.sh" "$cache" "$tmp/cs" >/dev/null; then
    # cryptsetup's 83 headers: the first 64 KiB for luks_header (and open_verify for a few),
    # the JSON area (bytes 4096..hdr_size, NULs dropped) for luks2_json.
    for img in "$tmp/cs/images"/*; do
        name=cryptsetup-$(basename "$img")
        head -c 65536 "$img" > "$out/luks_header/$name"
        python3 - "$img" "$out/luks2_json/$name.json" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read(4 << 20)
if len(b) >= 16 and b[:6] == b"LUKS\xba\xbe":
    hdr = struct.unpack(">Q", b[8:16])[0]
    if 4096 < hdr <= len(b):
        open(sys.argv[2], "wb").write(b[4096:hdr].replace(b"\0", b""))
PY
    done
    ls "$tmp/cs/images" | head -n 8 | while read -r f; do head -c 65536 "$tmp/cs/images/$f" > "$out/open_verify/cryptsetup-$f"; done
    echo "seed: $(ls "$tmp/cs/images" | wc -l) cryptsetup validation headers" >&2
else
    echo "seed: no cryptsetup validation headers (see the message above)" >&2
fi
# rescue_map: ddrescue map files made by ddrescuelog (8 bytes of source size << 16, little
# endian, then the map text; see loopkit::fuzzing::rescue_map).
if command -v ddrescuelog >/dev/null; then
    n=0
    for list in "1 2 3 100" "0" "5 6 7 8 9 10 11 12 4000"; do
        n=$((n + 1))
        printf '%s\n' $list | ddrescuelog -f -b 2048 -s 10000000 -c-+ "$tmp/m$n.map"
        python3 -c 'import struct,sys; sys.stdout.buffer.write(struct.pack("<Q", 10000000 << 16) + open(sys.argv[1], "rb").read())' \
            "$tmp/m$n.map" > "$out/rescue_map/ddrescuelog-$n"
    done
fi
# damage_map: 64 bytes of damage (8 x sector u32 LE, count, status, 2 unused; see
# loopkit::fuzzing::damage_map) before each of its own 64 KiB images (ext2, ext4 with extents,
# ext4 with inline data, ISO9660 with Rock Ridge) of a smaller tree than the one above: the target
# copies and walks the whole image on every execution, so 64 KiB seeds run several times as many
# executions per second as the 128-512 KiB ones.
mkdir -p "$tmp/dtree/d/e"
printf 'hello\n' > "$tmp/dtree/s.txt"; : > "$tmp/dtree/empty"
dd if=/dev/urandom of="$tmp/dtree/d/e/data.bin" bs=1k count=9 2>/dev/null
truncate -s 20k "$tmp/dtree/sparse"; printf 'x' | dd of="$tmp/dtree/sparse" bs=1 seek=15000 conv=notrunc 2>/dev/null
ln -s s.txt "$tmp/dtree/link"
for i in 1 2 3 4 5 6; do : > "$tmp/dtree/d/f$i"; done
truncate -s 64k "$tmp/d-ext2.img" && mkfs.ext2 -q -F -b 1024 -N 32 -O ^resize_inode -d "$tmp/dtree" "$tmp/d-ext2.img"
truncate -s 64k "$tmp/d-ext4.img" && mkfs.ext4 -q -F -O ^has_journal,^resize_inode -b 1024 -N 32 -d "$tmp/dtree" "$tmp/d-ext4.img"
truncate -s 64k "$tmp/d-ext4i.img" && mkfs.ext4 -q -F -O ^has_journal,^resize_inode,inline_data -b 1024 -N 32 -d "$tmp/dtree" "$tmp/d-ext4i.img"
genisoimage -quiet -no-pad -R -o "$tmp/d-iso.img" "$tmp/dtree/d"
for f in "$tmp"/d-*.img; do
    { printf '\004\000\000\000\003\001\000\000\100\000\000\000\001\000\000\000'; head -c 48 /dev/zero; cat "$f"; } \
        > "$out/damage_map/$(basename "$f" .img)"
done
ls -R "$out" | head -60

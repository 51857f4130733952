#!/bin/bash
# Description: the file-system fixtures, built by independent tools from the
# deterministic tree of tree.py:
#   ext2-1k.img        mkfs.ext2 -b 1024 (128-byte inodes, block maps with double indirection)
#   ext3.img           mkfs.ext3 -b 4096 (journal, block maps)
#   ext4.img           mkfs.ext4 (extents, 64bit, metadata_csum, flex_bg, 256-byte inodes)
#   ext4-64k.img       mkfs.ext4 -b 65536 (64 KiB blocks: rec_len encoding)
#   ext4-inline.img    mkfs.ext4 -O inline_data,^metadata_csum (inline files and dirs, uninit_bg;
#                      tree-inline = tree without the sparse file, see below)
#   ext4-metabg.img    mkfs.ext4 -O meta_bg,^resize_inode -b 1024 (meta block groups)
#   iso-rr.iso         genisoimage -R             (Rock Ridge; deep dirs relocated)
#   iso-xorriso.iso    xorriso (Rock Ridge, hard links recorded)
#   iso-rrj.iso        genisoimage -R -J          (tree-utf8: Joliet cannot hold the latin-1 name)
#   iso-joliet.iso     genisoimage -J             (tree-joliet: Joliet only)
#   cryptoloop-ext4.img, loopaes-ext2.img          encrypted by legacy.py (Python cryptography, aespipe)
# with want.json / want-utf8.json / want-joliet.json from manifest.py (the oracle).
# Every ext image gets e2fsck -fyD so big directories are real htree directories.
# generate: fs-images.sh OUTDIR    check: the script itself checks e2fsck and the htree flag.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$1
mkdir -p "$out"
cd "$out"
export E2FSPROGS_FAKE_TIME=1199145600 SOURCE_DATE_EPOCH=1199145600
uuid=4c6f6f70-6b69-7400-8000-000000000003
# The tests' Python (tests/util.rs python(), tests/setup.sh): $LOOPKIT_PYTHON or python3.
py=${LOOPKIT_PYTHON:-python3}

rm -rf tree tree-utf8 tree-joliet tree-inline
"$py" "$here/tree.py" tree >/dev/null
"$py" "$here/tree.py" tree-joliet --profile joliet >/dev/null
cp -a tree tree-utf8
rm -f tree-utf8/latin1-*
# mke2fs 1.47.0 -d with inline_data truncates sparse files after their last data block; that
# image is built without the sparse file (debugfs agrees with loopkit on the truncated size).
cp -a tree tree-inline
rm -f tree-inline/sparse.bin
"$py" "$here/manifest.py" tree >want.json
"$py" "$here/manifest.py" tree-utf8 >want-utf8.json
"$py" "$here/manifest.py" tree-inline >want-inline.json
"$py" "$here/manifest.py" --no-meta tree-joliet >want-joliet.json

mkext() { # name size tree mkfs-args...
    local name=$1 size=$2 src=$3
    shift 3
    rm -f "$name"
    truncate -s "$size" "$name"
    "$@" -q -F -U "$uuid" -E "hash_seed=$uuid" -N 4096 -d "$src" "$name" >/dev/null
    # -D rebuilds directories as htrees; exit 1 means "fixed/optimised", fine.
    e2fsck -fyD "$name" >/dev/null 2>&1 || [ $? -le 1 ]
    e2fsck -fn "$name" >/dev/null 2>&1 || { echo "$name: e2fsck -fn reports problems" >&2; exit 1; }
    debugfs -R "stat /many" "$name" 2>/dev/null | grep -q "Flags: 0x[0-9a-f]*[1-9a-f][0-9a-f][0-9a-f][0-9a-f]" \
        || { echo "$name: /many is not an htree directory" >&2; exit 1; }
}
mkext ext2-1k.img 16M tree mkfs.ext2 -b 1024
mkext ext3.img 16M tree mkfs.ext3 -b 4096
mkext ext4.img 16M tree mkfs.ext4
mkext ext4-64k.img 32M tree mkfs.ext4 -b 65536 2>/dev/null
mkext ext4-inline.img 16M tree-inline mkfs.ext4 -O inline_data,^metadata_csum
mkext ext4-metabg.img 16M tree mkfs.ext4 -b 1024 -O meta_bg,^resize_inode

genisoimage -quiet -R -V fixture -o iso-rr.iso tree
xorriso -abort_on FAILURE -outdev iso-xorriso.iso -volid fixture -hardlinks on -map tree / >/dev/null 2>&1
genisoimage -quiet -input-charset utf-8 -R -J -joliet-long -o iso-rrj.iso tree-utf8
genisoimage -quiet -input-charset utf-8 -J -o iso-joliet.iso tree-joliet

printf 'fixture passphrase for issue 3\n' >pass
"$py" "$here/legacy.py" encrypt --plain ext4.img --scheme cryptoloop --derivation util-linux-raw \
    --key-bits 256 --passphrase-file pass --out cryptoloop-ext4.img >/dev/null
"$py" "$here/legacy.py" encrypt --plain ext2-1k.img --scheme loop-aes --aespipe-args "-e AES128" \
    --passphrase-file pass --out loopaes-ext2.img >/dev/null
touch done

#!/bin/sh
# Regenerate lib/ublk-sys/src/ublk_cmd.rs, the committed ublk UAPI bindings that replace the
# bindgen build step of the published `libublk-rs-sys` crate (docs/ARCHITECTURE.md, "attach").
#
#   sh lib/ublk-sys/regen.sh            (needs cargo, a C toolchain and libclang-dev; not root)
#
# Input: the ublk_cmd.h that libublk-rs-sys VERSION ships (the kernel's
# include/uapi/linux/ublk_cmd.h with two unions reduced to one member each so bindgen gives
# plain fields; libublk 0.4.8 is written against exactly that API). It is taken from the
# published .crate through a throw-away Cargo project, so nothing but the registry is used.
# Tool: bindgen-cli BINDGEN_VERSION (the bindgen version libublk-rs-sys's build script uses),
# installed under target/ublk-sys-regen/. The output is what that build script produced: the
# request numbers that are function-like macros (_IOWR…) are bound through `const` variables
# named Fix753_<NAME> (bindgen issue 753) and renamed back (UBLK_IO_RES_ABORT, -ENODEV, needs no
# such help: bindgen evaluates it through linux/errno.h); every derived struct also derives
# serde's Serialize/Deserialize (libublk serialises `ublk_params` and `ublksrv_ctrl_dev_info`).
# Only the generated file is written; check the result with `git diff` and the ABI test
# (`cargo test --test tests -- ublk_abi`), which compares it with the kernel's own header.
set -eu
VERSION=0.1.2
BINDGEN_VERSION=0.69.5
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work="$repo/target/ublk-sys-regen"
mkdir -p "$work"

# 1. The header, from the published crate.
proj="$work/fetch"
mkdir -p "$proj/src"
printf '[package]\nname = "fetch-ublk-header"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nlibublk-rs-sys = "=%s"\n[workspace]\n' \
    "$VERSION" >"$proj/Cargo.toml"
: >"$proj/src/lib.rs"
cargo fetch -q --manifest-path "$proj/Cargo.toml"
crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"libublk-rs-sys-$VERSION.crate" 2>/dev/null | head -n 1)
[ -n "$crate" ] || { echo "regen: libublk-rs-sys-$VERSION.crate not in the cargo cache after cargo fetch" >&2; exit 1; }
tar -xzf "$crate" -C "$work" "libublk-rs-sys-$VERSION/ublk_cmd.h"
header="$work/libublk-rs-sys-$VERSION/ublk_cmd.h"

# 2. bindgen-cli.
bindgen="$work/bin/bindgen"
if ! "$bindgen" --version 2>/dev/null | grep -q " $BINDGEN_VERSION\$"; then
    cargo install -q --locked --root "$work" bindgen-cli --version "=$BINDGEN_VERSION"
fi

# 3. The wrapper: the header plus one `const` per request number.
requests="UBLK_U_CMD_GET_QUEUE_AFFINITY UBLK_U_CMD_GET_DEV_INFO UBLK_U_CMD_ADD_DEV UBLK_U_CMD_DEL_DEV
UBLK_U_CMD_START_DEV UBLK_U_CMD_STOP_DEV UBLK_U_CMD_SET_PARAMS UBLK_U_CMD_GET_PARAMS
UBLK_U_CMD_START_USER_RECOVERY UBLK_U_CMD_END_USER_RECOVERY UBLK_U_CMD_GET_DEV_INFO2
UBLK_U_CMD_GET_FEATURES UBLK_U_IO_FETCH_REQ UBLK_U_IO_COMMIT_AND_FETCH_REQ UBLK_U_IO_NEED_GET_DATA
UBLK_U_CMD_DEL_DEV_ASYNC UBLK_U_CMD_UPDATE_SIZE UBLK_U_CMD_QUIESCE_DEV UBLK_U_CMD_TRY_STOP_DEV
UBLK_U_CMD_REG_BUF UBLK_U_CMD_UNREG_BUF UBLK_U_IO_REGISTER_IO_BUF UBLK_U_IO_UNREGISTER_IO_BUF
UBLK_U_IO_PREP_IO_CMDS UBLK_U_IO_COMMIT_IO_CMDS UBLK_U_IO_FETCH_IO_CMDS"
wrapper="$work/wrapper.h"
{
    echo '#include <asm/ioctl.h>'
    echo '#include <linux/errno.h>'
    echo '#include <linux/blkzoned.h>'
    echo "#include \"$header\""
    for r in $requests; do echo "const unsigned int Fix753_$r = $r;"; done
} >"$wrapper"

# 4. Generate, rename, add the serde derives.
raw="$work/ublk_cmd.raw.rs"
"$bindgen" "$wrapper" -o "$raw" \
    --ctypes-prefix libc --no-prepend-enum-name --with-derive-default --use-core \
    --generate-inline-functions \
    --allowlist-var 'UBLKSRV_.*|UBLK_.*|UBLK_U_.*|Fix753_.*' \
    --allowlist-function ublk_sqe_addr_to_auto_buf_reg --allowlist-function ublk_auto_buf_reg_to_sqe_addr \
    --allowlist-type 'ublksrv_.*|ublk_.*' --allowlist-var 'BLK_ZONE_.*' --allowlist-type 'blk_zone_.*'
out="$here/src/ublk_cmd.rs"
{
    echo 'use serde::{Serialize, Deserialize};'
    perl -0pe 's/\bFix753_//g; s/#\s*\[\s*derive\s*\(([^)]+)\)\s*\]\s*pub\s*(struct|enum)/#[derive($1, Serialize, Deserialize)] pub $2/g' "$raw"
} >"$out.tmp"
mv "$out.tmp" "$out"
echo "regen: wrote $out from $(basename "$crate") ($(sha256sum "$header" | cut -c1-16)…) with bindgen $BINDGEN_VERSION" >&2

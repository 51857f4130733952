#!/bin/sh
# Prepare the kernel and initramfs for loopkit's real-kernel tests (see docs/TESTING.md,
# "Real-kernel tests").
#
#   tests/vm/prepare.sh [CACHE_DIR]      (default: target/vm-cache, or $LOOPKIT_VM_CACHE)
#
# LOOPKIT_VM_SUITE picks the Debian suite whose linux-image-amd64 is used: trixie (default; 6.12,
# ublk copy path) or trixie-backports (7.x, ublk zero copy); each suite has its own cache entry.
#
# Fetches Debian trixie's linux-image-amd64 (6.12: CONFIG_BLK_DEV_UBLK=m, CONFIG_DM_CRYPT=m) with
# PRIVATE apt state pointed at the machine's own configured Debian mirror (the system's apt
# configuration and package state are not touched), extracts it, runs depmod, and builds a
# busybox-static initramfs holding the modules the tests need plus tests/vm/init.
#
# Cache layout (keyed by the kernel package's version, so a rerun is fast and works offline):
#   CACHE/kernel-<pkg>_<version>/{kroot/,.complete,initrd-<stamp>.cpio.gz}
#   CACHE/current            name of the kernel directory in use (trixie)
#   CACHE/current-SUITE      the same for another suite (trixie-backports)
# Once a kernel is cached it is reused without touching the network; LOOPKIT_VM_REFRESH=1 asks
# the mirror for a newer one (falling back to the cached one if the mirror cannot be reached).
#
# On success prints, on stdout, lines KEY=VALUE: VM_KERNEL, VM_INITRD, VM_KVER, VM_MODROOT,
# VM_KPKG. Progress and errors go to stderr; exit status 0 ok, 1 failed (the reason is the last
# stderr line).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${1:-${LOOPKIT_VM_CACHE:-$repo/target/vm-cache}}
suite=${LOOPKIT_VM_SUITE:-trixie}
metapkg=linux-image-amd64

# Modules loaded at boot, in this order (each with its dependencies, from modules.dep).
# Anything else can be loaded in the guest with: modprobe -d "$VM_MODROOT" NAME
BOOT_MODULES="virtio_blk virtio-rng 9pnet_virtio 9p crc32c_generic crc32c-intel ext4 loop dm-mod dm-crypt
dm-flakey xts essiv aesni-intel ublk_drv isofs udf vfat nls_utf8 nls_cp437 nls_iso8859-1"

log() { echo "vm-prepare: $*" >&2; }
die() { echo "vm-prepare: $*" >&2; exit 1; }

for tool in busybox cpio gzip xz depmod modprobe dpkg-deb apt-get flock sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool (see tests/apt-packages.txt)"
done
busybox_bin=$(command -v busybox)
file_is_static() { ! LC_ALL=C ldd "$1" >/dev/null 2>&1; }
file_is_static "$busybox_bin" || die "$busybox_bin is not statically linked (install busybox-static)"

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
exec 9>"$cache/.lock"
flock 9 # one preparation at a time per cache (parallel test binaries)

# The machine's own Debian mirror: the first non-security deb source in apt's configuration
# (tests/debian-mirror.sh; LOOPKIT_VM_DEBIAN_MIRROR overrides it here).
debian_mirror() {
    if [ -n "${LOOPKIT_VM_DEBIAN_MIRROR:-}" ]; then
        echo "$LOOPKIT_VM_DEBIAN_MIRROR"
        return
    fi
    sh "$here/../debian-mirror.sh"
}

# Initramfs contents stamp: rebuilt when the init script, this script or busybox change.
stamp=$(cat "$here/init" "$0" "$busybox_bin" | sha256sum | cut -c1-16)

complete_dir() { [ -n "$1" ] && [ -f "$cache/$1/.complete" ]; }

# Fetch (if needed) the suite's current kernel into CACHE/kernel-<pkg>_<version>; print that name.
# Runs in a subshell inside an `elif` condition, where set -e does not apply: every step that
# can fail says `|| die` (die ends only the subshell).
fetch_kernel() {
    apt_dir="$cache/apt"
    [ "$suite" = trixie ] || apt_dir="$cache/apt-$suite"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    mirror=$(debian_mirror) || true
    [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d} (set LOOPKIT_VM_DEBIAN_MIRROR)"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -f "$keyring" ] || die "missing $keyring (install debian-archive-keyring)"
    echo "deb [signed-by=$keyring] $mirror $suite main" >"$apt_dir/sources.list"
    set -- -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" \
        -o Acquire::Languages=none -o APT::Sandbox::User=root
    log "updating private apt lists for $suite"
    apt-get "$@" -q update >"$apt_dir/update.log" 2>&1 && ! grep -q -e '^E: ' -e 'Failed to fetch' "$apt_dir/update.log" || {
        tail -n 5 "$apt_dir/update.log" >&2 || true
        die "cannot fetch the $suite package lists"
    }
    pkg=$(apt-cache "$@" depends "$metapkg" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
    [ -n "$pkg" ] || die "cannot resolve $metapkg in $suite"
    ver=$(apt-cache "$@" show "$pkg" 2>/dev/null | awk '/^Version:/{print $2; exit}')
    [ -n "$ver" ] || die "cannot find the version of $pkg"
    name="kernel-${pkg}_${ver}"
    if ! complete_dir "$name"; then
        dir="$cache/$name"
        rm -rf "$dir" "$cache/dl"
        mkdir -p "$dir" "$cache/dl" || die "cannot create $dir"
        log "downloading $pkg $ver"
        (cd "$cache/dl" && apt-get "$@" -qq download "$pkg" >"$cache/dl/download.log" 2>&1) || {
            tail -n 5 "$cache/dl/download.log" >&2 || true
            die "cannot download $pkg"
        }
        # Newer kernels (7.x in backports) split the image package: a small linux-image-KVER
        # that depends on linux-binary-KVER (vmlinuz), linux-modules-KVER and linux-base-KVER.
        parts=$(apt-cache "$@" depends "$pkg" 2>/dev/null | awk '/Depends: linux-(binary|modules|base)-/{print $2}' | sort -u)
        for part in $parts; do
            (cd "$cache/dl" && apt-get "$@" -qq download "$part" >>"$cache/dl/download.log" 2>&1) || {
                tail -n 5 "$cache/dl/download.log" >&2 || true
                die "cannot download $part"
            }
        done
        log "extracting"
        for deb in "$cache/dl/"*.deb; do
            dpkg-deb -x "$deb" "$dir/kroot" || die "cannot extract $deb"
        done
        rm -rf "$cache/dl"
        kver=$(ls "$dir/kroot/usr/lib/modules")
        [ -f "$dir/kroot/boot/vmlinuz-$kver" ] || [ -f "$dir/kroot/usr/lib/modules/$kver/vmlinuz" ] || die "no vmlinuz for $kver in $pkg"
        log "depmod $kver"
        depmod -b "$dir/kroot/usr" "$kver" || die "depmod failed"
        echo "$kver" >"$dir/kver" && echo "$pkg $ver" >"$dir/pkg" && touch "$dir/.complete" || die "cannot write to $dir"
    fi
    echo "$name"
}

current_file="$cache/current"
[ "$suite" = trixie ] || current_file="$cache/current-$suite"
current=""
[ -f "$current_file" ] && current=$(cat "$current_file")
if complete_dir "$current" && [ "${LOOPKIT_VM_REFRESH:-0}" != 1 ]; then
    want=$current
elif want=$(fetch_kernel) && complete_dir "$want"; then
    :
elif complete_dir "$current"; then
    log "could not refresh the kernel; using the cached $current"
    want=$current
else
    die "cannot fetch a $suite kernel and none is cached"
fi
echo "$want" >"$current_file.tmp" && mv "$current_file.tmp" "$current_file"
# Kernels no suite uses any more are not needed (about 120 MB each).
for old in "$cache"/kernel-*; do
    [ -d "$old" ] || continue
    cat "$cache"/current* 2>/dev/null | grep -qx "$(basename "$old")" || rm -rf "$old"
done

dir="$cache/$want"
kver=$(cat "$dir/kver")
modroot="$dir/kroot/usr"
initrd="$dir/initrd-$stamp.cpio.gz"
if [ ! -f "$initrd" ]; then
    log "building initramfs ($stamp)"
    t="$dir/initrd.build"
    rm -rf "$t"
    mkdir -p "$t/bin" "$t/lib/modules" "$t/proc" "$t/sys" "$t/dev" "$t/host" "$t/tmp"
    cp "$busybox_bin" "$t/bin/busybox"
    cp "$here/init" "$t/init"
    chmod 755 "$t/init" "$t/bin/busybox"
    : >"$t/modules.order"
    for m in $BOOT_MODULES; do
        modprobe -d "$modroot" -S "$kver" --show-depends "$m" 2>/dev/null | awk '$1 == "insmod" {print $2}' | while read -r ko; do
            base=$(basename "$ko" .xz)
            if ! grep -qx "$base" "$t/modules.order"; then
                case "$ko" in
                *.xz) xz -dc "$ko" >"$t/lib/modules/$base" ;;
                *) cp "$ko" "$t/lib/modules/$base" ;;
                esac
                echo "$base" >>"$t/modules.order"
            fi
        done
    done
    grep -q '^9p.ko$' "$t/modules.order" || die "kernel $kver has no 9p module"
    rm -f "$dir"/initrd-*.cpio.gz
    (cd "$t" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) >"$initrd.tmp"
    mv "$initrd.tmp" "$initrd"
    rm -rf "$t"
fi

vmlinuz="$dir/kroot/boot/vmlinuz-$kver"
[ -f "$vmlinuz" ] || vmlinuz="$dir/kroot/usr/lib/modules/$kver/vmlinuz"
echo "VM_KERNEL=$vmlinuz"
echo "VM_INITRD=$initrd"
echo "VM_KVER=$kver"
echo "VM_MODROOT=$modroot"
echo "VM_KPKG=$(cat "$dir/pkg")"

#!/bin/sh
# A brand-new Debian machine as a chroot, for the fresh-machine test (tests/fresh_machine.rs,
# docs/TESTING.md). Run as root.
#
#   tests/fresh-root.sh prepare CACHE
#       Makes, once, CACHE/root-SUITE-KEY/root: `debootstrap --variant=minbase` of this machine's
#       own Debian suite (/etc/os-release) from its own configured mirror (tests/debian-mirror.sh),
#       plus what a Rust user's machine has besides Rust: $PACKAGES. A .complete marker says the
#       root is whole; it is never modified afterwards. Prints ROOT=, SUITE=, MIRROR= lines.
#       Exit 3 when the Debian archive cannot be reached (the test is skipped), 1 on any other
#       failure; the reason is the last stderr line.
#   tests/fresh-root.sh copy PRISTINE DEST
#       A fresh working copy of the pristine root at DEST, given this machine's DNS configuration,
#       CA trust store (/etc/ssl/certs, /usr/local/share/ca-certificates: the crate registry may
#       be reached through a TLS-inspecting proxy) and cargo configuration, and a policy-rc.d that
#       keeps package scripts from starting daemons.
#   tests/fresh-root.sh enter ROOT [--ro SRC DST]… [--rw SRC DST]… -- COMMAND [ARG…]
#       Runs COMMAND chrooted into ROOT, in new mount and PID namespaces: /proc, /sys, a few /dev
#       nodes, /dev/pts, /dev/shm and the bind mounts (DST inside ROOT; --ro read-only) exist only
#       there and disappear with the last process, also when the caller is killed. The
#       environment is emptied except HOME=/root, PATH (with /opt/rust/bin and /root/.cargo/bin),
#       LANG, TERM and this machine's proxy variables.
set -eu

PACKAGES=gcc,libc6-dev,git,ca-certificates
here=$(cd "$(dirname "$0")" && pwd)
me="$here/fresh-root.sh"

die() { echo "fresh-root: $*" >&2; exit 1; }
unreachable() { echo "fresh-root: $*" >&2; exit 3; }
log() { echo "fresh-root: $*" >&2; }

prepare() {
    cache=$1
    for tool in debootstrap wget unshare flock sha256sum; do
        command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool (see tests/apt-packages.txt)"
    done
    [ -r /etc/os-release ] || die "no /etc/os-release"
    id=$(. /etc/os-release && echo "${ID:-}")
    suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ "$id" = debian ] || die "not a Debian machine (/etc/os-release: ID=$id)"
    [ -n "$suite" ] || die "no VERSION_CODENAME in /etc/os-release"
    mirror=$(sh "$here/debian-mirror.sh") || die "no Debian mirror in /etc/apt/sources.list{,.d} (set LOOPKIT_DEBIAN_MIRROR)"
    # Reachability first (also when the root is cached: the test installs packages from there).
    wget -q -T 30 -t 2 -O /dev/null "$mirror/dists/$suite/Release" \
        || unreachable "cannot reach the Debian archive: $mirror/dists/$suite/Release"
    mkdir -p "$cache"
    cache=$(cd "$cache" && pwd)
    exec 9>"$cache/.lock"
    flock 9
    key=$(printf 'minbase %s\n' "$PACKAGES" | sha256sum | cut -c1-12)
    dir="$cache/root-$suite-$key"
    if [ ! -f "$dir/.complete" ]; then
        rm -rf --one-file-system "$dir"
        mkdir -p "$dir"
        log "debootstrap $suite from $mirror (once; cached in $dir)"
        # In a private mount namespace: the /proc and /sys debootstrap mounts go away with it.
        if ! unshare --mount --propagation private \
            debootstrap --variant=minbase --include="$PACKAGES" "$suite" "$dir/root" "$mirror" \
            >"$dir/debootstrap.log" 2>&1; then
            tail -n 5 "$dir/debootstrap.log" >&2 || true
            if grep -q -i -e "Failed getting release file" -e "Couldn't download" -e "couldn't download" "$dir/debootstrap.log"; then
                unreachable "debootstrap cannot download from $mirror"
            fi
            die "debootstrap failed (log: $dir/debootstrap.log)"
        fi
        # The packages debootstrap downloaded (the test bind-mounts its own archive cache there).
        rm -f "$dir/root/var/cache/apt/archives/"*.deb
        touch "$dir/.complete"
        for old in "$cache"/root-"$suite"-*; do
            [ "$old" = "$dir" ] || rm -rf --one-file-system "$old"
        done
    fi
    echo "ROOT=$dir/root"
    echo "SUITE=$suite"
    echo "MIRROR=$mirror"
}

copy() {
    pristine=$1
    dest=$2
    [ -f "$pristine/../.complete" ] || die "$pristine is not a complete root"
    [ ! -e "$dest" ] || die "$dest exists"
    cp -a --reflink=auto "$pristine" "$dest"
    # Every destination is removed first: cp would write through a symlink in the copy, whose
    # absolute target is a path on this machine.
    put() { rm -rf "$dest/$2" && mkdir -p "$(dirname "$dest/$2")" && cp -RL "$1" "$dest/$2"; }
    put /etc/resolv.conf etc/resolv.conf
    [ ! -f /etc/hosts ] || put /etc/hosts etc/hosts
    # The CA trust store (symlinks followed: the root's ca-certificates may differ), and the
    # local CAs it was made from, so that a later update-ca-certificates in the root keeps them.
    put /etc/ssl/certs etc/ssl/certs
    [ ! -d /usr/local/share/ca-certificates ] || put /usr/local/share/ca-certificates usr/local/share/ca-certificates
    # cargo's configuration (never credentials).
    cargo_home=${CARGO_HOME:-$HOME/.cargo}
    for f in config.toml config; do
        if [ -f "$cargo_home/$f" ]; then
            put "$cargo_home/$f" root/.cargo/config.toml
            break
        fi
    done
    mkdir -p "$dest/root/.cargo/registry"
    rm -f "$dest/usr/sbin/policy-rc.d"
    printf '#!/bin/sh\nexit 101\n' >"$dest/usr/sbin/policy-rc.d"
    chmod 755 "$dest/usr/sbin/policy-rc.d"
}

enter() {
    root=$1
    shift
    [ -d "$root/etc" ] || die "$root is not a root file system"
    # New mount and PID namespaces; --kill-child: if unshare dies, so does everything inside.
    exec unshare --mount --propagation private --pid --fork --kill-child sh "$me" enter-ns "$root" "$@"
}

enter_ns() {
    root=$(cd "$1" && pwd)
    shift
    mount -t proc proc "$root/proc"
    mount -t sysfs -o ro sysfs "$root/sys"
    for n in null zero full random urandom tty; do
        [ -e "$root/dev/$n" ] || : >"$root/dev/$n"
        mount --bind "/dev/$n" "$root/dev/$n"
    done
    mkdir -p "$root/dev/pts" "$root/dev/shm"
    mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
    rm -f "$root/dev/ptmx"
    ln -s pts/ptmx "$root/dev/ptmx"
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
    while [ $# -gt 0 ]; do
        case $1 in
        --ro | --rw)
            [ $# -ge 3 ] || die "$1 needs SRC DST"
            dst="$root/${3#/}"
            if [ -d "$2" ]; then mkdir -p "$dst"; else mkdir -p "$(dirname "$dst")" && { [ -e "$dst" ] || : >"$dst"; }; fi
            mount --bind "$2" "$dst"
            [ "$1" = --rw ] || mount -o remount,bind,ro "$dst"
            shift 3
            ;;
        --)
            shift
            break
            ;;
        *) die "unknown option $1" ;;
        esac
    done
    [ $# -gt 0 ] || die "no command"
    for v in http_proxy https_proxy no_proxy all_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY ALL_PROXY; do
        eval "val=\${$v:-}"
        [ -z "$val" ] || set -- "$v=$val" "$@"
    done
    set -- env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
        PATH=/root/.cargo/bin:/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
    # Not exec: as PID 1 of the namespace this shell outlives the command only to reap it; when
    # it returns, every process left inside (an agent a package started) is killed.
    status=0
    chroot "$root" "$@" || status=$?
    exit "$status"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
prepare) [ $# -eq 1 ] || die "usage: prepare CACHE"; prepare "$1" ;;
copy) [ $# -eq 2 ] || die "usage: copy PRISTINE DEST"; copy "$1" "$2" ;;
enter) [ $# -ge 3 ] || die "usage: enter ROOT [--ro|--rw SRC DST]… -- COMMAND…"; enter "$@" ;;
enter-ns) enter_ns "$@" ;;
*) die "usage: fresh-root.sh prepare|copy|enter …" ;;
esac

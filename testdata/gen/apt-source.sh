#!/bin/sh
# Fetch the Debian source package of an INSTALLED binary package (same version) once, and unpack
# chosen members of its upstream tarball: public test data the tests and the fuzz seeds use
# without committing it (cryptsetup's header suite, e2fsprogs' test images — both GPL).
#
#   sh testdata/gen/apt-source.sh BINARY-PACKAGE CACHE MEMBER...
#
# Prints the unpacked source directory (CACHE/SOURCE-VERSION, with a SOURCE file naming the
# tarball and its sha256). The download uses private apt state (its own sources.list of deb-src
# lines for the machine's configured Debian suites, its own lists and cache; the system's apt
# state is not touched) and is done once per version (CACHE/…/.complete), under a lock; the
# members unpacked are those of the first call for that version.
# Exit 0 done; 3 cannot run here (no apt, no mirror, package not installed: the reason on
# stderr); anything else a failure.
set -eu
pkg=${1:?usage: apt-source.sh BINARY-PACKAGE CACHE MEMBER...}
cache=${2:?usage: apt-source.sh BINARY-PACKAGE CACHE MEMBER...}
shift 2
members="$*" # tarball paths chosen by the callers: no spaces
unavailable() { echo "apt-source: $*" >&2; exit 3; }
die() { echo "apt-source: $*" >&2; exit 1; }

command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1 || unavailable "no apt-get/dpkg-query"
name=$(dpkg-query -W -f '${source:Package}' "$pkg" 2>/dev/null) || unavailable "$pkg is not installed as a Debian package"
ver=$(dpkg-query -W -f '${source:Version}' "$pkg" 2>/dev/null) || unavailable "$pkg is not installed as a Debian package"
[ -n "$name" ] && [ -n "$ver" ] || unavailable "cannot tell the source package of $pkg"
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
src="$cache/$name-$ver"
if [ ! -f "$src/.complete" ]; then
    exec 9>"$cache/.lock-$name"
    flock 9 2>/dev/null || true
fi
if [ ! -f "$src/.complete" ]; then
    apt_dir="$cache/apt-$name"
    rm -rf "$apt_dir" "$src"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/dl" "$src"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -f "$keyring" ] || unavailable "missing $keyring (debian-archive-keyring)"
    # The Debian suites apt already uses (not security, whose sources live elsewhere).
    apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null | sort -u |
        awk -v k="$keyring" '$1 ~ /debian/ && $1 !~ /security/ && $2 !~ /security/ { print "deb-src [signed-by=" k "] " $1 " " $2 " main" }' \
            >"$apt_dir/sources.list"
    [ -s "$apt_dir/sources.list" ] || unavailable "no Debian mirror configured for apt"
    set -- -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" \
        -o Acquire::Languages=none -o APT::Sandbox::User=root
    apt-get "$@" -q update >"$apt_dir/update.log" 2>&1 && ! grep -q -e '^E: ' -e 'Failed to fetch' "$apt_dir/update.log" ||
        unavailable "cannot fetch the source lists: $(tail -n 2 "$apt_dir/update.log" | tr '\n' ' ')"
    (cd "$apt_dir/dl" && apt-get "$@" -q --download-only source "$name=$ver" >"$apt_dir/source.log" 2>&1) ||
        unavailable "cannot download the $name $ver source: $(tail -n 2 "$apt_dir/source.log" | tr '\n' ' ')"
    orig=$(ls "$apt_dir/dl/${name}_"*.orig.tar.* 2>/dev/null | head -n 1)
    [ -n "$orig" ] || die "no orig tarball in the $name $ver source package"
    top=$(tar -tf "$orig" | head -n 1 | cut -d/ -f1)
    paths=""
    for m in $members; do paths="$paths $top/$m"; done
    # shellcheck disable=SC2086
    tar -xf "$orig" -C "$src" --strip-components=1 $paths || die "cannot unpack$paths from $orig"
    echo "$ver $(basename "$orig") $(sha256sum "$orig" | cut -c1-64)" >"$src/SOURCE"
    rm -rf "$apt_dir"
    touch "$src/.complete"
fi
echo "$src"

#!/bin/sh
# Download one Debian binary package from a chosen suite of the machine's own Debian mirror
# (e.g. a newer kernel's linux-libc-dev for its UAPI headers) once, and unpack it.
#
#   sh testdata/gen/apt-deb.sh SUITE PACKAGE CACHE
#
# Prints the unpacked root (CACHE/PACKAGE_VERSION/root, with a DEB file naming the .deb and its
# sha256). The newest version SUITE offers is taken; the download uses private apt state (its
# own sources.list naming the mirror apt already uses, its own lists and cache; the system's apt
# state is not touched) and is done once per version (…/.complete), under a lock. Offline, the
# newest complete download in CACHE is used.
# Exit 0 done; 3 cannot run here (no apt, no mirror, suite or package not found: the reason on
# stderr); anything else a failure.
set -eu
suite=${1:?usage: apt-deb.sh SUITE PACKAGE CACHE}
pkg=${2:?usage: apt-deb.sh SUITE PACKAGE CACHE}
cache=${3:?usage: apt-deb.sh SUITE PACKAGE CACHE}
unavailable() { echo "apt-deb: $*" >&2; exit 3; }
die() { echo "apt-deb: $*" >&2; exit 1; }

command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 || unavailable "no apt-get/dpkg-deb"
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
exec 9>"$cache/.lock-$pkg-$suite"
flock 9 2>/dev/null || true
cached() { ls -d "$cache/${pkg}_"*/.complete 2>/dev/null | sort -V | tail -n 1 | sed 's|/.complete$||'; }

apt_dir="$cache/apt-$suite"
rm -rf "$apt_dir"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/dl"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || unavailable "missing $keyring (debian-archive-keyring)"
# The mirror apt already uses for Debian (not the security archive), with the chosen suite.
uri=$(apt-get indextargets --format '$(REPO_URI)' 2>/dev/null | sort -u | awk '/debian/ && !/security/ { print; exit }')
[ -n "$uri" ] || unavailable "no Debian mirror configured for apt"
echo "deb [signed-by=$keyring] $uri $suite main" >"$apt_dir/sources.list"
set -- -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null \
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" \
    -o Acquire::Languages=none -o APT::Sandbox::User=root
if ! apt-get "$@" -q update >"$apt_dir/update.log" 2>&1 || grep -q -e '^E: ' -e 'Failed to fetch' "$apt_dir/update.log"; then
    old=$(cached)
    [ -n "$old" ] && { rm -rf "$apt_dir"; echo "$old/root"; exit 0; }
    unavailable "cannot fetch the $suite package lists: $(tail -n 2 "$apt_dir/update.log" | tr '\n' ' ')"
fi
ver=$(apt-cache "$@" madison "$pkg" 2>/dev/null | awk -F'|' -v s="$suite" '$3 ~ " "s"/" { gsub(/ /, "", $2); print $2 }' | sort -V | tail -n 1)
[ -n "$ver" ] || unavailable "$pkg is not in $suite"
dir="$cache/${pkg}_$ver"
if [ ! -f "$dir/.complete" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    (cd "$apt_dir/dl" && apt-get "$@" -q download "$pkg=$ver" >"$apt_dir/download.log" 2>&1) ||
        unavailable "cannot download $pkg $ver: $(tail -n 2 "$apt_dir/download.log" | tr '\n' ' ')"
    deb=$(ls "$apt_dir/dl/"*.deb 2>/dev/null | head -n 1)
    [ -n "$deb" ] || die "no .deb downloaded for $pkg $ver"
    dpkg-deb -x "$deb" "$dir/root" || die "cannot unpack $deb"
    echo "$suite $(basename "$deb") $(sha256sum "$deb" | cut -c1-64)" >"$dir/DEB"
    touch "$dir/.complete"
fi
rm -rf "$apt_dir"
echo "$dir/root"

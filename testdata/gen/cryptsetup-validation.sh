#!/bin/sh
# cryptsetup's own LUKS2 header validation suite, generated at test time (nothing of it is
# shipped: cryptsetup is GPL-2.0+, loopkit MIT OR Apache-2.0).
#
#   sh testdata/gen/cryptsetup-validation.sh CACHE OUTDIR
#
# 1. The source of the INSTALLED cryptsetup (Debian source package of cryptsetup-bin, same
#    version) is fetched once with `apt-get source --download-only` into CACHE, with private apt
#    state (its own sources.list of deb-src lines for the machine's configured Debian suites, its
#    own lists and cache; the system's apt state is not touched). LOOPKIT_CRYPTSETUP_SRC=DIR uses
#    an unpacked cryptsetup source tree instead (DIR/tests/generators…).
# 2. Its header generators (tests/generators/generate-*.sh, cryptsetup's own scripts, run
#    unchanged with bash, jq, xxd and dd) turn its valid test header (tests/luks2_valid_hdr.img.xz)
#    into the damaged/unusual headers, in OUTDIR.
# 3. OUTDIR/expected lists `IMAGE VERDICT` from the RUN lines of tests/luks2-validation-test:
#    F = cryptsetup must reject it; R = it must load (possibly from the other header copy);
#    T = it must load (cryptsetup then rewrites it; loading is what loopkit checks).
#
# Exit 0 done; 3 cannot run here (no apt/mirror/tool: the reason on stderr); anything else a
# failure.
set -eu

cache=${1:?usage: cryptsetup-validation.sh CACHE OUTDIR}
out=${2:?usage: cryptsetup-validation.sh CACHE OUTDIR}
unavailable() { echo "cryptsetup-validation: $*" >&2; exit 3; }
die() { echo "cryptsetup-validation: $*" >&2; exit 1; }

for t in bash jq xxd xz dd sha256sum; do
    command -v "$t" >/dev/null 2>&1 || unavailable "missing tool: $t"
done
mkdir -p "$cache" "$out"
cache=$(cd "$cache" && pwd)
out=$(cd "$out" && pwd)

if [ -n "${LOOPKIT_CRYPTSETUP_SRC:-}" ]; then
    src=$LOOPKIT_CRYPTSETUP_SRC
else
    command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1 || unavailable "no apt-get/dpkg-query"
    ver=$(dpkg-query -W -f '${source:Version}' cryptsetup-bin 2>/dev/null) || unavailable "cryptsetup-bin is not installed as a Debian package"
    [ -n "$ver" ] || unavailable "cannot tell the cryptsetup-bin source version"
    src="$cache/cryptsetup-$ver"
    if [ ! -f "$src/.complete" ]; then
        exec 9>"$cache/.lock"
        flock 9 2>/dev/null || true
    fi
    if [ ! -f "$src/.complete" ]; then
        apt_dir="$cache/apt"
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
        (cd "$apt_dir/dl" && apt-get "$@" -q --download-only source "cryptsetup=$ver" >"$apt_dir/source.log" 2>&1) ||
            unavailable "cannot download the cryptsetup $ver source: $(tail -n 2 "$apt_dir/source.log" | tr '\n' ' ')"
        orig=$(ls "$apt_dir/dl/"cryptsetup_*.orig.tar.* 2>/dev/null | head -n 1)
        [ -n "$orig" ] || die "no orig tarball in the cryptsetup $ver source package"
        top=$(tar -tf "$orig" | head -n 1 | cut -d/ -f1)
        tar -xf "$orig" -C "$src" --strip-components=1 "$top/COPYING" "$top/tests/generators" \
            "$top/tests/luks2-validation-test" "$top/tests/luks2_valid_hdr.img.xz" || die "cannot unpack $orig"
        echo "$ver $(basename "$orig") $(sha256sum "$orig" | cut -c1-64)" >"$src/SOURCE"
        rm -rf "$apt_dir"
        touch "$src/.complete"
    fi
fi
[ -d "$src/tests/generators" ] && [ -f "$src/tests/luks2-validation-test" ] && [ -f "$src/tests/luks2_valid_hdr.img.xz" ] ||
    die "$src has no tests/generators, tests/luks2-validation-test or tests/luks2_valid_hdr.img.xz"

# The generators write to ./tmp and read ./lib.sh: run them in a private copy.
work="$out/work"
rm -rf "$work" && mkdir -p "$work" "$out/images"
cp -r "$src/tests/generators" "$work/generators"
xz -dc "$src/tests/luks2_valid_hdr.img.xz" >"$work/plain.img"
cp --sparse=always "$work/plain.img" "$out/images/luks2_valid_hdr.img" && rm -f "$work/plain.img"
n=0
for g in "$work/generators"/generate-*.sh; do
    (cd "$work/generators" && bash "$g" "$out/images" "$out/images/luks2_valid_hdr.img") >"$work/gen.log" 2>&1 ||
        die "generator $(basename "$g") failed: $(tail -n 3 "$work/gen.log" | tr '\n' ' ')"
    n=$((n + 1))
done
# Expected verdicts: RUN IMAGE "VERDICT" "message" lines of cryptsetup's validation test.
awk '$1 == "RUN" { v = $3; gsub(/"/, "", v); print $2, v }' "$src/tests/luks2-validation-test" >"$out/expected"
[ -s "$out/expected" ] || die "no RUN lines in luks2-validation-test"
cp "$src/SOURCE" "$out/SOURCE" 2>/dev/null || echo "LOOPKIT_CRYPTSETUP_SRC=$src" >"$out/SOURCE"
rm -rf "$work"
echo "generated $n headers; $(wc -l <"$out/expected") verdicts"

#!/bin/sh
# cryptsetup's own LUKS2 header validation suite, generated at test time (nothing of it is
# shipped: cryptsetup is GPL-2.0+, loopkit MIT OR Apache-2.0).
#
#   sh testdata/gen/cryptsetup-validation.sh CACHE OUTDIR
#
# 1. The source of the INSTALLED cryptsetup (Debian source package of cryptsetup-bin, same
#    version) is fetched once into CACHE by apt-source.sh (private apt state; the system's is
#    not touched). LOOPKIT_CRYPTSETUP_SRC=DIR uses an unpacked cryptsetup source tree instead
#    (DIR/tests/generators…).
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
    here=$(cd "$(dirname "$0")" && pwd)
    rc=0
    src=$(sh "$here/apt-source.sh" cryptsetup-bin "$cache" COPYING tests/generators tests/luks2-validation-test \
        tests/luks2_valid_hdr.img.xz) || rc=$?
    [ "$rc" -eq 0 ] || exit "$rc"
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

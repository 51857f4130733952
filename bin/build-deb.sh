#!/bin/sh
# Build the Debian package of loopkit (docs/INSTALL.md):
#
#   sh bin/build-deb.sh [CARGO-DEB OPTIONS…]     e.g. --output DIR
#
# The man pages and the shell completions are produced by the built binary itself (`loopkit man`,
# `loopkit completions`), so this builds the release binary, writes them into target/deb-assets/,
# then runs `cargo deb --no-build`; Cargo.toml's [package.metadata.deb] says where each file goes.
# The package lands in target/debian/ (or --output) and its path is printed on stdout.
# Needs cargo-deb (its version is in tests/cargo-tools.txt; tests/setup.sh installs it).
#
# LOOPKIT_DEB_PREBUILT=FILE skips the build and packages the release binary as it is; FILE must
# be that binary (TARGET_DIR/release/loopkit). The fresh-machine test uses it to package the
# binary under test: a `cargo build` during `cargo test` would rebuild and replace it (the test
# build unifies dev-dependency features) while other tests run it.
set -eu
cd "$(dirname "$0")/.."

die() { echo "build-deb: $*" >&2; exit 1; }
command -v cargo-deb >/dev/null 2>&1 \
    || die "cargo-deb is not installed: cargo install --locked cargo-deb --version VERSION (tests/cargo-tools.txt)"

# The release binary, wherever the target directory is (CARGO_TARGET_DIR, .cargo/config.toml).
target_dir=$(cargo metadata --format-version 1 --no-deps --locked | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || die "cannot find cargo's target directory"
loopkit="$target_dir/release/loopkit"
if [ -n "${LOOPKIT_DEB_PREBUILT:-}" ]; then
    [ "$LOOPKIT_DEB_PREBUILT" -ef "$loopkit" ] || die "LOOPKIT_DEB_PREBUILT=$LOOPKIT_DEB_PREBUILT is not $loopkit"
else
    cargo build --release --locked --bins >&2
fi
[ -x "$loopkit" ] || die "no release binary at $loopkit"

# Generated assets: always under ./target (the paths Cargo.toml names), rebuilt every time.
assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
"$loopkit" man --out "$assets/man" >/dev/null
"$loopkit" completions bash >"$assets/completions/loopkit.bash"
"$loopkit" completions zsh >"$assets/completions/_loopkit"
"$loopkit" completions fish >"$assets/completions/loopkit.fish"
[ -s "$assets/man/loopkit.1" ] || die "loopkit man wrote no loopkit.1"

# --strip: the release profile keeps line tables (backtraces); the package ships the binary without
# them (33 MB -> 6.5 MB; a panic still names its source line).
cargo deb --no-build --locked --strip "$@"

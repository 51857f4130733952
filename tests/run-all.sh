#!/bin/sh
# The whole test suite from a clean clone: install what the tests use, build, run every test.
# Tests that cannot run on this machine are reported as "ignored" with their reason, never passed.
set -eu
cd "$(dirname "$0")/.."
sh tests/setup.sh
cargo build --release --locked --bins
cargo test --release --locked --workspace --lib
LOOPKIT_BIN="$PWD/target/release/loopkit" cargo test --release --locked --test tests -- "$@"

#!/bin/sh
# Install everything the test suite needs on a fresh Debian machine (run as root).
# Idempotent: packages already present are skipped quickly.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
pkgs=$(grep -v '^\s*#' "$here/apt-packages.txt" | tr -s ' \n' ' ')
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# Python oracles: prefer the python3 on PATH (may be pyenv's), fall back to Debian's package.
if ! python3 -c 'import cryptography' 2>/dev/null; then
    python3 -m pip install -q -r "$here/requirements.txt" 2>/dev/null \
        || python3 -m pip install -q --break-system-packages -r "$here/requirements.txt" 2>/dev/null \
        || { apt-get install -y -qq python3-cryptography >/dev/null; }
fi
python3 -c 'import cryptography' || { echo "setup: python3 cannot import cryptography" >&2; exit 1; }

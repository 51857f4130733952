#!/bin/sh
# Print this machine's own Debian mirror: the first enabled, non-security `deb` source in apt's
# configuration (deb822 .sources files first, then one-line .list files). Nothing is hard-coded:
# the tests fetch Debian packages only from where this machine's apt already does.
# LOOPKIT_DEBIAN_MIRROR overrides it. Exit 1 (and nothing on stdout) when there is none.
# Used by tests/vm/prepare.sh and tests/fresh-root.sh.
set -eu
if [ -n "${LOOPKIT_DEBIAN_MIRROR:-}" ]; then
    echo "$LOOPKIT_DEBIAN_MIRROR"
    exit 0
fi
mirror=$({
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # deb822 stanzas: print the first URI of each enabled deb stanza with a non-security suite
        awk 'function flush() { if (types ~ /(^| )deb( |$)/ && en != "no" && uris != "" && suites !~ /-security/ && uris !~ /security/) print uris; types=""; uris=""; suites=""; en="" }
             /^[ \t]*$/ { flush(); next }
             /^Types:/ { sub(/^Types:[ \t]*/, ""); types=$0 }
             /^URIs:/ { uris=$2 }
             /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites=$0 }
             /^Enabled:/ { en=$2 }
             END { flush() }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # one-line format: deb [opts] URI SUITE COMPONENTS
        awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                           if ($(i+1) !~ /-security/ && $i !~ /security/) print $i }' "$f"
    done
} | grep -i debian | head -n 1) || true
[ -n "$mirror" ] || exit 1
echo "$mirror"

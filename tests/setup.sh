#!/bin/sh
# Make this machine complete for the test suite, every time: each Debian package in
# tests/apt-packages.txt, each Python module in tests/python-modules.txt (imported by the very
# interpreter the tests run), each tool in tests/cargo-tools.txt and /dev/fuse's mode (0666, as
# Debian's udev rule sets it) is checked one by one; only
# what is missing is installed; then everything is checked again and the script fails naming
# whatever is still missing.
#
#   sh tests/setup.sh          check, install what is missing (as root), check again
#   sh tests/setup.sh --check  install nothing (no root needed): print each missing item, one per
#                              line; exit 1 if anything is missing, else print "setup: complete"
#
# Environment:
#   LOOPKIT_PYTHON             the tests' Python interpreter (default: the first python3 on PATH,
#                              which may be pyenv's); tests/util.rs (util::python) honours it too
#   LOOPKIT_SETUP_APT_LIST, LOOPKIT_SETUP_PYTHON_LIST, LOOPKIT_SETUP_CARGO_LIST
#                              other list files instead of tests/apt-packages.txt,
#                              tests/python-modules.txt, tests/cargo-tools.txt
set -eu
here=$(cd "$(dirname "$0")" && pwd)

usage() {
    sed -n '2,17s/^# \{0,1\}//p' "$here/setup.sh"
}

mode=install
case $# in
0) ;;
1)
    case $1 in
    --check) mode=check ;;
    -h | --help) usage && exit 0 ;;
    *) echo "setup: unknown argument: $1 (usage: sh tests/setup.sh [--check])" >&2 && exit 2 ;;
    esac
    ;;
*) echo "setup: too many arguments (usage: sh tests/setup.sh [--check])" >&2 && exit 2 ;;
esac

apt_list=${LOOPKIT_SETUP_APT_LIST:-$here/apt-packages.txt}
python_list=${LOOPKIT_SETUP_PYTHON_LIST:-$here/python-modules.txt}
cargo_list=${LOOPKIT_SETUP_CARGO_LIST:-$here/cargo-tools.txt}
for f in "$apt_list" "$python_list" "$cargo_list"; do
    [ -r "$f" ] || { echo "setup: cannot read the list $f" >&2 && exit 2; }
done

nl='
'
# Never expand globs in list entries (pip requirements may hold "*", "[").
set -f

say() { echo "setup: $*" >&2; }

# The entries of a list file: comments ("#" to the end of the line) and blank lines removed.
entries() {
    awk '{ sub(/#.*/, "") } NF { $1 = $1; print }' "$1"
}

# --- the interpreters --------------------------------------------------------------------------

# The tests' interpreter: $LOOPKIT_PYTHON or python3, resolved on PATH like tests/util.rs does.
tests_python_name=${LOOPKIT_PYTHON:-python3}
# The guest's interpreter: the first python3 on the PATH tests/vm/init gives the guest script
# (the chroot is the host's root, so the same path is the same file here).
vm_path=$(sed -n 's/^[[:space:]]*PATH=\([^[:space:]]*\).*/\1/p' "$here/vm/init" 2>/dev/null | head -n 1)
vm_path=${vm_path:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}

resolve_pythons() {
    tests_python=$(command -v "$tests_python_name" 2>/dev/null || true)
    vm_python=$(
        PATH=$vm_path
        command -v python3 2>/dev/null || true
    )
}

# A label for messages: "python3 = /path" (or why there is none).
python_label() { # WHERE PATH
    case $1 in
    vm) what="VM guest python3" ;;
    *) what=python3 ;;
    esac
    if [ -n "$2" ]; then
        echo "$what = $2"
    elif [ "$1" = vm ]; then
        echo "$what = none on the guest's PATH $vm_path"
    elif [ -n "${LOOPKIT_PYTHON:-}" ]; then
        echo "$what = none: LOOPKIT_PYTHON=$LOOPKIT_PYTHON not found"
    else
        echo "$what = none on PATH"
    fi
}

# Import MODULE with PYTHON and, for a PIP requirement NAME>=VERSION, compare the installed
# version. Prints why not (empty for a plain import failure); exit status 0 = present.
python_check() { # PYTHON MODULE PIP
    [ -n "$1" ] || return 1
    "$1" - "$2" "$3" <<'EOF' 2>/dev/null
import importlib, re, sys
module, req = sys.argv[1], sys.argv[2]
m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)\s*", req)
def too_old():
    """Whether the installed distribution is older than PIP's NAME>=VERSION (and say so)."""
    if not m:
        return False
    from importlib.metadata import version
    def key(v):
        return [int(re.match(r"\d*", p).group() or 0) for p in v.split(".")]
    try:
        have = version(m.group(1))
    except Exception:
        print(f"{m.group(1)} not installed")
        return True
    if key(have) < key(m.group(2)):
        print(f"{m.group(1)} {have} installed, need >={m.group(2)}")
        return True
    return False
try:
    importlib.import_module(module)
except Exception:
    too_old()
    sys.exit(1)
sys.exit(1 if too_old() else 0)
EOF
}

# Whether PYTHON is Debian's own interpreter (/usr/bin/python3, also through a pyenv "system" shim).
is_debian_python() {
    "$1" -c 'import sys; sys.exit(0 if sys.executable.startswith("/usr/bin/") else 1)' 2>/dev/null
}

# --- checks ----------------------------------------------------------------------------------

apt_ok() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

cargo_installed=""
cargo_list_installed() {
    cargo_installed=$(cargo install --list 2>/dev/null || true)
}

# Prints why the tool is missing (empty when present); exit status 0 = present.
cargo_tool_check() { # BINARY CRATE VERSION
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "not on PATH; $2 $3"
        return 1
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "no cargo to ask which version is installed; need $2 $3"
        return 1
    fi
    if ! printf '%s\n' "$cargo_installed" | grep -qxF "$2 v$3:"; then
        have=$(printf '%s\n' "$cargo_installed" | grep "^$2 v" | sed 's/:$//' || true)
        echo "need $2 v$3, cargo install --list has ${have:-no $2}"
        return 1
    fi
}

# One line per missing item, on stdout.
report() {
    resolve_pythons
    for p in $(entries "$apt_list"); do
        apt_ok "$p" || echo "missing apt $p"
    done
    IFS=$nl
    for line in $(entries "$python_list"); do
        IFS=' '
        # shellcheck disable=SC2086
        set -- $line
        module=$1 req=${2:--} where=${4:-tests}
        for w in $(echo "$where" | tr ',' ' '); do
            py=$tests_python
            [ "$w" = vm ] && py=$vm_python
            # The same interpreter for tests and guest: check it once.
            [ "$w" = vm ] && [ "$where" != vm ] && [ "$vm_python" = "$tests_python" ] && continue
            why=$(python_check "$py" "$module" "$req") && continue
            echo "missing python $module ($(python_label "$w" "$py")${why:+; $why})"
        done
        IFS=$nl
    done
    cargo_list_installed
    for line in $(entries "$cargo_list"); do
        IFS=' '
        # shellcheck disable=SC2086
        set -- $line
        if [ $# -ne 3 ]; then
            echo "missing cargo-tool $1 (malformed line in $cargo_list: need BINARY CRATE VERSION)"
        elif ! why=$(cargo_tool_check "$1" "$2" "$3"); then
            echo "missing cargo-tool $1 ($why)"
        fi
        IFS=$nl
    done
    IFS=' 	'"$nl"
    fuse_ok || echo "missing device /dev/fuse mode 0666 (it is $(stat -c %a /dev/fuse); Debian's udev rule for fuse sets 0666, which FUSE mounts by normal users need: tests/mount.rs)"
}

# /dev/fuse usable by normal users, as Debian's udev rule makes it (a container without udev
# leaves it 0600). No /dev/fuse at all is not fixable here: the FUSE tests say so.
fuse_ok() {
    [ ! -c /dev/fuse ] || [ "$(stat -c %a /dev/fuse)" = 666 ]
}

if [ "$mode" = check ]; then
    missing=$(report)
    if [ -n "$missing" ]; then
        printf '%s\n' "$missing"
        exit 1
    fi
    echo "setup: complete"
    exit 0
fi

# --- install what is missing -------------------------------------------------------------------

is_root() { [ "$(id -u)" = 0 ]; }
apt_updated=no
apt_install() { # PACKAGE...
    if ! is_root; then
        say "not root: cannot install Debian packages $*"
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [ "$apt_updated" = no ]; then
        apt-get update -qq </dev/null
        apt_updated=yes
    fi
    say "apt-get install $*"
    apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null
}

# 1. Debian packages (python3 and python3-pip among them, so before the Python modules).
apt_missing=""
for p in $(entries "$apt_list"); do
    apt_ok "$p" || apt_missing="$apt_missing $p"
done
if [ -n "$apt_missing" ]; then
    # shellcheck disable=SC2086
    apt_install $apt_missing || say "installing Debian packages failed:$apt_missing"
fi

# 2. Python modules, each with the interpreter that imports it.
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
log=$(mktemp)
trap 'rm -f "$log"' EXIT
python_install() { # PYTHON MODULE PIP DEBIAN
    if [ "$3" != - ]; then
        say "$1 -m pip install $3 (for import $2)"
        if "$1" -m pip install -q "$3" </dev/null >"$log" 2>&1 ||
            "$1" -m pip install -q --break-system-packages "$3" </dev/null >"$log" 2>&1; then
            return 0
        fi
        say "pip failed: $(tail -n 3 "$log" | tr '\n' ' ')"
    fi
    if [ "$4" != - ] && is_debian_python "$1"; then
        apt_install "$4" && return 0
    fi
    return 1
}
resolve_pythons
IFS=$nl
for line in $(entries "$python_list"); do
    IFS=' '
    # shellcheck disable=SC2086
    set -- $line
    module=$1 req=${2:--} deb=${3:--} where=${4:-tests}
    for w in $(echo "$where" | tr ',' ' '); do
        py=$tests_python
        [ "$w" = vm ] && py=$vm_python
        [ "$w" = vm ] && [ "$where" != vm ] && [ "$vm_python" = "$tests_python" ] && continue
        python_check "$py" "$module" "$req" >/dev/null && continue
        if [ -z "$py" ]; then
            say "no interpreter to install $module for ($(python_label "$w" ""))"
            continue
        fi
        python_install "$py" "$module" "$req" "$deb" || say "could not install $module for $py"
    done
    IFS=$nl
done

# 3. Tools installed with cargo install.
cargo_list_installed
for line in $(entries "$cargo_list"); do
    IFS=' '
    # shellcheck disable=SC2086
    set -- $line
    if ! cargo_tool_check "$1" "${2:-?}" "${3:-?}" >/dev/null; then
        if [ $# -ne 3 ]; then
            say "$cargo_list: need BINARY CRATE VERSION, got: $line"
        elif ! command -v cargo >/dev/null 2>&1; then
            say "no cargo: cannot install $2 $3"
        else
            say "cargo install --locked $2 --version $3"
            cargo install --locked "$2" --version "$3" </dev/null || say "cargo install $2 $3 failed"
        fi
    fi
    IFS=$nl
done
IFS=' 	'"$nl"

# 4. Devices: /dev/fuse as udev would set it.
if ! fuse_ok; then
    if is_root; then
        say "chmod 0666 /dev/fuse (as Debian's udev rule for fuse does)"
        chmod 0666 /dev/fuse || say "chmod /dev/fuse failed"
    else
        say "not root: cannot make /dev/fuse usable by normal users"
    fi
fi

# 5. Check everything again.
missing=$(report)
if [ -n "$missing" ]; then
    printf '%s\n' "$missing" >&2
    say "still missing after installing (above); the suite cannot run completely"
    exit 1
fi
echo "setup: complete"

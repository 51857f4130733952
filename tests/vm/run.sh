#!/bin/sh
# Boot loopkit's test VM and run one guest script in it (see docs/TESTING.md, "Real-kernel tests").
#
#   tests/vm/run.sh [-w JOBDIR] [-d DISK]... [-r DISK]... [-k DISK]... [-t SECONDS] [-m MIB] [-c CPUS] [-a ARGS] SCRIPT
#
#   SCRIPT   shell script, run in the guest by bash -euo pipefail in a chroot of the host's root
#            (read-only), cwd /run/vm = JOBDIR (writable), with DM_DISABLE_UDEV=1, VM_SHARE,
#            VM_KVER and VM_MODROOT (modprobe -d "$VM_MODROOT" NAME loads more modules).
#   -d DISK  a raw image attached as a virtio disk, writable (/dev/vda, /dev/vdb… in the order given)
#   -r DISK  the same, read-only
#   -k DISK  a writable virtio disk with 4096-byte logical and physical blocks (4Kn); these come
#            after every -d/-r disk (find one by /sys/block/vdX/queue/logical_block_size)
#   -w DIR   job directory (the guest's /run/vm); default: a new directory under /tmp
#   -t SECS  kill the VM after this long (default 300)
#   -a ARGS  more kernel command-line parameters (e.g. bdev_allow_write_mounted=0)
#
# The kernel and initramfs come from tests/vm/prepare.sh, or from VM_KERNEL, VM_INITRD and
# VM_MODROOT in the environment when all three are set.
#
# Results in JOBDIR: stdout, stderr, exit_code (the script's), console.log (kernel + vm-init),
# status (one word, below). Exit status of run.sh:
#   0 passed        the script ran and exited 0
#   1 failed        the script ran and exited non-zero
#   2 unfinished    the script started but did not finish (timeout, guest crash): a test failure
#   3 no-start      infrastructure failure: the guest never reached the script
#   4 unavailable   no qemu, or the kernel could not be prepared
set -u
here=$(cd "$(dirname "$0")" && pwd)

usage() { echo "usage: $0 [-w JOBDIR] [-d DISK]... [-r DISK]... [-k DISK]... [-t SECS] [-m MIB] [-c CPUS] [-a KERNEL-ARGS] SCRIPT" >&2; exit 4; }
job="" timeout_s=300 mem=1024 cpus=1 drives="" drives4k="" n4k=0 kargs=""
while getopts w:d:r:k:t:m:c:a: opt; do
    case $opt in
    w) job=$OPTARG ;;
    d | r)
        [ -f "$OPTARG" ] || [ -b "$OPTARG" ] || { echo "run.sh: no such disk image: $OPTARG" >&2; exit 4; }
        case "$OPTARG" in *,*) echo "run.sh: disk path must not contain a comma: $OPTARG" >&2; exit 4 ;; esac
        ro=""
        [ "$opt" = r ] && ro=",readonly=on"
        drives="$drives
-drive
file=$OPTARG,if=virtio,format=raw,cache=none$ro" ;;
    k)
        [ -f "$OPTARG" ] || { echo "run.sh: no such disk image: $OPTARG" >&2; exit 4; }
        case "$OPTARG" in *,*) echo "run.sh: disk path must not contain a comma: $OPTARG" >&2; exit 4 ;; esac
        n4k=$((n4k + 1))
        drives4k="$drives4k
-drive
file=$OPTARG,if=none,id=k4n$n4k,format=raw,cache=none
-device
virtio-blk-pci,drive=k4n$n4k,logical_block_size=4096,physical_block_size=4096" ;;
    t) timeout_s=$OPTARG ;;
    m) mem=$OPTARG ;;
    c) cpus=$OPTARG ;;
    a) kargs=" $OPTARG" ;;
    *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || usage
script=$1
[ -f "$script" ] || { echo "run.sh: no such script: $script" >&2; exit 4; }

[ -n "$job" ] || job=$(mktemp -d /tmp/loopkit-vm.XXXXXX)
mkdir -p "$job"
job=$(cd "$job" && pwd)
case "$job" in *,*) echo "run.sh: job directory must not contain a comma: $job" >&2; exit 4 ;; esac
rm -f "$job/started" "$job/stdout" "$job/stderr" "$job/exit_code" "$job/exit_code.tmp" "$job/console.log" "$job/status"
[ "$(cd "$(dirname "$script")" && pwd)/$(basename "$script")" = "$job/test.sh" ] || cp "$script" "$job/test.sh"

finish() { # STATUS CODE MESSAGE
    echo "$1" >"$job/status"
    echo "run.sh: $1: $3 (job directory $job)" >&2
    exit "$2"
}

qemu=$(command -v qemu-system-x86_64) || finish unavailable 4 "qemu-system-x86_64 is not installed"
if [ -z "${VM_KERNEL:-}" ] || [ -z "${VM_INITRD:-}" ] || [ -z "${VM_MODROOT:-}" ]; then
    vars=$(sh "$here/prepare.sh") || finish unavailable 4 "tests/vm/prepare.sh failed"
    VM_KERNEL=$(echo "$vars" | sed -n 's/^VM_KERNEL=//p')
    VM_INITRD=$(echo "$vars" | sed -n 's/^VM_INITRD=//p')
    VM_MODROOT=$(echo "$vars" | sed -n 's/^VM_MODROOT=//p')
fi

# One argument per line (split on newlines below).
machine="-machine
q35"
# qboot (qemu-system-data) boots a -kernel faster than SeaBIOS.
[ -f /usr/share/qemu/qboot.rom ] && machine="$machine
-bios
/usr/share/qemu/qboot.rom"

start=$(date +%s)
# One argument per line (paths may hold spaces, not newlines or commas).
IFS='
'
# shellcheck disable=SC2086 # $machine and $drives are split on newlines on purpose
timeout -k 10 "$timeout_s" "$qemu" \
    -accel tcg,thread=single -cpu max -m "$mem" -smp "$cpus" $machine \
    -no-user-config -nodefaults -display none -no-reboot \
    -serial "file:$job/console.log" \
    -kernel "$VM_KERNEL" -initrd "$VM_INITRD" \
    -append "console=ttyS0 quiet panic=-1 oops=panic vm.modroot=$VM_MODROOT$kargs" \
    -device virtio-rng-pci \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$job,mount_tag=work,security_model=none,multidevs=remap" \
    $drives $drives4k \
    </dev/null >"$job/qemu.log" 2>&1
qrc=$?
unset IFS
elapsed=$(($(date +%s) - start))

if [ ! -f "$job/started" ]; then
    finish no-start 3 "the guest never reached the test script after ${elapsed}s (qemu exit $qrc; see console.log, qemu.log)"
fi
if [ ! -f "$job/exit_code" ]; then
    if [ $qrc -eq 124 ] || [ $qrc -eq 137 ]; then
        finish unfinished 2 "the test script did not finish within ${timeout_s}s"
    fi
    finish unfinished 2 "the test script did not finish: the guest stopped after ${elapsed}s (qemu exit $qrc; see console.log)"
fi
rc=$(cat "$job/exit_code")
[ "$rc" = 0 ] && finish passed 0 "the test script passed in ${elapsed}s"
finish failed 1 "the test script exited with $rc after ${elapsed}s"

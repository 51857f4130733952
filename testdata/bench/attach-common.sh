# Set-up shared by the attach benchmarks (attach.sh, attach-rounds.sh, attach-probe.sh), which
# source this file after setting `root` (the repository), `lk` (the loopkit binary to run) and
# `suite` (the VM kernel suite). Not run on its own.

# bench_setup NAME: a work directory /var/tmp/loopkit-bench-NAME.XXXXXX in $work (removed on
# exit) holding the guest's two disks, ext4.img (640 MiB, a fresh ext4: /dev/vda) and raw.img
# (256 MiB: /dev/vdb), and a private copy of $lk as $work/loopkit. Exits 2 without fio.
bench_setup() {
    command -v fio >/dev/null || { echo "fio is not installed" >&2; exit 2; }
    work=$(mktemp -d "/var/tmp/loopkit-bench-$1.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    truncate -s 640M "$work/ext4.img"
    mkfs.ext4 -q -F "$work/ext4.img"
    truncate -s 256M "$work/raw.img"
    # The raw disk gets real blocks too (a sparse host file reads faster than a written one).
    dd if=/dev/zero of="$work/raw.img" bs=1M count=256 conv=notrunc status=none
    # The guest runs a private copy (a rebuild during the run must not change the binary under it).
    cp "$lk" "$work/loopkit"
}

# bench_guest_image SCRIPT: append to the guest script the lines that mount the ext4 disk on
# /tmp/h and write the fully allocated 256 MiB image /tmp/h/img in it.
bench_guest_image() {
    cat >>"$1" <<'GUEST'
mkdir -p /tmp/h
mount -t ext4 /dev/vda /tmp/h
dd if=/dev/zero of=/tmp/h/img bs=1M count=256 oflag=direct status=none
GUEST
}

# bench_vm SCRIPT TIMEOUT: run the guest script in the VM of tests/vm/ (one VM at a time on the
# machine: the harness's lock file) with the two disks, 1 GiB and 2 CPUs; its output lands in
# $work/job/. On failure: the end of its stderr, exit 1.
bench_vm() {
    LOOPKIT_VM_SUITE=$suite flock /tmp/loopkit-vm.lock sh "$root/tests/vm/run.sh" -w "$work/job" -d "$work/ext4.img" -d "$work/raw.img" -t "$2" -m 1024 -c 2 "$1" >&2 || {
        tail -n 30 "$work/job/stderr" >&2
        exit 1
    }
}

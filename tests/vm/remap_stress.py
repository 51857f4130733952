#!/usr/bin/env python3
"""Guest side of tests/vm_remap_stress.rs: `attach --remap` against every way another process can
change an image's blocks. Runs as root in the test VM with the file system under test mounted at
MNT and $LK the loopkit binary.

  remap_stress.py contract OP FS   one contract row: a writer writes known patterns through the
                                   ublk device while this process does OP to the image once; then
                                   free space is filled with fresh files and the whole device is
                                   rewritten. Prints OP-TAG:VALUE lines.
  remap_stress.py stress SECS SEED FS   fio random writes + crc32c verify through the device in
                                   attach cycles, while a seeded mutator loops over truncate, punch,
                                   defrag, dedupe, reflink, copy_file_range and open on the image
                                   (data-preserving in fio's region) and on neighbour files.

Oracles: the kernel (ioctl results, what the file reads back after detach), sha256 of every other
file on the file system (hashlib), fio's own verification; never loopkit checking itself.
"""
import ctypes
import hashlib
import json
import mmap
import os
import random
import subprocess
import sys
import threading
import time

LK = os.environ["LK"]
MNT = "/tmp/x"
IMG = MNT + "/img"
DEV_MAPPER = "/dev/mapper/lkfs"
KiB = 1 << 10
MiB = 1 << 20
FICLONE = 0x40049409
FICLONERANGE = 0x4020940D
FIDEDUPERANGE = 0xC0189436
FL_KEEP_SIZE, FL_PUNCH, FL_COLLAPSE, FL_ZERO, FL_INSERT = 0x01, 0x02, 0x08, 0x10, 0x20

libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def out(tag, val):
    print("%s:%s" % (tag, val), flush=True)


def fallocate(fd, mode, off, ln):
    if libc.fallocate(fd, mode, off, ln) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def ficlonerange(src_fd, src_off, ln, dst_fd, dst_off):
    import fcntl
    import struct

    fcntl.ioctl(dst_fd, FICLONERANGE, struct.pack("qQQQ", src_fd, src_off, ln, dst_off))


def ficlone(src_fd, dst_fd):
    import fcntl

    fcntl.ioctl(dst_fd, FICLONE, src_fd)


def dedupe(src_fd, src_off, ln, dst_fd, dst_off):
    """FIDEDUPERANGE from src into one destination; returns (status, bytes_deduped)."""
    import fcntl
    import struct

    arg = bytearray(struct.pack("QQHHI", src_off, ln, 1, 0, 0) + struct.pack("qQQiI", dst_fd, dst_off, 0, 0, 0))
    fcntl.ioctl(src_fd, FIDEDUPERANGE, arg)
    _, _, done, status, _ = struct.unpack_from("qQQiI", arg, 24)
    return status, done


def pattern(seed, n):
    return random.Random(repr(seed)).randbytes(n)


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


def hash_tree(exclude=()):
    sums = {}
    for d, _, files in os.walk(MNT):
        if d.startswith(MNT + "/lost+found"):
            continue
        for n in files:
            p = os.path.join(d, n)
            if p not in exclude and os.path.isfile(p) and not os.path.islink(p):
                sums[p] = sha(p)
    return sums


def write_file(path, data, fsync=True):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def free_bytes():
    st = os.statvfs(MNT)
    return st.f_bavail * st.f_frsize


def fill(prefix, leave, seed):
    """Fill free space down to `leave` bytes with files of random data (1..4 MiB): blocks freed
    from the image get reused by files whose hashes are known."""
    made, n = [], 0
    while True:
        room = free_bytes() - leave
        if room < MiB:
            return made
        sz = min(4 * MiB, room // MiB * MiB)
        p = "%s%d" % (prefix, n)
        write_file(p, pattern((seed, n), sz))
        made.append(p)
        n += 1


def list_state(dev):
    r = subprocess.run([LK, "attach", "--list", "--json"], capture_output=True, text=True, timeout=120)
    try:
        for d in json.loads(r.stdout).get("devices", []):
            if d.get("device") == dev:
                remap, code = d.get("remap", "?"), d.get("remap_code")
                # A stopped engine's stable code is its own field (`remap_code`), shown after the
                # words so the checks can compare the field, not the wording; null otherwise.
                if remap.startswith("stopped"):
                    return "%s | remap_code=%s" % (remap, code)
                return remap if code is None else "%s, yet remap_code=%s" % (remap, code)
    except ValueError:
        return "unparsable --list output: " + r.stdout[:200]
    return "absent"


class Attach:
    """`loopkit attach --remap --json IMG` in the background (a separate process: the lease holder)."""

    def __init__(self, name, img, extra=()):
        self.name = name
        self.outp, self.errp = "/tmp/%s.out" % name, "/tmp/%s.err" % name
        with open(self.outp, "w") as o, open(self.errp, "w") as e:
            self.p = subprocess.Popen(
                [LK, "attach", "--remap", "--json", *extra, img], stdout=o, stderr=e, stdin=subprocess.DEVNULL
            )
        self.info = None
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                with open(self.outp) as f:
                    self.info = json.load(f)
                break
            except (ValueError, OSError):
                pass
            if self.p.poll() is not None:
                break
            time.sleep(0.1)
        if not self.info or "device" not in self.info:
            self.p.kill()
            raise RuntimeError("attach %s failed: %s" % (name, open(self.errp).read()[-500:]))
        self.dev = self.info["device"]

    def state(self):
        return list_state(self.dev)

    def detach(self):
        subprocess.run([LK, "detach", self.dev], capture_output=True, timeout=120)
        try:
            return self.p.wait(180)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return "timeout"


class Dev:
    """O_DIRECT writes through the ublk device; a write that returned is acknowledged."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_DIRECT)
        self.buf = mmap.mmap(-1, MiB)

    def write(self, off, data):
        self.buf[: len(data)] = data
        n = os.pwritev(self.fd, [memoryview(self.buf)[: len(data)]], off)
        if n != len(data):
            raise OSError(5, "short write %d of %d" % (n, len(data)))

    def close(self):
        try:
            os.fsync(self.fd)
        finally:
            os.close(self.fd)


class Model:
    """What the image must hold: bytes, plus ranges whose writes failed (their content is open)."""

    def __init__(self, data):
        self.b = bytearray(data)
        self.unsure = []
        self.lock = threading.Lock()

    def put(self, off, data):
        with self.lock:
            if off + len(data) > len(self.b):
                self.b.extend(bytes(off + len(data) - len(self.b)))
            self.b[off : off + len(data)] = data

    def compare(self, path):
        with open(path, "rb") as f:
            got = f.read()
        if len(got) != len(self.b):
            return "size %d, expected %d" % (len(got), len(self.b))
        bad = []
        for o in range(0, len(got), 4 * KiB):
            if any(a <= o < b for a, b in self.unsure):
                continue
            if got[o : o + 4 * KiB] != self.b[o : o + 4 * KiB]:
                bad.append(o)
        if bad:
            return "%d 4-KiB blocks differ, first at byte %d" % (len(bad), bad[0])
        return "ok"


# ---------------------------------------------------------------------------------------------
# contract rows


def fiemap(path):
    """{logical block: physical block} of a file's mapped 4 KiB blocks, from FIEMAP (`filefrag
    -v -b4096`)."""
    r = subprocess.run(["filefrag", "-v", "-b4096", path], capture_output=True, text=True, check=True)
    m = {}
    for line in r.stdout.splitlines():
        f = line.replace("..", " ").replace(":", " ").split()
        # ext: logical_start logical_end physical_start physical_end length [expected] [flags]
        if len(f) >= 6 and all(x.isdigit() for x in f[:6]):
            lo, hi, ps = int(f[1]), int(f[2]), int(f[3])
            for i in range(hi - lo + 1):
                m[lo + i] = ps + i
    return m


def extents(m):
    """Extents of a map from fiemap(), contiguous runs merged."""
    n, prev = 0, None
    for lb in sorted(m):
        if prev is None or lb != prev + 1 or m[lb] != m[prev] + 1:
            n += 1
        prev = lb
    return n


def run_defragmenter(cmd):
    """Runs e4defrag, or xfs_fsr with a terminal on stdin: without one xfs_fsr sends what it did
    to syslog (which the VM does not have) instead of stdout."""
    import pty

    if cmd[0] != "xfs_fsr":
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    m, s = pty.openpty()
    try:
        return subprocess.run(cmd, stdin=s, capture_output=True, text=True, timeout=300)
    finally:
        os.close(m)
        os.close(s)


def other_files_check(tag, before, expected_extra):
    """Every file but the image: bystanders as before, plus files made during the row (hashed when
    they were made). Prints TAG-others:ok N | changed: …"""
    now = hash_tree(exclude={IMG})
    want = dict(before)
    want.update(expected_extra)
    changed = sorted(p for p in want if now.get(p) != want[p])
    if changed:
        out(tag + "-others", "changed: " + " ".join("%s(%s)" % (p, "gone" if p not in now else "differs") for p in changed))
    else:
        out(tag + "-others", "ok %d" % len(want))


def contract(op, fs):
    for n in os.listdir(MNT):
        if n.startswith(("post-", "nb-", "frag", "img")):
            os.unlink(os.path.join(MNT, n))
    os.sync()
    before = hash_tree()
    size = 16 * MiB
    tag = op
    swap = op == "swapon"
    if swap:
        write_file(IMG, bytes(size))
        r = subprocess.run(["mkswap", IMG], capture_output=True, text=True)
        out(tag + "-mkswap", r.returncode)
        with open(IMG, "rb") as f:
            model = Model(f.read())
        # The refusal: an active swap file is not remapped.
        r = subprocess.run(["swapon", IMG], capture_output=True, text=True)
        out(tag + "-swapon-first", "%d %s" % (r.returncode, r.stderr.strip().replace("\n", " ")))
        if r.returncode == 0:
            try:
                a = Attach(tag + "-refuse", IMG)
                out(tag + "-refuse-mode", a.info.get("mode"))
                out(tag + "-refuse-notes", " | ".join(a.info.get("notes", [])))
                out(tag + "-refuse-rc", a.detach())
            except RuntimeError as e:
                out(tag + "-refuse-mode", "attach failed")
                out(tag + "-refuse-notes", str(e).replace("\n", " "))
            subprocess.run(["swapoff", IMG], capture_output=True)
    else:
        with open(IMG, "wb") as f:
            f.truncate(size)
        model = Model(bytes(size))
        # Written before attach (a mapped extent from the start).
        d = pattern(("pre", op), MiB)
        with open(IMG, "r+b") as f:
            f.seek(MiB)
            f.write(d)
            os.fsync(f.fileno())
        model.put(MiB, d)
    os.sync()
    extra = {}
    if op == "defrag":
        # Give defrag work and room: a 14 MiB reserve file first, then every other block of the
        # rest of the free space in 64 KiB files; deleting the even ones leaves only 64 KiB holes,
        # so the image's blocks are scattered among neighbours. The reserve is deleted (no open
        # of the image) just before the defrag, which then has a contiguous place to move to.
        write_file(MNT + "/nb-reserve", pattern("reserve", 14 * MiB))
        cheese, i = [], 0
        while free_bytes() > 2 * MiB:
            p = "%s/nb-cheese-%d" % (MNT, i)
            try:
                write_file(p, pattern(("cheese", i), 64 * KiB))
            except OSError:
                break
            cheese.append(p)
            i += 1
        for p in cheese[0::2]:
            os.unlink(p)
        for p in cheese[1::2]:
            extra[p] = sha(p)
        os.sync()
    if op == "dedupe-hidden-fd":
        # Root's access-mode-3 descriptor, in flight in an SCM_RIGHTS message during attach: no
        # /proc/PID/fd shows it, so the descriptor scan cannot refuse, and it opens nothing later.
        import socket

        fd3 = os.open(IMG, 3)
        HIDDEN["pair"] = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        socket.send_fds(HIDDEN["pair"][0], [b"x"], [fd3])
        os.close(fd3)
    # Fill holes in 64 KiB pieces in a scrambled order, interleaved with appends to a neighbour,
    # so that the image is fragmented (defrag has work) and its blocks sit among other files'.
    # For defrag this happens through the file before attach, so that the image's extents before
    # the defrag are known (FIEMAP needs an open, which would break the lease during the attach);
    # for every other operation through the device (hole fills while remapping).
    def scatter(write):
        rng = random.Random(repr(op))
        pieces = [o for o in range(MiB, 14 * MiB, 64 * KiB) if not 6 * MiB <= o < 8 * MiB]
        rng.shuffle(pieces)
        frag = MNT + "/frag"
        fragdata = bytearray()
        with open(frag, "wb") as ff:
            for i, o in enumerate(pieces):
                d = pattern(("fill", op, o), 64 * KiB)
                write(o, d)
                model.put(o, d)
                if i % 16 == 0:
                    x = pattern(("frag", op, i), 64 * KiB)
                    ff.write(x)
                    ff.flush()
                    os.fsync(ff.fileno())
                    fragdata += x
        extra[frag] = hashlib.sha256(fragdata).hexdigest()

    if op == "defrag":
        with open(IMG, "r+b") as f:

            def wfile(o, d):
                f.seek(o)
                f.write(d)
                f.flush()
                os.fsync(f.fileno())

            scatter(wfile)
        os.sync()
        HIDDEN["map-before"] = fiemap(IMG)
    a = Attach(tag, IMG)
    HIDDEN["dev"] = a.dev
    out(tag + "-mode", a.info.get("mode"))
    out(tag + "-notes", " | ".join(a.info.get("notes", [])))
    dev = Dev(a.dev)
    if op != "defrag":
        scatter(dev.write)
    # Overwrite what is now mapped: raw writes.
    for o in range(MiB, 14 * MiB, MiB):
        if 6 * MiB <= o < 8 * MiB:
            continue
        d = pattern(("raw", op, o), MiB)
        dev.write(o, d)
        model.put(o, d)
    out(tag + "-before", a.state())

    # The writer: 64 KiB writes into 1..4 MiB (away from every op's range) while the op runs.
    stop = threading.Event()
    werr = []
    wdone = [0]

    def writer():
        i = 0
        while not stop.is_set():
            o = MiB + (i * 64 * KiB) % (3 * MiB)
            d = pattern(("w", op, i), 64 * KiB)
            try:
                dev.write(o, d)
                model.put(o, d)
                wdone[0] += 1
            except OSError as e:
                werr.append("%d:%s" % (o, e.strerror))
                with model.lock:
                    model.unsure.append((o, o + 64 * KiB))
            i += 1

    # FICLONE of a whole file takes in (or replaces) the writer's range too: the writer pauses.
    # So it does for xfs_fsr: XFS_IOC_SWAPEXT refuses (EBUSY, "file busy") to swap a file whose
    # ctime or mtime changed since xfs_fsr's bulkstat, so under a writer it never moves a block.
    concurrent = op not in ("ficlone-dst", "ficlone-src") and not (op == "defrag" and fs == "xfs")
    wt = threading.Thread(target=writer)
    if concurrent:
        wt.start()
        time.sleep(0.5)
    res = "done"
    try:
        res = do_op(op, fs, model, extra) or "done"
    except OSError as e:
        res = "errno %d %s" % (e.errno, e.strerror)
    except subprocess.CalledProcessError as e:
        res = "exit %d %s" % (e.returncode, (e.stderr or b"").decode(errors="replace").strip().replace("\n", " ")[-300:])
    out(tag + "-op", res)
    time.sleep(0.5)
    stop.set()
    if concurrent:
        wt.join()
    out(tag + "-writer", "%d acknowledged, %d failed %s" % (wdone[0], len(werr), " ".join(werr[:3])))
    out(tag + "-after", a.state())
    # Right after the op: what the file holds (reading it breaks the lease, so not after a grow,
    # which keeps remapping: there the rewrite below must go on raw).
    if op not in ("grow", "shrink"):
        out(tag + "-at-op", model.compare(IMG))
    if swap:
        r = subprocess.run(["swapoff", IMG], capture_output=True, text=True)
        out(tag + "-swapoff", r.returncode)
    # Blocks the op freed go to new files of known content; then every byte of the device is
    # rewritten. A write still sent to the old blocks would land in those files.
    for p in fill(MNT + "/post-", (7 if op == "defrag" else 20) * MiB, ("post", op)):
        extra[p] = sha(p)
    n_final = 0
    for o in range(0, size, MiB):
        d = pattern(("final", op, o), MiB)
        try:
            dev.write(o, d)
            model.put(o, d)
            n_final += 1
        except OSError as e:
            werr.append("final %d:%s" % (o, e.strerror))
            model.unsure.append((o, o + MiB))
    dev.close()
    out(tag + "-final-writes", "%d of %d" % (n_final, size // MiB))
    out(tag + "-final-state", a.state())
    out(tag + "-rc", a.detach())
    out(tag + "-data", model.compare(IMG))
    if op == "shrink":
        # FIEMAP after detach: every block of the image inside the file system's size now.
        blocks, _ = fs_blocks(fs)
        m = fiemap(IMG)
        top = max(m.values()) if m else -1
        out(tag + "-extents", "%s: %d mapped blocks, highest %d, file system %d blocks" % (
            "ok" if top < blocks else "beyond the end", len(m), top, blocks))
    other_files_check(tag, before, extra)


HIDDEN = {}


def do_op(op, fs, model, extra):
    """The one change another process makes; updates the model to what the file must hold."""
    src = MNT + "/nb-src"
    if op == "truncate-path":
        os.truncate(IMG, 10 * MiB)
        with model.lock:
            del model.b[10 * MiB :]
    elif op == "ftruncate":
        fd = os.open(IMG, os.O_WRONLY)
        try:
            os.ftruncate(fd, 10 * MiB)
        finally:
            os.close(fd)
        with model.lock:
            del model.b[10 * MiB :]
    elif op in ("punch", "zero-range", "collapse", "insert"):
        fd = os.open(IMG, os.O_WRONLY)
        try:
            if op == "punch":
                fallocate(fd, FL_PUNCH | FL_KEEP_SIZE, 9 * MiB, 2 * MiB)
                model.put(9 * MiB, bytes(2 * MiB))
            elif op == "zero-range":
                fallocate(fd, FL_ZERO, 9 * MiB, 2 * MiB)
                model.put(9 * MiB, bytes(2 * MiB))
            elif op == "collapse":
                fallocate(fd, FL_COLLAPSE, 10 * MiB, MiB)
                with model.lock:
                    del model.b[10 * MiB : 11 * MiB]
            else:
                fallocate(fd, FL_INSERT, 10 * MiB, MiB)
                with model.lock:
                    model.b[10 * MiB : 10 * MiB] = bytes(MiB)
        finally:
            os.close(fd)
    elif op == "defrag":
        os.unlink(MNT + "/nb-reserve")
        os.sync()
        cmd = ["e4defrag", "-v", IMG] if fs == "ext4" else ["xfs_fsr", "-v", "-d", IMG]
        r = run_defragmenter(cmd)
        # Did it move the image's blocks? FIEMAP (filefrag) before (taken before attach; raw
        # overwrites of mapped blocks do not change the map) and now (the lease is broken
        # already): extents, and how many of the blocks mapped before now sit elsewhere.
        before, after = HIDDEN.pop("map-before"), fiemap(IMG)
        moved = sum(1 for lb, pb in before.items() if after.get(lb) != pb)
        out("defrag-extents", "before %d after %d, moved %d of %d blocks" % (extents(before), extents(after), moved, len(before)))
        return "exit %d: %s" % (r.returncode, " ".join((r.stdout + r.stderr).split())[-300:])
    elif op in ("ficlone-dst", "ficlonerange-dst", "cfr-dst"):
        data = pattern(("src", op), 16 * MiB)
        write_file(src, data)
        extra[src] = hashlib.sha256(data).hexdigest()
        sfd = os.open(src, os.O_RDONLY)
        dfd = os.open(IMG, os.O_RDWR)
        try:
            if op == "ficlone-dst":
                ficlone(sfd, dfd)
                with model.lock:
                    model.b[:] = data
            elif op == "ficlonerange-dst":
                ficlonerange(sfd, 0, 2 * MiB, dfd, 8 * MiB)
                model.put(8 * MiB, data[: 2 * MiB])
            else:
                n = os.copy_file_range(sfd, dfd, 2 * MiB, 0, 8 * MiB)
                model.put(8 * MiB, data[:n])
                return "copied %d" % n
        finally:
            os.close(sfd)
            os.close(dfd)
    elif op in ("ficlone-src", "ficlonerange-src", "cfr-src", "dedupe-src"):
        dst = MNT + "/nb-dst"
        if op == "dedupe-src":
            with model.lock:
                want = bytes(model.b[8 * MiB : 10 * MiB])
            write_file(dst, want)
        else:
            write_file(dst, b"")
        sfd = os.open(IMG, os.O_RDONLY)
        dfd = os.open(dst, os.O_RDWR)
        try:
            if op == "ficlone-src":
                ficlone(sfd, dfd)
            elif op == "ficlonerange-src":
                ficlonerange(sfd, 8 * MiB, 2 * MiB, dfd, 0)
            elif op == "cfr-src":
                n = os.copy_file_range(sfd, dfd, 2 * MiB, 8 * MiB, 0)
                if n != 2 * MiB:
                    return "copied %d" % n
            else:
                st, done = dedupe(sfd, 8 * MiB, 2 * MiB, dfd, 0)
                res = "status %d, %d bytes" % (st, done)
        finally:
            os.close(sfd)
            os.close(dfd)
        # The destination now holds (shares) the image's bytes; it must keep them whatever is
        # written to the image later.
        with model.lock:
            snap = bytes(model.b) if op == "ficlone-src" else bytes(model.b[8 * MiB : 10 * MiB])
        got = open(dst, "rb").read()
        extra[dst] = hashlib.sha256(snap).hexdigest()
        if got != snap:
            return "destination differs from the image's bytes right after the op"
        if op == "dedupe-src":
            return res
    elif op == "dedupe-hidden-fd":
        import socket

        _, fds, _, _ = socket.recv_fds(HIDDEN["pair"][1], 1, 1)
        twin = MNT + "/nb-twin"
        with model.lock:
            want = bytes(model.b[8 * MiB : 10 * MiB])
        write_file(twin, want)
        tfd = os.open(twin, os.O_RDONLY)
        try:
            st, done = dedupe(tfd, 0, 2 * MiB, fds[0], 8 * MiB)
        finally:
            os.close(tfd)
            os.close(fds[0])
        extra[twin] = hashlib.sha256(want).hexdigest()
        t0 = time.time()
        # attach re-validates the map once a second: wait for it (never open the image here).
        state = list_state(HIDDEN["dev"])
        while "map-changed" not in state and time.time() - t0 < 10:
            time.sleep(0.1)
            state = list_state(HIDDEN["dev"])
        return "status %d, %d bytes; noticed after %.1f s" % (st, done, time.time() - t0)
    elif op == "swapon":
        r = subprocess.run(["swapon", IMG], capture_output=True, text=True)
        return "swapon exit %d %s" % (r.returncode, r.stderr.strip().replace("\n", " "))
    elif op == "grow":
        st = os.statvfs(MNT)
        was = st.f_blocks * st.f_frsize // MiB
        sectors = int(open("/sys/block/vda/size").read())
        table = "0 %d linear /dev/vda 0" % sectors
        subprocess.run(["dmsetup", "reload", "lkfs", "--table", table], check=True, capture_output=True)
        subprocess.run(["dmsetup", "resume", "lkfs"], check=True, capture_output=True)
        cmd = ["resize2fs", DEV_MAPPER] if fs == "ext4" else ["xfs_growfs", MNT]
        r = subprocess.run(cmd, capture_output=True, check=True)
        st = os.statvfs(MNT)
        return "grown from %d to %d MiB (%s)" % (was, st.f_blocks * st.f_frsize // MiB, cmd[0])
    elif op == "shrink":
        return shrink(fs)
    else:
        raise SystemExit("unknown op " + op)
    return None


def fs_blocks(fs):
    """(blocks, AG size in blocks or 0) of the mounted file system as its own tools read them from
    the superblock (dumpe2fs, xfs_info)."""
    if fs == "ext4":
        r = subprocess.run(["dumpe2fs", "-h", DEV_MAPPER], capture_output=True, text=True, check=True)
        for line in r.stdout.splitlines():
            if line.startswith("Block count:"):
                return int(line.split(":")[1]), 0
        raise SystemExit("dumpe2fs printed no block count")
    r = subprocess.run(["xfs_info", MNT], capture_output=True, text=True, check=True)
    blocks = agsize = None
    for f in r.stdout.replace(",", " ").split():
        if f.startswith("agsize="):
            agsize = int(f.split("=")[1])
        if f.startswith("blocks=") and blocks is None:
            blocks = int(f.split("=")[1])
    return blocks, agsize


def shrink(fs):
    """Online shrink while remapping. ext4: resize2fs to a smaller size (refused in userspace:
    \"On-line shrinking not supported\") and the kernel's own answer, EXT4_IOC_RESIZE_FS with a
    smaller block count (ext4_resize_fs: EINVAL). XFS: xfs_growfs -D by 1 MiB less (the free tail
    of the last AG goes: xfs_ag_shrink_space) and by more than the last AG holds (whole AGs cannot
    go: EINVAL). The file system's size before and after each, from its superblock."""
    import errno
    import fcntl
    import struct

    def short(r):
        return " ".join((r.stdout + r.stderr).split())[-160:]

    was, agsize = fs_blocks(fs)
    if fs == "ext4":
        r = subprocess.run(["resize2fs", DEV_MAPPER, "%dK" % ((was - 1024) * 4)], capture_output=True, text=True)
        mid, _ = fs_blocks(fs)
        fd = os.open(MNT, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, 0x40086610, struct.pack("Q", was - 1024))  # EXT4_IOC_RESIZE_FS
            ioc = "0"
        except OSError as e:
            ioc = errno.errorcode.get(e.errno, str(e.errno))
        finally:
            os.close(fd)
        now, _ = fs_blocks(fs)
        out("shrink-kv", "tool=%d ioctl=%s was=%d mid=%d now=%d" % (r.returncode, ioc, was, mid, now))
        return "resize2fs exit %d (%s); EXT4_IOC_RESIZE_FS: %s; blocks %d -> %d -> %d" % (
            r.returncode, short(r), ioc, was, mid, now)
    tail = subprocess.run(["xfs_growfs", "-D", str(was - 256), MNT], capture_output=True, text=True)
    mid, _ = fs_blocks(fs)
    across = subprocess.run(["xfs_growfs", "-D", str(mid - agsize - 256), MNT], capture_output=True, text=True)
    now, _ = fs_blocks(fs)
    out("shrink-kv", "tool=%d across=%d ag=%d was=%d mid=%d now=%d" % (tail.returncode, across.returncode, agsize, was, mid, now))
    return "tail: exit %d; across an AG of %d blocks: exit %d (%s); blocks %d -> %d -> %d" % (
        tail.returncode, agsize, across.returncode, short(across), was, mid, now)


# ---------------------------------------------------------------------------------------------
# randomized stress


class Stress:
    FIO_SIZE = 16 * MiB
    IMG_SIZE = 24 * MiB  # fio owns 0..16 MiB; the tail is free for destructive ops

    def __init__(self, seed, fs):
        self.rng = random.Random(seed)
        self.fs = fs
        self.ops = {}
        self.refused = {}
        self.nb = {}  # neighbour path -> model bytearray
        self.frozen = {}  # clones/dedupe destinations: path -> sha256 at creation
        self.tmp = 0
        self.differs = 0
        self.swapped = {}  # xfs_fsr runs that swapped extents, by operation
        self.notes = []
        self.break_max = 0.0  # longest lease break seen (/proc/locks BREAKING), seconds

    def count(self, name, refused=None):
        self.ops[name] = self.ops.get(name, 0) + 1
        if refused is not None:
            self.refused[name] = self.refused.get(name, 0) + 1

    def pick_nb(self):
        return self.rng.choice(sorted(self.nb))

    def aligned(self, lo, hi, maxlen):
        a = self.rng.randrange(lo // (64 * KiB), hi // (64 * KiB)) * 64 * KiB
        ln = self.rng.randrange(1, maxlen // (64 * KiB) + 1) * 64 * KiB
        return a, min(ln, hi - a)

    def freeze(self, path):
        self.frozen[path] = sha(path)

    def step(self):
        r = self.rng
        ops = [
            "img-open", "img-truncate", "img-ftruncate", "img-punch-tail", "img-zero-tail", "img-defrag",
            "img-dedupe-src", "img-reflink-src", "img-cfr-src", "img-reflink-dst-tail", "img-cfr-dst-tail",
            "nb-write", "nb-punch", "nb-truncate", "nb-defrag", "nb-reflink", "nb-churn",
        ]
        only = os.environ.get("LOOPKIT_STRESS_OPS", "").split()
        if only:
            # A debugging aid: draw from these operations only (the draw stays seeded).
            ops = [o for o in ops if o in only] or ops
        op = r.choice(ops)
        while self.frozen and free_bytes() < 16 * MiB:
            # Clones and churn files pile up: free space (which is itself a change of blocks).
            p = r.choice(sorted(self.frozen))
            os.unlink(p)
            del self.frozen[p]
        kmsg("op %s" % op)
        try:
            self.do(op)
        except OSError as e:
            self.count(op, refused=e.errno)
            kmsg("op %s: errno %d" % (op, e.errno))
            return "%s(errno %d)" % (op, e.errno)
        self.count(op)
        kmsg("op %s: done" % op)
        return op

    def do(self, op):
        r = self.rng
        if op == "img-open":
            fd = os.open(IMG, os.O_RDONLY)
            os.pread(fd, 4096, r.randrange(0, self.IMG_SIZE // 4096) * 4096)
            os.close(fd)
        elif op == "img-truncate":
            os.truncate(IMG, r.choice([self.FIO_SIZE, 20 * MiB, 32 * MiB]))
            os.truncate(IMG, self.IMG_SIZE)
        elif op == "img-ftruncate":
            fd = os.open(IMG, os.O_WRONLY)
            try:
                os.ftruncate(fd, r.choice([self.FIO_SIZE, 20 * MiB]))
                os.ftruncate(fd, self.IMG_SIZE)
            finally:
                os.close(fd)
        elif op in ("img-punch-tail", "img-zero-tail"):
            o, n = self.aligned(self.FIO_SIZE, self.IMG_SIZE, 4 * MiB)
            fd = os.open(IMG, os.O_WRONLY)
            try:
                fallocate(fd, (FL_PUNCH | FL_KEEP_SIZE) if op == "img-punch-tail" else (FL_ZERO | FL_KEEP_SIZE), o, n)
            finally:
                os.close(fd)
        elif op in ("img-defrag", "nb-defrag"):
            target = IMG if op == "img-defrag" else self.pick_nb()
            cmd = ["e4defrag", target] if self.fs == "ext4" else ["xfs_fsr", "-v", "-d", target]
            trace = os.environ.get("LOOPKIT_STRESS_TRACE_DEFRAG")
            if trace:
                # A debugging aid: the defragmenter's system calls (offsets of its reads and
                # writes) into the job directory.
                self.tmp += 1
                cmd = ["strace", "-o", "%s/defrag-%d.trace" % (trace, self.tmp), "-e", "trace=openat,open_by_handle_at,read,write,lseek,ioctl,ftruncate,fsync", *cmd]
            kmsg("%s %s" % (cmd[0], target))
            d = run_defragmenter(cmd)
            # xfs_fsr -v says `extents before:N after:M` for a file whose extents it swapped.
            if "extents before:" in d.stdout:
                self.swapped[op] = self.swapped.get(op, 0) + 1
            # What the defragmenter said (the console then shows which file it worked on and
            # whether it copied, swapped or gave up).
            kmsg("%s exit %s: %s" % (cmd[0], d.returncode, " | ".join((d.stdout + d.stderr).split("\n"))[-1500:]))
        elif op in ("img-dedupe-src", "img-reflink-src", "img-cfr-src"):
            # The image as source; the destination is frozen right after (it must never change).
            o, n = self.aligned(0, self.IMG_SIZE, 2 * MiB)
            self.tmp += 1
            dst = "%s/clone-%d" % (MNT, self.tmp)
            sfd = os.open(IMG, os.O_RDONLY)
            try:
                if op == "img-dedupe-src":
                    write_file(dst, os.pread(sfd, n, o))
                    dfd = os.open(dst, os.O_RDWR)
                    try:
                        st, _ = dedupe(sfd, o, n, dfd, 0)
                    finally:
                        os.close(dfd)
                    if st != 0:
                        self.differs += 1  # fio wrote in between: legal, nothing shared
                else:
                    write_file(dst, b"")
                    dfd = os.open(dst, os.O_RDWR)
                    try:
                        if op == "img-reflink-src":
                            ficlonerange(sfd, o, n, dfd, 0)
                        else:
                            os.copy_file_range(sfd, dfd, n, o, 0)
                    finally:
                        os.close(dfd)
            finally:
                os.close(sfd)
                # Tracked whether or not the kernel refused (ext4: no reflink, no dedupe): its
                # bytes must not change from here on, and it is deleted when space runs short.
                if os.path.exists(dst):
                    self.freeze(dst)
        elif op in ("img-reflink-dst-tail", "img-cfr-dst-tail"):
            src = self.pick_nb()
            n = min(2 * MiB, len(self.nb[src]) // (64 * KiB) * 64 * KiB)
            if n == 0:
                return
            o, _ = self.aligned(self.FIO_SIZE, self.IMG_SIZE - n, n) if self.IMG_SIZE - n > self.FIO_SIZE else (self.FIO_SIZE, 0)
            sfd = os.open(src, os.O_RDONLY)
            dfd = os.open(IMG, os.O_RDWR)
            try:
                if op == "img-reflink-dst-tail":
                    ficlonerange(sfd, 0, n, dfd, o)
                else:
                    os.copy_file_range(sfd, dfd, n, 0, o)
            finally:
                os.close(sfd)
                os.close(dfd)
        elif op == "nb-write":
            p = self.pick_nb()
            o = r.randrange(0, 6 * MiB)
            d = r.randbytes(r.randrange(1, 512 * KiB))
            with open(p, "r+b") as f:
                f.seek(o)
                f.write(d)
                os.fsync(f.fileno())
            m = self.nb[p]
            if o + len(d) > len(m):
                m.extend(bytes(o + len(d) - len(m)))
            m[o : o + len(d)] = d
        elif op == "nb-punch":
            p = self.pick_nb()
            m = self.nb[p]
            if len(m) < 64 * KiB:
                return
            o, n = self.aligned(0, len(m) // (64 * KiB) * 64 * KiB, MiB)
            fd = os.open(p, os.O_WRONLY)
            try:
                fallocate(fd, FL_PUNCH | FL_KEEP_SIZE, o, n)
            finally:
                os.close(fd)
            m[o : o + n] = bytes(n)
        elif op == "nb-truncate":
            p = self.pick_nb()
            n = r.randrange(0, 6 * MiB)
            os.truncate(p, n)
            m = self.nb[p]
            if n < len(m):
                del m[n:]
            else:
                m.extend(bytes(n - len(m)))
        elif op == "nb-reflink":
            a, b = r.sample(sorted(self.nb), 2)
            ma, mb = self.nb[a], self.nb[b]
            n = min(len(ma), MiB) // (64 * KiB) * 64 * KiB
            if n == 0:
                return
            o = r.randrange(0, 4 * MiB // (64 * KiB)) * 64 * KiB
            sfd = os.open(a, os.O_RDONLY)
            dfd = os.open(b, os.O_RDWR)
            try:
                ficlonerange(sfd, 0, n, dfd, o)
            finally:
                os.close(sfd)
                os.close(dfd)
            if o + n > len(mb):
                mb.extend(bytes(o + n - len(mb)))
            mb[o : o + n] = ma[:n]
        elif op == "nb-churn":
            # Free and allocate blocks: delete an old clone or make a new frozen file.
            old = [p for p in sorted(self.frozen) if "/churn-" in p]
            if old and r.random() < 0.5:
                p = r.choice(old)
                os.unlink(p)
                del self.frozen[p]
            else:
                self.tmp += 1
                p = "%s/churn-%d" % (MNT, self.tmp)
                write_file(p, r.randbytes(r.randrange(1, 3 * MiB)))
                self.freeze(p)

    def check_files(self):
        bad = []
        for p, m in self.nb.items():
            got = open(p, "rb").read()
            if got != m:
                bad.append(p)
        for p, h in self.frozen.items():
            if sha(p) != h:
                bad.append(p)
        return bad


def fio_args(target, seed, size, extra=()):
    return [
        "fio", "--name=s", "--filename=" + target, "--ioengine=libaio", "--direct=1", "--rw=randwrite",
        "--bs=4k", "--iodepth=16", "--size=%d" % size, "--verify=crc32c", "--verify_fatal=1",
        "--randseed=%d" % seed, "--output-format=json", *extra,
    ]


def fio_result(stdout):
    """(errors, bytes written, bytes read back) from fio's JSON."""
    try:
        j = json.loads(stdout[stdout.index("{") :])["jobs"][0]
    except (ValueError, KeyError, IndexError):
        return None
    return j.get("error", 0) + j.get("total_err", 0), j["write"]["io_bytes"], j["read"]["io_bytes"]


def kmsg(text):
    """A line in the kernel log (the guest console): kernel messages and hung-task reports then
    show which step of the driver was running."""
    try:
        with open("/dev/kmsg", "w") as f:
            f.write("remap_stress: %s\n" % text)
    except OSError:
        pass


def stacks(why):
    """Kernel stacks of every task in D state and of every thread of loopkit, fio and the
    defragmenters (/proc/PID/task/TID/stack), then `echo w > /proc/sysrq-trigger` (blocked tasks
    to the console): what a hang looks like from inside, printed as stress-stack lines."""
    out("stress-stack", "=== %s (uptime %s)" % (why, open("/proc/uptime").read().split()[0]))
    names = ("loopkit", "fio", "xfs_fsr", "e4defrag", "python3")
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        try:
            tids = os.listdir("/proc/%s/task" % pid)
        except OSError:
            continue
        for tid in tids:
            base = "/proc/%s/task/%s/" % (pid, tid)
            try:
                comm = open(base + "comm").read().strip()
                state = open(base + "stat").read().rsplit(")", 1)[1].split()[0]
                if state != "D" and not comm.startswith(names) and not comm.startswith("iou-"):
                    continue
                stack = open(base + "stack").read().split("\n")
            except OSError:
                continue
            frames = [f.split("] ", 1)[-1].split("+")[0] for f in stack if f]
            out("stress-stack", "%s/%s %s %s: %s" % (pid, tid, comm, state, " < ".join(frames)))
    try:
        with open("/proc/sysrq-trigger", "w") as f:
            f.write("w")
    except OSError:
        pass


class BreakTimer:
    """Polls /proc/locks (every 20 ms) for the image's lease in state BREAKING: the longest time a
    break of it lasted, i.e. how long the server took to answer a break (the opener waits that
    long; the kernel takes the lease away after lease-break-time)."""

    def __init__(self, path):
        self.ino = os.stat(path).st_ino
        self.longest = 0.0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def breaking(self):
        try:
            lines = open("/proc/locks").read().splitlines()
        except OSError:
            return False
        for line in lines:
            f = line.split()
            # "1: LEASE  BREAKING  READ 1234 fe:01:131 0 EOF"
            if len(f) > 5 and f[1] == "LEASE" and f[2] == "BREAKING" and f[5].rsplit(":", 1)[-1] == str(self.ino):
                return True
        return False

    def run(self):
        since = None
        while not self.stop.is_set():
            if self.breaking():
                since = since or time.time()
                self.longest = max(self.longest, time.time() - since)
            else:
                since = None
            time.sleep(0.02)

    def done(self):
        self.stop.set()
        self.t.join()
        return self.longest


class Watchdog:
    """When one step (a mutator op, attach, detach, a verify) has run for longer than `limit`
    seconds: prints the stacks ([`stacks`]), then a failing stress-result, and ends the driver
    (a hang is a failure with its stacks, not a VM that runs into the harness's timeout)."""

    def __init__(self, limit, cycle_limit):
        self.limit, self.cycle_limit = limit, cycle_limit
        self.what, self.since, self.cycle_since = None, time.time(), time.time()
        self.lock = threading.Lock()
        threading.Thread(target=self.run, daemon=True).start()

    def step(self, what):
        with self.lock:
            self.what, self.since = what, time.time()

    def cycle(self):
        """A new cycle starts (fio that never finishes keeps the mutator stepping: the whole
        cycle has its own, longer limit)."""
        with self.lock:
            self.cycle_since = time.time()

    def run(self):
        while True:
            time.sleep(5)
            with self.lock:
                what, since, now = self.what, self.since, time.time()
                stuck = what is not None and (now - since > self.limit or now - self.cycle_since > self.cycle_limit)
            if stuck:
                stacks("%s running for %.0f s" % (what, time.time() - since))
                time.sleep(10)  # sysrq-w reaches the console
                stacks("%s still running after %.0f s" % (what, time.time() - since))
                out("stress-result", "FAIL hang: %s for more than %d s, or the cycle for more than %d s (stress-stack lines above)" % (what, self.limit, self.cycle_limit))
                sys.stdout.flush()
                os._exit(3)


def stress(secs, seed, fs):
    s = Stress(seed, fs)
    hang = int(os.environ.get("LOOPKIT_STRESS_HANG_SECS", "240"))
    dog = Watchdog(hang, max(600, 2 * hang))
    out("stress-seed", seed)
    for n in os.listdir(MNT):
        if n != "lost+found" and not n.startswith("bystander-"):
            os.unlink(os.path.join(MNT, n))
    before = hash_tree()
    with open(IMG, "wb") as f:
        f.truncate(Stress.IMG_SIZE)
    for i in range(4):
        p = "%s/nb-%d" % (MNT, i)
        d = pattern(("nb", seed, i), 4 * MiB)
        write_file(p, d)
        s.nb[p] = bytearray(d)
    os.sync()
    end = time.time() + secs
    cycles = fio_err = wbytes = vbytes = fbytes = 0
    failures = []
    cyc_remap = 0
    while time.time() < end:
        cycles += 1
        fseed = s.rng.randrange(1, 1 << 30)
        try:
            kmsg("cycle %d: attach" % cycles)
            a = Attach("s%d" % cycles, IMG)
        except RuntimeError as e:
            failures.append("cycle %d: %s" % (cycles, e))
            break
        if a.info.get("mode") == "remap":
            cyc_remap += 1
        else:
            s.notes.append("cycle %d not remapped: %s" % (cycles, a.info.get("notes")))
        fio = subprocess.Popen(fio_args(a.dev, fseed, Stress.FIO_SIZE), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        dog.cycle()
        log, slow = [], []
        bt = BreakTimer(IMG)
        while fio.poll() is None:
            dog.step("cycle %d: fio" % cycles)
            time.sleep(s.rng.uniform(0.05, 1.0))
            if fio.poll() is None:
                dog.step("cycle %d: mutator op after %s" % (cycles, log[-3:]))
                t0 = time.time()
                op = s.step()
                took = time.time() - t0
                log.append(op)
                if took >= 5:
                    # Listed for the record (defragmenting under TCG takes seconds); the part
                    # an open waits for the lease break is measured by BreakTimer.
                    slow.append("%s %.1fs" % (op, took))
                    s.notes.append("cycle %d: %s took %.1f s" % (cycles, op, took))
        dog.step("cycle %d: fio finishing" % cycles)
        fout, ferr = fio.communicate()
        breaking = bt.done()
        s.break_max = max(s.break_max, breaking)
        # The server answers a break once the raw I/O planned before it is done: far below
        # lease-break-time, after which the kernel takes the lease away and the opener goes on.
        limit = int(open("/proc/sys/fs/lease-break-time").read()) * 2 / 3
        if breaking > limit:
            failures.append("cycle %d: a lease break lasted %.1f s (over %.0f s, 2/3 of lease-break-time)" % (cycles, breaking, limit))
        dog.step("cycle %d: --list and detach" % cycles)
        state = a.state()
        kmsg("cycle %d: detach (%s)" % (cycles, state))
        rc = a.detach()
        dog.step("cycle %d: checks after detach" % cycles)
        res = fio_result(fout)
        if fio.returncode != 0 or res is None or res[0] != 0:
            failures.append("cycle %d (fio seed %d): fio rc %s %s %s; mutator ops this cycle: %s" % (cycles, fseed, fio.returncode, res, ferr.strip()[-300:], " ".join(log)))
        else:
            wbytes += res[1]
            vbytes += res[2]
        if rc != 0:
            failures.append("cycle %d: server exit %s" % (cycles, rc))
        # The image file itself, after detach, read directly (no ublk): what fio wrote.
        v = subprocess.run(fio_args(IMG, fseed, Stress.FIO_SIZE, ["--verify_only"]), capture_output=True, text=True)
        vr = fio_result(v.stdout)
        if v.returncode != 0 or vr is None or vr[0] != 0:
            failures.append("cycle %d (fio seed %d): verify of the image file: rc %d %s %s; mutator ops this cycle: %s" % (cycles, fseed, v.returncode, vr, v.stderr.strip()[-300:], " ".join(log)))
        else:
            fbytes += vr[2]
        bad = s.check_files()
        if bad:
            failures.append("cycle %d: files changed: %s; mutator ops this cycle: %s" % (cycles, " ".join(bad), " ".join(log)))
        print("stress-cycle:%d fio-seed=%d state-at-end=%r lease-breaking=%.2fs slow-ops=%s" % (cycles, fseed, state, breaking, slow), flush=True)
        dog.step("cycle %d: attach" % (cycles + 1))
        if failures:
            break
    now = hash_tree(exclude=set([IMG]) | set(s.nb) | set(s.frozen))
    changed = sorted(p for p in before if now.get(p) != before[p])
    if changed:
        failures.append("bystanders changed: " + " ".join(changed))
    out("stress-fs", fs)
    out("stress-cycles", cycles)
    out("stress-cycles-remapped", cyc_remap)
    out("stress-mutator-ops", sum(s.ops.values()))
    out("stress-mutator-mix", " ".join("%s=%d" % kv for kv in sorted(s.ops.items())))
    out("stress-mutator-refused", " ".join("%s=%d" % kv for kv in sorted(s.refused.items())))
    out("stress-dedupe-differs", s.differs)
    out("stress-xfs-fsr-swapped", " ".join("%s=%d" % kv for kv in sorted(s.swapped.items())))
    out("stress-fio-written", wbytes)
    out("stress-fio-verified-device", vbytes)
    out("stress-fio-verified-file", fbytes)
    out("stress-bystanders", len(before))
    out("stress-longest-lease-break", "%.2f" % s.break_max)
    for n in s.notes[:20]:
        out("stress-note", n)
    out("stress-result", "ok" if not failures else "FAIL " + " || ".join(failures))


def write_mounted(disk):
    """Booted with bdev_allow_write_mounted=0, the file system on DISK mounted at MNT: a foreign
    write to the mounted disk (dd, and a plain open for writing) is refused by the kernel;
    attach --remap of an image there serves through the file, saying why; what is written
    through the device is in the file after detach (sha256 through the file system), and no other
    file changed."""
    import errno

    before = hash_tree()
    r = subprocess.run(["dd", "if=/dev/zero", "of=" + disk, "bs=4096", "count=1", "seek=100", "oflag=direct",
                        "conv=notrunc"], capture_output=True, text=True)
    out("wm-dd", "exit %d %s" % (r.returncode, " ".join(r.stderr.split())[-160:]))
    try:
        os.close(os.open(disk, os.O_WRONLY))
        out("wm-open", "opened")
    except OSError as e:
        out("wm-open", errno.errorcode.get(e.errno, str(e.errno)))
    try:
        os.close(os.open(disk, os.O_RDONLY))
        out("wm-open-ro", "opened")
    except OSError as e:
        out("wm-open-ro", errno.errorcode.get(e.errno, str(e.errno)))
    size = 16 * MiB
    write_file(IMG, pattern("wm-before", size))
    os.sync()
    a = Attach("wm", IMG)
    out("wm-mode", a.info.get("mode"))
    out("wm-notes", " | ".join(a.info.get("notes", [])))
    out("wm-list", a.state())
    dev = Dev(a.dev)
    data = bytearray()
    for o in range(0, size, MiB):
        d = pattern(("wm", o), MiB)
        dev.write(o, d)
        data += d
    dev.close()
    out("wm-rc", a.detach())
    out("wm-log", " ".join(open(a.errp).read().split())[-400:])
    want = hashlib.sha256(bytes(data)).hexdigest()
    out("wm-data", "ok" if sha(IMG) == want else "differs")
    # Read-only, the device is opened read-only, which the kernel still allows: remapped, and
    # what the device reads is the file.
    a = Attach("wm-ro", IMG, ("--read-only",))
    out("wm-ro-mode", a.info.get("mode"))
    out("wm-ro-list", a.state())
    with open(a.dev, "rb") as f:
        got = hashlib.sha256(f.read()).hexdigest()
    out("wm-ro-read", "ok" if got == want else "differs")
    out("wm-ro-rc", a.detach())
    other_files_check("wm", {p: h for p, h in before.items() if p != IMG}, {})


def dax(fs):
    """On a DAX-capable pmem disk (emulated: memmap=…! plus nd_e820) mounted -o dax=always at
    /tmp/d: attach --remap of an image there is refused with remap.dax-file and served through
    the file."""
    mnt = "/tmp/d"
    img = mnt + "/img"
    write_file(img, pattern(("dax", fs), 4 * MiB))
    r = subprocess.run(["findmnt", "-n", "-o", "OPTIONS", mnt], capture_output=True, text=True)
    out("dax-%s-mount" % fs, r.stdout.strip())
    a = Attach("dax-" + fs, img)
    out("dax-%s-mode" % fs, a.info.get("mode"))
    out("dax-%s-notes" % fs, " | ".join(a.info.get("notes", [])))
    out("dax-%s-rc" % fs, a.detach())


def main():
    if sys.argv[1] == "write-mounted":
        write_mounted(sys.argv[2])
    elif sys.argv[1] == "dax":
        dax(sys.argv[2])
    elif sys.argv[1] == "contract":
        contract(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "stress":
        stress(float(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif sys.argv[1] == "bystanders":
        # Files that nobody touches: every row and the stress test check they never change.
        for i in range(int(sys.argv[2])):
            write_file("%s/bystander-%d" % (MNT, i), pattern(("bystander", i), 3 * MiB))
    else:
        raise SystemExit("usage")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Description: deterministic source tree for the file-system fixtures.

generate: tree.py DEST [--profile full|joliet|bench] [--files N]
  full   nested dirs (10 levels, deep enough for ISO9660 relocation), unicode / space / non-UTF-8
         names, empty, 1-byte and exact-block-multiple files, a multi-MiB file, a sparse file,
         fast/slow/dangling/absolute symlinks, hard links, a fifo, a char device (when root),
         modes incl. setuid/sticky, owners (when root), fixed mtimes, and `many/` with 3000
         entries (an htree directory after e2fsck -fyD).
  small  the full profile with 300 entries in many/ and smaller big/sparse files (mutation tests).
  joliet only what Joliet can represent: files and directories, names <= 64 UCS-2 chars, no
         symlinks, no hard links, no special files.
  bench  N small files (default 10000) in 100 directories, plus the full profile's variety.
check: prints the number of entries; the tree is byte-for-byte reproducible (no randomness, no
clock) except for directory link counts.
"""
import argparse
import hashlib
import os
import sys

BASE_TIME = 1_000_000_000  # 2001-09-09


def content(seed: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes (SHA-256 in counter mode)."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
        i += 1
    return bytes(out[:size])


class Tree:
    def __init__(self, root):
        self.root = root
        self.n = 0
        self.root_ok = os.geteuid() == 0

    def p(self, rel):
        return os.path.join(os.fsencode(self.root), os.fsencode(rel) if isinstance(rel, str) else rel)

    def stamp(self, path, follow=True):
        self.n += 1
        t = BASE_TIME + self.n * 3607
        os.utime(path, (t, t), follow_symlinks=follow)

    def dir(self, rel, mode=0o755):
        path = self.p(rel)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
        return path

    def file(self, rel, data=b"", mode=0o644, owner=None):
        path = self.p(rel)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        if owner and self.root_ok:
            os.chown(path, *owner)
        self.stamp(path)
        return path

    def sparse(self, rel, size, chunks):
        path = self.p(rel)
        with open(path, "wb") as f:
            f.truncate(size)
            for off, n in chunks:
                f.seek(off)
                f.write(content(f"sparse{off}", n))
        self.stamp(path)

    def symlink(self, rel, target):
        path = self.p(rel)
        os.symlink(target, path)
        return path

    def finish_dirs(self):
        # Directory mtimes last, deepest first, so creating children does not change them.
        dirs = []
        for d, sub, _ in os.walk(os.fsencode(self.root)):
            dirs.append(d)
        for d in sorted(dirs, key=lambda x: -x.count(b"/")):
            if d != os.fsencode(self.root):
                self.stamp(d)


def full(t: Tree, many=3000, big=3 * 1024 * 1024 + 17, sparse=2 * 1024 * 1024):
    t.dir("dir")
    deep = "deep"
    for i in range(10):
        deep += f"/level{i}"
    t.dir(deep)
    t.file(deep + "/bottom.txt", b"at the bottom\n")
    t.file("dir/file.txt", b"hello, world\n")
    t.file("Ünïcödé-файл-文件.txt", "unicode content ✓\n".encode())
    t.file("with space and 'quotes'.txt", b"spaces\n")
    t.file("emoji-🎉.bin", content("emoji", 100))
    t.file(b"latin1-\xe9.txt", b"not utf-8 name\n")
    t.file("back\\slash.txt", b"backslash\n")
    t.file("empty", b"")
    t.file("one-byte", b"x")
    for n in (1024, 2048, 4096, 65536, 3 * 4096):
        t.file(f"exact-{n}", content(f"exact{n}", n))
    t.file("big.bin", content("big", big), mode=0o600)
    t.sparse("sparse.bin", sparse, [(sparse // 4, 4096), (sparse * 3 // 4 + 100, 5000)])
    t.file("script.sh", b"#!/bin/sh\necho hi\n", mode=0o755)
    t.file("setuid", b"suid\n", mode=0o4755)
    t.file("owned", b"owned by 1000\n", mode=0o640, owner=(1000, 1000))
    t.dir("sticky", mode=0o1777)
    t.file("sticky/inside", b"in sticky\n")
    t.symlink("link-rel", "dir/file.txt")
    t.symlink("link-abs", "/etc/passwd")
    t.symlink("link-dangling", "does/not/exist")
    t.symlink("link-dir", "dir")
    t.symlink("dir/link-slow", "../" + "long-target-" * 8 + "end")  # > 60 bytes: a slow symlink
    t.file("hl-a", b"hard linked\n")
    os.link(t.p("hl-a"), t.p("dir/hl-b"))
    os.link(t.p("hl-a"), t.p("hl-c"))
    os.mkfifo(t.p("fifo"))
    os.chmod(t.p("fifo"), 0o644)
    t.stamp(t.p("fifo"))
    if t.root_ok:
        os.mknod(t.p("devnull"), 0o20666, os.makedev(1, 3))
        t.stamp(t.p("devnull"))
    t.dir("many")
    for i in range(many):
        # Mostly empty files: thousands of names, few blocks.
        t.file(f"many/entry-{i:05d}-with-a-longish-name", content(f"m{i}", 20) if i % 500 == 0 else b"")


def joliet(t: Tree):
    t.dir("dir/sub/subsub")
    t.file("dir/file.txt", b"hello, world\n")
    t.file("dir/sub/subsub/deep.txt", b"deep\n")
    t.file("Ünïcödé.txt", "unicode content ✓\n".encode())
    t.file("with space.txt", b"spaces\n")
    t.file("empty", b"")
    t.file("one-byte", b"x")
    t.file("exact-2048", content("exact2048", 2048))
    t.file("big.bin", content("big", 1024 * 1024 + 5))


def bench(t: Tree, files):
    per = 100
    for d in range(max(1, files // per)):
        t.dir(f"d{d:03d}")
        for i in range(per):
            n = d * per + i
            t.file(f"d{d:03d}/f{n:06d}", content(f"b{n}", 512 + (n * 7919) % 12000))
    full(t, many=100)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dest")
    ap.add_argument("--profile", default="full", choices=["full", "small", "joliet", "bench"])
    ap.add_argument("--files", type=int, default=10000)
    a = ap.parse_args()
    if os.path.exists(a.dest) and os.listdir(a.dest):
        sys.exit(f"{a.dest} is not empty")
    os.makedirs(a.dest, exist_ok=True)
    os.umask(0)
    t = Tree(a.dest)
    if a.profile == "full":
        full(t)
    elif a.profile == "small":
        full(t, many=300, big=300 * 1024 + 5, sparse=256 * 1024)
    elif a.profile == "joliet":
        joliet(t)
    else:
        bench(t, a.files)
    t.finish_dirs()
    count = sum(len(f) + len(d) for _, d, f in os.walk(a.dest))
    print(count)


if __name__ == "__main__":
    main()

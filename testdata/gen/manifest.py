#!/usr/bin/env python3
"""Description: independent oracle for `loopkit manifest`: the manifest of a directory tree,
computed with os.lstat + hashlib (no loopkit code), in the schema of docs/JSON.md "Manifest".

manifest.py DIR [--no-meta] [--exclude-special]
  --no-meta          null mode/uid/gid (for Joliet-only images, which do not record them)
  --exclude-special  leave out fifos, sockets and device nodes (extract does not create them)
"""
import argparse
import hashlib
import json
import os
import stat
import sys


def escape(raw: bytes) -> str:
    s = raw.decode("utf-8", errors="surrogateescape")
    out = []
    for ch in s:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:
            out.append("\\x%02x" % (o - 0xDC00))
        elif ch == "\\":
            out.append("\\\\")
        else:
            out.append(ch)
    return "".join(out)


TYPES = {
    stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket",
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def build(root: bytes, no_meta=False, exclude_special=False):
    rows = []
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(d, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            kind = TYPES[stat.S_IFMT(st.st_mode)]
            if exclude_special and kind in ("fifo", "socket", "chardev", "blockdev"):
                continue
            e = {
                "path": escape(rel), "type": kind, "size": 0,
                "mode": None if no_meta else stat.S_IMODE(st.st_mode),
                "uid": None if no_meta else st.st_uid, "gid": None if no_meta else st.st_gid,
                "mtime": int(st.st_mtime), "target": None, "sha256": None,
            }
            key = (st.st_dev, st.st_ino) if kind == "file" and st.st_nlink > 1 else None
            if kind == "file":
                e["size"] = st.st_size
            elif kind == "symlink":
                t = os.readlink(full)
                e["size"] = len(t)
                e["target"] = escape(t)
            rows.append((e, full, key))
    rows.sort(key=lambda r: r[0]["path"])
    first = {}
    out = []
    for e, full, key in rows:
        if e["type"] == "file":
            if key in first:
                e["type"] = "hardlink"
                e["target"] = first[key]["path"]
                e["sha256"] = first[key]["sha256"]
            else:
                e["sha256"] = sha256(full)
                if key:
                    first[key] = e
        out.append(e)
    return {"loopkit_manifest": 1, "entries": out}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--no-meta", action="store_true")
    ap.add_argument("--exclude-special", action="store_true")
    a = ap.parse_args()
    json.dump(build(os.fsencode(a.dir), a.no_meta, a.exclude_special), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

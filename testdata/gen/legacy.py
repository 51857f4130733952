#!/usr/bin/env python3
"""Build legacy encrypted loop images with tools independent of loopkit.

Description: makes a plaintext file-system image (mkfs.ext2/3/4 -d TREE, genisoimage, mkfs.vfat)
from a deterministic tree, then encrypts it the way old Linux did:
  * cryptoloop (kernel cbc(aes), IV = LE32(sector) || 0*12, offset counted in the IV) with the key
    derived from the passphrase as util-linux / Debian did -- encryption by Python `cryptography`,
    derivations by hashlib (RIPEMD-160 falls back to `openssl dgst`);
  * loop-AES single-key and multi-key v2/v3 by `aespipe` (Jari Ruusu's own implementation).
Prints one JSON object: {"image", "plaintext", "plaintext_sha256", "payload_offset", ...}.

Deterministic: fixed tree content, UUID, hash seed and E2FSPROGS_FAKE_TIME.

Usage:
  legacy.py tree DIR                         # write the deterministic sample tree
  legacy.py plain --fs ext2 --size-mib 4 --tree DIR --out PLAIN.img
  legacy.py encrypt --plain PLAIN.img --scheme cryptoloop --derivation rmd160 --key-bits 256
            --passphrase-file P [--cipher aes|blowfish|cast5|des3_ede] [--null-iv]
            [--offset BYTES] [--iv-offset SECTORS] [--ecb] [--sparse] --out IMG
  legacy.py encrypt --plain PLAIN.img --scheme loop-aes --aespipe-args "-e AES128 -H sha256"
            --passphrase-file P | --keyfile K  [--offset BYTES] [--iv-exclude-offset] --out IMG
  legacy.py keyfile --lines 64|65 --out K    # deterministic multi-key key file
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

try:  # Blowfish, CAST5, TripleDES live in the "decrepit" module since cryptography 43.
    from cryptography.hazmat.decrepit.ciphers import algorithms as decrepit
except ImportError:  # pragma: no cover - older cryptography
    decrepit = algorithms

# Kernel cipher name -> (cryptography algorithm, block size). twofish and serpent are not in
# `cryptography`: those fixtures are written by the kernel's dm-crypt in the VM tests.
CIPHERS = {
    "aes": (algorithms.AES, 16),
    "blowfish": (decrepit.Blowfish, 8),
    "cast5": (decrepit.CAST5, 8),
    "des3_ede": (decrepit.TripleDES, 8),
}

FAKE_TIME = "1199145600"  # 2008-01-01, when such archives were made
UUID = "4c6f6f70-6b69-7400-8000-000000000001"


def ripemd160(data: bytes) -> bytes:
    try:
        return hashlib.new("ripemd160", data).digest()
    except ValueError:
        out = subprocess.run(["openssl", "dgst", "-ripemd160", "-binary"], input=data,
                             capture_output=True, check=True)
        return out.stdout


def hash_fn(name):
    if name == "rmd160":
        return ripemd160
    return lambda d: hashlib.new(name, d).digest()


def plain_hash(h, p: bytes, n: int) -> bytes:
    """cryptsetup crypt_plain_hash / Debian rmd160: H(p) || H('A'+p) || ... truncated to n."""
    out, prefix = b"", b""
    while len(out) < n:
        out += h(prefix + p)
        prefix += b"A"
    return out[:n]


def derive(derivation: str, p: bytes, key_bits: int) -> bytes:
    n = key_bits // 8
    p = p.split(b"\0")[0]
    if derivation == "util-linux-raw":
        assert n == 32
        return p[:31].ljust(32, b"\0")
    if derivation == "unhashed":  # Debian -N: xstrncpy(key, pass, keybits/8)
        return p[: n - 1].ljust(n, b"\0")
    if derivation == "plain":
        return p[:n].ljust(n, b"\0")
    if derivation in ("rmd160", "sha1", "sha256", "sha384", "sha512"):
        return plain_hash(hash_fn(derivation), p, n)
    if ":" in derivation:  # cryptsetup HASH:LEN (SUSE loop_fish2: rmd160:20), zero-padded
        h, m = derivation.split(":")
        return plain_hash(hash_fn(h), p, int(m)).ljust(n, b"\0")
    raise SystemExit(f"unknown derivation {derivation}")


def read_passphrase(path: str) -> bytes:
    data = open(path, "rb").read()
    return data.split(b"\n", 1)[0]


def write_tree(root: str, small: bool = False) -> None:
    """A small deterministic tree: nested dirs, odd names, sizes around block edges, a symlink."""
    os.makedirs(root, exist_ok=True)
    state = 0x1234567

    def rnd(n):
        nonlocal state
        out = bytearray()
        while len(out) < n:
            state = (state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
            out += state.to_bytes(8, "little")
        return bytes(out[:n])

    files = {
        "README.txt": b"loopkit sample archive, made like it was 2008.\n",
        "empty": b"",
        "one-byte": b"x",
        "photos/2007/IMG_0001.jpg": rnd(70000),
        "photos/2007/IMG_0002.jpg": rnd(4096),
        "photos/2008/summer holiday.txt": "sommerurlaub \u00e4\u00f6\u00fc \u2603\n".encode(),
        "docs/letters/letter-1.txt": b"Dear archivist,\n" * 200,
        "docs/block-1023.bin": rnd(1023),
        "docs/block-1024.bin": rnd(1024),
        "docs/block-1025.bin": rnd(1025),
    }
    if not small:
        files["big.bin"] = rnd(600 * 1024)
    for rel, data in files.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    link = os.path.join(root, "docs", "latest-letter")
    if not os.path.lexists(link):
        os.symlink("letters/letter-1.txt", link)
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                os.utime(p, (int(FAKE_TIME), int(FAKE_TIME)))


def make_plain(fs: str, size_mib: int, tree: str, out: str, label: str) -> None:
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=FAKE_TIME, SOURCE_DATE_EPOCH=FAKE_TIME)
    if os.path.exists(out):
        os.unlink(out)
    if fs in ("ext2", "ext3", "ext4"):
        with open(out, "wb") as f:
            f.truncate(size_mib << 20)
        cmd = ["mkfs." + fs, "-q", "-F", "-L", label, "-U", UUID, "-E", f"hash_seed={UUID}", "-d", tree]
        if fs == "ext2":
            cmd += ["-b", "1024"]
        subprocess.run(cmd + [out], check=True, env=env, stdout=subprocess.DEVNULL)
    elif fs == "iso9660":
        subprocess.run(["genisoimage", "-quiet", "-R", "-J", "-V", label, "-o", out, tree],
                       check=True, env=env)
    elif fs == "vfat":
        with open(out, "wb") as f:
            f.truncate(size_mib << 20)
        subprocess.run(["mkfs.vfat", "-n", label[:11].upper(), "-i", "4c6f6f70", out],
                       check=True, stdout=subprocess.DEVNULL)
    else:
        raise SystemExit(f"unknown fs {fs}")


def sector_cipher(cipher: str, key: bytes, sector: int, iv_base: int, ecb: bool, null_iv: bool):
    """The Cipher for one 512-byte sector: cryptoloop's LE32 IV (first block-size bytes of
    LE32(sector) || 0*12), a null IV (loop_fish2 style), or ECB."""
    alg, bs = CIPHERS[cipher]
    if ecb:
        return Cipher(alg(key), modes.ECB())
    iv = bytes(bs) if null_iv else (((iv_base + sector) & 0xFFFFFFFF).to_bytes(4, "little") + bytes(12))[:bs]
    return Cipher(alg(key), modes.CBC(iv))


def encrypt_cryptoloop(plain: bytes, key: bytes, iv_base: int, ecb: bool, cipher: str = "aes",
                       null_iv: bool = False) -> bytes:
    out = bytearray()
    for k in range(len(plain) // 512):
        enc = sector_cipher(cipher, key, k, iv_base, ecb, null_iv).encryptor()
        out += enc.update(plain[512 * k: 512 * (k + 1)]) + enc.finalize()
    return bytes(out)


def decrypt_cryptoloop(ct: bytes, key: bytes, iv_base: int, ecb: bool, cipher: str = "aes",
                       null_iv: bool = False) -> bytes:
    out = bytearray()
    for k in range(len(ct) // 512):
        d = sector_cipher(cipher, key, k, iv_base, ecb, null_iv).decryptor()
        out += d.update(ct[512 * k: 512 * (k + 1)]) + d.finalize()
    return bytes(out)


def data_sectors(path: str) -> list:
    """Per 512-byte sector: True if it lies in an allocated (non-hole) region of the file."""
    size = os.path.getsize(path)
    mask = [False] * (size // 512)
    fd = os.open(path, os.O_RDONLY)
    try:
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            for k in range(start // 512, (end + 511) // 512):
                if k < len(mask):
                    mask[k] = True
            pos = end
    finally:
        os.close(fd)
    return mask


def encrypt_aespipe(plain: bytes, args: list, passfile: str, keyfile: str, iv_sector: int) -> bytes:
    cmd = ["aespipe"] + args
    if iv_sector:
        cmd += ["-O", str(iv_sector)]
    if keyfile:
        cmd += ["-P", keyfile]
        r = subprocess.run(cmd, input=plain, capture_output=True)
    else:
        fd_r, fd_w = os.pipe()
        os.write(fd_w, read_passphrase(passfile) + b"\n")
        os.close(fd_w)
        r = subprocess.run(cmd + ["-p", str(fd_r)], input=plain, capture_output=True, pass_fds=(fd_r,))
        os.close(fd_r)
    if r.returncode != 0 or len(r.stdout) != len(plain):
        raise SystemExit(f"aespipe failed: {r.stderr.decode(errors='replace')}")
    return r.stdout


def keyfile_lines(n: int) -> bytes:
    import base64
    lines = [base64.b64encode(hashlib.sha512(f"line{i}".encode()).digest()[:45]) for i in range(n)]
    return b"".join(l + b"\n" for l in lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tree")
    t.add_argument("dir")
    t.add_argument("--small", action="store_true", help="omit the 600 KiB file (for the shipped sample)")
    pl = sub.add_parser("plain")
    pl.add_argument("--fs", default="ext2")
    pl.add_argument("--size-mib", type=int, default=4)
    pl.add_argument("--tree", required=True)
    pl.add_argument("--label", default="archive2008")
    pl.add_argument("--out", required=True)
    kf = sub.add_parser("keyfile")
    kf.add_argument("--lines", type=int, required=True)
    kf.add_argument("--out", required=True)
    e = sub.add_parser("encrypt")
    e.add_argument("--plain", required=True)
    e.add_argument("--scheme", choices=["cryptoloop", "loop-aes"], required=True)
    e.add_argument("--derivation", default="rmd160")
    e.add_argument("--key-bits", type=int, default=256)
    e.add_argument("--ecb", action="store_true")
    e.add_argument("--cipher", default="aes", choices=sorted(CIPHERS), help="cryptoloop block cipher")
    e.add_argument("--null-iv", action="store_true", help="all-zero IV per sector (loop_fish2 style)")
    e.add_argument("--aespipe-args", default="-e AES128")
    e.add_argument("--passphrase-file")
    e.add_argument("--keyfile")
    e.add_argument("--offset", type=int, default=0, help="payload offset in bytes (multiple of 512)")
    e.add_argument("--iv-offset", type=int, help="IV sector of payload sector 0 (default offset/512)")
    e.add_argument("--iv-exclude-offset", action="store_true", help="loop-AES @offset: IV starts at 0")
    e.add_argument("--sparse", action="store_true", help="leave the offset area as a hole")
    e.add_argument("--holes", action="store_true",
                   help="keep the plaintext image's holes as holes in the ciphertext, as a sparse file "
                        "attached with losetup -e and never fully written would have them")
    e.add_argument("--out", required=True)
    a = ap.parse_args()

    if a.cmd == "tree":
        write_tree(a.dir, a.small)
        return
    if a.cmd == "keyfile":
        with open(a.out, "wb") as f:
            f.write(keyfile_lines(a.lines))
        os.chmod(a.out, 0o600)
        return
    if a.cmd == "plain":
        make_plain(a.fs, a.size_mib, a.tree, a.out, a.label)
        data = open(a.out, "rb").read()
        print(json.dumps({"plaintext": a.out, "plaintext_sha256": hashlib.sha256(data).hexdigest(),
                          "size_bytes": len(data)}))
        return

    plain = open(a.plain, "rb").read()
    if len(plain) % 512:
        raise SystemExit("plaintext image is not a multiple of 512 bytes")
    if a.offset % 512:
        raise SystemExit("--offset must be a multiple of 512")
    iv_base = a.iv_offset if a.iv_offset is not None else (0 if a.iv_exclude_offset else a.offset // 512)
    if a.scheme == "cryptoloop":
        key = derive(a.derivation, read_passphrase(a.passphrase_file), a.key_bits)
        ct = encrypt_cryptoloop(plain, key, iv_base, a.ecb, a.cipher, a.null_iv)
    else:
        ct = encrypt_aespipe(plain, a.aespipe_args.split(), a.passphrase_file, a.keyfile, iv_base)
    holes = data_sectors(a.plain) if a.holes else None
    with open(a.out, "wb") as f:
        if a.offset:
            if a.sparse:
                f.seek(a.offset)
            else:
                f.write(hashlib.sha256(b"junk").digest() * (a.offset // 32))
        if holes is None:
            f.write(ct)
        else:
            for k in range(len(ct) // 512):
                if holes[k]:
                    f.write(ct[512 * k: 512 * (k + 1)])
                else:
                    f.seek(512, 1)
            f.truncate(a.offset + len(ct))
    payload_sha = hashlib.sha256(plain).hexdigest()
    if holes is not None and a.scheme == "cryptoloop":
        # What the kernel would show: holes are zero ciphertext, decrypted like any other sector.
        data = open(a.out, "rb").read()[a.offset:]
        payload_sha = hashlib.sha256(decrypt_cryptoloop(data, key, iv_base, a.ecb, a.cipher, a.null_iv)).hexdigest()
    print(json.dumps({
        "image": a.out,
        "plaintext": a.plain,
        "plaintext_sha256": hashlib.sha256(plain).hexdigest(),
        "payload_sha256": payload_sha,
        "payload_offset": a.offset,
        "iv_offset": iv_base,
        "size_bytes": os.path.getsize(a.out),
    }))


if __name__ == "__main__":
    main()

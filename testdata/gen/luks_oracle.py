#!/usr/bin/env python3
"""Independent payload oracle for LUKS tests (Python `cryptography`, i.e. OpenSSL; no loopkit).

Description: encrypts a plaintext image into the payload area of a LUKS container made by
cryptsetup (which cannot write payloads without device-mapper), and decrypts payloads to print
their SHA-256, for aes-xts-plain64 (IV = LE64(byte offset / 512), any sector size) and the
legacy aes-cbc-plain / aes-cbc-plain64 / aes-cbc-essiv:HASH modes (per 512-byte sector; ESSIV IV =
AES_{HASH(key)}(LE64(sector) || 0*8), as dm-crypt computes it), LUKS1's aes-xts-plain (32-bit
sector IV) and aes-xts-essiv:HASH (the ESSIV IV of the whole XTS key as the XTS tweak input, as
the kernel's essiv(xts(aes),HASH) does). Hashes Python's hashlib lacks (whirlpool, and the
kernel's truncated wp256/wp384) come from `openssl dgst` (OpenSSL's legacy provider).

Usage:
  luks_oracle.py xts-encrypt --plain P --key-file VK --image IMG --offset BYTES [--sector 512]
                             [--iv plain64|plain]
  luks_oracle.py cbc-encrypt --plain P --key-file VK --image IMG --offset BYTES
                             [--iv plain|plain64|essiv:sha256]
  luks_oracle.py xts-sha256  --image IMG --key-file VK --offset BYTES [--sector 512] [--length N]
                             [--iv plain64|plain|essiv:HASH]
  luks_oracle.py cbc-sha256  --image IMG --key-file K --offset BYTES [--iv plain|plain64]
                             [--iv-offset SECTORS] [--length N]
Prints one JSON object.
"""

import argparse
import hashlib
import json
import os
import subprocess

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def digest(name: str, data: bytes) -> bytes:
    """HASH(data) by hashlib, or by `openssl dgst` for Whirlpool (wp256/wp384: truncated)."""
    n = name.lower()
    if n in ("whirlpool", "wp512", "wp384", "wp256"):
        out = subprocess.run(
            ["openssl", "dgst", "-whirlpool", "-binary", "-provider", "legacy", "-provider", "default"],
            input=data, capture_output=True, check=True,
        ).stdout
        return out[: {"wp384": 48, "wp256": 32}.get(n, 64)]
    return hashlib.new(n, data).digest()


def xts(key: bytes, data: bytes, first_byte: int, sector: int, encrypt: bool, iv32: bool = False,
        essiv: str = "") -> bytes:
    out = bytearray()
    salt_enc = Cipher(algorithms.AES(digest(essiv, key)), modes.ECB()).encryptor() if essiv else None
    for i in range(0, len(data), sector):
        s = (first_byte + i) // 512
        iv = ((s & 0xFFFFFFFF).to_bytes(4, "little") + bytes(12)) if iv32 else (s.to_bytes(8, "little") + bytes(8))
        if salt_enc is not None:
            iv = salt_enc.update(iv)
        c = Cipher(algorithms.AES(key), modes.XTS(iv))
        op = c.encryptor() if encrypt else c.decryptor()
        out += op.update(data[i:i + sector]) + op.finalize()
    return bytes(out)


def sector_iv(key: bytes, s: int, scheme: str) -> bytes:
    if scheme == "plain":
        return (s & 0xFFFFFFFF).to_bytes(4, "little") + bytes(12)
    if scheme == "plain64":
        return s.to_bytes(8, "little") + bytes(8)
    if scheme.startswith("essiv:"):
        salt = digest(scheme.split(":", 1)[1], key)
        e = Cipher(algorithms.AES(salt), modes.ECB()).encryptor()
        return e.update(s.to_bytes(8, "little") + bytes(8)) + e.finalize()
    raise SystemExit(f"unknown IV scheme {scheme}")


def cbc(key: bytes, data: bytes, first_iv: int, scheme: str, encrypt: bool) -> bytes:
    out = bytearray()
    for k in range(len(data) // 512):
        c = Cipher(algorithms.AES(key), modes.CBC(sector_iv(key, first_iv + k, scheme)))
        op = c.encryptor() if encrypt else c.decryptor()
        out += op.update(data[k * 512:(k + 1) * 512]) + op.finalize()
    return bytes(out)


def read_payload(path: str, offset: int, length: int, unit: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length if length >= 0 else -1)
    return data[: len(data) - len(data) % unit]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("op", choices=["xts-encrypt", "xts-sha256", "cbc-sha256", "cbc-encrypt"])
    ap.add_argument("--plain")
    ap.add_argument("--image", required=True)
    ap.add_argument("--key-file", required=True)
    ap.add_argument("--offset", type=int, required=True)
    ap.add_argument("--sector", type=int, default=512)
    ap.add_argument("--length", type=int, default=-1)
    ap.add_argument("--iv", default=None, help="plain|plain64|essiv:HASH (cbc), plain64|plain (xts)")
    ap.add_argument("--iv-offset", type=int, default=0)
    a = ap.parse_args()
    key = open(a.key_file, "rb").read()
    if a.op in ("xts-encrypt", "cbc-encrypt"):
        plain = open(a.plain, "rb").read()
        if a.op == "xts-encrypt":
            ct = xts(key, plain, 0, a.sector, True, a.iv == "plain")
        else:
            ct = cbc(key, plain, 0, a.iv or "plain", True)
        with open(a.image, "r+b") as f:
            f.seek(a.offset)
            f.write(ct)
            f.truncate(a.offset + len(ct))
        print(json.dumps({"plaintext_sha256": hashlib.sha256(plain).hexdigest(), "bytes": len(ct)}))
    elif a.op == "xts-sha256":
        data = read_payload(a.image, a.offset, a.length, a.sector)
        essiv = a.iv.split(":", 1)[1] if a.iv and a.iv.startswith("essiv:") else ""
        pt = xts(key, data, 0, a.sector, False, a.iv == "plain", essiv)
        print(json.dumps({"sha256": hashlib.sha256(pt).hexdigest(), "bytes": len(data)}))
    else:
        data = read_payload(a.image, a.offset, a.length, 512)
        pt = cbc(key, data, a.iv_offset, a.iv or "plain", False)
        print(json.dumps({"sha256": hashlib.sha256(pt).hexdigest(), "bytes": len(data)}))


if __name__ == "__main__":
    os.umask(0o077)
    main()

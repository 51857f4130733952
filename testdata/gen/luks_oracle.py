#!/usr/bin/env python3
"""Independent payload oracle for LUKS tests (Python `cryptography`, i.e. OpenSSL; no loopkit).

Description: encrypts a plaintext image into the payload area of a LUKS container made by
cryptsetup (which cannot write payloads without device-mapper), and decrypts payloads to print
their SHA-256, for aes-xts-plain64 (IV = LE64(byte offset / 512), any sector size) and the
legacy aes-cbc-plain / aes-cbc-plain64 modes (per 512-byte sector).

Usage:
  luks_oracle.py xts-encrypt --plain P --key-file VK --image IMG --offset BYTES [--sector 512]
  luks_oracle.py xts-sha256  --image IMG --key-file VK --offset BYTES [--sector 512] [--length N]
  luks_oracle.py cbc-sha256  --image IMG --key-file K --offset BYTES [--iv plain|plain64]
                             [--iv-offset SECTORS] [--length N]
Prints one JSON object.
"""

import argparse
import hashlib
import json
import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def xts(key: bytes, data: bytes, first_byte: int, sector: int, encrypt: bool) -> bytes:
    out = bytearray()
    for i in range(0, len(data), sector):
        iv = ((first_byte + i) // 512).to_bytes(8, "little") + bytes(8)
        c = Cipher(algorithms.AES(key), modes.XTS(iv))
        op = c.encryptor() if encrypt else c.decryptor()
        out += op.update(data[i:i + sector]) + op.finalize()
    return bytes(out)


def cbc_decrypt(key: bytes, data: bytes, first_iv: int, iv64: bool) -> bytes:
    out = bytearray()
    for k in range(len(data) // 512):
        s = first_iv + k
        iv = (s.to_bytes(8, "little") if iv64 else (s & 0xFFFFFFFF).to_bytes(4, "little")).ljust(16, b"\0")
        d = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        out += d.update(data[k * 512:(k + 1) * 512]) + d.finalize()
    return bytes(out)


def read_payload(path: str, offset: int, length: int, unit: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length if length >= 0 else -1)
    return data[: len(data) - len(data) % unit]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("op", choices=["xts-encrypt", "xts-sha256", "cbc-sha256"])
    ap.add_argument("--plain")
    ap.add_argument("--image", required=True)
    ap.add_argument("--key-file", required=True)
    ap.add_argument("--offset", type=int, required=True)
    ap.add_argument("--sector", type=int, default=512)
    ap.add_argument("--length", type=int, default=-1)
    ap.add_argument("--iv", choices=["plain", "plain64"], default="plain")
    ap.add_argument("--iv-offset", type=int, default=0)
    a = ap.parse_args()
    key = open(a.key_file, "rb").read()
    if a.op == "xts-encrypt":
        plain = open(a.plain, "rb").read()
        ct = xts(key, plain, 0, a.sector, True)
        with open(a.image, "r+b") as f:
            f.seek(a.offset)
            f.write(ct)
            f.truncate(a.offset + len(ct))
        print(json.dumps({"plaintext_sha256": hashlib.sha256(plain).hexdigest(), "bytes": len(ct)}))
    elif a.op == "xts-sha256":
        data = read_payload(a.image, a.offset, a.length, a.sector)
        print(json.dumps({"sha256": hashlib.sha256(xts(key, data, 0, a.sector, False)).hexdigest(), "bytes": len(data)}))
    else:
        data = read_payload(a.image, a.offset, a.length, 512)
        pt = cbc_decrypt(key, data, a.iv_offset, a.iv == "plain64")
        print(json.dumps({"sha256": hashlib.sha256(pt).hexdigest(), "bytes": len(data)}))


if __name__ == "__main__":
    os.umask(0o077)
    main()

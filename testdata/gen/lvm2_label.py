#!/usr/bin/env python3
"""Write an LVM2 physical-volume label into an existing file, as `pvcreate` lays it out.

    lvm2_label.py FILE --uuid 32CHARS [--sector 1]

Used because `pvcreate` needs device-mapper and a block device (neither exists on the build
machine); `blkid -p` is the oracle that the result is an LVM2 PV (TYPE="LVM2_member", the UUID).
Layout from lvm2's on-disk format (lib/label/label.h, lib/format_text/layout.h), all
little-endian, in the 512-byte label sector (sector 1 by default, one of the first four):

    label_header  id "LABELONE" | sector_xl u64 (this sector) | crc_xl u32 | offset_xl u32 (32)
                  | type "LVM2 001"
    pv_header     pv_uuid 32 chars | device_size_xl u64 | disk_locn data areas {offset u64,
                  size u64}…, {0,0} | metadata areas …, {0,0}

crc_xl is lvm2's CRC-32 (the standard reflected polynomial, initial value 0xf597a6cf, no final
inversion) over the sector from offset_xl's position (byte 20) to its end; here computed from
zlib's CRC-32, which inverts before and after.
"""
import argparse
import os
import struct
import zlib

INITIAL_CRC = 0xF597A6CF


def lvm_crc(data: bytes) -> int:
    return ~zlib.crc32(data, ~INITIAL_CRC & 0xFFFFFFFF) & 0xFFFFFFFF


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--uuid", required=True, help="32 alphanumeric characters (lvm2 prints them 6-4-4-4-4-4-6)")
    ap.add_argument("--sector", type=int, default=1)
    a = ap.parse_args()
    uuid = a.uuid.encode()
    assert len(uuid) == 32 and uuid.isalnum(), "the PV UUID is 32 alphanumeric characters"
    assert 0 <= a.sector < 4
    size = os.path.getsize(a.file)
    sec = bytearray(512)
    sec[0:8] = b"LABELONE"
    struct.pack_into("<Q", sec, 8, a.sector)
    struct.pack_into("<I", sec, 20, 32)
    sec[24:32] = b"LVM2 001"
    pv = 32
    sec[pv : pv + 32] = uuid
    struct.pack_into("<Q", sec, pv + 32, size)
    # One data area from 1 MiB to the end (size 0 = to the end), then the terminator; one
    # metadata area at 4 KiB, 1020 KiB long, then the terminator.
    struct.pack_into("<QQQQ", sec, pv + 40, 1 << 20, 0, 0, 0)
    struct.pack_into("<QQQQ", sec, pv + 72, 4096, (1 << 20) - 4096, 0, 0)
    struct.pack_into("<I", sec, 16, lvm_crc(bytes(sec[20:])))
    with open(a.file, "r+b") as f:
        f.seek(a.sector * 512)
        f.write(sec)


if __name__ == "__main__":
    main()

//! The two checksum primitives of ext4 metadata, on top of the `crc` crate: the kernel's raw
//! `crc32c_le(seed, data)` (CRC-32C, reflected, no final inversion; `metadata_csum`) and
//! `crc16(seed, data)` (CRC-16/ARC polynomial, reflected, no final inversion; `uninit_bg`'s
//! group-descriptor checksum). Sources: linux `fs/ext4/ext4.h` `ext4_chksum`, `lib/crc16.c`.

use crc::{Algorithm, Crc};

/// CRC-32C as the kernel's `crc32c_le` computes it: the register is the seed, nothing is
/// inverted at the end.
const CRC32C_RAW: Algorithm<u32> = Algorithm {
    width: 32,
    poly: 0x1edc_6f41,
    init: 0xffff_ffff,
    refin: true,
    refout: true,
    xorout: 0,
    check: 0x1cf9_6d7c,
    residue: 0,
};

/// CRC-16 with the 0x8005 polynomial, reflected (the kernel's `crc16`), no final inversion.
const CRC16_RAW: Algorithm<u16> = Algorithm {
    width: 16,
    poly: 0x8005,
    init: 0xffff,
    refin: true,
    refout: true,
    xorout: 0,
    check: 0x4b37,
    residue: 0,
};

static CRC32C: Crc<u32> = Crc::<u32>::new(&CRC32C_RAW);
static CRC16: Crc<u16> = Crc::<u16>::new(&CRC16_RAW);

/// `crc32c_le(seed, parts…)`: the kernel's chained `ext4_chksum` over several byte slices.
pub(crate) fn crc32c(seed: u32, parts: &[&[u8]]) -> u32 {
    // The crc crate reflects a custom initial value for reflected algorithms; the kernel's
    // seed is already the (reflected) register, so undo that.
    let mut d = CRC32C.digest_with_initial(seed.reverse_bits());
    for p in parts {
        d.update(p);
    }
    d.finalize()
}

/// `crc16(seed, parts…)` as in the kernel's `lib/crc16.c`.
pub(crate) fn crc16(seed: u16, parts: &[&[u8]]) -> u16 {
    let mut d = CRC16.digest_with_initial(seed.reverse_bits());
    for p in parts {
        d.update(p);
    }
    d.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_values() {
        // CRC-32C of "123456789" is 0xE3069283 (RFC 3720 check value) with init ~0 and a final
        // inversion; the raw register is its complement.
        assert_eq!(!crc32c(!0, &[b"123456789"]), 0xe306_9283);
        // Chaining equals one pass.
        let one = crc32c(0x1234_5678, &[b"hello world"]);
        let two = crc32c(crc32c(0x1234_5678, &[b"hello "]), &[b"world"]);
        assert_eq!(one, two);
        // CRC-16/ARC("123456789") = 0xBB3D with init 0; MODBUS (init 0xFFFF) = 0x4B37.
        assert_eq!(crc16(0, &[b"123456789"]), 0xbb3d);
        assert_eq!(crc16(0xffff, &[b"123456789"]), 0x4b37);
        assert_eq!(crc16(crc16(0xffff, &[b"1234"]), &[b"56789"]), 0x4b37);
    }
}

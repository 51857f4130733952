//! loop-AES multi-key mode (dm-crypt `lmk`): 64 AES keys chosen by `sector & 63`, and a per-sector
//! IV that is an MD5 over the sector's own plaintext blocks 1..31 and the sector number
//! (v2: standard MD5; v3: MD5 state pre-seeded with key #64's first 16 bytes and the length field
//! left at 4024 bits — "MD5 with wrong length"). See `docs/formats/loop-aes.md`.
//!
//! The MD5 compression function comes from the `md-5` crate (`block_api::compress`); only the
//! message layout is assembled here.

use super::cbc::xor16;
use super::kdf::{MultiKey, MultiKeys};
use super::{Aes, SectorCipher, as_blocks};
use std::fmt;

const MD5_INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// loop-AES multi-key v2/v3 sector cipher.
pub struct LmkSectors {
    keys: Vec<Aes>,
    /// v3: MD5 state after compressing the seed block.
    seeded_state: Option<[u32; 4]>,
    version: MultiKey,
    key_bits: u32,
}

impl fmt::Debug for LmkSectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LmkSectors({}, {} keys of {} bits)", self.version, self.keys.len(), self.key_bits)
    }
}

impl LmkSectors {
    /// Build from derived multi-key material.
    ///
    /// # Errors
    /// `InvalidInput` unless there are exactly 64 keys of a valid AES length.
    pub fn new(mk: &MultiKeys) -> crate::Result<Self> {
        if mk.keys.len() != 64 {
            return Err(crate::Error::invalid(format!("lmk needs 64 keys, got {}", mk.keys.len())));
        }
        let keys = mk.keys.iter().map(|k| Aes::new(k.bytes())).collect::<crate::Result<Vec<_>>>()?;
        let key_bits = keys[0].key_bits();
        let seeded_state = mk.seed.map(|seed| {
            let mut st = MD5_INIT;
            let mut blk = [0u8; 64];
            blk[..16].copy_from_slice(&seed);
            md5::block_api::compress(&mut st, &[blk]);
            zeroize::Zeroize::zeroize(&mut blk);
            st
        });
        let version = if seeded_state.is_some() { MultiKey::V3 } else { MultiKey::V2 };
        Ok(LmkSectors { keys, seeded_state, version, key_bits })
    }

    /// v2 or v3.
    pub fn version(&self) -> MultiKey {
        self.version
    }

    /// The IV of sector `s` whose plaintext blocks 1..31 are `tail` (496 bytes).
    fn iv(&self, tail: &[u8], s: u64) -> [u8; 16] {
        let mut st = self.seeded_state.unwrap_or(MD5_INIT);
        let mut m = [[0u8; 64]; 8];
        for (i, chunk) in tail[..496].chunks(64).enumerate() {
            m[i][..chunk.len()].copy_from_slice(chunk);
        }
        // bytes 496..512 of the message: sector number, 0x80 pad, length 4024 bits.
        let last = &mut m[7];
        last[48..52].copy_from_slice(&(s as u32).to_le_bytes());
        last[52..56].copy_from_slice(&((((s >> 32) as u32) & 0x00ff_ffff) | 0x8000_0000).to_le_bytes());
        last[56..60].copy_from_slice(&4024u32.to_le_bytes());
        md5::block_api::compress(&mut st, &m);
        let mut iv = [0u8; 16];
        for (i, w) in st.iter().enumerate() {
            iv[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        iv
    }
}

impl SectorCipher for LmkSectors {
    fn decrypt_sectors(&self, iv_sector: u64, data: &mut [u8]) {
        let mut ct = [0u8; 512];
        for (k, sec) in data.chunks_exact_mut(512).enumerate() {
            let s = iv_sector.wrapping_add(k as u64);
            ct.copy_from_slice(sec);
            self.keys[(s & 63) as usize].decrypt_blocks(as_blocks(sec));
            for i in (16..512).step_by(16) {
                xor16(&mut sec[i..i + 16], &ct[i - 16..i]);
            }
            let iv = self.iv(&sec[16..], s);
            xor16(&mut sec[..16], &iv);
        }
    }

    fn encrypt_sectors(&self, iv_sector: u64, data: &mut [u8]) {
        for (k, sec) in data.chunks_exact_mut(512).enumerate() {
            let s = iv_sector.wrapping_add(k as u64);
            let mut prev = self.iv(&sec[16..], s);
            let key = &self.keys[(s & 63) as usize];
            for blk in sec.chunks_exact_mut(16) {
                xor16(blk, &prev);
                key.encrypt_block(&mut as_blocks(blk)[0]);
                prev.copy_from_slice(blk);
            }
        }
    }

    fn dm_name(&self) -> String {
        "aes-cbc-lmk".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::HashAlg;
    use crate::crypto::kdf::{Derivation, loopaes_multi};
    use md5::Digest;
    use zeroize::Zeroizing;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn lines() -> Vec<Zeroizing<Vec<u8>>> {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..65)
            .map(|i| {
                let d = sha2::Sha512::digest(format!("line{i}").as_bytes());
                let s: Vec<u8> = d[..45]
                    .chunks(3)
                    .flat_map(|c| {
                        let n = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
                        (0..4).map(move |i| T[((n >> (18 - 6 * i)) & 63) as usize])
                    })
                    .collect();
                Zeroizing::new(s)
            })
            .collect()
    }

    fn plaintext(sectors: usize) -> Vec<u8> {
        (0..sectors * 512).map(|j| ((31 * (j / 512) + j % 512) & 0xff) as u8).collect()
    }

    /// docs/formats/research/legacy-loop-crypto.md §5.4 multi-key vectors (IV and ciphertext prefix).
    #[test]
    fn v2_v3_vectors() {
        let l = lines();
        let p = plaintext(4);
        for (n, s0, want_iv, want_ct) in [
            (
                64usize,
                0u64,
                "f2c2f1d9067e2063de124cfc1b2c22bd",
                "ad4c03c4c3800a60eb65637994981bbb4a5be7553b27adc64de86355b6e7ffbd",
            ),
            (
                64,
                0x12_3456_789a,
                "2df168e112bede6883fb5788c052fbc7",
                "59c4b6fb0039179e4263900d410044ade5c9fda12182f94237c098891c356a84",
            ),
            (
                65,
                0,
                "14c68d9a481fcec757d1befc76339e3d",
                "ce15c835cfe86116e6a7251ad654474cfde995529df08b87c0680acb15982df8",
            ),
            (
                65,
                0x12_3456_789a,
                "7fb2bec4108474c7dcd6f2fd2e511a91",
                "0183b36f6f97e8a922b7c3ef290900fc0abac2b7ae42a890d773313e6a53bf0f",
            ),
        ] {
            let mk = loopaes_multi(Derivation::Hash(HashAlg::Sha256), &l[..n], 16).unwrap();
            let c = LmkSectors::new(&mk).unwrap();
            assert_eq!(hex(&c.iv(&p[16..512], s0)), want_iv);
            let mut ct = p.clone();
            c.encrypt_sectors(s0, &mut ct);
            assert_eq!(hex(&ct[..32]), want_ct);
            let mut back = ct.clone();
            c.decrypt_sectors(s0, &mut back);
            assert_eq!(back, p);
        }
    }

    /// v2's IV is plain MD5 of P[16..512] ‖ LE64(s)[..7] (the notes' numerical check).
    #[test]
    fn v2_iv_is_standard_md5() {
        let l = lines();
        let mk = loopaes_multi(Derivation::Hash(HashAlg::Sha256), &l[..64], 16).unwrap();
        let c = LmkSectors::new(&mk).unwrap();
        let p = plaintext(1);
        let s = 0x0102_0304_0506u64;
        let mut msg = p[16..].to_vec();
        msg.extend_from_slice(&s.to_le_bytes()[..7]);
        assert_eq!(c.iv(&p[16..], s).to_vec(), md5::Md5::digest(&msg).to_vec());
    }
}

//! XTS with dm-crypt's `plain64` (or 32-bit `plain`) IV over any 128-bit block cipher (AES,
//! Twofish, Serpent; IEEE 1619 XTS; the tweak of a sector is `E_K2(LE64(iv_sector) ‖ 0⁸)`), as
//! LUKS uses it for payloads and keyslot areas (`aes-xts-plain64`, `twofish-xts-plain64`,
//! `serpent-xts-plain`…).
//!
//! Fast path: the `xts-mode` crate encrypts one 16-byte block per AES call (~0.35 GiB/s). Here a
//! batch of up to [`BATCH_BYTES`] is handled with three whole-buffer passes: all sector tweaks
//! are encrypted in one `encrypt_blocks` call, the per-block tweaks `T·αʲ` are expanded into a
//! buffer (four interleaved α⁴ chains per sector) and XORed in, all data blocks go through one
//! `encrypt_blocks`/`decrypt_blocks` call (so the `aes` crate can pipeline AES-NI/VAES rounds),
//! then the tweaks are XORed again.
//! Output is identical to `xts-mode` (checked in the unit tests) and to OpenSSL (checked by the
//! integration tests with Python `cryptography`). Sectors are 512, 1024, 2048 or 4096 bytes; the
//! IV always counts 512-byte units (LUKS2 never sets `iv_large_sectors`), so the sector that
//! starts at payload byte `b` uses IV `b / 512`.
//!
//! No ciphertext stealing: every sector is a whole number of 16-byte blocks.

use super::SectorCipher;
use super::block::{BlockCipher, CipherKind};
use super::cbc::{IvGen, IvScheme};
use std::fmt;

/// Bytes handled per batched pass (64 × 512-byte sectors).
pub const BATCH_BYTES: usize = 32 * 1024;

/// XTS over sectors of `sector_bytes` (AES unless built with [`XtsSectors::with_cipher`]).
#[derive(Clone)]
pub struct XtsSectors {
    data: BlockCipher,
    tweak: BlockCipher,
    sector_bytes: usize,
    /// `plain64` (LE64 sector), `plain` (LE32, wraps at 2³² sectors) or `essiv:HASH`.
    iv: IvGen,
    key_bits: u32,
}

impl fmt::Debug for XtsSectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "XtsSectors({}-{}-xts-{}, sector {})",
            self.data.kind(),
            self.key_bits,
            self.iv.scheme(),
            self.sector_bytes
        )
    }
}

impl XtsSectors {
    /// XTS with a 32-, 48- or 64-byte key (two AES keys: data key first, tweak key second, as
    /// dm-crypt and `xts-mode` split it) over `sector_bytes`-byte sectors.
    ///
    /// # Errors
    /// `InvalidInput` for another key length or a sector size that is not 512·2ⁿ up to 4096.
    pub fn new(key: &[u8], sector_bytes: usize) -> crate::Result<Self> {
        Self::with_cipher(CipherKind::Aes, IvScheme::Plain64, key, sector_bytes)
    }

    /// XTS of a 128-bit block cipher `kind` with IV scheme `plain64`, `plain` or `essiv:HASH`
    /// (the LE64 sector encrypted with `HASH(whole XTS key)` by the same cipher, then used as the
    /// XTS IV: dm-crypt's `aes-xts-essiv:sha256`, the kernel's `essiv(xts(aes),sha256)`).
    ///
    /// # Errors
    /// `InvalidInput` for an 8-byte-block cipher, a bad key length or sector size, or an ESSIV
    /// hash whose length is no key of the cipher; `Unsupported` for the `null` IV.
    pub fn with_cipher(kind: CipherKind, iv: IvScheme, key: &[u8], sector_bytes: usize) -> crate::Result<Self> {
        if kind.block_bytes() != 16 {
            return Err(crate::Error::invalid(format!("XTS needs a 128-bit block cipher, not {kind}")));
        }
        if !matches!(iv, IvScheme::Plain | IvScheme::Plain64 | IvScheme::Essiv(_)) {
            return Err(crate::Error::unsupported(format!(
                "{kind}-xts-{iv} (XTS runs with plain, plain64 or essiv IVs)"
            )));
        }
        if !matches!(key.len(), 32 | 48 | 64) {
            return Err(crate::Error::invalid(format!("XTS key of {} bytes (need 32, 48 or 64)", key.len())));
        }
        if !matches!(sector_bytes, 512 | 1024 | 2048 | 4096) {
            return Err(crate::Error::invalid(format!(
                "XTS sector size {sector_bytes} (need 512, 1024, 2048 or 4096)"
            )));
        }
        let (k1, k2) = key.split_at(key.len() / 2);
        Ok(XtsSectors {
            data: BlockCipher::new(kind, k1)?,
            tweak: BlockCipher::new(kind, k2)?,
            sector_bytes,
            iv: IvGen::new(iv, kind, key)?,
            key_bits: (k1.len() * 8) as u32,
        })
    }

    /// Data key size in bits (the XTS key is twice as long).
    pub fn key_bits(&self) -> u32 {
        self.key_bits
    }

    fn run(&self, iv_sector: u64, data: &mut [u8], encrypt: bool) {
        self.run_from(iv_sector, None, data, encrypt);
    }

    /// XTS over `data` in place, or (with `src`, of the same length) from `src` into `data`:
    /// the first pass reads the blocks from `src` while it XORs the tweaks in, so out of place
    /// costs no extra copy. A partial sector at the end is left as it is (copied, out of place).
    fn run_from(&self, iv_sector: u64, src: Option<&[u8]>, data: &mut [u8], encrypt: bool) {
        let ss = self.sector_bytes;
        let per_batch = (BATCH_BYTES / ss).max(1);
        let mut tweaks = [0u8; BATCH_BYTES];
        let mut first = [[0u8; 16]; BATCH_BYTES / 512];
        let iv_step = (ss / 512) as u64;
        let mut iv = iv_sector;
        let whole = data.len() - data.len() % ss;
        if let Some(src) = src {
            data[whole..].copy_from_slice(&src[whole..]);
        }
        for (b, batch) in data[..whole].chunks_mut(per_batch * ss).enumerate() {
            let n = batch.len() / ss;
            let src_batch = src.map(|s| &s[b * per_batch * ss..][..batch.len()]);
            // 1. The first tweak of every sector, in one AES call.
            for (k, t) in first[..n].iter_mut().enumerate() {
                *t = self.iv.iv(iv.wrapping_add(k as u64 * iv_step));
            }
            self.tweak.encrypt_blocks(first[..n].as_flattened_mut());
            // 2. Expand T·α^j for every block of every sector, XORing it into the data on the
            //    way (one pass), and keep it for the XOR after the cipher. The tweaks of a
            //    sector are one serial chain of multiplications by α; four interleaved chains
            //    (blocks j, j+1, j+2, j+3, each stepping by α⁴) keep the core busy instead.
            let tw = &mut tweaks[..batch.len()];
            for (k, ((sector, sector_tw), t0)) in
                batch.chunks_exact_mut(ss).zip(tw.chunks_exact_mut(ss)).zip(&first[..n]).enumerate()
            {
                let t0 = u128::from_le_bytes(*t0);
                let t1 = mul_alpha(t0);
                let t2 = mul_alpha(t1);
                let t = [t0, t1, t2, mul_alpha(t2)];
                match src_batch {
                    Some(s) => expand_xor(sector, &s[k * ss..(k + 1) * ss], sector_tw, t),
                    None => expand_xor_in_place(sector, sector_tw, t),
                }
            }
            // 3. Whole-buffer AES, then XOR the tweaks again.
            if encrypt {
                self.data.encrypt_blocks(batch);
            } else {
                self.data.decrypt_blocks(batch);
            }
            xor_in_place(batch, tw);
            iv = iv.wrapping_add(n as u64 * iv_step);
        }
        zeroize::Zeroize::zeroize(&mut tweaks[..]);
        zeroize::Zeroize::zeroize(first.as_flattened_mut());
    }
}

/// Step 2 of one sector in place: store `T·αʲ` for each block `j` (four interleaved α⁴ chains
/// starting at `t`) into `tw` and XOR it into the block.
#[inline]
fn expand_xor_in_place(sector: &mut [u8], tw: &mut [u8], mut t: [u128; 4]) {
    for (quad, quad_tw) in sector.as_chunks_mut::<64>().0.iter_mut().zip(tw.as_chunks_mut::<64>().0) {
        let (blocks, tws) = (quad.as_chunks_mut::<16>().0, quad_tw.as_chunks_mut::<16>().0);
        for ((blk, tb), tl) in blocks.iter_mut().zip(tws.iter_mut()).zip(t.iter_mut()) {
            *tb = tl.to_le_bytes();
            *blk = (u128::from_le_bytes(*blk) ^ *tl).to_le_bytes();
            *tl = mul_alpha4(*tl);
        }
    }
}

/// [`expand_xor_in_place`] reading the blocks from `src` and writing them to `dst`.
#[inline]
fn expand_xor(dst: &mut [u8], src: &[u8], tw: &mut [u8], mut t: [u128; 4]) {
    for ((quad, quad_src), quad_tw) in
        dst.as_chunks_mut::<64>().0.iter_mut().zip(src.as_chunks::<64>().0).zip(tw.as_chunks_mut::<64>().0)
    {
        let (blocks, srcs, tws) =
            (quad.as_chunks_mut::<16>().0, quad_src.as_chunks::<16>().0, quad_tw.as_chunks_mut::<16>().0);
        for (((blk, sb), tb), tl) in blocks.iter_mut().zip(srcs).zip(tws.iter_mut()).zip(t.iter_mut()) {
            *tb = tl.to_le_bytes();
            *blk = (u128::from_le_bytes(*sb) ^ *tl).to_le_bytes();
            *tl = mul_alpha4(*tl);
        }
    }
}

/// Multiply by α⁴ in GF(2¹²⁸): shift by four and fold the four bits shifted out back in with
/// the reduction polynomial (their carry-less product with 0x87, from a table).
#[inline]
fn mul_alpha4(t: u128) -> u128 {
    const FOLD: [u16; 16] = {
        let mut f = [0u16; 16];
        let mut i = 0;
        while i < 16 {
            let mut acc = 0u16;
            let mut b = 0;
            while b < 4 {
                if (i >> b) & 1 == 1 {
                    acc ^= 0x87 << b;
                }
                b += 1;
            }
            f[i] = acc;
            i += 1;
        }
        f
    };
    (t << 4) ^ u128::from(FOLD[(t >> 124) as usize])
}

/// Multiply by α in GF(2¹²⁸) with XTS's little-endian convention (x¹²⁸ = x⁷+x²+x+1).
#[inline]
fn mul_alpha(t: u128) -> u128 {
    let carry = (t >> 127) as u8;
    (t << 1) ^ u128::from(0x87 * carry)
}

#[inline]
fn xor_in_place(a: &mut [u8], b: &[u8]) {
    for (x, y) in a.as_chunks_mut::<16>().0.iter_mut().zip(b.as_chunks::<16>().0) {
        *x = (u128::from_ne_bytes(*x) ^ u128::from_ne_bytes(*y)).to_ne_bytes();
    }
}

impl SectorCipher for XtsSectors {
    fn decrypt_sectors(&self, iv_sector: u64, data: &mut [u8]) {
        self.run(iv_sector, data, false);
    }
    fn encrypt_sectors(&self, iv_sector: u64, data: &mut [u8]) {
        self.run(iv_sector, data, true);
    }
    fn decrypt_sectors_to(&self, iv_sector: u64, src: &[u8], dst: &mut [u8]) {
        if src.len() == dst.len() {
            self.run_from(iv_sector, Some(src), dst, false);
        } else {
            dst.copy_from_slice(src); // a caller bug: panics, as the default does
        }
    }
    fn encrypt_sectors_to(&self, iv_sector: u64, src: &[u8], dst: &mut [u8]) {
        if src.len() == dst.len() {
            self.run_from(iv_sector, Some(src), dst, true);
        } else {
            dst.copy_from_slice(src); // a caller bug: panics, as the default does
        }
    }
    fn dm_name(&self) -> String {
        format!("{}-xts-{}", self.data.kind(), self.iv.scheme())
    }
    fn sector_bytes(&self) -> usize {
        self.sector_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::KeyInit;
    use xts_mode::Xts128;

    fn reference(key: &[u8], ss: usize, iv: u64, data: &mut [u8], encrypt: bool) {
        fn go<C>(x: Xts128<C>, ss: usize, iv: u64, data: &mut [u8], encrypt: bool)
        where
            C: aes::cipher::BlockCipherEncrypt
                + aes::cipher::BlockCipherDecrypt
                + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
        {
            for (k, s) in data.chunks_exact_mut(ss).enumerate() {
                let mut t = [0u8; 16];
                t[..8].copy_from_slice(&(iv + (k * ss / 512) as u64).to_le_bytes());
                if encrypt {
                    x.encrypt_sector(s, t.into());
                } else {
                    x.decrypt_sector(s, t.into());
                }
            }
        }
        let (a, b) = key.split_at(key.len() / 2);
        match key.len() {
            32 => go(
                Xts128::new(aes::Aes128::new_from_slice(a).unwrap(), aes::Aes128::new_from_slice(b).unwrap()),
                ss,
                iv,
                data,
                encrypt,
            ),
            64 => go(
                Xts128::new(aes::Aes256::new_from_slice(a).unwrap(), aes::Aes256::new_from_slice(b).unwrap()),
                ss,
                iv,
                data,
                encrypt,
            ),
            _ => unreachable!(),
        }
    }

    /// Identical to the xts-mode crate for both key sizes, every sector size, across batch
    /// edges and the 32-bit IV boundary; decryption inverts encryption.
    #[test]
    fn matches_xts_mode_crate() {
        for klen in [32usize, 64] {
            let key: Vec<u8> = (0..klen as u8).map(|b| b.wrapping_mul(37).wrapping_add(5)).collect();
            for ss in [512usize, 4096] {
                let x = XtsSectors::new(&key, ss).unwrap();
                let plain: Vec<u8> = (0..150 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
                let iv = 0xffff_fff0u64;
                let mut ours = plain.clone();
                x.encrypt_sectors(iv, &mut ours);
                let mut theirs = plain.clone();
                reference(&key, ss, iv, &mut theirs, true);
                assert_eq!(ours, theirs, "encrypt key {klen} sector {ss}");
                // Out of place, both directions, with a partial sector at the end (copied).
                let mut src = plain.clone();
                src.extend_from_slice(&[7u8; 100]);
                let mut to = vec![0xa5u8; src.len()];
                x.encrypt_sectors_to(iv, &src, &mut to);
                assert_eq!(&to[..plain.len()], &theirs[..], "out of place, key {klen} sector {ss}");
                assert_eq!(&to[plain.len()..], &[7u8; 100][..]);
                let mut back = vec![0u8; to.len()];
                x.decrypt_sectors_to(iv, &to, &mut back);
                assert_eq!(back, src, "out of place decrypt, key {klen} sector {ss}");
                x.decrypt_sectors(iv, &mut ours);
                assert_eq!(ours, plain, "roundtrip key {klen} sector {ss}");
                let mut dref = theirs.clone();
                reference(&key, ss, iv, &mut dref, false);
                assert_eq!(dref, plain);
            }
        }
    }

    /// IEEE 1619-2007 vector 10 (AES-256, 512-byte data unit, sequence number 0xff).
    #[test]
    fn ieee1619_vector10() {
        let mut key = Vec::new();
        key.extend_from_slice(&hexv("2718281828459045235360287471352662497757247093699959574966967627"));
        key.extend_from_slice(&hexv("3141592653589793238462643383279502884197169399375105820974944592"));
        let x = XtsSectors::new(&key, 512).unwrap();
        let mut d: Vec<u8> = (0..512).map(|i| (i % 256) as u8).collect();
        x.encrypt_sectors(0xff, &mut d);
        assert_eq!(hex(&d[..32]), "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b");
        assert_eq!(hex(&d[496..]), "c4f36ffda9fcea70b9c6e693e148c151");
    }

    /// Benchmark, not a test: `cargo test --release --lib crypto::xts::tests::throughput --
    /// --ignored --nocapture` (testdata/bench/migrate.sh runs it). Prints GB/s for the batched
    /// XTS on one thread and on all cores (sectors split between threads), and xts-mode's.
    #[test]
    #[ignore]
    fn throughput() {
        let key: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(13).wrapping_add(1)).collect();
        let x = XtsSectors::new(&key, 512).unwrap();
        let mut buf = vec![0x5au8; 256 << 20];
        let run = |buf: &mut [u8], threads: usize| {
            let t = std::time::Instant::now();
            std::thread::scope(|s| {
                let per = (buf.len() / threads).div_ceil(512) * 512;
                for (i, part) in buf.chunks_mut(per).enumerate() {
                    let x = &x;
                    s.spawn(move || {
                        for (j, c) in part.chunks_mut(1 << 20).enumerate() {
                            x.encrypt_sectors(((i * per + j * (1 << 20)) / 512) as u64, c);
                        }
                    });
                }
            });
            buf.len() as f64 / t.elapsed().as_secs_f64() / 1e9
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let one = run(&mut buf, 1);
        let all = run(&mut buf, cores);
        println!("xts batched aes-256: {one:.2} GB/s on 1 thread, {all:.2} GB/s on {cores} threads");
        let mut small = vec![0u8; 64 << 20];
        let t = std::time::Instant::now();
        reference(&key, 512, 0, &mut small, true);
        println!(
            "xts-mode crate aes-256: {:.2} GB/s on 1 thread",
            small.len() as f64 / t.elapsed().as_secs_f64() / 1e9
        );
    }

    #[test]
    fn alpha4_is_four_alpha_steps() {
        let mut t: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        for _ in 0..10_000 {
            assert_eq!(mul_alpha4(t), mul_alpha(mul_alpha(mul_alpha(mul_alpha(t)))));
            t = t.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835).rotate_left(17)
                | (u128::from(t as u8 & 0xf) << 124);
        }
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(XtsSectors::new(&[0u8; 31], 512).is_err());
        assert!(XtsSectors::new(&[0u8; 64], 768).is_err());
    }

    fn hexv(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}

//! Candidate keys for detection: every key the secrets allow (derivation × key size, loop-AES
//! multi-key sets), deduplicated, most likely first, and the cipher modes to try with each.

use super::{Constraints, Secrets};
use crate::crypto::block::CipherKind;
use crate::crypto::cbc::IvScheme;
use crate::crypto::kdf::{Derivation, MultiKey, loopaes_multi, loopaes_single};
use crate::crypto::{HashAlg, Passphrase};
use crate::formats::legacy::{KeyMaterial, Mode, Params, Scheme};
use crate::formats::loopaes::KeyFile;

/// One derived key (set) to try.
pub(super) struct KeyCand {
    pub(super) derivation: Derivation,
    pub(super) key_bits: u32,
    pub(super) keys: KeyMaterial,
    pub(super) multi_key: Option<MultiKey>,
    pub(super) equivalents: Vec<Derivation>,
    pub(super) order: usize,
}

impl KeyCand {
    fn single(derivation: Derivation, key_bits: u32, key: crate::crypto::Key, order: usize) -> KeyCand {
        KeyCand { derivation, key_bits, keys: KeyMaterial::Single(key), multi_key: None, equivalents: vec![], order }
    }

    /// The parameter set of this key under `mode` at `offset_bytes` / `iv_offset_sectors`.
    pub(super) fn params(&self, t: Trial, offset_bytes: u64, iv_offset_sectors: u64, c: &Constraints) -> Params {
        let Trial { scheme, cipher, mode } = t;
        // Seed and iterations only ever applied to a single-key passphrase.
        let from_passphrase = self.multi_key.is_none() && self.derivation != Derivation::KeyFileRaw;
        Params {
            scheme,
            cipher,
            mode,
            key_bits: self.key_bits,
            derivation: self.derivation,
            multi_key: self.multi_key,
            offset_bytes,
            iv_offset_sectors,
            size_limit_bytes: c.size_limit_bytes,
            pseed: from_passphrase && c.pseed.is_some(),
            itercountk: c.itercountk.filter(|_| from_passphrase),
        }
    }
}

fn bits_order(d: Derivation) -> [u32; 3] {
    match d {
        Derivation::Hash(HashAlg::Sha256) | Derivation::Unhashed2 => [128, 256, 192],
        Derivation::Hash(HashAlg::Sha384) => [192, 128, 256],
        // SUSE loop_fish2 (twofish160): a 160-bit RMD160 key zero-padded to Twofish-192.
        Derivation::HashPrefix(..) => [192, 0, 0],
        _ => [256, 128, 192],
    }
}

/// Derive every candidate key the secrets allow, most likely first, deduplicated.
pub(super) fn key_candidates(secrets: &Secrets, c: &Constraints) -> crate::Result<Vec<KeyCand>> {
    let mut cands = Candidates::default();
    if !matches!(c.mode, Some(Mode::Lmk)) {
        let (passes, raw_key_file) = passphrases(secrets);
        passphrase_candidates(&passes, c, &mut cands)?;
        if let Some(raw) = raw_key_file {
            raw_key_file_candidates(raw, c, &mut cands);
        }
    }
    if let Some(kf) = &secrets.key_file
        && let Some(mk) = kf.multi_key
        && c.mode.is_none_or(|m| m == Mode::Lmk)
        && c.scheme.is_none_or(|s| s == Scheme::LoopAes)
    {
        multi_key_candidates(kf, mk, c, &mut cands)?;
    }
    Ok(cands.out)
}

/// The candidates found so far, in order, with a fingerprint of each one's key material so a key
/// two derivations give is tried once (the other derivation noted as equivalent).
#[derive(Default)]
struct Candidates {
    out: Vec<KeyCand>,
    seen: Vec<[u8; 32]>,
    /// Rank of the next candidate considered (counted whether or not it is kept).
    order: usize,
}

impl Candidates {
    /// Count one more candidate considered; its rank.
    fn next_order(&mut self) -> usize {
        self.order += 1;
        self.order
    }

    /// Add `cand`, or note its derivation on the earlier candidate with the same `fingerprint`.
    fn push(&mut self, cand: KeyCand, fingerprint: [u8; 32]) {
        if let Some(i) = self.seen.iter().position(|f| *f == fingerprint) {
            let d = cand.derivation;
            if !self.out[i].equivalents.contains(&d) && self.out[i].derivation != d {
                self.out[i].equivalents.push(d);
            }
        } else {
            self.seen.push(fingerprint);
            self.out.push(cand);
        }
    }
}

/// SHA-256 over a tag, the key size and the key material: equal for equal keys only.
fn fingerprint(parts: &[&[u8]], bits: u32, tag: u8) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update([tag]);
    h.update(bits.to_le_bytes());
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The passphrases to derive from (the typed one, unless it only unlocks a gpg key file, and a
/// single-key key file's line 0) and that key file's raw bytes.
fn passphrases(secrets: &Secrets) -> (Vec<Passphrase>, Option<&[u8]>) {
    let mut passes: Vec<Passphrase> = Vec::new();
    if let Some(p) = &secrets.passphrase {
        // With a gpg key file the passphrase only unlocks the key file.
        if !secrets.key_file.as_ref().is_some_and(|k| k.from_gpg) {
            passes.push(p.clone());
        }
    }
    let mut raw_key_file: Option<&[u8]> = None;
    if let Some(kf) = &secrets.key_file
        && kf.multi_key.is_none()
    {
        if let Some(l) = kf.lines.first() {
            passes.push(Passphrase::new(l.to_vec()));
        }
        raw_key_file = Some(&kf.raw[..]);
    }
    (passes, raw_key_file)
}

/// Single keys from each passphrase, every derivation and key size the constraints allow.
fn passphrase_candidates(passes: &[Passphrase], c: &Constraints, cands: &mut Candidates) -> crate::Result<()> {
    let bits_ok = |b: u32| c.key_bits.is_none_or(|k| k == b);
    let deriv_ok = |d: Derivation| c.derivation.is_none_or(|x| x == d);
    // The SUSE loop_fish2 derivation (rmd160:20) is only tried where Twofish may be.
    let fish2_ok = c.cipher.is_none_or(|x| x == CipherKind::Twofish);
    for pass in passes {
        for d in Derivation::PASSPHRASE_ORDER {
            if d == Derivation::KeyFileRaw || !deriv_ok(d) {
                continue;
            }
            if matches!(d, Derivation::HashPrefix(..)) && !fish2_ok {
                continue;
            }
            for bits in bits_order(d) {
                let order = cands.next_order();
                if bits == 0 || !bits_ok(bits) {
                    continue;
                }
                let seed = c.pseed.as_deref();
                let Some(key) = loopaes_single(d, pass, seed, c.itercountk, (bits / 8) as usize)? else {
                    continue;
                };
                let f = fingerprint(&[key.bytes()], bits, 0);
                cands.push(KeyCand::single(d, bits, key, order), f);
            }
        }
    }
    Ok(())
}

/// Single keys taken from a key file's raw bytes (cryptoloop `-k`).
fn raw_key_file_candidates(raw: &[u8], c: &Constraints, cands: &mut Candidates) {
    if c.derivation.is_some_and(|x| x != Derivation::KeyFileRaw) {
        return;
    }
    for bits in [256, 128, 192] {
        let order = cands.next_order();
        if c.key_bits.is_some_and(|k| k != bits) {
            continue;
        }
        if let Some(key) = Derivation::KeyFileRaw.derive(raw, (bits / 8) as usize) {
            let f = fingerprint(&[key.bytes()], bits, 0);
            cands.push(KeyCand::single(Derivation::KeyFileRaw, bits, key, order), f);
        }
    }
}

/// loop-AES multi-key sets (64 or 65 lines) from the key file, each key size and line hash.
fn multi_key_candidates(kf: &KeyFile, mk: MultiKey, c: &Constraints, cands: &mut Candidates) -> crate::Result<()> {
    for bits in [128u32, 256, 192] {
        if c.key_bits.is_some_and(|k| k != bits) {
            continue;
        }
        let default = HashAlg::loopaes_default((bits / 8) as usize);
        let mut hashes = vec![default];
        for h in [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512, HashAlg::Ripemd160] {
            if !hashes.contains(&h) {
                hashes.push(h);
            }
        }
        for h in hashes {
            let order = cands.next_order();
            let d = Derivation::Hash(h);
            if c.derivation.is_some_and(|x| x != d) {
                continue;
            }
            let keys = loopaes_multi(d, &kf.lines, (bits / 8) as usize)?;
            let mut parts: Vec<&[u8]> = keys.keys.iter().map(|k| k.bytes()).collect();
            let seed = keys.seed;
            if let Some(s) = &seed {
                parts.push(s);
            }
            let f = fingerprint(&parts, bits, 1);
            let multi_key = Some(mk);
            cands.push(
                KeyCand {
                    derivation: d,
                    key_bits: bits,
                    keys: KeyMaterial::Multi(keys),
                    multi_key,
                    equivalents: vec![],
                    order,
                },
                f,
            );
        }
    }
    Ok(())
}

/// One cipher configuration to try with a key: scheme, block cipher, mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Trial {
    pub(super) scheme: Scheme,
    pub(super) cipher: CipherKind,
    pub(super) mode: Mode,
}

/// Likelihood tier of a cipher: detection tries every key with AES first, then Twofish (the
/// SUSE default), then the rest, and stops at the first tier that yields a strong match.
pub(super) fn tier(cipher: CipherKind) -> usize {
    match cipher {
        CipherKind::Aes => 0,
        CipherKind::Twofish => 1,
        _ => 2,
    }
}

/// Number of tiers of [`tier`].
pub(super) const TIERS: usize = 3;

/// The configurations to try for a key candidate, each with the scheme it implies, most likely
/// first. Ciphers that cannot take the key's length are left out.
pub(super) fn modes_for(k: &KeyCand, c: &Constraints) -> Vec<Trial> {
    let key_bytes = (k.key_bits / 8) as usize;
    if k.multi_key.is_some() {
        return if c.cipher.is_none_or(|x| x == CipherKind::Aes) {
            vec![Trial { scheme: Scheme::LoopAes, cipher: CipherKind::Aes, mode: Mode::Lmk }]
        } else {
            vec![]
        };
    }
    // SUSE loop_fish2: only ever Twofish with a constant (null) IV.
    if matches!(k.derivation, Derivation::HashPrefix(..)) {
        let t = Trial { scheme: Scheme::LoopFish2, cipher: CipherKind::Twofish, mode: Mode::Cbc(IvScheme::Null) };
        let ok = c.scheme.is_none_or(|s| s == t.scheme)
            && c.cipher.is_none_or(|x| x == t.cipher)
            && c.mode.is_none_or(|m| m == t.mode);
        return if ok { vec![t] } else { vec![] };
    }
    let family = if k.derivation.is_loopaes_family() { Scheme::LoopAes } else { Scheme::Cryptoloop };
    let default_iv = |s: Scheme| {
        if s == Scheme::LoopAes { IvScheme::Plain64 } else { IvScheme::Plain }
    };
    let modes: Vec<(Scheme, Mode)> = match (c.scheme, c.mode) {
        (_, Some(Mode::Lmk)) => vec![],
        (Some(s), Some(m)) => vec![(s, m)],
        (None, Some(m @ Mode::Cbc(IvScheme::Plain64))) => vec![(Scheme::LoopAes, m)],
        (None, Some(m @ Mode::Cbc(IvScheme::Null))) => vec![(Scheme::LoopFish2, m)],
        (None, Some(m)) => vec![(if m == Mode::Ecb { Scheme::Cryptoloop } else { family }, m)],
        (Some(Scheme::LoopAes), None) => vec![(Scheme::LoopAes, Mode::Cbc(IvScheme::Plain64))],
        (Some(Scheme::LoopFish2), None) => vec![(Scheme::LoopFish2, Mode::Cbc(IvScheme::Null))],
        (Some(Scheme::Cryptoloop), None) => {
            vec![(Scheme::Cryptoloop, Mode::Cbc(IvScheme::Plain)), (Scheme::Cryptoloop, Mode::Ecb)]
        }
        (None, None) => vec![(family, Mode::Cbc(default_iv(family))), (Scheme::Cryptoloop, Mode::Ecb)],
    };
    let mut out = Vec::new();
    for cipher in CipherKind::ALL {
        if c.cipher.is_some_and(|x| x != cipher) || !cipher.key_len_ok(key_bytes) {
            continue;
        }
        // Without an explicit key size, only the sizes the tools of the time used per cipher.
        if c.key_bits.is_none() && !cipher.detect_key_bits().contains(&k.key_bits) {
            continue;
        }
        for &(scheme, mode) in &modes {
            out.push(Trial { scheme, cipher, mode });
        }
        // SUSE 9.1/9.2 `twofish256` through loop_fish2 (constant IV, hash unverified) is not
        // searched: a null-IV decryption of a block-number-IV image differs only in bytes 0..4
        // of each sector, so both would match. `--cipher twofish-cbc-null` selects it.
    }
    out
}

//! Parameter auto-detection for headerless images. Given a passphrase and/or key file, try every
//! plausible combination — key derivation × key size × cipher mode × payload offset × IV offset —
//! and accept one only when the decrypted data holds a strongly plausible file system
//! ([`crate::fs::STRONG_CONFIDENCE`]). Offsets other than 0 come from a signature scan of the
//! first few MiB: with CBC and a plain/plain64 IV only bytes 0..8 of a sector depend on the IV, so
//! each candidate key decrypts the head once (batched ECB, then one XOR) and every sector is
//! checked for IV-independent superblock fields (ext, ISO9660, FAT, btrfs).
//!
//! Identical keys from different derivations are tried once and reported as equivalent.
//! cryptoloop (`plain` IV) and loop-AES single-key (`plain64`) are identical below 2 TiB; the
//! scheme reported follows the key derivation's family.

use crate::crypto::cbc::IvScheme;
use crate::crypto::kdf::{Derivation, MultiKey, loopaes_multi, loopaes_single};
use crate::crypto::{Aes, HashAlg, Passphrase, SectorCipher};
use crate::formats::legacy::{KeyMaterial, Mode, Params, Scheme};
use crate::formats::loopaes::KeyFile;
use crate::fs::{self, FsInfo, STRONG_CONFIDENCE};
use crate::source::{ByteSource, SECTOR_BYTES};
use crate::volume::{Layout, Volume};
use std::collections::HashSet;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default length of the image head scanned for file-system signatures.
pub const DEFAULT_SCAN_BYTES: u64 = 4 << 20;
/// Most candidate offsets taken from a scan.
const MAX_SCAN_OFFSETS: usize = 32;

/// The secrets a user supplied.
#[derive(Debug, Default, Clone)]
pub struct Secrets {
    /// The passphrase (also the gpg passphrase of an encrypted key file).
    pub passphrase: Option<Passphrase>,
    /// A loop-AES key file (or a raw key file).
    pub key_file: Option<KeyFile>,
}

impl Secrets {
    /// True when nothing was supplied.
    pub fn is_empty(&self) -> bool {
        self.passphrase.is_none() && self.key_file.is_none()
    }
}

/// What the user pinned down; `None` fields are searched.
#[derive(Debug, Clone, Default)]
pub struct Constraints {
    /// `--scheme`.
    pub scheme: Option<Scheme>,
    /// `--cipher`.
    pub mode: Option<Mode>,
    /// `--key-bits`.
    pub key_bits: Option<u32>,
    /// `--key-derivation`.
    pub derivation: Option<Derivation>,
    /// `--offset` (bytes).
    pub offset_bytes: Option<u64>,
    /// `--iv-offset` (sectors).
    pub iv_offset_sectors: Option<u64>,
    /// `--sizelimit` (bytes).
    pub size_limit_bytes: Option<u64>,
    /// loop-AES `--pseed` (appended to the passphrase).
    pub pseed: Option<Vec<u8>>,
    /// loop-AES `--itercountk`.
    pub itercountk: Option<u32>,
    /// How much of the head to scan for signatures (default [`DEFAULT_SCAN_BYTES`]).
    pub scan_bytes: Option<u64>,
}

/// The accepted parameter set.
#[derive(Debug, Clone)]
pub struct Found {
    /// The parameters.
    pub params: Params,
    /// The key(s).
    pub keys: KeyMaterial,
    /// What the decrypted payload holds (`None` only for a fully pinned parameter set whose
    /// payload holds no recognisable file system).
    pub fs: Option<FsInfo>,
    /// Other derivations that produce the same key (e.g. `unhashed2` = `util-linux-raw`).
    pub equivalent_derivations: Vec<Derivation>,
    /// The multi-key key file used (path, gpg-encrypted?), for the cryptsetup advice.
    pub key_file: Option<(std::path::PathBuf, bool)>,
}

/// Another match, kept for the report when the choice was not unique.
#[derive(Debug, Clone)]
pub struct Alternative {
    /// Its parameters.
    pub params: Params,
    /// Its file system.
    pub fs: FsInfo,
}

/// What detection did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The best strong match.
    pub found: Option<Found>,
    /// Other strong matches (ranked lower).
    pub alternatives: Vec<Alternative>,
    /// The best weak match when nothing was strong (diagnosis: right key, wrong IV offset…).
    pub weak: Option<Alternative>,
    /// Parameter combinations decrypted and checked.
    pub combinations_tried: usize,
    /// Distinct keys (or key sets) derived.
    pub keys_tried: usize,
    /// Payload offsets considered.
    pub offsets_tried: Vec<u64>,
    /// Bytes scanned for signatures.
    pub scanned_bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// One derived key (set) to try.
struct KeyCand {
    derivation: Derivation,
    key_bits: u32,
    keys: KeyMaterial,
    multi_key: Option<MultiKey>,
    equivalents: Vec<Derivation>,
    order: usize,
}

impl KeyCand {
    fn single(derivation: Derivation, key_bits: u32, key: crate::crypto::Key, order: usize) -> KeyCand {
        KeyCand { derivation, key_bits, keys: KeyMaterial::Single(key), multi_key: None, equivalents: vec![], order }
    }

    /// The parameter set of this key under `mode` at `offset_bytes` / `iv_offset_sectors`.
    fn params(&self, scheme: Scheme, mode: Mode, offset_bytes: u64, iv_offset_sectors: u64, c: &Constraints) -> Params {
        // Seed and iterations only ever applied to a single-key passphrase.
        let from_passphrase = self.multi_key.is_none() && self.derivation != Derivation::KeyFileRaw;
        Params {
            scheme,
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
        _ => [256, 128, 192],
    }
}

/// Derive every candidate key the secrets allow, most likely first, deduplicated.
fn key_candidates(secrets: &Secrets, c: &Constraints) -> crate::Result<Vec<KeyCand>> {
    use sha2::Digest;
    let mut out: Vec<KeyCand> = Vec::new();
    let mut seen: Vec<[u8; 32]> = Vec::new();
    let bits_ok = |b: u32| c.key_bits.is_none_or(|k| k == b);
    let deriv_ok = |d: Derivation| c.derivation.is_none_or(|x| x == d);
    let mut push = |cand: KeyCand, fingerprint: [u8; 32], out: &mut Vec<KeyCand>| {
        if let Some(i) = seen.iter().position(|f| *f == fingerprint) {
            let d = cand.derivation;
            if !out[i].equivalents.contains(&d) && out[i].derivation != d {
                out[i].equivalents.push(d);
            }
        } else {
            seen.push(fingerprint);
            out.push(cand);
        }
    };
    let fp = |parts: &[&[u8]], bits: u32, tag: u8| -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        h.update([tag]);
        h.update(bits.to_le_bytes());
        for p in parts {
            h.update(p);
        }
        h.finalize().into()
    };

    // Passphrases: the typed one and a single-line key file's line 0.
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
    let allow_single = !matches!(c.mode, Some(Mode::Lmk));
    let mut order = 0usize;
    if allow_single {
        for pass in &passes {
            for d in Derivation::PASSPHRASE_ORDER {
                if d == Derivation::KeyFileRaw || !deriv_ok(d) {
                    continue;
                }
                for bits in bits_order(d) {
                    order += 1;
                    if !bits_ok(bits) {
                        continue;
                    }
                    let seed = c.pseed.as_deref();
                    let Some(key) = loopaes_single(d, pass, seed, c.itercountk, (bits / 8) as usize)? else {
                        continue;
                    };
                    let f = fp(&[key.bytes()], bits, 0);
                    push(KeyCand::single(d, bits, key, order), f, &mut out);
                }
            }
        }
        if let Some(raw) = raw_key_file
            && deriv_ok(Derivation::KeyFileRaw)
        {
            for bits in [256, 128, 192] {
                order += 1;
                if !bits_ok(bits) {
                    continue;
                }
                if let Some(key) = Derivation::KeyFileRaw.derive(raw, (bits / 8) as usize) {
                    let f = fp(&[key.bytes()], bits, 0);
                    push(KeyCand::single(Derivation::KeyFileRaw, bits, key, order), f, &mut out);
                }
            }
        }
    }
    if let Some(kf) = &secrets.key_file
        && let Some(mk) = kf.multi_key
        && c.mode.is_none_or(|m| m == Mode::Lmk)
        && c.scheme.is_none_or(|s| s == Scheme::LoopAes)
    {
        for bits in [128u32, 256, 192] {
            if !bits_ok(bits) {
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
                order += 1;
                let d = Derivation::Hash(h);
                if !deriv_ok(d) {
                    continue;
                }
                let keys = loopaes_multi(d, &kf.lines, (bits / 8) as usize)?;
                let mut parts: Vec<&[u8]> = keys.keys.iter().map(|k| k.bytes()).collect();
                let seed = keys.seed;
                if let Some(s) = &seed {
                    parts.push(s);
                }
                let f = fp(&parts, bits, 1);
                push(
                    KeyCand {
                        derivation: d,
                        key_bits: bits,
                        keys: KeyMaterial::Multi(keys),
                        multi_key: Some(mk),
                        equivalents: vec![],
                        order,
                    },
                    f,
                    &mut out,
                );
            }
        }
    }
    Ok(out)
}

/// Modes to try for a key candidate, with the scheme each implies.
fn modes_for(k: &KeyCand, c: &Constraints) -> Vec<(Scheme, Mode)> {
    if k.multi_key.is_some() {
        return vec![(Scheme::LoopAes, Mode::Lmk)];
    }
    let family = if k.derivation.is_loopaes_family() { Scheme::LoopAes } else { Scheme::Cryptoloop };
    let default_iv = |s: Scheme| {
        if s == Scheme::LoopAes { IvScheme::Plain64 } else { IvScheme::Plain }
    };
    match (c.scheme, c.mode) {
        (_, Some(Mode::Lmk)) => vec![],
        (Some(s), Some(m)) => vec![(s, m)],
        (None, Some(m @ Mode::Cbc(IvScheme::Plain64))) => vec![(Scheme::LoopAes, m)],
        (None, Some(m)) => vec![(if m == Mode::Ecb { Scheme::Cryptoloop } else { family }, m)],
        (Some(Scheme::LoopAes), None) => vec![(Scheme::LoopAes, Mode::Cbc(IvScheme::Plain64))],
        (Some(Scheme::Cryptoloop), None) => {
            vec![(Scheme::Cryptoloop, Mode::Cbc(IvScheme::Plain)), (Scheme::Cryptoloop, Mode::Ecb)]
        }
        (None, None) => vec![(family, Mode::Cbc(default_iv(family))), (Scheme::Cryptoloop, Mode::Ecb)],
    }
}

/// A source whose first bytes are cached in memory (detection reads the head many times).
pub struct HeadCache<'a> {
    src: &'a dyn ByteSource,
    head: Vec<u8>,
}

impl<'a> HeadCache<'a> {
    /// Cache the first `len` bytes of `src`.
    ///
    /// # Errors
    /// Read errors.
    pub fn new(src: &'a dyn ByteSource, len: u64) -> io::Result<Self> {
        let len = len.min(src.size_bytes()) as usize;
        let mut head = vec![0u8; len];
        // Unreadable sectors (a damaged disc) read as zeros here; verify reports them.
        let mut unreadable = Vec::new();
        crate::source::read_exact_tolerant(src, &mut head, 0, &mut unreadable)?;
        Ok(HeadCache { src, head })
    }
    /// The cached bytes.
    pub fn head(&self) -> &[u8] {
        &self.head
    }
}

impl ByteSource for HeadCache<'_> {
    fn size_bytes(&self) -> u64 {
        self.src.size_bytes()
    }
    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<usize> {
        let end = offset_bytes.saturating_add(buf.len() as u64);
        if end <= self.head.len() as u64 {
            let o = offset_bytes as usize;
            buf.copy_from_slice(&self.head[o..o + buf.len()]);
            return Ok(buf.len());
        }
        self.src.read_at(buf, offset_bytes)
    }
    fn data_regions(&self, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
        self.src.data_regions(range)
    }
}

/// Decrypt with `cipher` at `layout` and identify what is there.
fn probe_with(src: &dyn ByteSource, cipher: Arc<dyn SectorCipher>, layout: Layout) -> Option<FsInfo> {
    if layout.size_bytes < 4096 {
        return None;
    }
    let vol = Volume::new(src, cipher, layout);
    fs::identify(&vol).ok().flatten()
}

/// IV-independent superblock checks on one plaintext sector whose first `unreliable` bytes may be
/// wrong. Returns the payload offset the signature implies, relative to this sector's start.
fn sector_signature(p: &[u8], unreliable: usize) -> Option<i64> {
    use crate::bytes::le16;
    use crate::fs::Strictness::IvGarbled;
    // ext superblock (payload + 1024).
    if crate::fs::ext::Superblock::parse_with(p, IvGarbled(unreliable)).is_ok() {
        return Some(-1024);
    }
    // ISO9660 primary volume descriptor (payload + 32768): both-endian fields.
    if crate::fs::iso9660::vd::primary(p, IvGarbled(unreliable)).is_some() {
        return Some(-32768);
    }
    // FAT boot sector (payload + 0).
    if p[510] == 0x55 && p[511] == 0xAA && (&p[54..57] == b"FAT" || &p[82..87] == b"FAT32") {
        let bps = le16(p, 11);
        if unreliable >= 13 || (bps.is_power_of_two() && (512..=4096).contains(&bps)) {
            return Some(0);
        }
    }
    // btrfs superblock (payload + 65536): magic at sb + 64.
    if &p[64..72] == b"_BHRfS_M" {
        return Some(-65536);
    }
    None
}

fn push_offset(out: &mut Vec<u64>, sector_index: usize, rel: i64) {
    let abs = sector_index as i64 * SECTOR_BYTES as i64 + rel;
    if abs >= 0 && !out.contains(&(abs as u64)) && out.len() < MAX_SCAN_OFFSETS {
        out.push(abs as u64);
    }
}

/// Scan `head` (ciphertext) for sectors that decrypt to a superblock under `k`.
fn scan_key(head: &[u8], k: &KeyCand, modes: &[(Scheme, Mode)], out: &mut Vec<u64>) -> crate::Result<()> {
    let n = head.len() / 512 * 512;
    if n == 0 {
        return Ok(());
    }
    let mut d = head[..n].to_vec();
    match &k.keys {
        KeyMaterial::Single(key) => {
            let aes = Aes::new(key.bytes())?;
            aes.decrypt_blocks(crate::crypto::as_blocks(&mut d));
            let cbc = modes.iter().any(|(_, m)| matches!(m, Mode::Cbc(_)));
            let ecb = modes.iter().any(|(_, m)| *m == Mode::Ecb);
            let mut p = [0u8; 512];
            for (j, (ds, cs)) in d.chunks_exact(512).zip(head.chunks_exact(512)).enumerate() {
                if ecb && let Some(rel) = sector_signature(ds, 0) {
                    push_offset(out, j, rel);
                }
                if cbc {
                    p.copy_from_slice(ds);
                    for i in 16..512 {
                        p[i] ^= cs[i - 16];
                    }
                    // plain and plain64 IVs of sectors below 2^32 only touch bytes 0..4.
                    if let Some(rel) = sector_signature(&p, 4) {
                        push_offset(out, j, rel);
                    }
                }
            }
        }
        KeyMaterial::Multi(mk) => {
            let aes: Vec<Aes> = mk.keys.iter().map(|k| Aes::new(k.bytes())).collect::<crate::Result<_>>()?;
            let mut p = [0u8; 512];
            for (j, (ds, cs)) in d.chunks_exact_mut(512).zip(head.chunks_exact(512)).enumerate() {
                // Assumes the IV counts the offset (the default); key = K[sector & 63].
                aes[j & 63].decrypt_blocks(crate::crypto::as_blocks(ds));
                p.copy_from_slice(ds);
                for i in 16..512 {
                    p[i] ^= cs[i - 16];
                }
                if let Some(rel) = sector_signature(&p, 16) {
                    push_offset(out, j, rel);
                }
            }
        }
    }
    Ok(())
}

/// Scan unencrypted data for signatures (plain images with an offset).
pub fn scan_plain(head: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    for (j, s) in head.chunks_exact(512).enumerate() {
        if let Some(rel) = sector_signature(s, 0) {
            push_offset(&mut out, j, rel);
        }
    }
    out
}

#[derive(Clone)]
struct Hit {
    params: Params,
    fs: FsInfo,
    cand: usize,
    order: usize,
}

fn rank(a: &Hit, b: &Hit) -> std::cmp::Ordering {
    b.fs.confidence
        .cmp(&a.fs.confidence)
        .then(a.params.offset_bytes.cmp(&b.params.offset_bytes))
        .then(a.order.cmp(&b.order))
}

/// Find the parameters of a legacy encrypted image.
///
/// # Errors
/// `InvalidInput` when no secret was given or the constraints contradict each other; `Io` on
/// read errors. "Nothing matched" is not an error: see [`Outcome::found`].
pub fn detect(src: &dyn ByteSource, secrets: &Secrets, c: &Constraints) -> crate::Result<Outcome> {
    let t0 = Instant::now();
    if secrets.is_empty() {
        return Err(crate::Error::invalid("a passphrase or key file is needed to detect encryption parameters"));
    }
    let cands = key_candidates(secrets, c)?;
    let scan_len = c.scan_bytes.unwrap_or(DEFAULT_SCAN_BYTES);
    let head_len = c.offset_bytes.map_or(scan_len, |o| o.saturating_add(256 << 10).max(scan_len)).min(64 << 20);
    let cache =
        HeadCache::new(src, head_len + (128 << 10)).map_err(|e| crate::Error::io("reading the image head", e))?;

    let mut tried = 0usize;
    let mut hits: Vec<Hit> = Vec::new();
    let mut weak: Option<Hit> = None;
    let mut offsets_tried: Vec<u64> = Vec::new();

    let evaluate =
        |offsets: &[u64], hits: &mut Vec<Hit>, weak: &mut Option<Hit>, tried: &mut usize| -> crate::Result<()> {
            for (ci, k) in cands.iter().enumerate() {
                for (scheme, mode) in modes_for(k, c) {
                    for &off in offsets {
                        let mut ivs = vec![c.iv_offset_sectors.unwrap_or(off / SECTOR_BYTES)];
                        if c.iv_offset_sectors.is_none() && off >= SECTOR_BYTES && mode != Mode::Ecb {
                            ivs.push(0);
                        }
                        for iv in ivs {
                            *tried += 1;
                            let params = k.params(scheme, mode, off, iv, c);
                            let cipher: Arc<dyn SectorCipher> = Arc::from(params.cipher(&k.keys)?);
                            let layout = Layout::new(cache.size_bytes(), off, c.size_limit_bytes, iv);
                            if let Some(info) = probe_with(&cache, cipher, layout) {
                                let hit = Hit { params, fs: info, cand: ci, order: k.order };
                                if hit.fs.confidence >= STRONG_CONFIDENCE {
                                    hits.push(hit);
                                } else if weak.as_ref().is_none_or(|w| rank(&hit, w).is_lt()) {
                                    *weak = Some(hit);
                                }
                            }
                        }
                    }
                }
            }
            Ok(())
        };

    let first: Vec<u64> = vec![c.offset_bytes.unwrap_or(0)];
    evaluate(&first, &mut hits, &mut weak, &mut tried)?;
    offsets_tried.extend(&first);
    let mut scanned = 0u64;
    if hits.is_empty() && c.offset_bytes.is_none() {
        let head = &cache.head()[..(scan_len.min(cache.head().len() as u64)) as usize];
        scanned = head.len() as u64;
        let mut found_offsets: Vec<u64> = Vec::new();
        for k in &cands {
            let modes = modes_for(k, c);
            if !modes.is_empty() {
                scan_key(head, k, &modes, &mut found_offsets)?;
            }
        }
        found_offsets.retain(|o| !offsets_tried.contains(o));
        found_offsets.sort_unstable();
        if !found_offsets.is_empty() {
            evaluate(&found_offsets, &mut hits, &mut weak, &mut tried)?;
            offsets_tried.extend(&found_offsets);
        }
    }

    hits.sort_by(rank);
    let mut seen_params: HashSet<(usize, u64, u64, String)> = HashSet::new();
    hits.retain(|h| {
        seen_params.insert((h.cand, h.params.offset_bytes, h.params.iv_offset_sectors, h.params.cipher_name()))
    });
    let mut found = hits.first().map(|h| Found {
        params: h.params.clone(),
        keys: cands[h.cand].keys.clone(),
        fs: Some(h.fs.clone()),
        equivalent_derivations: cands[h.cand].equivalents.clone(),
        key_file: key_file_hint(secrets, &cands[h.cand]),
    });
    // Explicit flags override the search: a fully pinned parameter set (one key, one mode, one
    // offset, one IV offset) is used even when no file system shows (verify then reports it).
    if found.is_none()
        && tried == 1
        && let Some(k) = cands.first()
        && let Some(&(scheme, mode)) = modes_for(k, c).first()
    {
        let off = c.offset_bytes.unwrap_or(0);
        found = Some(Found {
            params: k.params(scheme, mode, off, c.iv_offset_sectors.unwrap_or(off / SECTOR_BYTES), c),
            keys: k.keys.clone(),
            fs: weak.as_ref().map(|w| w.fs.clone()),
            equivalent_derivations: k.equivalents.clone(),
            key_file: key_file_hint(secrets, k),
        });
    }
    let alternatives =
        hits.iter().skip(1).take(8).map(|h| Alternative { params: h.params.clone(), fs: h.fs.clone() }).collect();
    Ok(Outcome {
        found,
        alternatives,
        weak: weak.map(|w| Alternative { params: w.params, fs: w.fs }),
        combinations_tried: tried,
        keys_tried: cands.len(),
        offsets_tried,
        scanned_bytes: scanned,
        elapsed: t0.elapsed(),
    })
}

fn key_file_hint(secrets: &Secrets, k: &KeyCand) -> Option<(std::path::PathBuf, bool)> {
    let kf = secrets.key_file.as_ref()?;
    k.multi_key?;
    kf.path.clone().map(|p| (p, kf.from_gpg))
}

/// Identify an unencrypted payload at `offset` (or, without one, at 0 and then at offsets found
/// by scanning the head). Returns the offset and what was found.
///
/// # Errors
/// Read errors.
pub fn detect_plain(
    src: &dyn ByteSource,
    offset_bytes: Option<u64>,
    size_limit_bytes: Option<u64>,
) -> crate::Result<Option<(u64, FsInfo)>> {
    let cache = HeadCache::new(src, DEFAULT_SCAN_BYTES + (128 << 10))
        .map_err(|e| crate::Error::io("reading the image head", e))?;
    let probe_at = |off: u64| -> crate::Result<Option<FsInfo>> {
        let w = crate::source::Window::new(&cache, off, size_limit_bytes);
        fs::identify(&w).map_err(|e| crate::Error::io("reading the image", e))
    };
    let first = offset_bytes.unwrap_or(0);
    if let Some(info) = probe_at(first)?
        && (info.confidence >= STRONG_CONFIDENCE || offset_bytes.is_some())
    {
        return Ok(Some((first, info)));
    }
    if offset_bytes.is_some() {
        return Ok(None);
    }
    let head = &cache.head()[..cache.head().len().min(DEFAULT_SCAN_BYTES as usize)];
    for off in scan_plain(head) {
        if off == 0 {
            continue;
        }
        if let Some(info) = probe_at(off)?
            && info.confidence >= STRONG_CONFIDENCE
        {
            return Ok(Some((off, info)));
        }
    }
    Ok(None)
}

/// A rough test of whether data looks like ciphertext (or compressed/random data): byte
/// histogram chi-square over the allocated part of the head. `None` when there is too little
/// non-zero data to judge.
pub fn looks_random(head: &[u8]) -> Option<bool> {
    let data: Vec<&[u8]> = head.chunks(512).filter(|s| s.iter().any(|&b| b != 0)).collect();
    let n: usize = data.iter().map(|s| s.len()).sum();
    if n < 4096 {
        return None;
    }
    let mut hist = [0u64; 256];
    for s in &data {
        for &b in *s {
            hist[b as usize] += 1;
        }
    }
    let expected = n as f64 / 256.0;
    let chi2: f64 = hist.iter().map(|&o| (o as f64 - expected).powi(2) / expected).sum();
    // 255 degrees of freedom: mean 255, sd ~22.6; allow a generous margin.
    Some(chi2 < 400.0)
}

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

use crate::crypto::block::CipherKind;
use crate::crypto::cbc::IvScheme;
use crate::crypto::kdf::Derivation;
use crate::crypto::{Passphrase, SectorCipher};
use crate::formats::legacy::{KeyMaterial, Mode, Params, Scheme};
use crate::formats::loopaes::KeyFile;
use crate::fs::{self, FsInfo, STRONG_CONFIDENCE};
use crate::source::{ByteSource, SECTOR_BYTES};
use crate::volume::{Layout, Volume};
mod keys;
mod scan;

use keys::{KeyCand, TIERS, key_candidates, modes_for, tier};
use scan::scan_key;
pub use scan::{HeadCache, looks_random, scan_plain};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default length of the image head scanned for file-system signatures.
pub const DEFAULT_SCAN_BYTES: u64 = 4 << 20;

/// Head scanned for ciphers other than AES when `--cipher` does not pin one (their software
/// implementations are 10–1000× slower than AES-NI; give `--cipher` or `--offset` for a payload
/// deeper than this).
pub const SLOW_CIPHER_SCAN_BYTES: u64 = 256 << 10;

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
    /// `--cipher`: the mode part.
    pub mode: Option<Mode>,
    /// `--cipher`: the block cipher part.
    pub cipher: Option<crate::crypto::block::CipherKind>,
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
/// Decrypt with `cipher` at `layout` and identify what is there.
fn probe_with(src: &dyn ByteSource, cipher: Arc<dyn SectorCipher>, layout: Layout) -> Option<FsInfo> {
    if layout.size_bytes < 4096 {
        return None;
    }
    let vol = Volume::new(src, cipher, layout);
    fs::identify(&vol).ok().flatten()
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
    let mut search = Search {
        c,
        cands,
        cache,
        tried: 0,
        tried_primary: 0,
        hits: Vec::new(),
        weak: None,
        offsets_tried: Vec::new(),
        scanned: 0,
    };
    // Ciphers in likelihood tiers (AES, Twofish, the rest). First every tier at the given offset
    // (default 0, where nearly every image starts), stopping at the first tier with a strong
    // match; then — without --offset — per tier at the offsets a head scan proposes.
    search.at_given_offset()?;
    if search.hits.is_empty() && c.offset_bytes.is_none() {
        search.at_scanned_offsets(scan_len)?;
    }
    Ok(search.conclude(secrets, t0.elapsed()))
}

/// One parameter search: the candidates and what trying them found.
struct Search<'a> {
    c: &'a Constraints,
    cands: Vec<KeyCand>,
    cache: HeadCache<'a>,
    /// Combinations tried, and how many of them with "the" cipher (the pinned one, else AES).
    tried: usize,
    tried_primary: usize,
    /// Strong matches, and the best weak one.
    hits: Vec<Hit>,
    weak: Option<Hit>,
    offsets_tried: Vec<u64>,
    scanned: u64,
}

impl Search<'_> {
    /// "The" cipher for the pinned-parameters rule: the pinned one, else AES.
    fn primary(&self, x: CipherKind) -> bool {
        self.c.cipher.map_or(x == CipherKind::Aes, |p| p == x)
    }

    /// Try every key × mode of cipher tier `t` at `offsets` (and their IV offsets).
    fn evaluate(&mut self, t: usize, offsets: &[u64]) -> crate::Result<()> {
        let c = self.c;
        for ci in 0..self.cands.len() {
            let k = &self.cands[ci];
            for trial in modes_for(k, c).into_iter().filter(|x| tier(x.cipher) == t) {
                for &off in offsets {
                    let mut ivs = vec![c.iv_offset_sectors.unwrap_or(off / SECTOR_BYTES)];
                    if c.iv_offset_sectors.is_none()
                        && off >= SECTOR_BYTES
                        && matches!(trial.mode, Mode::Cbc(IvScheme::Plain | IvScheme::Plain64) | Mode::Lmk)
                    {
                        ivs.push(0);
                    }
                    for iv in ivs {
                        self.tried += 1;
                        if self.primary(trial.cipher) {
                            self.tried_primary += 1;
                        }
                        let params = k.params(trial, off, iv, c);
                        let cipher: Arc<dyn SectorCipher> = Arc::from(params.cipher(&k.keys)?);
                        let layout = Layout::new(self.cache.size_bytes(), off, c.size_limit_bytes, iv);
                        if let Some(info) = probe_with(&self.cache, cipher, layout) {
                            let hit = Hit { params, fs: info, cand: ci, order: k.order };
                            if hit.fs.confidence >= STRONG_CONFIDENCE {
                                self.hits.push(hit);
                            } else if self.weak.as_ref().is_none_or(|w| rank(&hit, w).is_lt()) {
                                self.weak = Some(hit);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Every tier at `--offset` (default 0), stopping at the first with a strong match.
    fn at_given_offset(&mut self) -> crate::Result<()> {
        let first = [self.c.offset_bytes.unwrap_or(0)];
        self.offsets_tried.extend(first);
        for t in 0..TIERS {
            self.evaluate(t, &first)?;
            if !self.hits.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// Per tier, the offsets a head scan of `scan_len` bytes proposes. Tiers past AES scan a
    /// shorter head unless the cipher was pinned: their crates are much slower than AES-NI
    /// (docs/PERFORMANCE.md, detection).
    fn at_scanned_offsets(&mut self, scan_len: u64) -> crate::Result<()> {
        let c = self.c;
        let first = c.offset_bytes.unwrap_or(0);
        for t in 0..TIERS {
            let len = if t == 0 || c.cipher.is_some() { scan_len } else { scan_len.min(SLOW_CIPHER_SCAN_BYTES) };
            let head = &self.cache.head()[..(len.min(self.cache.head().len() as u64)) as usize];
            self.scanned = self.scanned.max(head.len() as u64);
            let mut found_offsets: Vec<u64> = Vec::new();
            for k in &self.cands {
                let modes: Vec<_> = modes_for(k, c).into_iter().filter(|x| tier(x.cipher) == t).collect();
                if !modes.is_empty() {
                    scan_key(head, k, &modes, &mut found_offsets)?;
                }
            }
            found_offsets.retain(|o| *o != first);
            found_offsets.sort_unstable();
            if !found_offsets.is_empty() {
                self.evaluate(t, &found_offsets)?;
                for o in found_offsets {
                    if !self.offsets_tried.contains(&o) {
                        self.offsets_tried.push(o);
                    }
                }
            }
            if !self.hits.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// Rank the hits into the outcome (the best, up to 8 alternatives, the best weak one).
    fn conclude(mut self, secrets: &Secrets, elapsed: Duration) -> Outcome {
        let (c, cands) = (self.c, &self.cands);
        self.hits.sort_by(rank);
        let mut seen_params: HashSet<(usize, u64, u64, String)> = HashSet::new();
        self.hits.retain(|h| {
            seen_params.insert((h.cand, h.params.offset_bytes, h.params.iv_offset_sectors, h.params.cipher_name()))
        });
        let mut found = self.hits.first().map(|h| Found {
            params: h.params.clone(),
            keys: cands[h.cand].keys.clone(),
            fs: Some(h.fs.clone()),
            equivalent_derivations: cands[h.cand].equivalents.clone(),
            key_file: key_file_hint(secrets, &cands[h.cand]),
        });
        // Explicit flags override the search: a fully pinned parameter set (one key, one mode,
        // one offset, one IV offset, with the pinned cipher or else AES) is used even when no
        // file system shows (verify then reports it).
        if found.is_none()
            && self.tried_primary == 1
            && cands.len() == 1
            && let Some(k) = cands.first()
            && let Some(trial) = modes_for(k, c).into_iter().find(|t| self.primary(t.cipher))
        {
            let off = c.offset_bytes.unwrap_or(0);
            found = Some(Found {
                params: k.params(trial, off, c.iv_offset_sectors.unwrap_or(off / SECTOR_BYTES), c),
                keys: k.keys.clone(),
                fs: self.weak.as_ref().map(|w| w.fs.clone()),
                equivalent_derivations: k.equivalents.clone(),
                key_file: key_file_hint(secrets, k),
            });
        }
        let alternatives = self
            .hits
            .iter()
            .skip(1)
            .take(8)
            .map(|h| Alternative { params: h.params.clone(), fs: h.fs.clone() })
            .collect();
        Outcome {
            found,
            alternatives,
            weak: self.weak.map(|w| Alternative { params: w.params, fs: w.fs }),
            combinations_tried: self.tried,
            keys_tried: cands.len(),
            offsets_tried: self.offsets_tried,
            scanned_bytes: self.scanned,
            elapsed,
        }
    }
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

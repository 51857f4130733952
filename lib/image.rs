//! Opening an image: read-only source, then work out what it holds — a LUKS header, a plain
//! file system, a legacy encrypted payload whose parameters [`crate::detect`] finds from the
//! passphrase, or "looks encrypted, a passphrase is needed". `inspect` reports this; `verify`
//! streams the payload it describes.

use crate::crypto::{NullCipher, SectorCipher};
use crate::detect::{self, Constraints, Outcome, Secrets};
use crate::finding::Finding;
use crate::formats::legacy::KeyMaterial;
use crate::formats::luks;
use crate::fs::FsInfo;
use crate::source::{ByteSource, FileSource, SECTOR_BYTES};
use crate::volume::Layout;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the image holds.
#[derive(Debug)]
pub enum Content {
    /// An unencrypted file system at `offset_bytes`.
    Plain {
        /// Where it starts.
        offset_bytes: u64,
        /// What it is.
        fs: FsInfo,
    },
    /// A cryptoloop / loop-AES payload, parameters found (or confirmed) by detection.
    Legacy(Box<Outcome>),
    /// A LUKS container, locked (no passphrase given).
    Luks {
        /// Its header.
        header: luks::Header,
        /// The detached header file it came from (`--header`), if not from the image.
        detached_header: Option<PathBuf>,
    },
    /// A LUKS container unlocked with the given passphrase or key file.
    LuksUnlocked(Box<LuksUnlocked>),
    /// Nothing recognisable and no secret given: probably encrypted.
    NeedsSecret {
        /// Whether the head looks like ciphertext (None: too little data to tell).
        looks_random: Option<bool>,
    },
    /// `--scheme plain` was forced but nothing recognisable is there.
    UnknownPlain {
        /// The offset used.
        offset_bytes: u64,
    },
}

/// An unlocked LUKS container.
#[derive(Debug)]
pub struct LuksUnlocked {
    /// The header, read and checked.
    pub luks: luks::Luks,
    /// The volume key (wiped on drop).
    pub volume_key: crate::crypto::Key,
    /// The keyslot that opened.
    pub keyslot: u32,
    /// The file system in the payload, if recognised.
    pub fs: Option<FsInfo>,
    /// A detached header file, if the header did not come from the image.
    pub detached_header: Option<PathBuf>,
    /// Where the LUKS device starts in the image (`--offset`; 0 normally).
    pub device_offset_bytes: u64,
}

/// An opened image and what it holds.
pub struct Opened {
    /// The path as given.
    pub path: PathBuf,
    /// The image's bytes, read-only (a file for [`open`]; anything for [`open_source`]).
    pub file: Arc<dyn ByteSource>,
    /// Allocated (non-hole) bytes of the image, when the source knows.
    pub allocated_bytes: Option<u64>,
    /// The part of the file that holds data: the whole file, or, when dvdisaster ECC is
    /// appended (RS02/RS03), a window over the original image bytes before it.
    pub data: Arc<dyn ByteSource>,
    /// dvdisaster error-correction data found for the image (appended, `--ecc`, or `NAME.ecc`).
    pub ecc: Option<crate::formats::dvdisaster::Ecc>,
    /// dvdisaster headers found but not usable (damaged, implausible), when none was usable:
    /// `ecc.unusable-header` warnings naming the header and why.
    pub ecc_unusable: Vec<Finding>,
    /// What is in it.
    pub content: Content,
    /// Remarks for the user (info findings from the headers and the search; `inspect`'s notes).
    pub notes: Vec<Finding>,
}

/// Options for [`open`].
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Pinned parameters.
    pub constraints: Constraints,
    /// `--scheme plain`: do not look for encryption.
    pub unencrypted: bool,
    /// `--ecc FILE`: the dvdisaster `.ecc` file for the image (else one appended to the image,
    /// or `NAME.ecc` beside it, is used).
    pub ecc_file: Option<std::path::PathBuf>,
    /// A detached LUKS header file (`cryptsetup --header`): the image holds only the data.
    pub luks_header: Option<PathBuf>,
    /// Caps on key-derivation work taken from a LUKS header, and the interrupt that stops it.
    pub kdf: luks::KdfPolicy,
}

/// What a path tells [`open_source`] that the bytes alone do not.
#[derive(Debug, Clone, Default)]
pub struct SourceHints {
    /// The name used in messages and reports (the path, for a file).
    pub name: PathBuf,
    /// Look for a dvdisaster `NAME.ecc` beside `name` (only for a real path).
    pub ecc_beside: bool,
    /// Allocated (non-hole) bytes, when the source knows.
    pub allocated_bytes: Option<u64>,
}

/// Open `path` read-only and work out what it holds: [`open_source`] over the file.
///
/// # Errors
/// `Io`/`InvalidInput` when the file cannot be used (missing, a directory, empty, offset past the
/// end); `NoMatch` when secrets were given but no parameter set opens the image.
pub fn open(path: &Path, secrets: &Secrets, opts: &OpenOptions) -> crate::Result<Opened> {
    let file = FileSource::open(path)?;
    let hints = SourceHints { name: path.into(), ecc_beside: true, allocated_bytes: file.allocated_bytes() };
    open_source(Arc::new(file), secrets, opts, &hints)
}

/// [`open`] over a file already open (read access is enough): the inode behind `file` is the one
/// analysed, whatever `path` (used for messages and to find `NAME.ecc` beside it) names now.
///
/// # Errors
/// As [`open`].
pub fn open_file(file: std::fs::File, path: &Path, secrets: &Secrets, opts: &OpenOptions) -> crate::Result<Opened> {
    let file = FileSource::from_file(file, path)?;
    let hints = SourceHints { name: path.into(), ecc_beside: true, allocated_bytes: file.allocated_bytes() };
    open_source(Arc::new(file), secrets, opts, &hints)
}

/// Work out what the image in `src` holds — from a file, memory (fuzzing, tests), an open
/// descriptor or a block-device request path alike. `opts.ecc_file` / `opts.luks_header` are
/// still paths.
///
/// # Errors
/// As [`open`].
pub fn open_source(
    src: Arc<dyn ByteSource>,
    secrets: &Secrets,
    opts: &OpenOptions,
    hints: &SourceHints,
) -> crate::Result<Opened> {
    let path = hints.name.as_path();
    let file = src;
    let size = file.size_bytes();
    if size == 0 {
        return Err(crate::Error::invalid(format!("{} is empty (0 bytes): there is no image to read", path.display())));
    }
    // dvdisaster ECC appended to the image: everything below sees only the original bytes.
    let crate::formats::dvdisaster::Scan { ecc, unusable: ecc_unusable } = if hints.ecc_beside {
        crate::formats::dvdisaster::find_for_image(path, &*file, opts.ecc_file.as_deref())?
    } else {
        match opts.ecc_file.as_deref() {
            Some(p) => crate::formats::dvdisaster::Scan {
                ecc: Some(crate::formats::dvdisaster::open_ecc_file(p)?),
                unusable: Vec::new(),
            },
            None => crate::formats::dvdisaster::scan_image(&*file)?,
        }
    };
    let data: Arc<dyn ByteSource> = match &ecc {
        Some(e) if e.is_augmented() => Arc::new(crate::source::Window::new(file.clone(), 0, Some(e.data_bytes()))),
        _ => file.clone(),
    };
    let size = data.size_bytes();
    let mut notes: Vec<Finding> = ecc.iter().flat_map(ecc_notes).collect();
    let c = &opts.constraints;
    if let Some(off) = c.offset_bytes
        && off >= size
    {
        return Err(crate::Error::invalid(format!(
            "--offset {off} is at or past the end of {} ({size} bytes)",
            path.display()
        )));
    }
    let content = classify(&*data, secrets, opts, &mut notes)?;
    Ok(Opened {
        path: path.into(),
        file,
        allocated_bytes: hints.allocated_bytes,
        data,
        ecc,
        ecc_unusable,
        content,
        notes,
    })
}

/// Work out what the data part holds (see [`open`]), adding remarks to `notes`.
fn classify(
    data: &dyn ByteSource,
    secrets: &Secrets,
    opts: &OpenOptions,
    notes: &mut Vec<Finding>,
) -> crate::Result<Content> {
    let c = &opts.constraints;
    let explicit_crypto = c.scheme.is_some() || c.mode.is_some();
    if let Some(hdr_path) = &opts.luks_header {
        let hdr = FileSource::open(hdr_path)?;
        let l = luks::read(&hdr)?.ok_or_else(|| {
            crate::Error::new(crate::ErrorKind::NotRecognized, format!("{} is not a LUKS header", hdr_path.display()))
        })?;
        return open_luks(l, &hdr, data, secrets, &opts.kdf, Some(hdr_path.clone()), 0, notes);
    }
    if !explicit_crypto {
        let at = c.offset_bytes.unwrap_or(0);
        let w = crate::source::Window::new(data, at, None);
        if let Some(l) = luks::read(&w)? {
            if at != 0 {
                notes.push(Finding::info(
                    "luks.offset",
                    format!("the LUKS header starts at byte {at} (losetup --offset {at})"),
                ));
            }
            return open_luks(l, &w, &w, secrets, &opts.kdf, None, at, notes);
        }
        if let Some((off, fs)) = detect::detect_plain(data, c.offset_bytes, c.size_limit_bytes)? {
            if !secrets.is_empty() {
                notes.push(Finding::info(
                    "image.not-encrypted",
                    "the image is not encrypted; the passphrase/key file was not needed",
                ));
            }
            return Ok(Content::Plain { offset_bytes: off, fs });
        }
        if opts.unencrypted {
            return Ok(Content::UnknownPlain { offset_bytes: at });
        }
    }
    if secrets.is_empty() {
        let head = crate::source::read_vec(data, 0, 1 << 20).map_err(|e| crate::Error::io("reading the image", e))?;
        return Ok(Content::NeedsSecret { looks_random: detect::looks_random(&head) });
    }
    let outcome = detect::detect(data, secrets, c)?;
    if outcome.found.is_none() {
        return Err(no_match_error(&outcome, c));
    }
    Ok(Content::Legacy(Box::new(outcome)))
}

/// What `inspect` says about dvdisaster ECC found for the image.
fn ecc_notes(e: &crate::formats::dvdisaster::Ecc) -> Vec<Finding> {
    let mut v = vec![Finding::info("ecc.found", format!("dvdisaster error correction data: {}", e.describe()))];
    if e.is_augmented() {
        v.push(Finding::info(
            "ecc.augmented",
            format!(
                "the original image is the first {} bytes ({} sectors of 2048); the error correction data follows",
                e.data_bytes(),
                e.data_sectors()
            ),
        ));
    }
    v.extend(e.notes.iter().cloned());
    v
}

/// Unlock `l` (read from `hdr_src`) with the secrets, if any: the passphrase, else the key
/// file's whole contents (cryptsetup `--key-file` semantics).
#[allow(clippy::too_many_arguments)]
fn open_luks(
    l: luks::Luks,
    hdr_src: &dyn ByteSource,
    data_src: &dyn ByteSource,
    secrets: &Secrets,
    kdf: &luks::KdfPolicy,
    detached_header: Option<PathBuf>,
    device_offset_bytes: u64,
    notes: &mut Vec<Finding>,
) -> crate::Result<Content> {
    notes.extend(l.header.notes.iter().cloned());
    let pass = match (&secrets.passphrase, &secrets.key_file) {
        (Some(p), _) => p.clone(),
        (None, Some(k)) => crate::crypto::Passphrase::new(k.raw.to_vec()),
        (None, None) => return Ok(Content::Luks { header: l.header, detached_header }),
    };
    let u = l.unlock_with(hdr_src, &pass, kdf)?;
    let (layout, cipher) = l.payload(data_src.size_bytes(), &u.volume_key)?;
    let vol = crate::volume::Volume::new(data_src, Arc::from(cipher), layout);
    let fs = crate::fs::identify(&vol).map_err(|e| crate::Error::io("reading the LUKS payload", e))?;
    Ok(Content::LuksUnlocked(Box::new(LuksUnlocked {
        luks: l,
        volume_key: u.volume_key,
        keyslot: u.keyslot,
        fs,
        detached_header,
        device_offset_bytes,
    })))
}

fn no_match_error(o: &Outcome, c: &Constraints) -> crate::Error {
    let mut msg = format!(
        "no parameter set opens this image: tried {} combinations ({} distinct keys, {} payload offset{}, \
         scanned the first {} KiB for file-system signatures)",
        o.combinations_tried,
        o.keys_tried,
        o.offsets_tried.len(),
        if o.offsets_tried.len() == 1 { "" } else { "s" },
        o.scanned_bytes / 1024
    );
    if let Some(w) = &o.weak {
        msg.push_str(&format!(
            "; closest: {} {} {}-bit {} at offset {} (IV offset {}) shows a {} superblock that fails its consistency checks",
            w.params.scheme,
            w.params.cipher_name(),
            w.params.key_bits,
            w.params.derivation,
            w.params.offset_bytes,
            w.params.iv_offset_sectors,
            w.fs.kind
        ));
    }
    msg.push_str(
        ". Next: check the passphrase bytes (a Latin-1 vs UTF-8 difference changes the key; the passphrase file's \
         first line is used, without its newline)",
    );
    if c.offset_bytes.is_none() {
        msg.push_str("; give --offset if the payload starts deeper than the scanned head");
    }
    msg.push_str("; loop-AES images may need --pseed/--itercountk (losetup -S/-C) or --key-file for multi-key");
    if c.key_bits.is_some() || c.derivation.is_some() || c.scheme.is_some() || c.mode.is_some() {
        msg.push_str("; drop the pinned --scheme/--cipher/--key-bits/--key-derivation to search more widely");
    }
    crate::Error::new(crate::ErrorKind::NoMatch, msg)
}

impl Opened {
    /// The payload to stream for `verify`: its layout and cipher. `None` when there is nothing
    /// readable (locked LUKS, no secret).
    ///
    /// # Errors
    /// `InvalidInput` if key material and mode disagree (a bug).
    pub fn payload(&self) -> crate::Result<Option<(Layout, Arc<dyn SectorCipher>)>> {
        let size = self.data.size_bytes();
        Ok(match &self.content {
            Content::Plain { offset_bytes, .. } | Content::UnknownPlain { offset_bytes } => {
                Some((Layout::new(size, *offset_bytes, None, *offset_bytes / SECTOR_BYTES), Arc::new(NullCipher)))
            }
            Content::Legacy(o) => match &o.found {
                Some(f) => {
                    let p = &f.params;
                    let cipher: Arc<dyn SectorCipher> = Arc::from(p.cipher(&f.keys)?);
                    Some((Layout::new(size, p.offset_bytes, p.size_limit_bytes, p.iv_offset_sectors), cipher))
                }
                None => None,
            },
            Content::LuksUnlocked(u) => {
                let at = u.device_offset_bytes;
                let avail = size.saturating_sub(at);
                let (mut layout, cipher) = u.luks.payload(avail, &u.volume_key)?;
                layout.offset_bytes += at;
                Some((layout, Arc::from(cipher)))
            }
            Content::Luks { .. } | Content::NeedsSecret { .. } => None,
        })
    }

    /// The readable payload as a byte source (decrypting when encrypted, a plain window
    /// otherwise), for the file-system readers. `None` when there is nothing readable.
    ///
    /// # Errors
    /// As [`Opened::payload`].
    pub fn volume(&self) -> crate::Result<Option<Box<dyn ByteSource>>> {
        Ok(match (&self.content, self.payload()?) {
            (Content::Plain { .. } | Content::UnknownPlain { .. }, Some((layout, _))) => Some(Box::new(
                crate::source::Window::new(self.data.clone(), layout.offset_bytes, Some(layout.size_bytes)),
            )),
            (_, Some((layout, cipher))) => {
                Some(Box::new(crate::volume::Volume::new(self.data.clone(), cipher, layout)))
            }
            (_, None) => None,
        })
    }

    /// The error for a command that needs the payload when there is none to read (a locked
    /// LUKS container or an image that needs a secret): says which secret to give.
    pub fn locked_error(&self) -> crate::Error {
        let what = match &self.content {
            Content::Luks { .. } => "this is a LUKS container",
            _ => "the image looks encrypted",
        };
        crate::Error::invalid(format!(
            "{what}: give the passphrase (--passphrase-file, --passphrase-fd, or at the prompt) or a --key-file"
        ))
    }

    /// The file system found, if any.
    pub fn filesystem(&self) -> Option<&FsInfo> {
        match &self.content {
            Content::Plain { fs, .. } => Some(fs),
            Content::LuksUnlocked(u) => u.fs.as_ref(),
            Content::Legacy(o) => o.found.as_ref().and_then(|f| f.fs.as_ref()),
            _ => None,
        }
    }

    /// The detected key material, if any (for migration).
    pub fn keys(&self) -> Option<&KeyMaterial> {
        match &self.content {
            Content::Legacy(o) => o.found.as_ref().map(|f| &f.keys),
            _ => None,
        }
    }
}

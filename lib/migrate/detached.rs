//! `--mode detached-header`: a LUKS2 header file over the unchanged legacy image (volume key =
//! the legacy key, segment = the legacy cipher and offset), verified against the image before
//! it takes its name.

use super::apply::{self, OutputPaths, StreamOptions};
use super::kdf::choose_kdf;
use super::plan;
use super::{Format, KdfOptions, Outcome, now_iso, open_command, source_path};
use crate::bytes::hex;
use crate::crypto::{Key, Passphrase};
use crate::formats::luks::{self, write};
use crate::image::Opened;
use crate::progress::Run;
use crate::source::{ByteSource, FileSource};
use std::path::PathBuf;
use subtle::ConstantTimeEq;

/// Options for [`detached_header`].
#[derive(Debug, Clone)]
pub struct DetachedOptions {
    /// The header file (`-o HEADER`).
    pub output: PathBuf,
    /// Keyslot KDF.
    pub kdf: KdfOptions,
    /// Replace an existing header file.
    pub force: bool,
    /// LUKS2 label.
    pub label: String,
    /// Read chunk size.
    pub chunk_bytes: usize,
}

/// Write a detached LUKS2 header for a legacy single-key image: volume key = the legacy key,
/// segment = the legacy cipher and offset (IV offset 0), one keyslot for `new_pass`, and the
/// provenance token. Verified before it is renamed into place: the header is read back from the
/// disk (its cached pages dropped) and unlocked with `new_pass`, and the whole payload is read
/// once, decrypted through the legacy parameters and through the header, and the two compared
/// byte for byte (in parallel); the source plaintext's SHA-256 is computed alongside.
///
/// What a failure leaves: the image is never written; `HEADER.partial` may remain (replaced by
/// the next attempt); `HEADER` appears only after verification.
///
/// # Errors
/// `Unsupported` for sources LUKS cannot describe (loop-AES multi-key, IV offset ≠ 0, small
/// offsets, plain or LUKS sources), with what to use instead; `Unsafe` for an existing output;
/// `Corrupt` if verification fails; `Io`; `Interrupted`.
pub fn detached_header(
    opened: &Opened,
    new_pass: &Passphrase,
    opts: &DetachedOptions,
    run: &mut Run<'_>,
) -> crate::Result<Outcome> {
    let (cipher, offset, size) = plan::detached_segment(opened)?;
    let key = match opened.keys() {
        Some(crate::formats::legacy::KeyMaterial::Single(k)) => k.clone(),
        _ => return Err(crate::Error::unsupported("only single-key images can get a detached LUKS2 header")),
    };
    let (layout, src_cipher) = opened.payload()?.ok_or_else(|| crate::Error::invalid("the source is locked"))?;
    let info = plan::source_info(opened, layout)?;
    let out = OutputPaths::new(&opts.output);
    apply::refuse_clobbering_inputs(&out, &[&opened.path])?;
    if out.final_path.exists() && !opts.force {
        return Err(crate::Error::new(
            crate::ErrorKind::Unsafe,
            format!("{} already exists; give --force to replace it", out.final_path.display()),
        ));
    }
    let (kdf, digest_iterations) = choose_kdf(&opts.kdf, Format::Luks2)?;
    let spec = write::Luks2Spec {
        cipher,
        sector_bytes: 512,
        data_offset_bytes: offset,
        data_size_bytes: size,
        kdf: kdf.clone(),
        digest_iterations,
        label: opts.label.clone(),
        tokens: Vec::new(),
    };
    let written = write::luks2(&key, new_pass, &spec)?;
    let file = apply::create_partial(&out.partial, true)?;
    apply::write_at(&file, &out.partial, &written.bytes, 0)?;
    apply::sync(&file, &out.partial)?;

    // Verify: read the header back from the disk (its cached pages dropped), unlock it with the
    // new passphrase and map the image through it.
    let _ = crate::output::direct::drop_cached(&file);
    let hdr = FileSource::open(&out.partial)?;
    let l = luks::read(&hdr)?.ok_or_else(|| crate::Error::corrupt("the new header does not read back"))?;
    let u = l.unlock(&hdr, new_pass)?;
    if !bool::from(u.volume_key.bytes().ct_eq(key.bytes())) {
        return Err(crate::Error::corrupt("the new header's keyslot does not yield the legacy key"));
    }
    let (new_layout, new_cipher) = l.payload(opened.data.size_bytes(), &u.volume_key)?;
    if new_layout != layout {
        return Err(crate::Error::corrupt(format!("the new header maps {new_layout:?}, the source is {layout:?}")));
    }
    // One pass over the image: the plaintext through both, compared byte for byte in parallel;
    // one SHA-256 (of the source plaintext) on its own core.
    let so = StreamOptions { chunk_bytes: opts.chunk_bytes, ..StreamOptions::default() };
    let sha_src = apply::compare_plaintext(
        &*opened.data,
        &*src_cipher,
        layout,
        apply::Other::Cipher(&*new_cipher),
        true,
        so,
        run,
    )
    .map_err(|e| match e.kind() {
        crate::ErrorKind::Corrupt => {
            e.context(format!("verification failed; {} was not created", out.final_path.display()))
        }
        _ => e,
    })?
    .ok_or_else(|| crate::Error::invalid("BUG: no digest"))?;
    let sha_new = sha_src;
    add_provenance_and_rename(file, &out, &l, &key, &info, opened, &sha_src)?;
    let notes = vec![crate::finding::Finding::info(
        "migrate.header-beside-image",
        format!(
            "the image itself was not changed; keep {} with it (without the header the data opens only with the old passphrase)",
            out.final_path.display()
        ),
    )];
    Ok(Outcome {
        mode: super::MigrationMode::DetachedHeader,
        output: Some(out.final_path.clone()),
        format: Some(Format::Luks2),
        uuid: Some(written.uuid),
        source: info,
        source_sha256: Some(sha_src),
        migrated_sha256: Some(sha_new),
        kdf: Some(kdf.describe()),
        resumed_from_bytes: None,
        cryptsetup: Some(open_command(&opened.path, Some(&out.final_path))),
        notes,
    })
}

/// The last phase of [`detached_header`], once the payload is verified: add the provenance
/// token (with the source plaintext's SHA-256) to the header in `out.partial`, flush it, check
/// that it still reads back cleanly and opens with the legacy `key` by digest, and rename it to
/// `out.final_path` (then sync the directory).
fn add_provenance_and_rename(
    file: std::fs::File,
    out: &OutputPaths,
    l: &luks::Luks,
    key: &Key,
    info: &plan::SourceInfo,
    opened: &Opened,
    sha_src: &[u8; 32],
) -> crate::Result<()> {
    let luks::Parsed::V2(l2) = &l.parsed else {
        return Err(crate::Error::corrupt("BUG: the new header is not LUKS2"));
    };
    let mut meta = l2.meta.clone();
    meta.tokens.insert("0".into(), plan::provenance_token(info, &source_path(opened), &hex(sha_src), &now_iso()));
    let bytes = write::luks2_rewrite(l2, &meta, l2.bin.seqid + 1)?;
    apply::write_at(&file, &out.partial, &bytes, 0)?;
    apply::sync(&file, &out.partial)?;
    let _ = crate::output::direct::drop_cached(&file);
    drop(file);
    let again = luks::read(&FileSource::open(&out.partial)?)?
        .ok_or_else(|| crate::Error::corrupt("the header does not read back"))?;
    if !again.check_volume_key(key) || !again.header.notes.is_empty() {
        return Err(crate::Error::corrupt("the header with provenance does not read back cleanly"));
    }
    std::fs::rename(&out.partial, &out.final_path).map_err(|e| {
        crate::Error::io(format!("renaming {} to {}", out.partial.display(), out.final_path.display()), e)
    })?;
    apply::sync_dir_of(&out.final_path)?;
    Ok(())
}

//! Entry points of the coverage-guided fuzz targets (`fuzz/`, cargo-fuzz on nightly) and of the
//! regression replay on stable (`testdata/fuzz/`): each takes arbitrary bytes and drives one
//! parser the way loopkit does. Any panic, hang or runaway allocation is a bug; `Err` results
//! are the expected outcome for garbage. Not part of the stable API.

use crate::detect::Secrets;
use crate::source::{ByteSource, MemSource};
use std::sync::Arc;

/// Bytes of file data read per file at most, and files visited at most, per input.
const READ_LIMIT: u64 = 1 << 20;
const MAX_FILES: usize = 2000;

/// A fuzz target: arbitrary bytes in, nothing out (only panics, hangs and allocations matter).
pub type Target = fn(&[u8]);

/// The fuzz targets by name (the names of `fuzz/fuzz_targets/*.rs` and `testdata/fuzz/*/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("luks_header", luks_header),
    ("luks2_json", luks2_json),
    ("dvdisaster_headers", dvdisaster_headers),
    ("ext", ext),
    ("iso9660", iso9660),
    ("loopaes_keyfile", loopaes_keyfile),
    ("fs_probe", fs_probe),
    ("open_verify", open_verify),
    ("repair", repair),
    ("rescue_map", rescue_map),
    ("damage_map", damage_map),
];

/// LUKS1/LUKS2 headers (both LUKS2 copies, JSON, keyslots): read, then unlock with a
/// passphrase under the default KDF caps (the caps keep hostile iteration counts bounded).
pub fn luks_header(data: &[u8]) {
    let src = MemSource::new(data.to_vec());
    let _ = crate::formats::luks::probe(&src);
    if let Ok(Some(l)) = crate::formats::luks::read(&src) {
        let policy = crate::formats::luks::KdfPolicy {
            max_pbkdf2_iterations: 2000,
            max_argon2_memory_kib: 1024,
            max_argon2_time: 2,
            ..Default::default()
        };
        let _ = l.unlock_with(&src, &crate::crypto::Passphrase::new(b"fuzz".to_vec()), &policy);
        let _ = l.payload(src.size_bytes(), &crate::crypto::Key::new(vec![7; 64]));
    }
}

/// The LUKS2 JSON metadata on its own.
pub fn luks2_json(data: &[u8]) {
    let _ = crate::formats::luks::json::Metadata::parse(data);
}

/// dvdisaster RS01/RS02/RS03 headers, CRC blocks, dead-sector markers, and the image scan.
pub fn dvdisaster_headers(data: &[u8]) {
    use crate::formats::dvdisaster::layout;
    let _ = layout::EccHeader::parse(data);
    let _ = layout::EccHeader::parse_unchecked(data);
    let _ = layout::CrcBlock::parse(data);
    let _ = layout::dead_sector(data, 0, None);
    let src: Arc<dyn ByteSource> = Arc::new(MemSource::new(data.to_vec()));
    let _ = crate::formats::dvdisaster::scan_image(&*src);
    let _ = crate::formats::dvdisaster::open_ecc_source(src, std::path::Path::new("fuzz.ecc"));
}

/// Walk a file system and read its files (bounded), as `manifest` and `extract` do.
fn walk_and_read(fs: &dyn crate::fs::FileSystem) {
    let interrupt = crate::progress::Interrupt::new();
    let mut found = Vec::new();
    let _ = crate::fs::tree::walk(fs, &interrupt, |f| {
        if found.len() < MAX_FILES {
            found.push(f.clone());
        }
    });
    for f in &found {
        match f.stat.file_type {
            crate::fs::FileType::File => {
                if let Ok(r) = fs.open(f.id) {
                    let _ = crate::fs::tree::read_all(&*r, READ_LIMIT);
                }
            }
            crate::fs::FileType::Symlink => {
                let _ = fs.readlink(f.id);
            }
            _ => {}
        }
    }
}

/// ext2/3/4: superblock, group descriptors, inodes, extent trees, block maps, directories,
/// htree, inline data, symlinks.
pub fn ext(data: &[u8]) {
    let src = MemSource::new(data.to_vec());
    if let Ok(fs) = crate::fs::ext::Ext::open(&src) {
        walk_and_read(&fs);
    }
}

/// ISO 9660 with Rock Ridge and Joliet.
pub fn iso9660(data: &[u8]) {
    let src = MemSource::new(data.to_vec());
    if let Ok(fs) = crate::fs::iso9660::Iso::open(&src) {
        walk_and_read(&fs);
    }
}

/// loop-AES key files (single-line, 64/65-line multi-key, OpenPGP detection).
pub fn loopaes_keyfile(data: &[u8]) {
    let _ = crate::formats::loopaes::is_openpgp(data);
    let kf = crate::formats::loopaes::KeyFile::parse(zeroize::Zeroizing::new(data.to_vec()), false);
    if kf.multi_key.is_some() {
        let d = crate::crypto::kdf::Derivation::Hash(crate::crypto::HashAlg::Sha256);
        let _ = crate::crypto::kdf::loopaes_multi(d, &kf.lines, 16);
    }
}

/// File-system probing: every probe, and the ext/ISO parsers at every strictness.
pub fn fs_probe(data: &[u8]) {
    use crate::fs::Strictness;
    let src = MemSource::new(data.to_vec());
    let _ = crate::fs::identify(&src);
    let _ = crate::detect::scan_plain(data);
    for s in [Strictness::Strict, Strictness::Lenient, Strictness::IvGarbled(0), Strictness::IvGarbled(16)] {
        let _ = crate::fs::ext::Superblock::parse_with(data, s);
        let _ = crate::fs::iso9660::vd::primary(data, s);
    }
    if let Ok(sb) = crate::fs::ext::Superblock::parse(data) {
        let _ = sb.descriptor_blocks().len();
        let _ = sb.group_desc(0, data);
    }
}

/// The whole open → verify path over an image in memory, with a passphrase (detection, LUKS,
/// dvdisaster, file-system checks). The key search is pinned to AES keys hashed with SHA-256
/// (cryptoloop and loop-AES, every key size, mode and IV offset): trying all six block ciphers
/// and twelve derivations per input makes each execution 10-20× slower (the ciphers' and
/// hashes' own code, not loopkit's) while the parsing it reaches is the same — what any other
/// key decrypts goes through the same probes and readers.
pub fn open_verify(data: &[u8]) {
    let src: Arc<dyn ByteSource> = Arc::new(MemSource::new(data.to_vec()));
    let secrets = Secrets { passphrase: Some(crate::crypto::Passphrase::new(b"fuzz".to_vec())), key_file: None };
    let mut opts = crate::image::OpenOptions::default();
    opts.kdf.max_pbkdf2_iterations = 2000;
    opts.kdf.max_argon2_memory_kib = 1024;
    opts.kdf.max_argon2_time = 2;
    opts.constraints.scan_bytes = Some(64 << 10);
    opts.constraints.cipher = Some(crate::crypto::block::CipherKind::Aes);
    opts.constraints.derivation = Some(crate::crypto::kdf::Derivation::Hash(crate::crypto::HashAlg::Sha256));
    let hints = crate::image::SourceHints { name: "fuzz.img".into(), ..Default::default() };
    if let Ok(opened) = crate::image::open_source(src, &secrets, &opts, &hints) {
        let vo = crate::verify::Options { workers: 1, ..Default::default() };
        let _ = crate::verify::verify(
            &opened,
            vo,
            &mut crate::progress::Run::new(&mut crate::progress::NoProgress, &crate::progress::Interrupt::new()),
        );
    }
}

/// `repair` with an `.ecc` file (RS01, or RS03 in a separate file): the input is the `.ecc`
/// file, and the image is the input without its first 4 KiB (the header), so the CRC table and
/// the image share bytes and a few inputs reach the decoder. Both are written to a per-process
/// scratch directory (repair works on files); the repaired copy is removed after each input.
pub fn repair(data: &[u8]) {
    use crate::formats::dvdisaster;
    let dir = std::env::temp_dir().join(format!("loopkit-fuzz-repair-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let (ecc_path, img_path, out) = (dir.join("fuzz.ecc"), dir.join("fuzz.img"), dir.join("out.img"));
    let image = data.get(dvdisaster::layout::HEADER_BYTES..).unwrap_or(&[]);
    if std::fs::write(&ecc_path, data).is_err() || std::fs::write(&img_path, image).is_err() {
        return;
    }
    let _ = std::fs::remove_file(&out);
    if let Ok(ecc) = dvdisaster::open_ecc_file(&ecc_path) {
        let opts = dvdisaster::repair::Options { force: true, truncate: true, ecc_out: None };
        let _ = dvdisaster::repair::repair(
            &ecc,
            &img_path,
            &out,
            &opts,
            &mut crate::progress::Run::new(&mut crate::progress::NoProgress, &crate::progress::Interrupt::new()),
        );
    }
    let _ = std::fs::remove_file(&out);
}

/// A GNU ddrescue map file (`loopkit rescue --resume`): parse against a source size taken from
/// the first 8 bytes; whatever parses must render and parse back to the same map, and setting
/// block states (driven by the input's bytes) keeps the map contiguous and merged.
pub fn rescue_map(data: &[u8]) {
    use crate::rescue::mapfile::{RescueMap, Status};
    let (size, text) = match data.split_first_chunk::<8>() {
        Some((s, rest)) => (u64::from_le_bytes(*s) >> 16, rest),
        None => return,
    };
    let text = String::from_utf8_lossy(text);
    let Ok(mut map) = RescueMap::parse(&text, size) else { return };
    let again = RescueMap::parse(&map.render(&[]), size).expect("a parsed map renders to a parsable map");
    assert_eq!(again, map, "render/parse round trip");
    for w in data.chunks_exact(9).take(64) {
        let pos = u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        let len = u64::from(u32::from_le_bytes([w[4], w[5], w[6], w[7]]));
        map.set(pos, len, Status::ALL[usize::from(w[8]) % Status::ALL.len()]);
    }
    let mut next = 0;
    for b in map.blocks() {
        assert!(b.pos == next && b.size > 0, "contiguous");
        next = b.end();
    }
    assert_eq!(next, size, "covers the source");
    assert_eq!(map.bytes_in(Status::Finished) + map.missing_bytes(), size);
}

/// The damage mapping: the input is 64 bytes of damage (8 × (sector: u32 LE, count: u8,
/// status: u8, 2 unused)) followed by an unencrypted image (ext2/3/4 or ISO9660 are mapped
/// file by file). Every file's ranges must be sorted, disjoint, inside the file, and lost and
/// repairable ranges must not overlap.
pub fn damage_map(data: &[u8]) {
    use crate::damage::{BadRange, Status};
    let Some((head, image)) = data.split_first_chunk::<64>() else { return };
    let bad: Vec<BadRange> = head
        .chunks_exact(8)
        .map(|w| {
            let sector = u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]])) % 4096;
            let count = u64::from(w[4] % 16) + 1;
            let status = if w[5] & 1 == 0 { Status::Repairable } else { Status::Lost };
            BadRange { range: sector * 512..(sector + count) * 512, status }
        })
        .collect();
    let src: Arc<dyn ByteSource> = Arc::new(MemSource::new(image.to_vec()));
    let secrets = Secrets { passphrase: None, key_file: None };
    let opts = crate::image::OpenOptions { unencrypted: true, ..Default::default() };
    let hints = crate::image::SourceHints { name: "fuzz.img".into(), ..Default::default() };
    let Ok(opened) = crate::image::open_source(src, &secrets, &opts, &hints) else { return };
    let Ok(Some(d)) = crate::damage::assess(&opened, &bad, &crate::progress::Interrupt::new()) else { return };
    for f in &d.files {
        for list in [&f.lost, &f.repairable] {
            for w in list.windows(2) {
                assert!(w[0].end < w[1].start, "sorted and disjoint: {list:?}");
            }
            for r in list.iter() {
                assert!(r.start < r.end && r.end <= f.size_bytes, "inside the file: {r:?} of {}", f.size_bytes);
            }
        }
        for r in &f.lost {
            assert!(!f.repairable.iter().any(|x| x.start < r.end && x.end > r.start), "lost and repairable overlap");
        }
    }
    let _ = d.summary();
}

#[cfg(test)]
mod tests {
    /// Every input under `testdata/fuzz/TARGET/` (crashes found by fuzzing, and a few seeds) runs
    /// through its target on stable Rust, so a fixed bug stays fixed.
    #[test]
    fn replay_regressions() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fuzz");
        let mut ran = 0;
        for (name, target) in super::TARGETS {
            let Ok(dir) = std::fs::read_dir(root.join(name)) else { continue };
            for e in dir.flatten() {
                let data = std::fs::read(e.path()).unwrap();
                target(&data);
                ran += 1;
            }
        }
        // Garbage of every length up to a sector through every target, too.
        for (_, target) in super::TARGETS {
            for n in [0usize, 1, 7, 512, 2048] {
                target(&vec![0xA5; n]);
            }
        }
        assert!(ran > 0, "no regression inputs under {}", root.display());
    }
}

//! BagIt 1.0 (RFC 8493) packaging of an extracted tree: the tag files around `BAG/data/`.
//!
//! `extract --bag` restores the files into `BAG/data/` (the payload) and then calls [`write`],
//! which hashes every payload file (read back from the disk, so the manifest is what was
//! written) and writes, each atomically (temporary name, fsync, read back, rename):
//! `manifest-sha256.txt`, `bag-info.txt` (the source image, its SHA-256, the decryption scheme,
//! the file system, `Payload-Oxum`), `bagit.txt` and last `tagmanifest-sha256.txt`.
//!
//! BagIt payloads hold files and directories only: symlinks are not created in a bag; each is
//! listed (path and target) in the tag file `symlinks.txt`, which the tag manifest covers.
//! Names are written as UTF-8 with CR and LF percent-encoded (RFC 8493 §2.1.3; `%` as far as
//! bagit.py reads it, see [`encode_path`]); a name that is not UTF-8 cannot be written into a
//! manifest, so such a bag is refused.

use sha2::{Digest, Sha256};
use std::path::Path;

/// What [`write`] records in `bag-info.txt` about where the payload came from.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// The image path as given.
    pub image: String,
    /// SHA-256 of the whole image file (hex).
    pub image_sha256: String,
    /// Size of the image file in bytes.
    pub image_bytes: u64,
    /// The decryption scheme (`plain`, `cryptoloop`, `loop-aes`, `luks2`…).
    pub scheme: String,
    /// The cipher, when encrypted (dm-crypt spelling).
    pub cipher: Option<String>,
    /// The file system type (`ext4`, `iso9660`…).
    pub file_system: Option<String>,
    /// The software that made the bag (`loopkit 0.1.0`).
    pub agent: String,
    /// The bagging date (`YYYY-MM-DD`).
    pub date: String,
}

/// What [`write`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Payload files listed in the manifest.
    pub files: u64,
    /// Their bytes (`Payload-Oxum`'s first number).
    pub bytes: u64,
    /// Symlinks listed in `symlinks.txt` instead of being created.
    pub symlinks: u64,
}

/// RFC 8493 §2.1.3: CR and LF in a file path are percent-encoded in manifests, and so is `%`.
/// bagit.py (1.9, the reference validator) decodes only `%0D` and `%0A` and reads `%25` as is,
/// so a `%` is written as `%25` only where leaving it would be misread — when the name holds a
/// `%0A`, `%0D` or `%25` of its own (any case); `50% off` stays `50% off`, which both read alike.
fn encode_path(p: &str) -> String {
    let upper = p.to_ascii_uppercase();
    let ambiguous = ["%0A", "%0D", "%25"].iter().any(|e| upper.contains(e));
    let p = if ambiguous { p.replace('%', "%25") } else { p.to_string() };
    p.replace('\r', "%0D").replace('\n', "%0A")
}

/// A tag value on one line (bag-info values cannot hold line breaks).
fn one_line(v: &str) -> String {
    encode_path(v)
}

/// The path of `p` below `root` as BagIt writes it (`/`-separated, UTF-8).
fn relative(root: &Path, p: &Path) -> crate::Result<String> {
    let rel =
        p.strip_prefix(root).map_err(|_| crate::Error::invalid(format!("BUG: {} is outside the bag", p.display())))?;
    rel.to_str().map(str::to_owned).ok_or_else(|| {
        crate::Error::invalid(format!(
            "{}: the name is not UTF-8, which a BagIt manifest cannot hold; extract without --bag",
            p.display()
        ))
    })
}

/// Write the tag files of the bag at `bag` whose payload is already in `bag/data/`; `symlinks`
/// are the `(path below data/, target)` pairs left out of the payload.
///
/// # Errors
/// `Io` when a payload file cannot be read or a tag file cannot be written; `Invalid` for a
/// payload name that is not UTF-8 or an entry that is neither a file nor a directory.
pub fn write(
    bag: &Path,
    source: &Source,
    symlinks: &[(Vec<u8>, Vec<u8>)],
    force: bool,
    run: &mut crate::progress::Run<'_>,
) -> crate::Result<Summary> {
    let data = bag.join("data");
    let mut manifest = String::new();
    let mut sum = Summary::default();
    let walk = walkdir::WalkDir::new(&data).follow_links(false).sort_by_file_name();
    for entry in walk {
        let entry = entry.map_err(|e| {
            crate::Error::io(format!("listing {}", data.display()), std::io::Error::other(e.to_string()))
        })?;
        let ft = entry.file_type();
        if ft.is_dir() {
            continue;
        }
        if !ft.is_file() {
            return Err(crate::Error::invalid(format!(
                "{}: not a regular file or directory; a BagIt payload holds only those",
                entry.path().display()
            )));
        }
        let rel = relative(bag, entry.path())?;
        let digest = crate::bytes::hex(&crate::manifest::hash_file(entry.path(), run)?);
        let n = entry
            .metadata()
            .map_err(|e| {
                crate::Error::io(format!("reading {}", entry.path().display()), std::io::Error::other(e.to_string()))
            })?
            .len();
        manifest.push_str(&format!("{digest}  {}\n", encode_path(&rel)));
        sum.files += 1;
        sum.bytes += n;
    }
    let mut links = String::new();
    for (path, target) in symlinks {
        let (Ok(p), Ok(t)) = (std::str::from_utf8(path), std::str::from_utf8(target)) else {
            return Err(crate::Error::invalid(format!(
                "symlink {}: its name or target is not UTF-8, which a BagIt tag file cannot hold",
                String::from_utf8_lossy(path)
            )));
        };
        links.push_str(&format!("data/{}\t{}\n", encode_path(p), encode_path(t)));
        sum.symlinks += 1;
    }
    let mut info = String::new();
    info.push_str(&format!("Bagging-Date: {}\n", one_line(&source.date)));
    info.push_str(&format!("Bag-Software-Agent: {}\n", one_line(&source.agent)));
    info.push_str(&format!("Payload-Oxum: {}.{}\n", sum.bytes, sum.files));
    info.push_str(&format!("External-Description: files extracted from the disk image {}\n", one_line(&source.image)));
    info.push_str(&format!("Source-Image: {}\n", one_line(&source.image)));
    info.push_str(&format!("Source-Image-Bytes: {}\n", source.image_bytes));
    info.push_str(&format!("Source-Image-SHA256: {}\n", source.image_sha256));
    info.push_str(&format!("Decryption-Scheme: {}\n", one_line(&source.scheme)));
    if let Some(c) = &source.cipher {
        info.push_str(&format!("Cipher: {}\n", one_line(c)));
    }
    if let Some(f) = &source.file_system {
        info.push_str(&format!("File-System: {}\n", one_line(f)));
    }
    if sum.symlinks > 0 {
        info.push_str(&format!("Symlinks-Not-In-Payload: {} (listed in symlinks.txt)\n", sum.symlinks));
    }
    let declaration = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n";
    let mut tags: Vec<(&str, String)> = vec![("manifest-sha256.txt", manifest), ("bag-info.txt", info)];
    if !links.is_empty() {
        tags.push(("symlinks.txt", links));
    }
    tags.push(("bagit.txt", declaration.to_string()));
    let mut tagmanifest = String::new();
    for (name, text) in &tags {
        crate::output::write_file_atomically(&bag.join(name), text.as_bytes(), force, 0o644, &[])?;
        tagmanifest.push_str(&format!("{}  {name}\n", crate::bytes::hex(&Sha256::digest(text.as_bytes()))));
    }
    crate::output::write_file_atomically(
        &bag.join("tagmanifest-sha256.txt"),
        tagmanifest.as_bytes(),
        force,
        0o644,
        &[],
    )?;
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_percent_encoded() {
        assert_eq!(encode_path("a%b\r\nc"), "a%b%0D%0Ac");
        assert_eq!(encode_path("literal%0a and %"), "literal%250a and %25");
        assert_eq!(encode_path("plain/name.txt"), "plain/name.txt");
    }
}

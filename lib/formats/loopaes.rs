//! loop-AES key files: the cleartext (or gpg-encrypted) file whose lines become one key
//! (single-key), 64 keys (multi-key v2) or 65 (v3). Parsed the way loop-AES's losetup did
//! (`get_FD_pass`): lines end at `\n` or NUL, `\r` is kept, at most 4096 bytes a line, reading
//! stops at the first line shorter than 20 bytes, and at most 66 lines are read.

use crate::crypto::Passphrase;
use crate::crypto::kdf::MultiKey;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use zeroize::Zeroizing;

/// Largest key file read (real ones are about 4 KiB).
pub const KEYFILE_MAX_BYTES: u64 = 1 << 20;
/// loop-AES's per-line limit.
const LINE_MAX: usize = 4096;
/// loop-AES stops at the first line shorter than this (`LOOP_PASSWORD_MIN_LENGTH`).
const LINE_MIN: usize = 20;

/// A parsed key file.
#[derive(Clone)]
pub struct KeyFile {
    /// The whole (decrypted) contents, for raw-key use.
    pub raw: Zeroizing<Vec<u8>>,
    /// The lines loop-AES would use: 65 (v3), 64 (v2) or 1 (single-key passphrase).
    pub lines: Vec<Zeroizing<Vec<u8>>>,
    /// Multi-key version, if 64/65 lines.
    pub multi_key: Option<MultiKey>,
    /// Whether it was decrypted with gpg.
    pub from_gpg: bool,
    /// Where it was read from (for advice such as the cryptsetup command line).
    pub path: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyFile(<{} lines redacted>, {:?}, gpg: {})", self.lines.len(), self.multi_key, self.from_gpg)
    }
}

impl KeyFile {
    /// Parse cleartext key-file contents.
    pub fn parse(raw: Zeroizing<Vec<u8>>, from_gpg: bool) -> KeyFile {
        let mut lines: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut rest: &[u8] = &raw;
        while lines.len() < 66 && !rest.is_empty() {
            let end = rest.iter().position(|&b| b == b'\n' || b == 0).unwrap_or(rest.len());
            let line = &rest[..end.min(LINE_MAX)];
            rest = if end < rest.len() { &rest[end + 1..] } else { &[] };
            let short = line.len() < LINE_MIN;
            lines.push(Zeroizing::new(line.to_vec()));
            if short {
                break;
            }
        }
        let full = lines.iter().take_while(|l| l.len() >= LINE_MIN).count();
        let multi_key = match full {
            n if n >= 65 => Some(MultiKey::V3),
            64 => Some(MultiKey::V2),
            _ => None,
        };
        match multi_key {
            Some(MultiKey::V3) => lines.truncate(65),
            Some(MultiKey::V2) => lines.truncate(64),
            None => lines.truncate(1),
        }
        KeyFile { raw, lines, multi_key, from_gpg, path: None }
    }

    /// Read `path` (at most [`KEYFILE_MAX_BYTES`]); an OpenPGP-encrypted file is decrypted with
    /// the `gpg` program using `passphrase`.
    ///
    /// # Errors
    /// `Io` when unreadable; `InvalidInput` when too large; `Unsupported` for a gpg file without
    /// gpg installed or without a passphrase; `WrongKey` when gpg refuses the passphrase.
    pub fn read(path: &Path, passphrase: Option<&Passphrase>) -> crate::Result<KeyFile> {
        let what = || format!("cannot read key file {}", path.display());
        let f = std::fs::File::open(path).map_err(|e| crate::Error::io(what(), e))?;
        // Sized once (from the file's size, within the bound): no reallocation leaves key copies.
        let cap = f.metadata().map_or(0, |m| m.len()).min(KEYFILE_MAX_BYTES + 1) as usize + 1;
        let mut raw = Zeroizing::new(Vec::with_capacity(cap));
        f.take(KEYFILE_MAX_BYTES + 1).read_to_end(&mut raw).map_err(|e| crate::Error::io(what(), e))?;
        if raw.len() as u64 > KEYFILE_MAX_BYTES {
            return Err(crate::Error::invalid(format!(
                "key file {} is larger than {} bytes; loop-AES key files are about 4 KiB",
                path.display(),
                KEYFILE_MAX_BYTES
            )));
        }
        if is_openpgp(&raw) {
            let pass = passphrase.ok_or_else(|| {
                crate::Error::unsupported(format!(
                    "key file {} is gpg-encrypted: give its passphrase with --passphrase-file/--passphrase-fd \
                     (or decrypt it first with `gpg --decrypt`)",
                    path.display()
                ))
            })?;
            let clear = gpg_decrypt(path, pass)?;
            return Ok(KeyFile { path: Some(path.to_path_buf()), ..KeyFile::parse(clear, true) });
        }
        Ok(KeyFile { path: Some(path.to_path_buf()), ..KeyFile::parse(raw, false) })
    }
}

/// True when `data` looks like an OpenPGP message (ASCII armour, or a binary packet tag of a
/// symmetric- or public-key encrypted session key).
pub fn is_openpgp(data: &[u8]) -> bool {
    let head = &data[..data.len().min(100)];
    if head.windows(25).any(|w| w == b"-----BEGIN PGP MESSAGE---") {
        return true;
    }
    match data.first() {
        // old format: 10tttt ll ; new format: 11tttttt
        Some(&b) if b & 0xC0 == 0x80 => matches!((b >> 2) & 0x0F, 1 | 3),
        Some(&b) if b & 0xC0 == 0xC0 => matches!(b & 0x3F, 1 | 3),
        _ => false,
    }
}

fn gpg_decrypt(path: &Path, pass: &Passphrase) -> crate::Result<Zeroizing<Vec<u8>>> {
    let home = std::env::temp_dir().join(format!("loopkit-gpg-{}-{}", std::process::id(), unique()));
    std::fs::create_dir(&home).map_err(|e| crate::Error::io("cannot create a gpg home directory", e))?;
    let _cleanup = RemoveDir(home.clone());
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700));
    }
    let mut child = Command::new("gpg")
        .arg("--homedir")
        .arg(&home)
        .args([
            "--batch",
            "--quiet",
            "--no-tty",
            "--no-options",
            // The agent must not keep the symmetric passphrase after this one decryption.
            "--no-symkey-cache",
            "--pinentry-mode",
            "loopback",
            "--passphrase-fd",
            "0",
            "--decrypt",
        ])
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                crate::Error::unsupported(format!(
                    "key file {} is gpg-encrypted and the gpg program is not installed (apt-get install gpg)",
                    path.display()
                ))
            } else {
                crate::Error::io("cannot run gpg", e)
            }
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // Sized once: a growing Vec would free a copy of the passphrase without zeroizing it.
        let mut line = Zeroizing::new(Vec::with_capacity(pass.bytes().len() + 1));
        line.extend_from_slice(pass.bytes());
        line.push(b'\n');
        let _ = stdin.write_all(&line);
    }
    // Sized once for the largest key file read, so no reallocation leaves key copies behind.
    let mut out = Zeroizing::new(Vec::with_capacity(KEYFILE_MAX_BYTES as usize + 1));
    if let Some(stdout) = child.stdout.take() {
        stdout
            .take(KEYFILE_MAX_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| crate::Error::io("reading gpg's output", e))?;
    }
    let mut err = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        let _ = stderr.take(64 * 1024).read_to_end(&mut err);
    }
    let status = child.wait().map_err(|e| crate::Error::io("waiting for gpg", e))?;
    if !status.success() {
        let msg = String::from_utf8_lossy(&err);
        let kind =
            if msg.contains("Bad session key") || msg.contains("bad passphrase") || msg.contains("decryption failed") {
                crate::ErrorKind::WrongKey
            } else {
                crate::ErrorKind::Io
            };
        return Err(crate::Error::new(
            kind,
            format!("gpg could not decrypt key file {}: {}", path.display(), msg.trim()),
        ));
    }
    if out.len() as u64 > KEYFILE_MAX_BYTES {
        return Err(crate::Error::invalid("decrypted key file is larger than 1 MiB"));
    }
    Ok(out)
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

struct RemoveDir(std::path::PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kf(s: &str) -> KeyFile {
        KeyFile::parse(Zeroizing::new(s.as_bytes().to_vec()), false)
    }

    #[test]
    fn line_counting() {
        let line = "A".repeat(60);
        let v3: String = (0..66).map(|_| format!("{line}\n")).collect();
        assert_eq!(kf(&v3).multi_key, Some(MultiKey::V3));
        assert_eq!(kf(&v3).lines.len(), 65);
        let v2: String = (0..64).map(|_| format!("{line}\n")).collect();
        assert_eq!(kf(&v2).multi_key, Some(MultiKey::V2));
        let single = kf("short passphrase\n");
        assert_eq!(single.multi_key, None);
        assert_eq!(&single.lines[0][..], b"short passphrase");
        let mut v2short: String = (0..64).map(|_| format!("{line}\n")).collect();
        v2short.push_str("tiny\n");
        assert_eq!(kf(&v2short).multi_key, Some(MultiKey::V2));
        let crlf = kf(&format!("{line}\r\n"));
        assert_eq!(crlf.lines[0].len(), 61, "loop-AES keeps \\r");
        assert!(kf("").lines.is_empty());
    }

    #[test]
    fn openpgp_detection() {
        assert!(is_openpgp(b"-----BEGIN PGP MESSAGE-----\nVersion: GnuPG v1.0.6\n"));
        assert!(is_openpgp(&[0x8c, 0x0d, 0x04]));
        assert!(!is_openpgp(b"jYokrQcBqZJ4KERiKxyxBoiJypMoeqjbcoR/jMcjDvgOJj/odg/yjqtrXCPi\n"));
    }
}

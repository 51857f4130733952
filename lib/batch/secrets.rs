//! `--secrets FILE`: which passphrase file or key file opens which images. Never secrets
//! inline: every line names a pattern and a *file* holding the secret.
//!
//! ```text
//! # PATTERN                 KIND              FILE (relative to this file's directory)
//! /archive/2008/*.img       passphrase-file   pass-2008.txt
//! disc-0*.img               key-file          keys/disc0.gpg
//! disc-0*.img               passphrase-file   keys/gpg-pass.txt
//! ```
//!
//! A pattern with a `/` matches the image path, otherwise its file name; the first line whose
//! pattern matches an image decides (a `key-file` and a `passphrase-file` line with the same
//! pattern combine: the passphrase then decrypts a gpg key file). Images no line matches use
//! `--passphrase-file`/`--key-file`, if given.

use crate::crypto::Passphrase;
use crate::detect::Secrets;
use crate::formats::loopaes::KeyFile;
use std::path::{Path, PathBuf};

/// One line of a secrets file.
#[derive(Debug, Clone)]
struct Rule {
    pattern: glob::Pattern,
    passphrase_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

/// A parsed `--secrets` file.
#[derive(Debug, Clone, Default)]
pub struct SecretMap {
    rules: Vec<Rule>,
}

impl SecretMap {
    /// Read and parse `path`.
    ///
    /// # Errors
    /// `Io` when it cannot be read; `InvalidInput` naming the line that is not
    /// `PATTERN passphrase-file|key-file FILE`.
    pub fn read(path: &Path) -> crate::Result<SecretMap> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::Error::io(format!("cannot read secrets file {}", path.display()), e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut rules: Vec<Rule> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| {
                crate::Error::invalid(format!(
                    "{}:{}: {why} (expected: PATTERN passphrase-file|key-file FILE)",
                    path.display(),
                    n + 1
                ))
            };
            let mut parts = line.split_whitespace();
            let (Some(pat), Some(kind), Some(file), None) = (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("not three fields"));
            };
            let pattern = glob::Pattern::new(pat).map_err(|e| bad(&format!("bad pattern: {e}")))?;
            let file = base.join(file);
            let rule = match rules.iter_mut().find(|r| r.pattern.as_str() == pat) {
                Some(r) => r,
                None => {
                    rules.push(Rule { pattern, passphrase_file: None, key_file: None });
                    let last = rules.len() - 1;
                    &mut rules[last]
                }
            };
            let slot = match kind {
                "passphrase-file" => &mut rule.passphrase_file,
                "key-file" => &mut rule.key_file,
                _ => return Err(bad(&format!("unknown kind {kind:?}"))),
            };
            if slot.is_some() {
                return Err(bad(&format!("a second {kind} for the same pattern")));
            }
            *slot = Some(file);
        }
        Ok(SecretMap { rules })
    }

    /// The secrets for `image`: the first matching rule's files, read now; `None` when no rule
    /// matches.
    ///
    /// # Errors
    /// When a named file cannot be read (its path is in the message; never its contents).
    pub fn secrets_for(&self, image: &Path) -> crate::Result<Option<Secrets>> {
        let Some(r) = self.rules.iter().find(|r| super::walk::matches(&r.pattern, image)) else {
            return Ok(None);
        };
        let passphrase = r.passphrase_file.as_deref().map(read_passphrase_file).transpose()?;
        let key_file = r.key_file.as_deref().map(|k| KeyFile::read(k, passphrase.as_ref())).transpose()?;
        Ok(Some(Secrets { passphrase, key_file }))
    }
}

/// A passphrase from the first line of a file (bounded read; the newline is not part of it).
///
/// # Errors
/// `Io` naming the file.
pub fn read_passphrase_file(path: &Path) -> crate::Result<Passphrase> {
    let f = std::fs::File::open(path)
        .map_err(|e| crate::Error::io(format!("cannot open passphrase file {}", path.display()), e))?;
    Passphrase::read_bounded(f, &path.display().to_string())
}

/// The length cryptsetup advice needs (never the secret itself): the passphrase's, unless it
/// only decrypted a gpg key file, else the key file's first line.
pub fn advice_len(s: &Secrets) -> Option<usize> {
    s.passphrase
        .as_ref()
        .filter(|_| !s.key_file.as_ref().is_some_and(|k| k.from_gpg))
        .map(|p| p.c_str().len())
        .or_else(|| s.key_file.as_ref().and_then(|k| k.lines.first()).map(|l| l.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_wins_and_files_are_relative() {
        let dir = std::env::temp_dir().join(format!("loopkit-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.txt"), b"alpha\n").unwrap();
        std::fs::write(dir.join("b.txt"), b"beta\n").unwrap();
        std::fs::write(dir.join("map"), "# c\n/x/*.img passphrase-file a.txt\n*.img passphrase-file b.txt\n").unwrap();
        let m = SecretMap::read(&dir.join("map")).unwrap();
        let a = m.secrets_for(Path::new("/x/1.img")).unwrap().unwrap();
        assert_eq!(a.passphrase.unwrap().bytes(), b"alpha");
        let b = m.secrets_for(Path::new("/y/2.img")).unwrap().unwrap();
        assert_eq!(b.passphrase.unwrap().bytes(), b"beta");
        assert!(m.secrets_for(Path::new("/y/2.iso")).unwrap().is_none());
        std::fs::write(dir.join("bad"), "*.img secret hunter2\n").unwrap();
        assert!(SecretMap::read(&dir.join("bad")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Parameters of a headerless legacy encrypted loop image (kernel cryptoloop or loop-AES), how
//! to build its sector cipher, and the `cryptsetup open` command line that maps the same bytes
//! on a current Linux (`docs/formats/cryptoloop.md`, `docs/formats/loop-aes.md`).
//!
//! Sector `k` of the payload is stored at file byte `offset_bytes + 512·k` and decrypted with IV
//! sector `iv_offset_sectors + k` (cryptsetup `--offset`/`--skip` semantics).

use super::cryptsetup::{DeviceType, KeySource, OpenCommand};
use crate::crypto::block::CipherKind;
use crate::crypto::cbc::{CbcSectors, EcbSectors, IvScheme};
use crate::crypto::kdf::{Derivation, MultiKey, MultiKeys};
use crate::crypto::lmk::LmkSectors;
use crate::crypto::{HashAlg, Key, SectorCipher};
use std::fmt;
use std::str::FromStr;

/// Which legacy system wrote the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Kernel cryptoloop (`losetup -e aes` with util-linux, Debian, or loop-AES userland on a
    /// stock kernel). JSON `cryptoloop`.
    Cryptoloop,
    /// Jari Ruusu's loop-AES kernel module (or aespipe). JSON `loop-aes`.
    LoopAes,
    /// SUSE's `loop_fish2` module (SuSE Linux before 9.3, `twofish160`): Twofish-CBC with a
    /// constant (all-zero) IV per 512-byte sector. JSON `loop-fish2`.
    LoopFish2,
}

impl Scheme {
    /// JSON / CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Cryptoloop => "cryptoloop",
            Scheme::LoopAes => "loop-aes",
            Scheme::LoopFish2 => "loop-fish2",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheme {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cryptoloop" => Ok(Scheme::Cryptoloop),
            "loop-aes" | "loopaes" => Ok(Scheme::LoopAes),
            "loop-fish2" | "loop_fish2" | "fish2" => Ok(Scheme::LoopFish2),
            _ => Err(crate::Error::invalid(format!("unknown scheme {s:?} (cryptoloop, loop-aes, loop-fish2, plain)"))),
        }
    }
}

/// The per-sector cipher mode (the block cipher is [`Params::cipher`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// CBC, fresh IV per 512-byte sector.
    Cbc(IvScheme),
    /// ECB (cryptoloop `aes-ecb`, `twofish-ecb`…).
    Ecb,
    /// loop-AES multi-key (64 keys, MD5 IV).
    Lmk,
}

impl Mode {
    /// dm-crypt spelling with `cipher` (`aes-cbc-plain`, `twofish-cbc-null`, `aes-ecb`,
    /// `aes-cbc-lmk`).
    pub fn dm_name(self, cipher: CipherKind) -> String {
        match self {
            Mode::Cbc(iv) => format!("{cipher}-cbc-{iv}"),
            Mode::Ecb => format!("{cipher}-ecb"),
            Mode::Lmk => format!("{cipher}-cbc-lmk"),
        }
    }
}

/// A legacy image's cipher as the user names it (`--cipher`): the block cipher and the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LegacyCipher {
    /// The block cipher.
    pub cipher: CipherKind,
    /// Mode and IV scheme.
    pub mode: Mode,
}

impl fmt::Display for LegacyCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.mode.dm_name(self.cipher))
    }
}

impl FromStr for LegacyCipher {
    type Err = crate::Error;
    /// Accepts dm-crypt spellings and cryptoloop names: a bare cipher (`aes`, `twofish`) and
    /// `CIPHER-cbc` mean CBC with the `plain` IV (the kernel's default); `CIPHER-cbc-plain64`,
    /// `CIPHER-cbc-null`, `CIPHER-ecb`, `cbc(CIPHER)`, `ecb(CIPHER)`; `aes-cbc-lmk` (also
    /// `aes:64-cbc-lmk`) for loop-AES multi-key.
    fn from_str(s: &str) -> crate::Result<Self> {
        let l = s.to_ascii_lowercase();
        let bad = || {
            crate::Error::unsupported(format!(
                "cipher {s:?} is not supported (CIPHER-cbc-plain, CIPHER-cbc-plain64, CIPHER-cbc-null, CIPHER-ecb with \
                 CIPHER one of aes, twofish, serpent, blowfish, cast5, des3_ede; aes-cbc-lmk)"
            ))
        };
        // Kernel template spelling: cbc(aes), ecb(twofish).
        if let Some(inner) = l.strip_suffix(')') {
            let (m, c) = inner.split_once('(').ok_or_else(bad)?;
            let cipher: CipherKind = c.parse().map_err(|_| bad())?;
            return match m {
                "cbc" => Ok(LegacyCipher { cipher, mode: Mode::Cbc(IvScheme::Plain) }),
                "ecb" => Ok(LegacyCipher { cipher, mode: Mode::Ecb }),
                _ => Err(bad()),
            };
        }
        let mut parts = l.splitn(3, '-');
        let head = parts.next().unwrap_or("");
        let (cname, multi) = match head.split_once(':') {
            Some((c, "64")) => (c, true),
            Some(_) => return Err(bad()),
            None => (head, false),
        };
        let cipher: CipherKind = cname.parse().map_err(|_| bad())?;
        let mode = match (parts.next(), parts.next()) {
            (None | Some(""), None) if !multi => Mode::Cbc(IvScheme::Plain),
            (Some("cbc"), None) if !multi => Mode::Cbc(IvScheme::Plain),
            (Some("ecb"), None) if !multi => Mode::Ecb,
            (Some("cbc"), Some("lmk")) => Mode::Lmk,
            (Some("cbc"), Some(iv)) if !multi => match iv.parse::<IvScheme>() {
                Ok(iv @ (IvScheme::Plain | IvScheme::Plain64 | IvScheme::Null)) => Mode::Cbc(iv),
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        };
        if mode == Mode::Lmk && cipher != CipherKind::Aes {
            return Err(crate::Error::unsupported(format!(
                "cipher {s:?}: loopkit reads loop-AES multi-key (lmk) images with AES only"
            )));
        }
        Ok(LegacyCipher { cipher, mode })
    }
}

impl FromStr for Mode {
    type Err = crate::Error;
    /// The mode of a [`LegacyCipher`] spelling (the cipher name is checked, then dropped).
    fn from_str(s: &str) -> crate::Result<Self> {
        s.parse::<LegacyCipher>().map(|c| c.mode)
    }
}

/// Everything needed (besides the key) to read a legacy encrypted image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// cryptoloop or loop-AES.
    pub scheme: Scheme,
    /// The block cipher (`aes`, `twofish`…).
    pub cipher: CipherKind,
    /// Cipher mode and IV scheme.
    pub mode: Mode,
    /// Key size in bits (128, 192 or 256; blowfish up to 448, cast5 128, des3_ede 192).
    pub key_bits: u32,
    /// How the key came from the passphrase or key file.
    pub derivation: Derivation,
    /// loop-AES multi-key version, if any.
    pub multi_key: Option<MultiKey>,
    /// Where the encrypted payload starts in the file (losetup `-o`).
    pub offset_bytes: u64,
    /// IV sector of the payload's first sector (cryptsetup `--skip`).
    pub iv_offset_sectors: u64,
    /// losetup `--sizelimit`, if any.
    pub size_limit_bytes: Option<u64>,
    /// Whether a loop-AES seed (`-S`) was appended to the passphrase.
    pub pseed: bool,
    /// loop-AES `-C` iteration count (thousands), if any.
    pub itercountk: Option<u32>,
}

/// Key material for [`Params`].
#[derive(Debug, Clone)]
pub enum KeyMaterial {
    /// One key (cryptoloop, loop-AES single-key).
    Single(Key),
    /// loop-AES multi-key.
    Multi(MultiKeys),
}

impl Params {
    /// dm-crypt spelling of the cipher.
    pub fn cipher_name(&self) -> String {
        self.mode.dm_name(self.cipher)
    }

    /// The typed cipher (block cipher and mode).
    pub fn legacy_cipher(&self) -> LegacyCipher {
        LegacyCipher { cipher: self.cipher, mode: self.mode }
    }

    /// Build the sector cipher.
    ///
    /// # Errors
    /// `InvalidInput` if the key material does not fit the mode.
    pub fn cipher(&self, keys: &KeyMaterial) -> crate::Result<Box<dyn SectorCipher>> {
        Ok(match (self.mode, keys) {
            (Mode::Cbc(iv), KeyMaterial::Single(k)) => Box::new(CbcSectors::with_cipher(self.cipher, k.bytes(), iv)?),
            (Mode::Ecb, KeyMaterial::Single(k)) => Box::new(EcbSectors::with_cipher(self.cipher, k.bytes())?),
            (Mode::Lmk, KeyMaterial::Multi(mk)) if self.cipher == CipherKind::Aes => Box::new(LmkSectors::new(mk)?),
            (Mode::Lmk, _) if self.cipher != CipherKind::Aes => {
                return Err(crate::Error::unsupported(format!(
                    "{}: multi-key with {}",
                    self.cipher_name(),
                    self.cipher
                )));
            }
            _ => {
                return Err(crate::Error::invalid("BUG: key material does not match the cipher mode"));
            }
        })
    }

    /// The `cryptsetup open` command that maps the same plaintext on a current Linux, plus notes
    /// on what the user must supply. `pass_len` is the passphrase length in bytes (to decide
    /// whether cryptsetup's own hashing reproduces the key, or a raw key file is needed).
    pub fn cryptsetup(&self, image: &str, pass_len: Option<usize>) -> Cryptsetup {
        self.cryptsetup_with_key_file(image, pass_len, None)
    }

    /// [`Params::cryptsetup`], naming the loop-AES key file the user gave (`gpg` = it is
    /// gpg-encrypted and must be piped through `gpg --decrypt`).
    pub fn cryptsetup_with_key_file(
        &self,
        image: &str,
        pass_len: Option<usize>,
        key_file: Option<(&str, bool)>,
    ) -> Cryptsetup {
        let mut notes = Vec::new();
        let key_bytes = (self.key_bits / 8) as usize;
        if !self.offset_bytes.is_multiple_of(512) {
            notes.push(crate::finding::Finding::info(
                "cryptsetup.unaligned-offset",
                format!(
                    "the payload starts at byte {}, which is not a multiple of 512: cryptsetup cannot map it directly; \
                 use `loopkit migrate` to copy it into a new container",
                    self.offset_bytes
                ),
            ));
            return Cryptsetup { command: None, needs_raw_key_file: false, notes };
        }
        let off = self.offset_bytes / 512;
        let offset_skip = (off != 0 || self.iv_offset_sectors != 0).then_some((off, self.iv_offset_sectors));
        if self.mode == Mode::Lmk {
            let mut cmd = OpenCommand {
                key_bits: Some(self.key_bits),
                // loopaes defaults --skip to --offset; say both explicitly (an @offset image needs --skip 0).
                offset_skip,
                ..OpenCommand::new(DeviceType::LoopAes, image, "legacy")
            };
            if let Derivation::Hash(h) = self.derivation
                && h != HashAlg::loopaes_default(key_bytes)
            {
                cmd.hash = Some(h.cryptsetup_name().to_string());
            }
            cmd.key = match key_file {
                Some((path, false)) => KeySource::File(path.to_string()),
                Some((path, true)) => KeySource::GpgFile(path.to_string()),
                None => {
                    notes.push(crate::finding::Finding::info(
                        "cryptsetup.loop-aes-key-file",
                        "KEYFILE is the decrypted loop-AES key file (64 or 65 lines); for a gpg-encrypted one use \
                         `gpg --decrypt keyfile.gpg | cryptsetup open … --key-file=- …`",
                    ));
                    KeySource::Placeholder
                }
            };
            return Cryptsetup { command: Some(cmd), needs_raw_key_file: false, notes };
        }
        let mut cmd = OpenCommand {
            cipher: Some(self.cipher_name()),
            key_bits: Some(self.key_bits),
            offset_skip,
            size_sectors: self.size_limit_bytes.map(|l| l / 512),
            ..OpenCommand::new(DeviceType::Plain, image, "legacy")
        };
        // Which cryptsetup --hash reproduces the key from the same passphrase (typed at the prompt)?
        let hash = match self.derivation {
            _ if self.itercountk.is_some() => None,
            Derivation::Hash(h) => Some(h.cryptsetup_name().to_string()),
            Derivation::HashPrefix(h, n) => Some(format!("{}:{n}", h.cryptsetup_name())),
            Derivation::UtilLinuxRaw | Derivation::Unhashed2 => {
                // key = p[..31] ‖ 0 (first key_bytes). cryptsetup `--hash plain` takes p[..key_bytes]
                // zero-padded: the same key unless a 32-byte key meets a passphrase of 32 bytes or
                // more; then `--hash plain:31` (the first 31 bytes, zero-padded) is it — cryptsetup
                // refuses plain:31 for passphrases shorter than 31 bytes, where plain is right.
                pass_len.map(|n| if key_bytes < 32 || n <= 31 { "plain" } else { "plain:31" }.to_string())
            }
            Derivation::Unhashed => pass_len.filter(|&n| n < key_bytes).map(|_| "plain".to_string()),
            Derivation::Plain => Some("plain".into()),
            Derivation::Unhashed1 | Derivation::KeyFileRaw => None,
        };
        let needs_raw_key_file = hash.is_none();
        match hash {
            Some(h) => {
                if self.pseed {
                    notes.push(crate::finding::Finding::info(
                        "cryptsetup.seed-at-prompt",
                        "at the prompt, type the passphrase immediately followed by the loop-AES seed (-S)",
                    ));
                }
                cmd.hash = Some(h);
            }
            None => {
                notes.push(crate::finding::Finding::info("cryptsetup.raw-key-needed", format!(
                    "cryptsetup cannot derive this key from the passphrase ({}): give it the raw {key_bytes}-byte key \
                     in a file (`loopkit migrate IMAGE --to dmcrypt --mode plain --key-out KEYFILE` writes one, mode 0600)",
                    self.derivation
                )));
                cmd.key = KeySource::Placeholder;
            }
        }
        if self.scheme == Scheme::LoopAes && self.mode == Mode::Cbc(IvScheme::Plain64) {
            notes.push(crate::finding::Finding::info(
                "cryptsetup.same-as-plain",
                "identical to aes-cbc-plain for images under 2 TiB",
            ));
        }
        Cryptsetup { needs_raw_key_file, command: Some(cmd), notes }
    }
}

/// A cryptsetup command line and what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cryptsetup {
    /// The command, or `None` if cryptsetup cannot express the mapping.
    pub command: Option<OpenCommand>,
    /// The command reads the raw key from a file instead of hashing a passphrase.
    pub needs_raw_key_file: bool,
    /// Caveats for the user.
    pub notes: Vec<crate::finding::Finding>,
}

pub use super::cryptsetup::shell_quote;

#[cfg(test)]
mod tests {
    use super::*;

    fn params(derivation: Derivation, key_bits: u32) -> Params {
        Params {
            scheme: Scheme::Cryptoloop,
            cipher: CipherKind::Aes,
            mode: Mode::Cbc(IvScheme::Plain),
            key_bits,
            derivation,
            multi_key: None,
            offset_bytes: 4096,
            iv_offset_sectors: 8,
            size_limit_bytes: None,
            pseed: false,
            itercountk: None,
        }
    }

    #[test]
    fn cryptsetup_lines() {
        let c = params(Derivation::Hash(HashAlg::Ripemd160), 256).cryptsetup("old.img", Some(12));
        assert_eq!(
            c.command.map(|c| c.shell_line()).as_deref(),
            Some(
                "cryptsetup open --type plain --readonly --cipher aes-cbc-plain --key-size 256 --hash ripemd160 --offset 8 --skip 8 old.img legacy"
            )
        );
        let raw = params(Derivation::UtilLinuxRaw, 256);
        assert!(raw.cryptsetup("x", Some(31)).command.unwrap().hash.as_deref() == Some("plain"));
        let long = raw.cryptsetup("x", Some(32));
        assert!(!long.needs_raw_key_file && long.command.unwrap().hash.as_deref() == Some("plain:31"));
        let short_key = params(Derivation::UtilLinuxRaw, 128).cryptsetup("x", Some(40));
        assert!(short_key.command.unwrap().hash.as_deref() == Some("plain"));
        assert!(raw.cryptsetup("x", None).needs_raw_key_file, "unknown passphrase length");
        assert_eq!(shell_quote("a b'c"), "'a b'\\''c'");
        let mut odd = params(Derivation::UtilLinuxRaw, 256);
        odd.offset_bytes = 100;
        assert!(odd.cryptsetup("x", Some(3)).command.is_none());
    }

    #[test]
    fn mode_names() {
        for s in [
            "aes-cbc-plain",
            "aes-cbc-plain64",
            "aes-cbc-null",
            "aes-ecb",
            "aes-cbc-lmk",
            "twofish-cbc-plain",
            "twofish-cbc-null",
            "serpent-cbc-plain64",
            "blowfish-ecb",
            "cast5-cbc-plain",
            "des3_ede-cbc-plain",
        ] {
            assert_eq!(s.parse::<LegacyCipher>().unwrap().to_string(), s);
        }
        let tf: LegacyCipher = "twofish".parse().unwrap();
        assert_eq!(tf, LegacyCipher { cipher: CipherKind::Twofish, mode: Mode::Cbc(IvScheme::Plain) });
        assert_eq!("ecb(serpent)".parse::<LegacyCipher>().unwrap().to_string(), "serpent-ecb");
        assert_eq!("aes:64-cbc-lmk".parse::<Mode>().unwrap(), Mode::Lmk);
        for bad in ["idea-cbc-plain", "twofish-cbc-lmk", "aes-cbc-essiv:sha256", "aes-xts-plain64", "aes-ctr"] {
            assert!(bad.parse::<LegacyCipher>().is_err(), "{bad}");
        }
    }

    /// SUSE loop_fish2 (cryptsetup FAQ 7.4) and cryptoloop twofish lines.
    #[test]
    fn cryptsetup_lines_other_ciphers() {
        let mut p = params(Derivation::HashPrefix(HashAlg::Ripemd160, 20), 192);
        p.cipher = CipherKind::Twofish;
        p.mode = Mode::Cbc(IvScheme::Null);
        p.offset_bytes = 0;
        p.iv_offset_sectors = 0;
        assert_eq!(
            p.cryptsetup("home.img", Some(12)).command.map(|c| c.shell_line()).as_deref(),
            Some(
                "cryptsetup open --type plain --readonly --cipher twofish-cbc-null --key-size 192 --hash ripemd160:20 home.img legacy"
            )
        );
    }
}

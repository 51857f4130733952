//! [`CipherSpec`]: a dm-crypt cipher specification (`aes-xts-plain64`, `aes-cbc-essiv:sha256`,
//! `twofish-cbc-plain`, `serpent-xts-plain`, `aes-lrw-plain64`, `blowfish-ecb`…) as a typed value — cipher,
//! chaining mode and IV scheme — parsed once where it enters (a LUKS header, a CLI flag) and
//! turned into a [`SectorCipher`] here. Anything loopkit cannot run fails with `Unsupported`
//! naming the exact spec.

use super::SectorCipher;
use super::block::CipherKind;
use super::cbc::{CbcSectors, EcbSectors, IvScheme};
use super::lrw::LrwSectors;
use super::xts::XtsSectors;
use std::fmt;
use std::str::FromStr;

/// The chaining mode of a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chain {
    /// CBC, a fresh IV per 512-byte sector.
    Cbc,
    /// ECB (no IV).
    Ecb,
    /// XTS (IEEE 1619), 128-bit block ciphers only.
    Xts,
    /// LRW (IEEE P1619 drafts, the kernel's `lrw`), 128-bit block ciphers only.
    Lrw,
}

impl Chain {
    /// dm-crypt's name.
    pub fn name(self) -> &'static str {
        match self {
            Chain::Cbc => "cbc",
            Chain::Ecb => "ecb",
            Chain::Xts => "xts",
            Chain::Lrw => "lrw",
        }
    }
}

/// A dm-crypt cipher spec: `CIPHER-CHAIN[-IV]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CipherSpec {
    /// The block cipher.
    pub cipher: CipherKind,
    /// The chaining mode.
    pub chain: Chain,
    /// The IV scheme (`None` for ECB).
    pub iv: Option<IvScheme>,
}

impl CipherSpec {
    /// `aes-xts-plain64`, LUKS2's (and loopkit's migrate target's) cipher.
    pub const AES_XTS_PLAIN64: CipherSpec =
        CipherSpec { cipher: CipherKind::Aes, chain: Chain::Xts, iv: Some(IvScheme::Plain64) };

    /// Parse a LUKS1 header's `cipher_name` + `cipher_mode` pair.
    ///
    /// # Errors
    /// `Unsupported` naming the spec when loopkit cannot run it.
    pub fn from_luks1(name: &str, mode: &str) -> crate::Result<Self> {
        format!("{name}-{mode}").parse()
    }

    /// Build the sector cipher with `key` over `sector_bytes`-byte sectors.
    ///
    /// # Errors
    /// `Unsupported` for CBC/ECB with sectors larger than 512 bytes; `InvalidInput` for a key
    /// length that does not fit.
    pub fn build(&self, key: &[u8], sector_bytes: usize) -> crate::Result<Box<dyn SectorCipher>> {
        if !matches!(self.chain, Chain::Xts | Chain::Lrw) && sector_bytes != 512 {
            return Err(crate::Error::unsupported(format!("{self} with {sector_bytes}-byte sectors")));
        }
        Ok(match (self.chain, self.iv) {
            (Chain::Xts, Some(iv)) => Box::new(XtsSectors::with_cipher(self.cipher, iv, key, sector_bytes)?),
            (Chain::Lrw, Some(iv)) => Box::new(LrwSectors::with_cipher(self.cipher, iv, key, sector_bytes)?),
            (Chain::Cbc, Some(iv)) => Box::new(CbcSectors::with_cipher(self.cipher, key, iv)?),
            (Chain::Ecb, _) => Box::new(EcbSectors::with_cipher(self.cipher, key)?),
            _ => return Err(crate::Error::unsupported(format!("cipher {self}"))),
        })
    }
}

impl fmt::Display for CipherSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.cipher, self.chain.name())?;
        if let Some(iv) = self.iv {
            write!(f, "-{iv}")?;
        }
        Ok(())
    }
}

impl FromStr for CipherSpec {
    type Err = crate::Error;
    /// `CIPHER-CHAIN-IV` (`aes-cbc-essiv:sha256`), `CIPHER-ecb`; the IV may be omitted for
    /// ECB only. Errors name the whole spec.
    fn from_str(s: &str) -> crate::Result<Self> {
        let unsupported = |why: &str| {
            crate::Error::unsupported(format!(
                "cipher {s:?} is not supported ({why}; loopkit runs aes, twofish, serpent, blowfish, cast5, des3_ede \
                 with cbc-plain, cbc-plain64, cbc-null, cbc-essiv:HASH, ecb, and aes/twofish/serpent with xts-plain64, \
                 xts-plain, xts-essiv:HASH, lrw-plain64, lrw-plain or lrw-benbi)"
            ))
        };
        let lower = s.to_ascii_lowercase();
        let mut parts = lower.splitn(3, '-');
        let cipher_s = parts.next().unwrap_or("");
        // `aes:64-cbc-lmk` and other key-count forms are loop-AES multi-key, not a plain spec.
        if cipher_s.contains(':') {
            return Err(unsupported("multi-key specs are loop-AES only"));
        }
        let cipher: CipherKind = cipher_s.parse().map_err(|_| unsupported("unknown cipher"))?;
        let chain = match parts.next() {
            Some("cbc") => Chain::Cbc,
            Some("ecb") => Chain::Ecb,
            Some("xts") => Chain::Xts,
            Some("lrw") => Chain::Lrw,
            _ => return Err(unsupported("unknown or missing chaining mode")),
        };
        let iv = match (chain, parts.next()) {
            (Chain::Ecb, None) => None,
            (Chain::Ecb, Some(_)) => return Err(unsupported("ECB takes no IV")),
            (_, None) => return Err(unsupported("missing IV scheme")),
            (_, Some(iv)) => Some(iv.parse::<IvScheme>().map_err(|_| unsupported("unknown IV scheme"))?),
        };
        if matches!(chain, Chain::Xts | Chain::Lrw) && cipher.block_bytes() != 16 {
            return Err(unsupported("XTS and LRW need a 128-bit block cipher"));
        }
        match (chain, iv) {
            (Chain::Xts, Some(IvScheme::Plain | IvScheme::Plain64 | IvScheme::Essiv(_))) => {}
            (Chain::Xts, _) => return Err(unsupported("XTS runs with plain, plain64 or essiv IVs")),
            (Chain::Lrw, Some(IvScheme::Plain | IvScheme::Plain64 | IvScheme::Benbi)) => {}
            (Chain::Lrw, _) => return Err(unsupported("LRW runs with plain, plain64 or benbi IVs")),
            (_, Some(IvScheme::Benbi)) => return Err(unsupported("loopkit runs benbi with LRW only")),
            _ => {}
        }
        Ok(CipherSpec { cipher, chain, iv })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::HashAlg;

    #[test]
    fn parse_and_print() {
        for s in [
            "aes-xts-plain64",
            "aes-xts-plain",
            "aes-cbc-essiv:sha256",
            "aes-cbc-essiv:sha1",
            "aes-cbc-plain",
            "aes-cbc-plain64",
            "aes-cbc-null",
            "aes-ecb",
            "twofish-cbc-essiv:sha256",
            "twofish-xts-plain64",
            "serpent-xts-plain64",
            "serpent-cbc-essiv:sha256",
            "blowfish-cbc-plain",
            "cast5-cbc-plain",
            "des3_ede-cbc-plain",
            "aes-xts-essiv:wp256",
            "aes-lrw-plain64",
            "aes-lrw-benbi",
            "serpent-lrw-plain",
        ] {
            let spec: CipherSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        let e: CipherSpec = "AES-CBC-ESSIV:SHA256".parse().unwrap();
        assert_eq!(e.iv, Some(IvScheme::Essiv(HashAlg::Sha256)));
        for bad in [
            "aes-cbc-benbi",
            "camellia-xts-plain64",
            "blowfish-xts-plain64",
            "blowfish-lrw-plain64",
            "aes-lrw-essiv:sha256",
            "aes-xts-benbi",
            "aes",
            "aes:64-cbc-lmk",
            "aes-gcm-random",
            "aes-cbc",
        ] {
            let err = bad.parse::<CipherSpec>().unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn build_checks_sizes() {
        let cbc: CipherSpec = "aes-cbc-essiv:sha256".parse().unwrap();
        assert!(cbc.build(&[1u8; 32], 512).is_ok());
        assert!(cbc.build(&[1u8; 32], 4096).is_err());
        // sha512 gives a 64-byte salt: no AES key (dm-crypt refuses it too).
        let bad: CipherSpec = "aes-cbc-essiv:sha512".parse().unwrap();
        assert!(bad.build(&[1u8; 32], 512).is_err());
        let tf: CipherSpec = "twofish-xts-plain64".parse().unwrap();
        assert_eq!(tf.build(&[1u8; 64], 4096).unwrap().dm_name(), "twofish-xts-plain64");
    }
}

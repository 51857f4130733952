//! clap value parsers for loopkit's typed values (scheme, cipher, key derivation, PBKDF): each
//! parses with the library's own `FromStr`, so every spelling accepted before is still accepted,
//! lists the canonical choices in `--help`, and rejects a typo while the arguments are parsed —
//! before any file is opened.

use clap::builder::{PossibleValue, TypedValueParser};
use loopkit::crypto::kdf::Derivation;
use loopkit::formats::legacy::{LegacyCipher, Scheme};
use loopkit::migrate::Pbkdf;
use std::ffi::OsStr;
use std::marker::PhantomData;
use std::str::FromStr;

/// A parser for `T` that shows `shown` as the possible values.
#[derive(Clone)]
pub struct Choices<T> {
    shown: &'static [&'static str],
    _t: PhantomData<fn() -> T>,
}

impl<T> Choices<T> {
    const fn new(shown: &'static [&'static str]) -> Self {
        Choices { shown, _t: PhantomData }
    }
}

impl<T> TypedValueParser for Choices<T>
where
    T: FromStr<Err = loopkit::Error> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &OsStr) -> Result<T, clap::Error> {
        let name = arg.map(|a| a.to_string()).unwrap_or_default();
        let bad = |msg: String| clap::Error::raw(clap::error::ErrorKind::InvalidValue, msg).with_cmd(cmd);
        let s = value.to_str().ok_or_else(|| bad(format!("{name}: the value is not UTF-8\n")))?;
        s.parse::<T>().map_err(|e| bad(format!("{name} {s:?}: {e}\n")))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(self.shown.iter().map(|s| PossibleValue::new(*s))))
    }
}

/// `--scheme`: an encryption scheme, or `plain` (also `none`) for "not encrypted".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemeArg {
    /// Not encrypted.
    Plain,
    /// cryptoloop or loop-AES.
    Encrypted(Scheme),
}

impl FromStr for SchemeArg {
    type Err = loopkit::Error;
    fn from_str(s: &str) -> loopkit::Result<Self> {
        if s.eq_ignore_ascii_case("plain") || s.eq_ignore_ascii_case("none") {
            Ok(SchemeArg::Plain)
        } else {
            s.parse().map(SchemeArg::Encrypted)
        }
    }
}

/// `--scheme`.
pub fn scheme() -> Choices<SchemeArg> {
    Choices::new(&["cryptoloop", "loop-aes", "loop-fish2", "plain"])
}

/// `--cipher` (dm-crypt spelling `CIPHER-cbc-plain|plain64|null` or `CIPHER-ecb`, CIPHER one of
/// aes, twofish, serpent, blowfish, cast5, des3_ede — every combination parses, the list shows
/// the common ones; a bare cipher name, `CIPHER-cbc`, `cbc(CIPHER)`, `ecb(CIPHER)`,
/// `aes:64-cbc-lmk` are accepted too).
pub fn cipher() -> Choices<LegacyCipher> {
    Choices::new(&[
        "aes-cbc-plain",
        "aes-cbc-plain64",
        "aes-cbc-null",
        "aes-ecb",
        "aes-cbc-lmk",
        "twofish-cbc-plain",
        "twofish-cbc-plain64",
        "twofish-cbc-null",
        "serpent-cbc-plain",
        "serpent-cbc-plain64",
        "blowfish-cbc-plain",
        "blowfish-cbc-plain64",
        "cast5-cbc-plain",
        "des3_ede-cbc-plain",
        "twofish-ecb",
    ])
}

/// `--key-derivation` (also `raw`, `nohashpass`, `ripemd160`, `sha-256`…).
pub fn derivation() -> Choices<Derivation> {
    Choices::new(&[
        "util-linux-raw",
        "rmd160",
        "unhashed",
        "sha256",
        "sha384",
        "sha512",
        "sha1",
        "rmd160:20",
        "unhashed1",
        "unhashed2",
        "plain",
        "keyfile-raw",
    ])
}

/// `migrate --pbkdf`.
pub fn pbkdf() -> Choices<Pbkdf> {
    Choices::new(&["argon2id", "argon2i", "pbkdf2"])
}

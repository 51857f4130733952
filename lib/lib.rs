//! loopkit keeps old Linux loop-device data sets readable: it opens legacy cryptoloop, loop-AES
//! and plain loop images offline and without root, works out their parameters from the
//! passphrase, verifies them, and tells you the `cryptsetup` command that maps them today.
//!
//! Layers point downward only (checked by `tests/layers.rs` against `docs/ARCHITECTURE.md`):
//! [`error`](Error), [`finding`], [`bytes`] ← [`progress`] ← [`source`] (bytes at offsets) ←
//! [`output`], [`pipeline`] ← [`crypto`] (sector ciphers, key derivations) ← [`volume`] ←
//! [`fs`] ← [`formats`] (on-disk formats) ← [`detect`] ← [`image`] ← [`manifest`] ←
//! [`extract`] ← [`verify`] ← [`rescue`], [`mount`], [`attach`], [`migrate`] ← [`report`] ← the
//! `loopkit` binary. The library never prints.
//!
//! ```no_run
//! use loopkit::{detect::Secrets, image, crypto::Passphrase};
//! let secrets = Secrets { passphrase: Some(Passphrase::new(b"secret".to_vec())), key_file: None };
//! let opened = image::open("old.img".as_ref(), &secrets, &Default::default())?;
//! if let Some(fs) = opened.filesystem() {
//!     println!("{} inside", fs.kind);
//! }
//! # Ok::<(), loopkit::Error>(())
//! ```
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod attach;
pub mod bag;
pub mod batch;
pub mod bytes;
pub mod crypto;
pub mod damage;
pub mod detect;
mod error;
pub mod extent;
pub mod extract;
pub mod finding;
pub mod formats;
pub mod fs;
#[doc(hidden)]
pub mod fuzzing;
pub mod image;
pub mod manifest;
pub mod migrate;
pub mod mount;
pub mod output;
pub mod pipeline;
pub mod progress;
pub mod remap;
pub mod report;
pub mod rescue;
pub mod source;
pub mod sys;
pub mod verify;
pub mod volume;

pub use error::{Error, ErrorKind, Result, io_errno};

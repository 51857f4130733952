//! Remapping an image file to the disk blocks it occupies (the 2008 "fast file mapping for
//! loop" idea, done safely in userspace): [`preflight`] decides whether it is safe, [`lease`]
//! keeps it exclusive, [`engine`] does the I/O, [`survey`] lists and verifies the extents
//! (`loopkit extents`). The extent model itself lives in [`crate::extent`]. See
//! `docs/formats/remap.md` for the rules and what breaks without them.

pub mod engine;
pub mod lease;
pub mod preflight;
pub mod survey;

pub use engine::{Engine, Guard, Options, Piece, State, Stats};
pub use preflight::{Backing, Preflight, Refusal};

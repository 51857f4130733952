//! On-disk formats, one module each. Headerless legacy formats (plain, cryptoloop, loop-AES) share
//! [`legacy::Params`]; their parameters are found by [`crate::detect`]. Formats with a header
//! (LUKS) offer `probe`.

pub mod cryptsetup;
pub mod dvdisaster;
pub mod legacy;
pub mod loopaes;
pub mod luks;

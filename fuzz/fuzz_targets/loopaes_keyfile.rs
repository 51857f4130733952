//! Fuzz target `loopaes_keyfile`: see `loopkit::fuzzing::loopaes_keyfile`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopkit::fuzzing::loopaes_keyfile(data));

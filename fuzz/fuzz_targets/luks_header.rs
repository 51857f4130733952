//! Fuzz target `luks_header`: see `loopkit::fuzzing::luks_header`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopkit::fuzzing::luks_header(data));

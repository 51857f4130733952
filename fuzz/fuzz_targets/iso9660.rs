//! Fuzz target `iso9660`: see `loopkit::fuzzing::iso9660`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopkit::fuzzing::iso9660(data));

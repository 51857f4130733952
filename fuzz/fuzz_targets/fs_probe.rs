//! Fuzz target `fs_probe`: see `loopkit::fuzzing::fs_probe`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopkit::fuzzing::fs_probe(data));

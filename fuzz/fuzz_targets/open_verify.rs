//! Fuzz target `open_verify`: see `loopkit::fuzzing::open_verify`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopkit::fuzzing::open_verify(data));

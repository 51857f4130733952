//! Fuzz target `rescue_map`: see `loopkit::fuzzing::rescue_map`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopkit::fuzzing::rescue_map(data));

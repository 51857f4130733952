//! Fuzz target `luks2_json`: see `loopkit::fuzzing::luks2_json`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopkit::fuzzing::luks2_json(data));

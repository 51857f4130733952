//! Fuzz target `damage_map`: see `loopkit::fuzzing::damage_map`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopkit::fuzzing::damage_map(data));

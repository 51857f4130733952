//! Fuzz target `ext`: see `loopkit::fuzzing::ext`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopkit::fuzzing::ext(data));

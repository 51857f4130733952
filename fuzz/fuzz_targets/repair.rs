//! Fuzz target `repair`: see `loopkit::fuzzing::repair`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopkit::fuzzing::repair(data));

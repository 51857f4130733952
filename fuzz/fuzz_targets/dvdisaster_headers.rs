//! Fuzz target `dvdisaster_headers`: see `loopkit::fuzzing::dvdisaster_headers`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopkit::fuzzing::dvdisaster_headers(data));

//! See `plumb::fuzzing::interpolation`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plumb::fuzzing::interpolation(data));

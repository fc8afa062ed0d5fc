//! See `plumb::fuzzing::repository`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plumb::fuzzing::repository(data));

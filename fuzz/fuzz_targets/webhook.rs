//! See `plumb::fuzzing::webhook`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plumb::fuzzing::webhook(data));

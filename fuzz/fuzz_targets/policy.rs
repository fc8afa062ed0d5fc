//! See `plumb::fuzzing::policy`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plumb::fuzzing::policy(data));

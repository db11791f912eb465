#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logwarden_fuzz::checks::records(data));

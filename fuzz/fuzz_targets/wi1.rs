#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walfetch::fuzzing::wi1(data));

//! One JSON message through validation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_protocol::fuzzing::message(data));

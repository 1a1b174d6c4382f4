//! A client frame through the inbound path: decode (JSON or MessagePack), then validate.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_protocol::fuzzing::frame(data));

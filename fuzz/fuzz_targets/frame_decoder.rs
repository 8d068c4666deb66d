//! Any bytes as a client's text frame: the decoder answers a frame or an error
//! with a documented code, never panics; a frame it accepts survives a
//! round-trip through its own JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill_protocol::client::{ClientFrame, parse_client_frame};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_client_frame(text) {
        Ok(frame) => {
            let json = serde_json::to_string(&frame).expect("a frame serializes");
            let again: ClientFrame = serde_json::from_str(&json).expect("and parses back");
            assert_eq!(frame, again, "{json}");
        }
        Err(error) => {
            let _ = error.code();
        }
    }
});

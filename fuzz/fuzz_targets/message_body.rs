//! Any bytes as an HTTP request body of the `message` fields: a request or an
//! error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill_protocol::client::parse_message_request;

fuzz_target!(|data: &[u8]| {
    if let Err(error) = parse_message_request(data) {
        let _ = error.code();
    }
});

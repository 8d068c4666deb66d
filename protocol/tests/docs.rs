//! docs/protocol.md is checked against the types: every frame in a `json` block
//! parses as a real client frame or server event, and every type and error code
//! is documented.

use rill_protocol::{ClientFrame, ErrorCode, ServerEvent, parse_client_frame};

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    std::fs::read_to_string(path).expect("docs/protocol.md exists")
}

/// The contents of every block fenced as ```json.
fn json_blocks(doc: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```json") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "unclosed json block");
    blocks
}

#[test]
fn every_documented_frame_is_a_real_frame() {
    let doc = doc();
    let blocks = json_blocks(&doc);
    assert!(blocks.len() >= 15, "found {} json blocks", blocks.len());
    let (mut client, mut server) = (0, 0);
    for block in blocks {
        let as_event = serde_json::from_str::<ServerEvent>(&block);
        let as_frame = parse_client_frame(&block);
        match (as_event, as_frame) {
            (Ok(event), _) => {
                // Server examples are complete: nothing documented is dropped.
                let documented: serde_json::Value = serde_json::from_str(&block).unwrap();
                let reencoded = serde_json::to_value(&event).unwrap();
                assert_eq!(documented, reencoded, "server example round-trips exactly");
                server += 1;
            }
            (Err(_), Ok(_)) => client += 1,
            (Err(event_error), Err(frame_error)) => {
                panic!("{block}\nis neither an event ({event_error}) nor a frame ({frame_error})")
            }
        }
    }
    assert!(
        client >= 6 && server >= 9,
        "client {client}, server {server}"
    );
}

#[test]
fn every_type_and_error_code_is_documented() {
    let doc = doc();
    for kind in ClientFrame::TYPES.iter().chain(ServerEvent::TYPES.iter()) {
        assert!(
            doc.contains(&format!("### `{kind}`")) || doc.contains(&format!("`{kind}`")),
            "type {kind} is not documented"
        );
        assert!(
            doc.contains(&format!("\"type\": \"{kind}\"")),
            "type {kind} has no example"
        );
    }
    for code in ErrorCode::ALL {
        assert!(
            doc.contains(&format!("| `{}` |", code.as_str())),
            "error code {code} is not in the table"
        );
    }
    for close in [1000, 1008, 1009, 1011, 1012, 1013] {
        assert!(
            doc.contains(&format!("| {close} |")),
            "close code {close} is not documented"
        );
    }
}

//! Personas over the real server: the list, a `--personas` file, several
//! personas answering one question (interleaved, each cancellable and
//! resumable alone, a `turn_complete` when all ended, all stored), and
//! `persona_id: "auto"` routing with its confidence.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const THREE: [&str; 3] = ["tech_enthusiast", "creative_writer", "data_scientist"];

/// Writes a personas file and returns its path (inside `dir`).
fn personas_file(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("personas.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const PIRATE: &str = r#"
[[persona]]
id = "pirate"
name = "Captain"
description = "Sailing, ships, the sea and buried treasure"
system_prompt = "You are a pirate captain. Answer in Markdown, arr."
temperature = 0.9
keywords = ["ship", "sail", "treasure"]
"#;

#[tokio::test]
async fn the_list_has_the_built_ins_and_the_files_personas_without_their_prompts() {
    let dir = temp_dir();
    let file = personas_file(&dir, PIRATE);
    let server = start_with(|c| c.personas = Some(file)).await;
    let list = get_json(&server, "/api/v1/personas").await;
    let ids: Vec<&str> = list["personas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "assistant",
            "tech_enthusiast",
            "creative_writer",
            "data_scientist",
            "pirate"
        ]
    );
    assert_eq!(list["default"], "assistant");
    assert_eq!(list["auto"], "auto");
    let pirate = &list["personas"][4];
    assert_eq!(pirate["name"], "Captain");
    assert_eq!(pirate["temperature"], 0.9);
    assert!(pirate.get("system_prompt").is_none(), "{pirate}");

    // The file's persona answers, in its own instructions' voice.
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "hi", "persona_id": "pirate"}),
    )
    .await;
    let frames = recv_until_done(&mut ws, 1).await;
    let complete = frames.last().unwrap();
    assert_eq!(complete["metadata"]["agent"], "pirate");
    assert!(
        complete["response"]
            .as_str()
            .unwrap()
            .starts_with("*pirate* — You are a pirate captain."),
        "{complete}"
    );
    // Routing knows it too.
    send(
        &mut ws,
        json!({"type": "message", "message": "Where is the buried treasure ship?", "persona_id": "auto"}),
    )
    .await;
    let frames = recv_until_done(&mut ws, 1).await;
    assert_eq!(frames.last().unwrap()["metadata"]["agent"], "pirate");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_bad_personas_file_stops_startup_naming_line_and_field() {
    let dir = temp_dir();
    for (text, expected) in [
        (
            PIRATE.replace("temperature = 0.9", "temperature = 7"),
            "line 7, field `temperature`: 7 is not between 0 and 2",
        ),
        (
            PIRATE.replace("id = \"pirate\"", "id = \"Pirate!\""),
            "line 3, field `id`",
        ),
        (
            PIRATE.replace("description = ", "# description = "),
            "missing field `description`",
        ),
        (PIRATE.replace("keywords", "keywordz"), "keywordz"),
        ("[[persona]\nid=".to_owned(), "line 1"),
    ] {
        let file = personas_file(&dir, &text);
        // Its data directory inside `dir`, removed with it.
        let mut config = rill::Config::for_tests(dir.join("data"));
        config.personas = Some(file.clone());
        let error = match rill::AppState::new(config).await {
            Ok(_) => panic!("started with a bad personas file: {text}"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains(expected), "{error}");
        assert!(error.contains(&file.display().to_string()), "{error}");
    }
    let mut config = rill::Config::for_tests(dir.join("data"));
    config.personas = Some(dir.join("missing.toml"));
    let error = rill::AppState::new(config).await.err().unwrap().to_string();
    assert!(error.contains("cannot read it"), "{error}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn unknown_personas_are_refused_and_the_connection_stays() {
    let server = start().await;
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "hi", "persona_ids": ["tech_enthusiast", "poet"]}),
    )
    .await;
    let error = recv(&mut ws).await;
    assert_eq!(error["code"], "INVALID_MESSAGE");
    assert!(
        error["error"].as_str().unwrap().contains("\"poet\""),
        "{error}"
    );
    assert_usable(&mut ws).await;
}

/// The `start` frames' stream ids, in the order of the personas asked.
fn stream_ids(frames: &[Value]) -> Vec<String> {
    let mut starts: Vec<(usize, String)> = frames
        .iter()
        .filter(|f| f["type"] == "start")
        .map(|f| {
            let persona = f["persona_id"].as_str().unwrap();
            let index = THREE.iter().position(|p| *p == persona).unwrap();
            (index, f["stream_id"].as_str().unwrap().to_owned())
        })
        .collect();
    starts.sort();
    starts.into_iter().map(|(_, id)| id).collect()
}

#[tokio::test]
async fn three_personas_stream_interleaved_then_a_turn_complete_and_all_are_stored() {
    let server = start_with(|c| {
        c.demo_delay = Duration::from_millis(3);
        c.demo_tokens = 60;
    })
    .await;
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "What do you think about AI?", "persona_ids": THREE, "session_id": "multi-1"}),
    )
    .await;
    let frames = recv_until_done(&mut ws, 3).await;
    let ids = stream_ids(&frames);
    assert_eq!(ids.len(), 3);
    let mut responses = Vec::new();
    for (persona, id) in THREE.iter().zip(&ids) {
        let (text, complete) = check_stream(&frames, id);
        assert_eq!(complete["metadata"]["agent"], *persona);
        assert_eq!(complete["response"], text);
        responses.push(text);
    }
    assert!(responses[0] != responses[1] && responses[1] != responses[2]);
    // Interleaved: tokens of different streams alternate before the first ends.
    let first_complete = frames.iter().position(|f| f["type"] == "complete").unwrap();
    let switches = frames[..first_complete]
        .windows(2)
        .filter(|w| w[0]["type"] == "token" && w[1]["type"] == "token")
        .filter(|w| w[0]["stream_id"] != w[1]["stream_id"])
        .count();
    assert!(
        switches >= 2,
        "the streams interleave ({switches} switches)"
    );

    let turn = recv(&mut ws).await;
    assert_eq!(turn["type"], "turn_complete", "{turn}");
    assert_eq!(turn["session_id"], "multi-1");
    let replies = turn["replies"].as_array().unwrap();
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply["persona_id"], THREE[i]);
        assert_eq!(reply["stream_id"], ids[i].as_str());
        assert_eq!(reply["finish_reason"], "stop");
    }

    // Stored: one question, three replies in the order asked.
    let conversation = get_json(&server, "/api/v1/conversations/multi-1").await;
    let messages = conversation["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4, "{conversation}");
    assert_eq!(messages[0]["role"], "user");
    for (i, persona) in THREE.iter().enumerate() {
        assert_eq!(messages[i + 1]["persona_id"], *persona);
        assert_eq!(messages[i + 1]["content"], responses[i].as_str());
    }
}

#[tokio::test]
async fn one_of_three_is_cancelled_alone_and_the_others_finish() {
    let server = start_with(|c| {
        c.demo_delay = Duration::from_millis(5);
        c.demo_tokens = 200;
    })
    .await;
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "Tell me everything", "persona_ids": THREE}),
    )
    .await;
    let mut frames = Vec::new();
    while frames
        .iter()
        .filter(|f: &&Value| f["type"] == "start")
        .count()
        < 3
    {
        frames.push(recv(&mut ws).await);
    }
    let ids = stream_ids(&frames);
    send(&mut ws, json!({"type": "cancel", "stream_id": ids[1]})).await;
    frames.extend(recv_until_done(&mut ws, 3).await);
    let reasons: Vec<&str> = ids
        .iter()
        .map(|id| {
            frames
                .iter()
                .find(|f| f["type"] == "complete" && f["stream_id"] == id.as_str())
                .unwrap()["metadata"]["finish_reason"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(reasons, ["stop", "cancelled", "stop"]);
    let turn = recv(&mut ws).await;
    assert_eq!(turn["type"], "turn_complete");
    assert_eq!(turn["replies"][1]["finish_reason"], "cancelled");
}

#[tokio::test]
async fn one_of_three_resumes_on_a_new_connection_without_loss() {
    let server = start_with(|c| {
        c.demo_delay = Duration::from_millis(4);
        c.demo_tokens = 150;
    })
    .await;
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "Tell me a lot", "persona_ids": THREE}),
    )
    .await;
    // Read until the second persona has some tokens, then drop the socket.
    let mut frames: Vec<Value> = Vec::new();
    let second = loop {
        frames.push(recv(&mut ws).await);
        let ids = stream_ids(&frames);
        if ids.len() == 3
            && frames
                .iter()
                .filter(|f| f["type"] == "token" && f["stream_id"] == ids[1].as_str())
                .count()
                >= 5
        {
            break ids[1].clone();
        }
    };
    drop(ws);
    let had: Vec<&Value> = frames
        .iter()
        .filter(|f| f["stream_id"] == second.as_str())
        .collect();
    let after = had.last().unwrap()["seq"].as_u64().unwrap();

    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "resume", "stream_id": second, "after_seq": after}),
    )
    .await;
    let rest = recv_until_done(&mut ws, 1).await;
    let mut all: Vec<Value> = had.into_iter().cloned().collect();
    all.extend(rest);
    let (text, complete) = check_stream(&all, &second);
    assert_eq!(complete["response"], text, "no token lost or repeated");
    assert_eq!(complete["metadata"]["agent"], "creative_writer");
}

#[tokio::test]
async fn auto_routing_reports_the_agent_and_its_confidence() {
    let server = start().await;
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "What is the median of this dataset, statistically?", "persona_id": "auto"}),
    )
    .await;
    let frames = recv_until_done(&mut ws, 1).await;
    assert_eq!(frames[0]["persona_id"], "auto");
    let routing: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "progress" && f["step"] == "agent_routing")
        .collect();
    assert_eq!(routing.len(), 2, "before and after choosing: {frames:?}");
    assert!(routing[0].get("agent").is_none());
    assert_eq!(routing[1]["agent"], "data_scientist");
    assert_eq!(routing[1]["message"], "Data Scientist answers");
    let confidence = routing[1]["confidence"].as_f64().unwrap();
    assert!(confidence > 0.25 && confidence <= 1.0, "{confidence}");
    let steps: Vec<&str> = frames
        .iter()
        .filter(|f| f["type"] == "progress")
        .map(|f| f["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["starting", "agent_routing", "agent_routing", "generating"]
    );
    let metadata = &frames.last().unwrap()["metadata"];
    assert_eq!(metadata["agent"], "data_scientist");
    assert_eq!(metadata["confidence"].as_f64(), Some(confidence));
    assert_eq!(metadata["routing"]["method"], "keywords");
    assert!(metadata["routing"].get("fallback_reason").is_none());

    // A clearer question is routed with more confidence.
    send(
        &mut ws,
        json!({"type": "message", "message": "Compute the median, mean, average and statistics of my dataset sample", "persona_id": "auto"}),
    )
    .await;
    let frames = recv_until_done(&mut ws, 1).await;
    let surer = frames.last().unwrap()["metadata"]["confidence"]
        .as_f64()
        .unwrap();
    assert!(surer > confidence, "{surer} > {confidence}");

    // Over HTTP too, with the fallback when nothing matches.
    let (status, body) = post_chat(
        &server,
        json!({"message": "qwxz", "persona_id": "auto"}).to_string(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["agent"], "assistant");
    assert_eq!(body["metadata"]["confidence"], 0.0);
    assert!(
        body["metadata"]["routing"]["fallback_reason"]
            .as_str()
            .unwrap()
            .contains("match")
    );
}

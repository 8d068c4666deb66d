//! Documents and retrieval over the real server: upload to a project, watch
//! its processing in the project's room, ask about it on the native dialect
//! and on Socket.IO and get the right passage cited; delete it and it is
//! gone from answers; another user's project stays closed; bad files are
//! refused with their codes; a crash at any point leaves a consistent state.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// A handbook whose sections are long enough to be chunks of their own.
fn handbook() -> String {
    let filler = |topic: &str| {
        format!(
            "This section explains how {topic} works at Acme in everyday practice. \
             Ask your manager when something is unclear, and write down what you decided. "
        )
        .repeat(4)
    };
    format!(
        "# Acme Handbook\n\n## Holidays\n\n{}\n\nEveryone gets 25 days of paid leave a year; \
         book them in the team calendar two weeks ahead.\n\n## Expenses\n\n{}\n\nExpense \
         refunds are paid within 14 days of a complete claim, receipts attached.\n\n\
         ## Security\n\n{}\n\nReport a lost laptop to the security desk within one hour.\n",
        filler("holiday planning"),
        filler("spending company money"),
        filler("keeping devices safe"),
    )
}

/// A multipart body with one part `file`: (content type header, body).
fn multipart(filename: &str, content_type: &str, content: &[u8]) -> (String, Vec<u8>) {
    let boundary = "rill-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
         Content-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// `POST …/documents` as `token`: (status, JSON answer).
async fn upload(
    server: &TestServer,
    token: &str,
    project: &str,
    filename: &str,
    content_type: &str,
    content: &[u8],
) -> (u16, Value) {
    let (header, body) = multipart(filename, content_type, content);
    let response = reqwest::Client::new()
        .post(server.http(&format!("/api/v1/projects/{project}/documents")))
        .bearer_auth(token)
        .header("content-type", header)
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// A request to `path` as `token`: (status, JSON answer or null).
async fn call(server: &TestServer, method: &str, token: &str, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method.parse().unwrap(), server.http(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `DELETE`s a project's document: the status and the body.
async fn delete_document(
    server: &TestServer,
    token: &str,
    project: &str,
    id: &str,
) -> (u16, Value) {
    call(
        server,
        "DELETE",
        token,
        &format!("/api/v1/projects/{project}/documents/{id}"),
    )
    .await
}

/// Waits (bounded) until a document is no longer `processing`: its record.
async fn settled(server: &TestServer, token: &str, project: &str, id: &str) -> Value {
    for _ in 0..400 {
        let (status, doc) = call(
            server,
            "GET",
            token,
            &format!("/api/v1/projects/{project}/documents/{id}"),
        )
        .await;
        assert_eq!(status, 200, "{doc}");
        if doc["status"] != "processing" {
            return doc;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("document {id} is still processing");
}

/// Uploads the handbook to `project` as `token` and waits until it is
/// indexed: its id.
async fn indexed_handbook(server: &TestServer, token: &str, project: &str) -> String {
    let (status, accepted) = upload(
        server,
        token,
        project,
        "handbook.md",
        "text/markdown",
        handbook().as_bytes(),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["document_id"].as_str().unwrap().to_owned();
    assert_eq!(
        settled(server, token, project, &id).await["status"],
        "completed"
    );
    id
}

/// A native socket of `user`.
async fn socket_of(server: &TestServer, user: &str) -> Ws {
    server
        .ws_at(&format!("/ws/chat?token={}", server.token(user)))
        .await
}

/// Asks `question` in `project` on a native socket: the frames of its stream.
async fn ask(ws: &mut Ws, question: &str, project: Option<&str>) -> Vec<Value> {
    let mut frame = json!({"type": "message", "message": question});
    if let Some(project) = project {
        frame["project_id"] = json!(project);
    }
    send(ws, frame).await;
    let mut frames = Vec::new();
    loop {
        let frame = recv(ws).await;
        if frame["type"] == "room_event" || frame["type"] == "presence" {
            continue;
        }
        let done = frame["type"] == "complete" || frame["type"] == "error";
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == kind).collect()
}

#[tokio::test]
async fn a_handbook_is_indexed_with_progress_then_answers_with_its_passage() {
    let server = start().await;
    let token = server.token("alice");
    let mut ws = socket_of(&server, "alice").await;
    send(&mut ws, json!({"type": "join", "room": "project_hr"})).await;
    assert_eq!(recv(&mut ws).await["type"], "joined");

    let (status, accepted) = upload(
        &server,
        &token,
        "hr",
        "handbook.md",
        "text/markdown",
        handbook().as_bytes(),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "processing");
    assert_eq!(accepted["filename"], "handbook.md");
    assert_eq!(accepted["media_type"], "text/markdown");
    let id = accepted["document_id"].as_str().unwrap().to_owned();

    // The room hears it added, then its progress rising to completed.
    let mut progress = Vec::new();
    let mut added = false;
    loop {
        let frame = recv(&mut ws).await;
        if frame["type"] != "room_event" {
            continue;
        }
        assert_eq!(frame["room"], "project_hr");
        match frame["event"].as_str().unwrap() {
            "project_update" => {
                assert_eq!(frame["data"]["type"], "document_added");
                assert_eq!(frame["data"]["data"]["document_id"], id.as_str());
                added = true;
            }
            "document_status" => {
                assert_eq!(frame["data"]["document_id"], id.as_str());
                progress.push(frame["data"]["progress"].as_u64().unwrap());
                if frame["data"]["status"] == "completed" {
                    assert!(frame["data"]["chunks"].as_u64().unwrap() >= 3, "{frame}");
                    break;
                }
                assert_eq!(frame["data"]["status"], "processing", "{frame}");
            }
            other => panic!("unexpected room event {other}"),
        }
    }
    assert!(added);
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!((progress[0], *progress.last().unwrap()), (0, 100));

    let (_, projects) = call(&server, "GET", &token, "/api/v1/projects").await;
    assert_eq!(projects["projects"][0]["project_id"], "hr");
    assert_eq!(projects["projects"][0]["documents"], 1);
    let (_, theirs) = call(&server, "GET", &server.token("bob"), "/api/v1/projects").await;
    assert_eq!(theirs["projects"], json!([]));
    let (_, list) = call(&server, "GET", &token, "/api/v1/projects/hr/documents").await;
    assert_eq!(list["documents"].as_array().unwrap().len(), 1);
    assert_eq!(list["documents"][0]["status"], "completed");
    assert!(list["documents"][0]["chunks"].as_u64().unwrap() >= 3);
    assert_eq!(list["documents"][0]["size"], handbook().len());

    // The question retrieves before it is answered, and the answer cites it.
    let frames = ask(&mut ws, "How fast are expense refunds paid?", Some("hr")).await;
    let steps: Vec<&str> = of_type(&frames, "progress")
        .iter()
        .map(|f| f["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["starting", "rag_retrieval", "generating"]);
    let stream_id = frames[0]["stream_id"].as_str().unwrap().to_owned();
    let (text, complete) = check_stream(&frames, &stream_id);
    let sources = &of_type(&frames, "sources")[0]["sources"];
    assert_eq!(sources[0]["metadata"]["document_id"], id.as_str());
    assert_eq!(sources[0]["metadata"]["filename"], "handbook.md");
    assert!(
        sources[0]["content"]
            .as_str()
            .unwrap()
            .contains("within 14 days"),
        "{sources}"
    );
    assert!(
        sources[0]["id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{id}:"))
    );
    assert!(sources[0]["score"].as_f64().unwrap() > 0.0);
    assert!(
        text.starts_with(
            "According to **handbook.md** [1]: \"Expense refunds are paid within 14 days"
        ),
        "{text}"
    );
    assert_eq!(complete["metadata"]["sources"], json!(["handbook.md"]));
    assert_eq!(
        complete["metadata"]["context"]["sources"],
        json!(["handbook.md"])
    );

    // The reply keeps its sources in the conversation.
    let session = complete["session_id"].as_str().unwrap();
    let (_, conversation) = call(
        &server,
        "GET",
        &token,
        &format!("/api/v1/conversations/{session}"),
    )
    .await;
    let reply = &conversation["messages"][1];
    assert_eq!(reply["sources"][0]["metadata"]["document_id"], id.as_str());

    // Over plain HTTP too (seed 003's REST chat with `project_id`).
    let (status, answer) = post_chat(
        &server,
        json!({"message": "How fast are expense refunds paid?", "project_id": "hr"}).to_string(),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["metadata"]["context"]["sources"],
        json!(["handbook.md"])
    );
    assert!(
        answer["response"]
            .as_str()
            .unwrap()
            .starts_with("According to **handbook.md** [1]")
    );

    // Another question finds another section.
    let frames = ask(&mut ws, "What should I do about a lost laptop?", Some("hr")).await;
    let sources = &of_type(&frames, "sources")[0]["sources"];
    assert!(
        sources[0]["content"]
            .as_str()
            .unwrap()
            .contains("security desk"),
        "{sources}"
    );

    // Outside the project: no retrieval at all.
    let frames = ask(&mut ws, "How fast are expense refunds paid?", None).await;
    assert!(of_type(&frames, "sources").is_empty());
    assert!(!frames.iter().any(|f| f["step"] == "rag_retrieval"));

    // Deleted: announced, gone from the list and from answers.
    let (status, _) = delete_document(&server, &token, "hr", &id).await;
    assert_eq!(status, 204);
    loop {
        let frame = recv(&mut ws).await;
        if frame["event"] == "project_update" {
            assert_eq!(frame["data"]["type"], "document_deleted");
            assert_eq!(frame["data"]["data"]["document_id"], id.as_str());
            break;
        }
    }
    let (_, list) = call(&server, "GET", &token, "/api/v1/projects/hr/documents").await;
    assert_eq!(list["documents"], json!([]));
    let frames = ask(&mut ws, "How fast are expense refunds paid?", Some("hr")).await;
    assert!(of_type(&frames, "sources").is_empty(), "{frames:?}");
    let complete = frames.last().unwrap();
    assert_eq!(complete["metadata"]["sources"], json!([]));
    let (status, gone) = delete_document(&server, &token, "hr", &id).await;
    assert_eq!((status, gone["code"].as_str()), (404, Some("NOT_FOUND")));
}

#[tokio::test]
async fn a_pdf_is_read_by_page_and_cited_with_its_page() {
    let server = start().await;
    let token = server.token("alice");
    let pdf = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/handbook.pdf"
    ))
    .unwrap();
    let (status, accepted) = upload(
        &server,
        &token,
        "p",
        "handbook.pdf",
        "application/pdf",
        &pdf,
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["document_id"].as_str().unwrap();
    let done = settled(&server, &token, "p", id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["pages"], 2);
    let mut ws = socket_of(&server, "alice").await;
    let frames = ask(&mut ws, "How many days until refunds are paid?", Some("p")).await;
    let sources = &of_type(&frames, "sources")[0]["sources"];
    assert_eq!(sources[0]["metadata"]["page"], 2, "{sources}");
    let complete = frames.last().unwrap();
    assert!(
        complete["response"]
            .as_str()
            .unwrap()
            .starts_with("According to **handbook.pdf**, page 2 [1]:"),
        "{complete}"
    );
}

#[tokio::test]
async fn socket_io_clients_get_message_sources_before_the_tokens() {
    let server = start().await;
    let token = server.token("alice");
    let id = indexed_handbook(&server, &token, "7").await;

    let sid = sio_handshake(&server, "").await;
    let connect = format!(r#"40{{"token":"{token}"}}"#);
    sio_exchange(&server, &sid, &connect, 2).await;
    // Seed 004 joins its project by number, then asks in its chat.
    let joined = sio_exchange(&server, &sid, r#"42["join_project",{"project_id":7}]"#, 1).await;
    assert_eq!(joined[0], r#"42["project_joined",{"project_id":7}]"#);
    let ask = r#"42["send_message",{"chat_id":1,"message":"How fast are expense refunds paid?"}]"#;
    let mut events: Vec<(String, Value)> = Vec::new();
    let mut packets = sio_exchange(&server, &sid, ask, 1).await;
    loop {
        for packet in packets.drain(..) {
            let array: Value = serde_json::from_str(packet.strip_prefix("42").unwrap()).unwrap();
            events.push((array[0].as_str().unwrap().to_owned(), array[1].clone()));
        }
        if events.iter().any(|(name, _)| name == "message_complete") {
            break;
        }
        packets = sio_exchange(&server, &sid, "", 1).await;
    }
    let names: Vec<&str> = events
        .iter()
        .map(|(n, _)| n.as_str())
        // The room's own notices (this socket's presence) may come in between.
        .filter(|n| !matches!(*n, "message_token" | "presence"))
        .collect();
    assert_eq!(
        names,
        ["message_received", "message_sources", "message_complete"]
    );
    let first_token = events
        .iter()
        .position(|(n, _)| n == "message_token")
        .unwrap();
    let sources_at = events
        .iter()
        .position(|(n, _)| n == "message_sources")
        .unwrap();
    assert!(sources_at < first_token);
    let sources = &events[sources_at].1;
    assert_eq!(sources["chat_id"], 1);
    assert_eq!(
        sources["sources"][0]["metadata"]["document_id"],
        id.as_str()
    );
    assert!(
        sources["sources"][0]["content"]
            .as_str()
            .unwrap()
            .contains("14 days")
    );
    let complete = &events.last().unwrap().1;
    assert_eq!(
        complete["metadata"]["sources_count"],
        sources["sources"].as_array().unwrap().len()
    );
    assert!(complete["response"].as_str().unwrap().contains("[1]"));
}

#[tokio::test]
async fn nobody_reaches_another_users_project_or_its_passages() {
    let server = start().await;
    let alice = server.token("alice");
    let bob = server.token("bob");
    let id = indexed_handbook(&server, &alice, "secret").await;

    for (method, path) in [
        ("GET", "/api/v1/projects/secret/documents".to_owned()),
        ("GET", format!("/api/v1/projects/secret/documents/{id}")),
        ("DELETE", format!("/api/v1/projects/secret/documents/{id}")),
    ] {
        let (status, body) = call(&server, method, &bob, &path).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("FORBIDDEN")),
            "{method} {path}"
        );
    }
    let (status, body) = upload(&server, &bob, "secret", "x.md", "text/markdown", b"# x").await;
    assert_eq!((status, body["code"].as_str()), (403, Some("FORBIDDEN")));
    // Asking in Alice's project is refused; Bob's own project holds only his.
    let mut ws = socket_of(&server, "bob").await;
    let frames = ask(&mut ws, "refunds", Some("secret")).await;
    assert_eq!(frames[0]["code"], "FORBIDDEN", "{frames:?}");
    let (_, mine) = upload(
        &server,
        &bob,
        "bobs",
        "notes.md",
        "text/markdown",
        b"Refunds are Bob's topic too.",
    )
    .await;
    settled(&server, &bob, "bobs", mine["document_id"].as_str().unwrap()).await;
    let frames = ask(&mut ws, "How fast are expense refunds paid?", Some("bobs")).await;
    let sources = of_type(&frames, "sources")[0]["sources"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!sources.is_empty());
    assert!(
        sources
            .iter()
            .all(|s| s["metadata"]["filename"] == "notes.md"),
        "{sources:?}"
    );
    // An unknown project simply has nothing to retrieve.
    let frames = ask(&mut ws, "refunds", Some("nowhere")).await;
    assert_eq!(frames.last().unwrap()["type"], "complete");
    assert!(of_type(&frames, "sources").is_empty());
    let (status, _) = call(&server, "GET", &bob, "/api/v1/projects/nowhere/documents").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_files_are_refused_with_their_codes_and_leave_nothing() {
    let server = start_with(|c| c.documents.max_bytes = 4096).await;
    let token = server.token("alice");
    let refusals = [
        (
            "photo.png",
            "image/png",
            b"\x89PNG\r\n\x1a\n....".to_vec(),
            415,
            "UNSUPPORTED_DOCUMENT",
        ),
        (
            "empty.md",
            "text/markdown",
            Vec::new(),
            415,
            "UNSUPPORTED_DOCUMENT",
        ),
        (
            "binary.txt",
            "text/plain",
            b"MZ\x00\x00\x90\x00binary".to_vec(),
            415,
            "UNSUPPORTED_DOCUMENT",
        ),
        (
            "fake.pdf",
            "application/pdf",
            b"hello, not a pdf".to_vec(),
            415,
            "UNSUPPORTED_DOCUMENT",
        ),
        (
            "big.md",
            "text/markdown",
            vec![b'a'; 5000],
            413,
            "DOCUMENT_TOO_LARGE",
        ),
    ];
    for (name, kind, content, status, code) in refusals {
        let (got, body) = upload(&server, &token, "p", name, kind, &content).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{name}: {body}"
        );
        assert!(!body["error"].as_str().unwrap().is_empty());
    }
    // Not multipart, or without a `file` part.
    let response = reqwest::Client::new()
        .post(server.http("/api/v1/projects/p/documents"))
        .bearer_auth(&token)
        .json(&json!({"file": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let (header, body) = multipart("a.md", "text/markdown", b"# hi");
    let response = reqwest::Client::new()
        .post(server.http("/api/v1/projects/p/documents"))
        .bearer_auth(&token)
        .header("content-type", header)
        .body(
            String::from_utf8(body)
                .unwrap()
                .replace("name=\"file\"", "name=\"other\""),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // A body far over the cap is cut off, not read whole.
    let (header, body) = multipart("huge.md", "text/markdown", &vec![b'a'; 200_000]);
    let response = reqwest::Client::new()
        .post(server.http("/api/v1/projects/p/documents"))
        .bearer_auth(&token)
        .header("content-type", header)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    // A PDF that starts right but cannot be read fails, with the reason.
    let mut broken = b"%PDF-1.4\n".to_vec();
    broken.extend_from_slice(&[b'#'; 300]);
    let (status, accepted) = upload(
        &server,
        &token,
        "p",
        "broken.pdf",
        "application/pdf",
        &broken,
    )
    .await;
    assert_eq!(status, 202);
    let failed = settled(
        &server,
        &token,
        "p",
        accepted["document_id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["error"].as_str().unwrap().contains("PDF"),
        "{failed}"
    );
    assert_eq!(failed["chunks"], 0);
    // Only the broken PDF was stored; the project answers without sources.
    let (_, list) = call(&server, "GET", &token, "/api/v1/projects/p/documents").await;
    assert_eq!(list["documents"].as_array().unwrap().len(), 1);
    let mut ws = socket_of(&server, "alice").await;
    let frames = ask(&mut ws, "what does the pdf say", Some("p")).await;
    assert_eq!(frames.last().unwrap()["type"], "complete");
    assert!(of_type(&frames, "sources").is_empty());
    // Bad project ids.
    let long = "x".repeat(129);
    let (status, body) = upload(&server, &token, &long, "a.md", "text/markdown", b"# a").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("INVALID_MESSAGE"))
    );
}

/// Runs SQL on a test server's SQLite file.
async fn sql(data_dir: &std::path::Path, statement: &str) {
    use sqlx::Connection;
    let url = format!("sqlite://{}", data_dir.join("rill.db").display());
    let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(statement)
        .execute(&mut connection)
        .await
        .unwrap();
}

/// Sources for the refunds question in project `p`.
async fn refund_sources(server: &TestServer) -> Vec<Value> {
    let mut ws = socket_of(server, "alice").await;
    let frames = ask(&mut ws, "How fast are expense refunds paid?", Some("p")).await;
    of_type(&frames, "sources")
        .first()
        .map(|f| f["sources"].as_array().unwrap().clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn after_a_crash_at_any_point_the_index_follows_the_store() {
    let dir = temp_dir();
    let token;
    let id;
    {
        let server = start_in(dir.clone(), true, |_| {}).await;
        token = server.token("alice");
        id = indexed_handbook(&server, &token, "p").await;
    }
    // 1. A crash after the index took the chunks, before the store marked
    //    the document completed: it is processed again at startup, once.
    sql(&dir, "UPDATE documents SET status = 'processing'").await;
    sql(&dir, "DELETE FROM document_chunks").await;
    {
        let server = start_in(dir.clone(), true, |_| {}).await;
        let done = settled(&server, &token, "p", &id).await;
        assert_eq!(done["status"], "completed");
        let sources = refund_sources(&server).await;
        assert!(sources[0]["content"].as_str().unwrap().contains("14 days"));
        // Each passage once: the old copy in the index was replaced.
        let ids: Vec<&str> = sources.iter().map(|s| s["id"].as_str().unwrap()).collect();
        let mut unique = ids.clone();
        unique.dedup();
        assert_eq!(ids.len(), unique.len(), "{ids:?}");
    }
    // 2. The index directory lost (a new disk, another instance): the first
    //    question rebuilds what it needs from the stored chunks.
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    {
        let server = start_in(dir.clone(), true, |_| {}).await;
        assert!(
            refund_sources(&server).await[0]["content"]
                .as_str()
                .unwrap()
                .contains("14 days")
        );
    }
    // 3. A crash after the store deleted the document, before the index
    //    dropped it: its passages are never retrieved again.
    sql(&dir, "DELETE FROM document_chunks").await;
    sql(&dir, "DELETE FROM document_files").await;
    sql(&dir, "DELETE FROM documents").await;
    let server = start_in(dir.clone(), false, |_| {}).await;
    assert!(refund_sources(&server).await.is_empty());
    let (_, upload_again) = upload(
        &server,
        &token,
        "p",
        "other.md",
        "text/markdown",
        b"Refunds: ask finance.",
    )
    .await;
    settled(
        &server,
        &token,
        "p",
        upload_again["document_id"].as_str().unwrap(),
    )
    .await;
    let sources = refund_sources(&server).await;
    assert!(!sources.is_empty());
    assert!(
        sources
            .iter()
            .all(|s| s["metadata"]["filename"] == "other.md"),
        "{sources:?}"
    );
}

#[tokio::test]
async fn reindex_rebuilds_every_index_from_the_store() {
    let server = start().await;
    let token = server.token("alice");
    indexed_handbook(&server, &token, "p").await;
    std::fs::remove_dir_all(server.data_dir.join("index")).unwrap();
    assert_eq!(server.state.documents.reindex().await.unwrap(), (1, 1));
    assert_eq!(
        std::fs::read_dir(server.data_dir.join("index"))
            .unwrap()
            .count(),
        1
    );
    let sources = refund_sources(&server).await;
    assert!(sources[0]["content"].as_str().unwrap().contains("14 days"));
}

#[tokio::test]
async fn projects_whose_indexes_were_closed_answer_the_same_when_asked_again() {
    // One open index at a time: every question below reopens its project's.
    let server = start_with(|c| c.documents.open_indexes = 1).await;
    let token = server.token("alice");
    let handbook_id = indexed_handbook(&server, &token, "p").await;
    let (_, notes) = upload(
        &server,
        &token,
        "q",
        "notes.md",
        "text/markdown",
        b"Refunds for travel are approved by the travel desk.",
    )
    .await;
    settled(&server, &token, "q", notes["document_id"].as_str().unwrap()).await;
    let mut ws = socket_of(&server, "alice").await;
    let filenames = |frames: &[Value]| -> Vec<String> {
        of_type(frames, "sources")
            .first()
            .map(|f| f["sources"].as_array().unwrap().clone())
            .unwrap_or_default()
            .iter()
            .map(|s| s["metadata"]["filename"].as_str().unwrap().to_owned())
            .collect()
    };
    for project in ["p", "q", "p", "q"] {
        let frames = ask(&mut ws, "How are refunds paid?", Some(project)).await;
        let expected = if project == "p" {
            "handbook.md"
        } else {
            "notes.md"
        };
        let found = filenames(&frames);
        assert!(
            !found.is_empty() && found.iter().all(|f| f == expected),
            "{project}: {found:?}"
        );
    }
    // A document deleted while its project's index is closed is not
    // retrieved when the index opens again.
    let (status, _) = delete_document(&server, &token, "p", &handbook_id).await;
    assert_eq!(status, 204);
    let frames = ask(&mut ws, "How are refunds paid?", Some("q")).await;
    assert_eq!(filenames(&frames), ["notes.md"]);
    let frames = ask(&mut ws, "How are refunds paid?", Some("p")).await;
    assert_eq!(frames.last().unwrap()["type"], "complete");
    assert!(filenames(&frames).is_empty(), "{frames:?}");
}

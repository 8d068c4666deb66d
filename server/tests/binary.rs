//! The real `rill` binary: --help, `rill token`, and graceful shutdown on SIGTERM.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const RILL: &str = env!("CARGO_BIN_EXE_rill");

#[test]
fn help_documents_every_flag_and_variable() {
    let output = Command::new(RILL).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "--addr",
        "RILL_ADDR",
        "--data-dir",
        "--jwt-secret",
        "RILL_JWT_SECRET",
        "--auth-required",
        "--demo-delay-ms",
        "--demo-tokens",
        "--max-frame-bytes",
        "--jwt-public-key",
        "--jwks-file",
        "--auth-timeout-secs",
        "--allow-origin",
        "--rate-limit-user",
        "--max-connections-per-ip",
        "--trusted-proxy",
        "--max-json-depth",
        "--connection-idle-secs",
        "--huge-pages",
        "RILL_HUGE_PAGES",
        "token",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

/// A running `rill` process, killed (and reaped) when dropped.
struct Rill(Option<Child>);

impl Rill {
    fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// Waits for the process to exit by itself.
    fn wait(mut self) -> std::process::ExitStatus {
        self.0.take().unwrap().wait().unwrap()
    }
}

impl Drop for Rill {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the binary on a free port and waits until it says it is listening.
async fn spawn_rill(data_dir: &std::path::Path, extra: &[&str]) -> (Rill, String) {
    spawn_rill_with_env(data_dir, extra, &[]).await
}

/// [`spawn_rill`] with these environment variables set too.
async fn spawn_rill_with_env(
    data_dir: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Rill, String) {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(RILL)
        .args(["--addr", &addr, "--data-dir"])
        .arg(data_dir)
        .args(["--demo-delay-ms", "5"])
        .args(extra)
        .env_remove("RILL_JWT_SECRET")
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(&mut child);
    (Rill(Some(child)), addr)
}

#[tokio::test]
async fn a_minted_token_is_accepted_by_the_server_sharing_its_data_dir() {
    let data_dir = temp_dir();
    let (rill, addr) = spawn_rill(&data_dir, &["--auth-required"]).await;
    let output = Command::new(RILL)
        .args(["--data-dir"])
        .arg(&data_dir)
        .args([
            "token",
            "--sub",
            "erin",
            "--email",
            "erin@example.com",
            "--name",
            "Erin",
        ])
        .env_remove("RILL_JWT_SECRET")
        .output()
        .unwrap();
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/chat"))
        .await
        .unwrap();
    send(&mut ws, json!({"type": "auth", "token": token})).await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer["type"], "auth_success", "{answer}");
    assert_eq!(answer["user"]["name"], "Erin");
    drop(rill);
    std::fs::remove_dir_all(data_dir).unwrap();
}

#[tokio::test]
async fn sigterm_closes_websockets_with_1012_and_exits_cleanly() {
    let data_dir = temp_dir();
    let (rill, addr) = spawn_rill(&data_dir, &[]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/chat"))
        .await
        .unwrap();
    assert_usable(&mut ws).await;
    let status = Command::new("kill")
        .args(["-TERM", &rill.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut close_code = None;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(FRAME_TIMEOUT, ws.next()).await {
        if let Message::Close(frame) = message {
            close_code = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(close_code, Some(1012), "clients are told to reconnect");
    let exit = tokio::task::spawn_blocking(move || rill.wait())
        .await
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    std::fs::remove_dir_all(data_dir).unwrap();
}

#[tokio::test]
async fn a_busy_port_is_a_clear_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let data_dir = temp_dir();
    let output = Command::new(RILL)
        .args(["--addr", &addr, "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    std::fs::remove_dir_all(data_dir).unwrap();
}

/// Whether the kernel may give process `pid` transparent huge pages
/// (`THP_enabled` in its status, Linux 5.0 on).
#[cfg(target_os = "linux")]
fn huge_pages_enabled(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .expect("the kernel reports THP_enabled");
    line.trim() == "1"
}

/// A fresh server takes no transparent huge pages unless told to (their
/// first touch stalls the thread that touches it), and `--huge-pages` or
/// `RILL_HUGE_PAGES=true` lets it.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn transparent_huge_pages_are_off_unless_asked_for() {
    let data_dir = temp_dir();
    // A child inherits the setting: allowed here, so the server's own
    // choice is what the checks below see.
    rustix::thread::disable_transparent_huge_pages(false).unwrap();
    assert!(
        huge_pages_enabled(std::process::id()),
        "this test's own process"
    );
    let (rill, _) = spawn_rill(&data_dir, &[]).await;
    assert!(!huge_pages_enabled(rill.id()), "off by default");
    drop(rill);
    let (rill, _) = spawn_rill(&data_dir, &["--huge-pages"]).await;
    assert!(huge_pages_enabled(rill.id()), "--huge-pages");
    drop(rill);
    let (rill, _) = spawn_rill_with_env(&data_dir, &[], &[("RILL_HUGE_PAGES", "true")]).await;
    assert!(huge_pages_enabled(rill.id()), "RILL_HUGE_PAGES=true");
    drop(rill);
    std::fs::remove_dir_all(data_dir).unwrap();
}

/// The text of the token frames among `frames`.
fn token_text(frames: &[serde_json::Value]) -> String {
    frames
        .iter()
        .filter(|f| f["type"] == "token")
        .filter_map(|f| f["token"].as_str())
        .collect()
}

#[tokio::test]
async fn a_reply_cut_by_a_killed_server_survives_as_interrupted() {
    let data_dir = temp_dir();
    let (rill, addr) = spawn_rill(
        &data_dir,
        &["--demo-tokens", "1000000", "--checkpoint-ms", "200"],
    )
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/chat"))
        .await
        .unwrap();
    send(
        &mut ws,
        json!({"type": "message", "message": "Tell me everything", "session_id": "crash-1"}),
    )
    .await;
    // Read for a while (several checkpoints), then kill -9 mid-reply.
    let mut frames = Vec::new();
    let began = std::time::Instant::now();
    while began.elapsed() < Duration::from_millis(1500) {
        frames.push(recv(&mut ws).await);
    }
    drop(rill);
    while let Ok(Some(Ok(message))) = tokio::time::timeout(FRAME_TIMEOUT, ws.next()).await {
        if let Message::Text(text) = message {
            frames.push(serde_json::from_str(&text).unwrap());
        }
    }
    let seen = token_text(&frames);
    assert!(
        !frames.iter().any(|f| f["type"] == "complete"),
        "the reply was still running"
    );

    let (rill, addr) = spawn_rill(&data_dir, &[]).await;
    let conversation: serde_json::Value =
        reqwest::get(format!("http://{addr}/api/v1/conversations/crash-1"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let messages = conversation["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{conversation}");
    assert_eq!(messages[0]["content"], "Tell me everything");
    assert_eq!(messages[0]["status"], "complete");
    let reply = &messages[1];
    assert_eq!(reply["status"], "interrupted", "{reply}");
    let saved = reply["content"].as_str().unwrap();
    assert!(!saved.is_empty(), "checkpoints were written");
    assert!(
        seen.starts_with(saved),
        "the saved text is what clients saw, up to the last checkpoint"
    );
    drop(rill);
    std::fs::remove_dir_all(data_dir).unwrap();
}

#[tokio::test]
async fn secrets_never_appear_in_logs_errors_or_health() {
    const JWT: &str = "jwt-secret-canary-7f3a";
    const KEY: &str = "sk-canary-openai-9b1c";
    const PASSWORD: &str = "pw-canary-5d2e";
    const API_KEY: &str = "rooms-canary-3e8a";
    // Every secret the server is given, as flags (both runs below get them all).
    let secrets = [
        "--jwt-secret",
        JWT,
        "--provider",
        "openai",
        "--openai-api-key",
        KEY,
        "--api-key",
        API_KEY,
    ];
    let leaks = |text: &str| {
        [JWT, KEY, PASSWORD, API_KEY]
            .into_iter()
            .filter(|secret| text.contains(secret))
            .collect::<Vec<_>>()
    };
    // A database that cannot be opened: the error says where, not the password.
    let data_dir = temp_dir();
    let output = Command::new(RILL)
        .args(["--addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .args([
            "--database-url",
            &format!("postgres://rill:{PASSWORD}@127.0.0.1:5432/rill_no_such_database"),
        ])
        .args(secrets)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        said.contains("rill:***@"),
        "the place is named, redacted: {said}"
    );
    assert!(leaks(&said).is_empty(), "{said}");

    // A running server, logging everything, whose provider fails.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    // Everything it writes goes to one file, read whole at the end.
    let log_path = data_dir.join("output.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(RILL)
        .args(["--addr", &addr, "--data-dir"])
        .arg(&data_dir)
        .args(secrets)
        .args([
            "--openai-base-url",
            "http://127.0.0.1:1/v1",
            "--upstream-retries",
            "0",
        ])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let server = Rill(Some(child));
    for _ in 0..300 {
        if std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("listening on")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = reqwest::Client::new();
    let mut answers = String::new();
    for (method, path, body) in [
        (reqwest::Method::GET, "/health", None),
        (reqwest::Method::GET, "/api/v1/models", None),
        (
            reqwest::Method::POST,
            "/api/v1/chat",
            Some(json!({"message": "hello"})),
        ),
        (
            reqwest::Method::GET,
            "/api/v1/conversations?token=forged.token.here",
            None,
        ),
        (
            reqwest::Method::POST,
            "/api/v1/rooms/project_1/publish",
            Some(json!({"event": "x"})),
        ),
    ] {
        let mut request = client.request(method, format!("http://{addr}{path}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        answers.push_str(&request.send().await.unwrap().text().await.unwrap());
    }
    assert!(answers.contains("PROVIDER_ERROR"), "{answers}");
    assert!(leaks(&answers).is_empty(), "{answers}");
    drop(server);
    let logged = std::fs::read_to_string(&log_path).unwrap();
    assert!(logged.contains("listening on"), "{logged}");
    assert!(leaks(&logged).is_empty(), "{logged}");
    std::fs::remove_dir_all(data_dir).unwrap();
}

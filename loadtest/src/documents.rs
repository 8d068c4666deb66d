//! The documents benchmark: how fast rill indexes uploads (MB/s), and how
//! long retrieval takes in a project of 10,000 chunks (p50/p99), measured
//! against the release binary pinned to one core, like the suite.
//!
//! The documents are Markdown handbooks of numbered sections written from a
//! fixed vocabulary by a seeded generator (the same bytes every run); the
//! questions are drawn from the same words. Retrieval latency is read two
//! ways on a native socket: from sending the question to its `sources` frame
//! (what a client waits before the first token, less the model), and from the
//! `rag_retrieval` progress frame to `sources` (the search alone).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::{self, Target};
use crate::stats::{Samples, Summary};

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The rill release binary.
    pub rill: PathBuf,
    /// Where the JSON result goes.
    pub out: PathBuf,
    /// Chunks to index in all (about).
    pub chunks: usize,
    /// Documents they are spread over.
    pub documents: usize,
    /// Questions asked.
    pub questions: usize,
    /// The core rill is pinned to.
    pub server_core: usize,
    /// Runs (a fresh rill each); each figure reported is their median.
    pub runs: usize,
}

/// The measured figures.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Documents uploaded.
    pub documents: usize,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Chunks indexed (as the server counted them).
    pub chunks: u64,
    /// From the first upload to the last document completed, seconds.
    pub indexing_s: f64,
    /// Bytes indexed per second, in MB (10^6).
    pub indexing_mb_per_s: f64,
    /// Server CPU seconds spent while indexing.
    pub indexing_cpu_s: f64,
    /// Server resident memory after indexing, MiB.
    pub rss_after_indexing_mib: f64,
    /// Question sent → `sources` received, ms.
    pub question_to_sources_ms: Summary,
    /// `rag_retrieval` received → `sources` received, ms.
    pub search_ms: Summary,
    /// Questions that found at least one passage.
    pub answered_with_sources: usize,
}

/// A deterministic generator (xorshift).
struct Words(u64);

/// The vocabulary documents and questions are written in.
const VOCABULARY: [&str; 64] = [
    "refund",
    "expense",
    "holiday",
    "laptop",
    "security",
    "badge",
    "office",
    "manager",
    "invoice",
    "travel",
    "hotel",
    "train",
    "budget",
    "approval",
    "contract",
    "salary",
    "pension",
    "insurance",
    "doctor",
    "parking",
    "bicycle",
    "kitchen",
    "coffee",
    "meeting",
    "calendar",
    "deadline",
    "customer",
    "support",
    "ticket",
    "incident",
    "backup",
    "password",
    "network",
    "printer",
    "monitor",
    "keyboard",
    "training",
    "mentor",
    "review",
    "promotion",
    "feedback",
    "holidays",
    "weekend",
    "overtime",
    "remote",
    "visa",
    "relocation",
    "equipment",
    "software",
    "license",
    "vendor",
    "supplier",
    "audit",
    "compliance",
    "privacy",
    "policy",
    "handbook",
    "onboarding",
    "offboarding",
    "payroll",
    "receipt",
    "mileage",
    "allowance",
    "bonus",
];

impl Words {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn word(&mut self) -> &'static str {
        VOCABULARY[(self.next() % VOCABULARY.len() as u64) as usize]
    }

    /// A sentence of 8–16 words.
    fn sentence(&mut self) -> String {
        let n = 8 + (self.next() % 9) as usize;
        let mut words: Vec<&str> = (0..n).map(|_| self.word()).collect();
        words.insert(n / 2, "is handled by the");
        let mut text = words.join(" ");
        text.push('.');
        let first = text.remove(0).to_ascii_uppercase();
        text.insert(0, first);
        text
    }

    /// A handbook of `sections` sections of about 700 characters (one chunk each).
    fn handbook(&mut self, n: usize, sections: usize) -> String {
        let mut text = format!("# Handbook {n}\n\n");
        for s in 1..=sections {
            text.push_str(&format!(
                "## Section {s}: {} and {}\n\n",
                self.word(),
                self.word()
            ));
            let mut section = String::new();
            while section.len() < 650 {
                section.push_str(&self.sentence());
                section.push(' ');
            }
            text.push_str(section.trim_end());
            text.push_str("\n\n");
        }
        text
    }
}

/// A multipart body with the part `file`: (content type, body).
fn multipart(filename: &str, content: &[u8]) -> (String, Vec<u8>) {
    let boundary = "rill-loadtest-3f9a1c";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
         Content-Type: text/markdown\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Every figure of `runs` at its median (each sorted on its own).
fn medians(runs: &[Outcome]) -> Outcome {
    fn middle(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    }
    let of = |pick: &dyn Fn(&Outcome) -> f64| middle(runs.iter().map(pick).collect());
    let summary = |pick: &dyn Fn(&Outcome) -> Summary| Summary {
        count: pick(&runs[0]).count,
        min: of(&|o| pick(o).min),
        p50: of(&|o| pick(o).p50),
        p90: of(&|o| pick(o).p90),
        p99: of(&|o| pick(o).p99),
        max: of(&|o| pick(o).max),
        mean: of(&|o| pick(o).mean),
    };
    Outcome {
        documents: runs[0].documents,
        bytes: runs[0].bytes,
        chunks: runs[0].chunks,
        indexing_s: of(&|o| o.indexing_s),
        indexing_mb_per_s: of(&|o| o.indexing_mb_per_s),
        indexing_cpu_s: of(&|o| o.indexing_cpu_s),
        rss_after_indexing_mib: of(&|o| o.rss_after_indexing_mib),
        question_to_sources_ms: summary(&|o| o.question_to_sources_ms),
        search_ms: summary(&|o| o.search_ms),
        answered_with_sources: runs
            .iter()
            .map(|o| o.answered_with_sources)
            .min()
            .unwrap_or(0),
    }
}

/// Runs the benchmark `settings.runs` times, each against a fresh rill, and
/// writes every run and their medians to `documents.json`: the medians.
pub async fn run(settings: &Settings) -> Result<Outcome, String> {
    let mut runs = Vec::new();
    for n in 1..=settings.runs.max(1) {
        eprintln!("documents: run {n} of {}", settings.runs.max(1));
        runs.push(run_once(settings).await?);
    }
    let median = medians(&runs);
    std::fs::create_dir_all(&settings.out).map_err(|e| e.to_string())?;
    let path = settings.out.join("documents.json");
    let all = serde_json::json!({"median": median, "runs": runs});
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(median)
}

/// One run against a fresh rill.
async fn run_once(settings: &Settings) -> Result<Outcome, String> {
    let server = crate::suite::start_rill(
        settings.server_core,
        &settings.rill,
        &[
            "--demo-tokens",
            "8",
            "--demo-delay-ms",
            "0",
            "--max-document-bytes",
            "104857600",
            "--rate-limit-user",
            "0",
            "--rate-limit-ip",
            "0",
        ],
    )
    .await?;
    let outcome = measure(settings, server.port, server.pid).await;
    server.stop().await;
    outcome
}

async fn measure(settings: &Settings, port: u16, pid: u32) -> Result<Outcome, String> {
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut words = Words(0x9E37_79B9_7F4A_7C15);
    let sections = settings.chunks.div_ceil(settings.documents.max(1)).max(1);
    let documents: Vec<String> = (0..settings.documents.max(1))
        .map(|n| words.handbook(n, sections))
        .collect();
    let bytes: u64 = documents.iter().map(|d| d.len() as u64).sum();

    let before = crate::procstat::sample(pid).ok_or("cannot read the server's /proc")?;
    let started = Instant::now();
    for (n, document) in documents.iter().enumerate() {
        let (content_type, body) = multipart(&format!("handbook-{n}.md"), document.as_bytes());
        let response = http
            .post(format!("{base}/api/v1/projects/bench/documents"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != 202 {
            return Err(format!(
                "upload {n}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ));
        }
    }
    // Every document completed (bounded: ten minutes).
    let chunks = loop {
        let list: serde_json::Value = http
            .get(format!("{base}/api/v1/projects/bench/documents"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let docs = list["documents"].as_array().cloned().unwrap_or_default();
        if let Some(failed) = docs.iter().find(|d| d["status"] == "failed") {
            return Err(format!("a document failed: {failed}"));
        }
        if docs.len() == documents.len() && docs.iter().all(|d| d["status"] == "completed") {
            break docs
                .iter()
                .filter_map(|d| d["chunks"].as_u64())
                .sum::<u64>();
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err("indexing took more than ten minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let indexing = started.elapsed();
    let after = crate::procstat::sample(pid).ok_or("cannot read the server's /proc")?;

    let target = Target::parse(&format!("ws://127.0.0.1:{port}/ws/chat"))?;
    let (mut ws, _) = target.connect(0).await?;
    let mut to_sources = Samples::default();
    let mut search = Samples::default();
    let mut answered = 0;
    let wait = Duration::from_secs(30);
    for q in 0..settings.questions {
        let question = format!("How is the {} {} handled?", words.word(), words.word());
        let asked = Instant::now();
        client::send(
            &mut ws,
            &serde_json::json!({"type": "message", "message": question, "project_id": "bench",
                                "session_id": format!("bench-{q}"), "include_history": false}),
        )
        .await?;
        let mut retrieving = None;
        loop {
            let message = client::next_text(&mut ws, wait).await?;
            let tokio_tungstenite::tungstenite::Message::Text(text) = message else {
                continue;
            };
            let frame: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| e.to_string())?;
            match frame["type"].as_str() {
                Some("progress") if frame["step"] == "rag_retrieval" => {
                    retrieving = Some(Instant::now());
                }
                Some("sources") => {
                    let now = Instant::now();
                    to_sources.push(now - asked);
                    if let Some(at) = retrieving {
                        search.push(now - at);
                    }
                    if frame["sources"].as_array().is_some_and(|s| !s.is_empty()) {
                        answered += 1;
                    }
                }
                Some("complete") => break,
                Some("error") => return Err(format!("question {q}: {frame}")),
                _ => {}
            }
        }
    }
    Ok(Outcome {
        documents: documents.len(),
        bytes,
        chunks,
        indexing_s: indexing.as_secs_f64(),
        indexing_mb_per_s: bytes as f64 / 1e6 / indexing.as_secs_f64(),
        indexing_cpu_s: after.cpu_s - before.cpu_s,
        rss_after_indexing_mib: after.rss_kib as f64 / 1024.0,
        question_to_sources_ms: to_sources.summary(),
        search_ms: search.summary(),
        answered_with_sources: answered,
    })
}

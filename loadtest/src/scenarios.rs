//! The scenarios: `stream` (questions and streamed replies), `idle` (held
//! connections), `churn` (connect and disconnect), `resume` (drop mid-reply
//! and resume). Each is bounded in connections, messages and time, and
//! returns an [`Outcome`] with what the clients saw and what the server cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{
    Dialect, Kind, Place, Target, Ws, greet, next_text, ping, raise_file_limit, send_text,
};
use crate::procstat;
use crate::stats::{Samples, Summary};

/// Longest wait for any one frame before a client gives up on it.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the monitor reads the server and the token counter.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Most error texts kept in an outcome (the count is exact).
const KEPT_ERRORS: usize = 10;

/// What to run, against what.
#[derive(Debug, Clone)]
pub struct Load {
    /// The server.
    pub target: Target,
    /// Its process, for CPU and memory (`/proc/<pid>`).
    pub server_pid: Option<u32>,
    /// A name for the server in reports (`rill`, `baseline`).
    pub label: String,
    /// Hard bound on the scenario's duration.
    pub deadline: Duration,
    /// Show progress bars.
    pub progress: bool,
}

/// A scenario and its sizes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(tag = "scenario", rename_all = "snake_case")]
pub enum Scenario {
    /// `connections` clients each ask `messages` questions in turn.
    Stream {
        /// Concurrent connections.
        connections: usize,
        /// Questions per connection.
        messages: usize,
        /// Over how long the clients connect, evenly spread (ms); 0: all at
        /// once.
        #[serde(default)]
        ramp_ms: u64,
    },
    /// Hold `connections` idle connections for `hold_s` seconds.
    Idle {
        /// Connections.
        connections: usize,
        /// Seconds held.
        hold_s: u64,
    },
    /// Open and close `connections` connections, `concurrency` at a time.
    Churn {
        /// Connections in all.
        connections: usize,
        /// At once.
        concurrency: usize,
    },
    /// Like `Stream`, but each reply's connection is dropped after
    /// `drop_after` tokens and the client resumes on a new one.
    Resume {
        /// Concurrent connections.
        connections: usize,
        /// Questions per connection.
        messages: usize,
        /// Tokens read before the drop.
        drop_after: usize,
    },
}

impl Scenario {
    /// Its name.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Stream { .. } => "stream",
            Scenario::Idle { .. } => "idle",
            Scenario::Churn { .. } => "churn",
            Scenario::Resume { .. } => "resume",
        }
    }
}

/// What a scenario measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// The scenario and its sizes.
    pub scenario: Option<Scenario>,
    /// The server's name.
    pub label: String,
    /// Free-form notes on the server's settings (token count, pacing).
    pub settings: String,
    /// Wall time, seconds.
    pub duration_s: f64,
    /// TCP + WebSocket handshake.
    pub connect_ms: Summary,
    /// From sending a question (or a resume) to its first token.
    pub first_token_ms: Summary,
    /// `stream` and `resume`: from the start until every client's first
    /// reply had its first token, ms (none if a client never got one).
    #[serde(default)]
    pub opening_ms: Option<f64>,
    /// Between consecutive tokens of one reply.
    pub inter_arrival_ms: Summary,
    /// Tokens received.
    pub tokens: u64,
    /// Bytes of text frames received.
    pub bytes: u64,
    /// Tokens per second of wall time.
    pub tokens_per_s: f64,
    /// Bytes per second of wall time.
    pub bytes_per_s: f64,
    /// Replies (or connections, for idle and churn) that completed.
    pub completed: u64,
    /// How many were expected.
    pub expected: u64,
    /// Replies whose tokens did not add up to their `complete.response`.
    pub integrity_errors: u64,
    /// Tokens missing from a resumed reply (a gap in seq).
    pub lost_tokens: u64,
    /// Tokens received twice across a resume.
    pub duplicated_tokens: u64,
    /// Failures (connections refused, timeouts, error frames).
    pub error_count: u64,
    /// The first few failures' texts.
    pub errors: Vec<String>,
    /// Idle connections that answered a ping at the end.
    pub alive: Option<u64>,
    /// What the server cost.
    pub server: Option<ServerCost>,
    /// Over time.
    pub timeline: Vec<Point>,
    /// First-token latencies: (bucket start ms, count).
    pub first_token_histogram: Vec<(f64, u64)>,
}

/// The server's CPU and memory over a scenario.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ServerCost {
    /// CPU seconds used (user + system).
    pub cpu_s: f64,
    /// CPU used as a share of one core over the run, percent.
    pub cpu_pct: f64,
    /// Tokens delivered per CPU second of the server.
    pub tokens_per_cpu_s: f64,
    /// Resident memory before the clients connected, KiB.
    pub rss_before_kib: u64,
    /// Highest resident memory seen, KiB.
    pub rss_peak_kib: u64,
    /// Resident memory while loaded (idle: with every connection held), KiB.
    pub rss_loaded_kib: u64,
    /// (loaded − before) / connections, KiB.
    pub rss_per_connection_kib: f64,
    /// `stream` and `resume`: the server's CPU time (all threads, to the
    /// nanosecond) from before the first client connected until every
    /// client's first reply had its first token, per connection, µs: what
    /// opening a connection and starting its first reply costs the server.
    #[serde(default)]
    pub opening_cpu_us_per_connection: Option<f64>,
}

/// One sample over time.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Point {
    /// Seconds since the start.
    pub t_s: f64,
    /// Tokens received in this interval, per second.
    pub tokens_per_s: f64,
    /// Server resident memory, KiB.
    pub rss_kib: u64,
    /// Server CPU over this interval, percent of one core.
    pub cpu_pct: f64,
}

/// Counters every client adds to, read by the monitor.
#[derive(Default)]
struct Counters {
    tokens: AtomicU64,
    bytes: AtomicU64,
    completed: AtomicU64,
    /// Clients whose first reply has had its first token.
    first_tokens: AtomicU64,
    /// How many clients open (`stream`, `resume`), and the server to read
    /// when the last one's first token comes.
    clients: u64,
    server_pid: Option<u32>,
    /// The opening, once every client's first reply has its first token.
    opening: std::sync::OnceLock<Opening>,
}

/// When the last client's first reply had its first token, and what the
/// server had spent by then: the cost of opening every connection and
/// starting its first reply, the burst the at-once cases measure.
#[derive(Debug, Clone)]
struct Opening {
    at: Instant,
    server_threads: Option<procstat::ThreadTimes>,
}

impl Counters {
    /// Counts one client's first token of its first reply; the last client's
    /// reads the server's CPU time.
    fn first_token(&self) {
        if self.first_tokens.fetch_add(1, Ordering::Relaxed) + 1 == self.clients {
            let server_threads = self.server_pid.and_then(procstat::ThreadTimes::read);
            let _ = self.opening.set(Opening {
                at: Instant::now(),
                server_threads,
            });
        }
    }
}

/// What one client measured.
#[derive(Default)]
struct ClientReport {
    connect: Samples,
    first_token: Samples,
    inter_arrival: Samples,
    integrity_errors: u64,
    lost: u64,
    duplicated: u64,
    errors: Vec<String>,
}

impl ClientReport {
    fn merge(&mut self, other: ClientReport) {
        self.connect.extend(other.connect);
        self.first_token.extend(other.first_token);
        self.inter_arrival.extend(other.inter_arrival);
        self.integrity_errors += other.integrity_errors;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.errors.extend(other.errors);
    }
}

/// Samples the server and the counters until stopped.
struct Monitor {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<(Vec<Point>, u64)>,
    before: Option<procstat::ProcSample>,
}

impl Monitor {
    fn start(pid: Option<u32>, counters: Arc<Counters>) -> Self {
        let stop = Arc::new(tokio::sync::Notify::new());
        let before = pid.and_then(procstat::sample);
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let began = Instant::now();
            let mut timeline = Vec::new();
            let mut peak = before.map_or(0, |s| s.rss_kib);
            let mut last_tokens = 0;
            let mut last = before;
            let mut last_at = began;
            let mut ticker = tokio::time::interval(SAMPLE_EVERY);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = stopped.notified() => break,
                }
                let now = Instant::now();
                let tokens = counters.tokens.load(Ordering::Relaxed);
                let sample = pid.and_then(procstat::sample);
                let dt = now.duration_since(last_at).as_secs_f64().max(1e-6);
                let cpu_pct = match (last, sample) {
                    (Some(a), Some(b)) => (b.cpu_s - a.cpu_s) / dt * 100.0,
                    _ => 0.0,
                };
                if let Some(s) = sample {
                    peak = peak.max(s.rss_kib);
                }
                timeline.push(Point {
                    t_s: now.duration_since(began).as_secs_f64(),
                    tokens_per_s: (tokens - last_tokens) as f64 / dt,
                    rss_kib: sample.map_or(0, |s| s.rss_kib),
                    cpu_pct,
                });
                last_tokens = tokens;
                last = sample.or(last);
                last_at = now;
            }
            (timeline, peak)
        });
        Monitor { stop, task, before }
    }

    async fn finish(
        self,
        pid: Option<u32>,
    ) -> (
        Vec<Point>,
        u64,
        Option<procstat::ProcSample>,
        Option<procstat::ProcSample>,
    ) {
        let after = pid.and_then(procstat::sample);
        self.stop.notify_one();
        let (timeline, peak) = self.task.await.unwrap_or_default();
        (
            timeline,
            peak.max(after.map_or(0, |s| s.rss_kib)),
            self.before,
            after,
        )
    }
}

fn progress_bar(load: &Load, total: u64, what: &str) -> indicatif::ProgressBar {
    if !load.progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(format!("{} {what}", load.label));
    bar
}

/// Runs `scenario` against `load`.
pub async fn run(load: &Load, scenario: Scenario) -> Outcome {
    match scenario {
        Scenario::Stream {
            connections,
            messages,
            ramp_ms,
        } => {
            let ramp = Duration::from_millis(ramp_ms);
            streams(load, scenario, connections, messages, None, ramp).await
        }
        Scenario::Resume {
            connections,
            messages,
            drop_after,
        } => {
            let resume = Some(drop_after);
            streams(
                load,
                scenario,
                connections,
                messages,
                resume,
                Duration::ZERO,
            )
            .await
        }
        Scenario::Idle {
            connections,
            hold_s,
        } => idle(load, scenario, connections, Duration::from_secs(hold_s)).await,
        Scenario::Churn {
            connections,
            concurrency,
        } => churn(load, scenario, connections, concurrency).await,
    }
}

/// `stream` and `resume`.
async fn streams(
    load: &Load,
    scenario: Scenario,
    connections: usize,
    messages: usize,
    drop_after: Option<usize>,
    ramp: Duration,
) -> Outcome {
    raise_file_limit();
    let counters = Arc::new(Counters {
        clients: connections as u64,
        server_pid: load.server_pid,
        ..Counters::default()
    });
    let expected = (connections * messages) as u64;
    let bar = progress_bar(load, expected, scenario.name());
    let monitor = Monitor::start(load.server_pid, counters.clone());
    let opening_from = load.server_pid.and_then(procstat::ThreadTimes::read);
    let began = Instant::now();
    let run_id = began.elapsed().as_nanos() ^ u128::from(std::process::id());
    let tasks: Vec<_> = (0..connections)
        .map(|n| {
            let target = load.target.clone();
            let counters = counters.clone();
            let bar = bar.clone();
            // Client n connects at n/connections of the ramp.
            let wait = ramp.mul_f64(n as f64 / connections.max(1) as f64);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let mut report = ClientReport::default();
                let session = format!("load-{run_id:x}-{n}");
                if let Err(error) = stream_client(
                    &target,
                    n,
                    &session,
                    messages,
                    drop_after,
                    &counters,
                    &bar,
                    &mut report,
                )
                .await
                {
                    report.errors.push(error);
                }
                report
            })
        })
        .collect();
    let mut total = ClientReport::default();
    let (reports, aborted) = gather(tasks, load.deadline).await;
    for report in reports {
        total.merge(report);
    }
    if aborted > 0 {
        total.errors.push(format!(
            "{aborted} connections still running at the deadline"
        ));
    }
    bar.finish_and_clear();
    let duration = began.elapsed();
    let (timeline, peak, before, after) = monitor.finish(load.server_pid).await;
    let tokens = counters.tokens.load(Ordering::Relaxed);
    let bytes = counters.bytes.load(Ordering::Relaxed);
    let mut outcome = Outcome {
        scenario: Some(scenario),
        label: load.label.clone(),
        duration_s: duration.as_secs_f64(),
        connect_ms: total.connect.summary(),
        first_token_ms: total.first_token.summary(),
        inter_arrival_ms: total.inter_arrival.summary(),
        first_token_histogram: total.first_token.histogram(40),
        tokens,
        bytes,
        tokens_per_s: tokens as f64 / duration.as_secs_f64(),
        bytes_per_s: bytes as f64 / duration.as_secs_f64(),
        completed: counters.completed.load(Ordering::Relaxed),
        expected,
        integrity_errors: total.integrity_errors,
        lost_tokens: total.lost,
        duplicated_tokens: total.duplicated,
        timeline,
        ..Outcome::default()
    };
    outcome.server = server_cost(before, after, peak, None, tokens, duration, connections);
    if let Some(opening) = counters.opening.get() {
        outcome.opening_ms = Some(opening.at.duration_since(began).as_secs_f64() * 1000.0);
        if let (Some(server), Some(from), Some(to)) = (
            outcome.server.as_mut(),
            opening_from,
            opening.server_threads.as_ref(),
        ) {
            server.opening_cpu_us_per_connection =
                Some(to.since(&from) as f64 / 1000.0 / connections.max(1) as f64);
        }
    }
    keep_errors(&mut outcome, total.errors);
    outcome
}

fn keep_errors(outcome: &mut Outcome, errors: Vec<String>) {
    outcome.error_count = errors.len() as u64;
    outcome.errors = errors.into_iter().take(KEPT_ERRORS).collect();
}

fn server_cost(
    before: Option<procstat::ProcSample>,
    after: Option<procstat::ProcSample>,
    peak: u64,
    loaded: Option<u64>,
    tokens: u64,
    duration: Duration,
    connections: usize,
) -> Option<ServerCost> {
    let (before, after) = (before?, after?);
    let cpu_s = after.cpu_s - before.cpu_s;
    let loaded = loaded.unwrap_or(peak);
    Some(ServerCost {
        cpu_s,
        cpu_pct: cpu_s / duration.as_secs_f64() * 100.0,
        tokens_per_cpu_s: if cpu_s > 0.0 {
            tokens as f64 / cpu_s
        } else {
            0.0
        },
        rss_before_kib: before.rss_kib,
        rss_peak_kib: peak,
        rss_loaded_kib: loaded,
        rss_per_connection_kib: loaded.saturating_sub(before.rss_kib) as f64
            / connections.max(1) as f64,
        opening_cpu_us_per_connection: None,
    })
}

/// One client of `stream`/`resume`: `messages` questions in turn on one
/// conversation; with `drop_after`, each reply's connection is dropped after
/// that many tokens and the reply resumed on a new one.
#[allow(clippy::too_many_arguments)]
async fn stream_client(
    target: &Target,
    n: usize,
    session: &str,
    messages: usize,
    drop_after: Option<usize>,
    counters: &Counters,
    bar: &indicatif::ProgressBar,
    report: &mut ClientReport,
) -> Result<(), String> {
    let dialect = target.dialect;
    let (mut ws, took) = target.connect(n).await?;
    report.connect.push(took);
    for m in 0..messages {
        let question = format!("Load test question {m} from client {n}: how does rill stream?");
        send_text(&mut ws, dialect.question(&question, session)).await?;
        let mut sent = Instant::now();
        let mut text = String::new();
        let mut stream_id: Option<String> = None;
        let mut last_seq = 0u64;
        let mut last_token: Option<Instant> = None;
        let mut tokens_seen = 0usize;
        let mut dropped = false;
        // When the reply was last heard from: a keep-alive of the dialect's
        // own (Engine.IO's ping) does not count.
        let mut heard = Instant::now();
        loop {
            let wait = FRAME_TIMEOUT.saturating_sub(heard.elapsed());
            let message = match next_text(&mut ws, wait).await {
                Ok(message) => message,
                Err(e) if heard.elapsed() >= FRAME_TIMEOUT => {
                    return Err(format!(
                        "the reply stalled: nothing of it for {FRAME_TIMEOUT:?} ({e})"
                    ));
                }
                Err(e) => return Err(e),
            };
            let Message::Text(body) = &message else {
                continue;
            };
            counters
                .bytes
                .fetch_add(body.len() as u64, Ordering::Relaxed);
            let event = dialect.read(body.as_str())?;
            if event.kind != Kind::EnginePing {
                heard = Instant::now();
            }
            if stream_id.is_none() {
                stream_id = event.stream_id.as_deref().map(str::to_owned);
            }
            // A coalesced frame covers several seqs.
            let covered = match event.place(dialect, last_seq) {
                Place::Unnumbered => 1,
                Place::Duplicate => {
                    report.duplicated += 1;
                    continue;
                }
                Place::Next { first, last, lost } => {
                    report.lost += lost;
                    last_seq = last;
                    last - first + 1
                }
            };
            match event.kind {
                Kind::Token(token) => {
                    let now = Instant::now();
                    match last_token {
                        None if m == 0 && !dropped => {
                            report.first_token.push(now - sent);
                            counters.first_token();
                        }
                        None => report.first_token.push(now - sent),
                        Some(previous) => report.inter_arrival.push(now - previous),
                    }
                    last_token = Some(now);
                    text.push_str(&token);
                    counters.tokens.fetch_add(covered, Ordering::Relaxed);
                    tokens_seen += usize::try_from(covered).unwrap_or(usize::MAX);
                    if !dropped && drop_after.is_some_and(|after| tokens_seen >= after) {
                        // Drop without a close handshake, as a dead network does.
                        dropped = true;
                        let id = stream_id.clone().ok_or("a token of no stream")?;
                        drop(ws);
                        let (fresh, took) = target.connect(n).await?;
                        ws = fresh;
                        report.connect.push(took);
                        send_text(&mut ws, dialect.resume(&id, last_seq)).await?;
                        sent = Instant::now();
                        heard = sent;
                        last_token = None;
                    }
                }
                Kind::Complete(response) => {
                    if response != text.as_str() {
                        report.integrity_errors += 1;
                    }
                    counters.completed.fetch_add(1, Ordering::Relaxed);
                    bar.inc(1);
                    break;
                }
                Kind::Error(code) => return Err(format!("error frame: {code}")),
                Kind::EnginePing => send_text(&mut ws, "3".into()).await?,
                Kind::Pong | Kind::Other => {}
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

/// `idle`: connect, say hello, hold; at the end every connection must answer a
/// ping.
async fn idle(load: &Load, scenario: Scenario, connections: usize, hold: Duration) -> Outcome {
    let limit = raise_file_limit();
    let mut errors = Vec::new();
    if (connections as u64) + 64 > limit {
        errors.push(format!(
            "the open-file limit ({limit}) is below {connections} connections"
        ));
    }
    let counters = Arc::new(Counters::default());
    // Warm the server up with one connection, so its first-use allocations are
    // not counted against the idle ones.
    let dialect = load.target.dialect;
    if let Ok((mut ws, _)) = load.target.connect(0).await {
        let _ = greet(&mut ws, dialect, FRAME_TIMEOUT).await;
        let _ = ws.close(None).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let monitor = Monitor::start(load.server_pid, counters.clone());
    let began = Instant::now();
    let bar = progress_bar(load, connections as u64, "connect");
    let gate = Arc::new(Semaphore::new(256));
    let tasks: Vec<_> = (0..connections)
        .map(|n| {
            let target = load.target.clone();
            let gate = gate.clone();
            let bar = bar.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.ok()?;
                let result: Result<(Ws, Duration), String> = async {
                    let (mut ws, took) = target.connect(n).await?;
                    greet(&mut ws, target.dialect, FRAME_TIMEOUT).await?;
                    Ok((ws, took))
                }
                .await;
                bar.inc(1);
                Some(result)
            })
        })
        .collect();
    let mut held = Vec::with_capacity(connections);
    let mut connect = Samples::default();
    for task in tasks {
        match task.await {
            Ok(Some(Ok((ws, took)))) => {
                connect.push(took);
                held.push(ws);
            }
            Ok(Some(Err(error))) => errors.push(error),
            _ => errors.push("a connecting task failed".into()),
        }
    }
    bar.finish_and_clear();
    // Hold, then measure memory with everything connected and quiet. Each
    // connection answers the server's keep-alives meanwhile, as a real
    // client does (Engine.IO drops a socket that leaves its pings
    // unanswered); then it proves it is alive: it answers a ping.
    let (check, checking) = tokio::sync::watch::channel(false);
    let pings: Vec<_> = held
        .into_iter()
        .map(|mut ws| {
            let mut checking = checking.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = checking.wait_for(|now| *now) => {}
                    () = keep_alive(&mut ws, dialect) => {}
                }
                let alive = ping(&mut ws, dialect, FRAME_TIMEOUT).await.is_ok();
                let _ = ws.close(None).await;
                alive
            })
        })
        .collect();
    tokio::time::sleep(hold).await;
    let loaded = load.server_pid.and_then(procstat::sample);
    let _ = check.send(true);
    let mut alive = 0;
    for ping in pings {
        if matches!(ping.await, Ok(true)) {
            alive += 1;
        }
    }
    let duration = began.elapsed();
    let (timeline, peak, before, after) = monitor.finish(load.server_pid).await;
    let mut outcome = Outcome {
        scenario: Some(scenario),
        label: load.label.clone(),
        duration_s: duration.as_secs_f64(),
        connect_ms: connect.summary(),
        completed: connect.0.len() as u64,
        expected: connections as u64,
        alive: Some(alive),
        timeline,
        ..Outcome::default()
    };
    outcome.server = server_cost(
        before,
        after,
        peak,
        loaded.map(|s| s.rss_kib),
        0,
        duration,
        connections,
    );
    keep_errors(&mut outcome, errors);
    outcome
}

/// Reads an idle connection's frames until it fails, answering Engine.IO's
/// pings (the WebSocket library answers WebSocket pings by itself).
async fn keep_alive(ws: &mut Ws, dialect: Dialect) {
    loop {
        let Ok(message) = next_text(ws, Duration::from_secs(3600)).await else {
            return;
        };
        let engine_ping = message
            .to_text()
            .ok()
            .and_then(|text| dialect.read(text).ok())
            .is_some_and(|event| event.kind == Kind::EnginePing);
        if engine_ping && send_text(ws, "3".into()).await.is_err() {
            return;
        }
    }
}

/// `churn`: connections opened, greeted and closed, `concurrency` at a time.
async fn churn(load: &Load, scenario: Scenario, connections: usize, concurrency: usize) -> Outcome {
    raise_file_limit();
    let counters = Arc::new(Counters::default());
    let monitor = Monitor::start(load.server_pid, counters.clone());
    let bar = progress_bar(load, connections as u64, "churn");
    let began = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let target = load.target.clone();
            let next = next.clone();
            let bar = bar.clone();
            let counters = counters.clone();
            tokio::spawn(async move {
                let mut connect = Samples::default();
                let mut errors = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if n >= connections {
                        break;
                    }
                    let result: Result<Duration, String> = async {
                        let (mut ws, took) = target.connect(n).await?;
                        greet(&mut ws, target.dialect, FRAME_TIMEOUT).await?;
                        ws.close(None).await.map_err(|e| e.to_string())?;
                        Ok(took)
                    }
                    .await;
                    match result {
                        Ok(took) => {
                            connect.push(took);
                            counters.completed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => errors.push(error),
                    }
                    bar.inc(1);
                }
                (connect, errors)
            })
        })
        .collect();
    let mut connect = Samples::default();
    let mut errors = Vec::new();
    let (done, aborted) = gather(workers, load.deadline).await;
    for (samples, failures) in done {
        connect.extend(samples);
        errors.extend(failures);
    }
    for _ in 0..aborted {
        errors.push("a churn worker was still running at the deadline".into());
    }
    bar.finish_and_clear();
    let duration = began.elapsed();
    let (timeline, peak, before, after) = monitor.finish(load.server_pid).await;
    let completed = counters.completed.load(Ordering::Relaxed);
    let mut outcome = Outcome {
        scenario: Some(scenario),
        label: load.label.clone(),
        duration_s: duration.as_secs_f64(),
        connect_ms: connect.summary(),
        completed,
        expected: connections as u64,
        // Connections per second, in the throughput slot.
        tokens_per_s: completed as f64 / duration.as_secs_f64(),
        timeline,
        ..Outcome::default()
    };
    outcome.server = server_cost(before, after, peak, None, 0, duration, concurrency);
    keep_errors(&mut outcome, errors);
    outcome
}

/// What `tasks` gave, waiting for them until `deadline` from now; those
/// still running then are aborted, and counted. A task is polled before the
/// deadline, so one that finished counts as finished even when it is read
/// after the deadline passed.
async fn gather<T: Send + 'static>(
    tasks: Vec<tokio::task::JoinHandle<T>>,
    deadline: Duration,
) -> (Vec<T>, usize) {
    let deadline = tokio::time::sleep(deadline);
    tokio::pin!(deadline);
    let mut done = Vec::with_capacity(tasks.len());
    let mut aborted = 0;
    for mut task in tasks {
        tokio::select! {
            biased;
            result = &mut task => {
                // A task that panicked gives nothing (its client's report is lost).
                if let Ok(value) = result {
                    done.push(value);
                }
            }
            () = &mut deadline => {
                task.abort();
                aborted += 1;
            }
        }
    }
    (done, aborted)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// At the deadline, the tasks still running are aborted and counted;
    /// those that finished count as finished, even when they are read after
    /// the one that hung.
    #[tokio::test]
    async fn the_tasks_still_running_at_the_deadline_are_counted_and_stopped() {
        let (stopped, seen) = tokio::sync::oneshot::channel::<()>();
        let hung = tokio::spawn(async move {
            // Dropped (so `seen` hears of it) when the task is aborted.
            let _stopped = stopped;
            std::future::pending::<u32>().await
        });
        let quick = |n: u32| tokio::spawn(async move { n });
        let tasks = vec![quick(1), hung, quick(2), quick(3)];
        let gathered = super::gather(tasks, Duration::from_millis(200));
        let (done, aborted) = tokio::time::timeout(Duration::from_secs(30), gathered)
            .await
            .expect("gather gives up at its deadline");
        assert_eq!(done, [1, 2, 3]);
        assert_eq!(aborted, 1);
        tokio::time::timeout(Duration::from_secs(5), seen)
            .await
            .expect("the hung task was aborted")
            .unwrap_err();
    }
}

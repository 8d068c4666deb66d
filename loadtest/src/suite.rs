//! The benchmark suite: every case run against the baseline and against rill,
//! each server started fresh per run and pinned to its own core, the median
//! run kept. One command reproduces BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::client::{Dialect, Target};
use crate::report::{Case, Machine, SuiteResult};
use crate::scenarios::{Load, Outcome, Scenario, run};

/// The suite's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The rill release binary.
    pub rill: PathBuf,
    /// This tool's binary (it also serves the baseline).
    pub this: PathBuf,
    /// Where the report goes.
    pub out: PathBuf,
    /// Runs per case; the median is reported.
    pub runs: usize,
    /// Only the cases whose id starts with one of these.
    pub only: Vec<String>,
    /// Sizes divided by ten, for a quick look.
    pub quick: bool,
    /// The core the servers are pinned to (`taskset`).
    pub server_core: usize,
    /// Show progress.
    pub progress: bool,
    /// The Node `ws` peer: its script and the `ws` package it loads (run when
    /// `node` is on PATH and both exist).
    pub node_peer: Option<(PathBuf, PathBuf)>,
}

/// A case to run.
struct Plan {
    id: String,
    title: &'static str,
    scenario: Scenario,
    tokens: usize,
    delay_ms: u64,
    /// Whether the peers can run it (they do not resume, and speak only the
    /// native dialect).
    baseline: bool,
    /// What rill's clients speak.
    dialect: Dialect,
}

/// How many connections one process can hold: its open-file limit (raised as
/// far as allowed) less room for its own files.
fn descriptor_room() -> usize {
    usize::try_from(crate::client::raise_file_limit().saturating_sub(128)).unwrap_or(usize::MAX)
}

fn plans(quick: bool) -> Vec<Plan> {
    let q = |n: usize| if quick { (n / 10).max(1) } else { n };
    let stream = |connections, messages| Scenario::Stream {
        connections: q(connections),
        messages,
        ramp_ms: 0,
    };
    // `paced-1000`'s traffic, the connections opening over 1 s.
    let ramp = Scenario::Stream {
        connections: q(1000),
        messages: 2,
        ramp_ms: 1000,
    };
    let idle = |connections| Scenario::Idle {
        connections,
        hold_s: 10,
    };
    let mut plans = vec![
        Plan {
            id: "stream-100".into(),
            title: "100 connections × 20 questions, 200-token replies at full speed",
            scenario: stream(100, 20),
            tokens: 200,
            delay_ms: 0,
            baseline: true,
            dialect: Dialect::Native,
        },
        Plan {
            id: "paced-1000".into(),
            title: "1,000 connections × 2 questions, 200 tokens at 20 ms/token",
            scenario: stream(1000, 2),
            tokens: 200,
            delay_ms: 20,
            baseline: true,
            dialect: Dialect::Native,
        },
        Plan {
            id: "paced-1000-ramp".into(),
            title: "the same, the 1,000 connections opening over 1 s instead of at once",
            scenario: ramp,
            tokens: 200,
            delay_ms: 20,
            baseline: true,
            dialect: Dialect::Native,
        },
        Plan {
            id: "idle-5000".into(),
            title: "5,000 idle connections held 10 s",
            scenario: idle(q(5000)),
            tokens: 200,
            delay_ms: 0,
            baseline: true,
            dialect: Dialect::Native,
        },
        Plan {
            id: "idle-20000".into(),
            title: "20,000 idle connections held 10 s (fewer if the open-file limit is lower: \
                    each process keeps 128 descriptors for itself)",
            scenario: idle(q(20_000).min(descriptor_room())),
            tokens: 200,
            delay_ms: 0,
            baseline: true,
            dialect: Dialect::Native,
        },
        Plan {
            id: "churn-2000".into(),
            title: "2,000 connections opened, greeted and closed, 50 at a time",
            scenario: Scenario::Churn {
                connections: q(2000),
                concurrency: 50,
            },
            tokens: 200,
            delay_ms: 0,
            baseline: true,
            dialect: Dialect::Native,
        },
        Plan {
            id: "resume-100".into(),
            title: "100 connections × 5 questions, each reply dropped after 50 tokens and resumed",
            scenario: Scenario::Resume {
                connections: q(100),
                messages: 5,
                drop_after: 50,
            },
            tokens: 200,
            delay_ms: 5,
            baseline: false,
            dialect: Dialect::Native,
        },
    ];
    // The other dialects, rill alone: the paced traffic opening over 1 s,
    // and idle connections.
    for dialect in [Dialect::Seed002, Dialect::Socketio] {
        plans.push(Plan {
            id: format!("{}-paced-1000-ramp", dialect.name()),
            title: "paced-1000-ramp's traffic in another dialect (rill only)",
            scenario: ramp,
            tokens: 200,
            delay_ms: 20,
            baseline: false,
            dialect,
        });
        plans.push(Plan {
            id: format!("{}-idle-5000", dialect.name()),
            title: "idle-5000 in another dialect (rill only)",
            scenario: idle(q(5000)),
            tokens: 200,
            delay_ms: 0,
            baseline: false,
            dialect,
        });
    }
    for (connections, messages) in [(1, 3), (10, 3), (100, 3), (1000, 2)] {
        plans.push(Plan {
            id: format!("conns-{connections}"),
            title: "cost against connections: 200 tokens at 20 ms/token",
            scenario: Scenario::Stream {
                connections: if quick {
                    connections.min(100)
                } else {
                    connections
                },
                messages,
                ramp_ms: 0,
            },
            tokens: 200,
            delay_ms: 20,
            baseline: true,
            dialect: Dialect::Native,
        });
    }
    for (tokens, messages) in [(50, 20), (200, 10), (1000, 4), (4000, 2)] {
        plans.push(Plan {
            id: format!("length-{tokens}"),
            title: "cost against reply length: 100 connections at full speed",
            scenario: stream(100, messages),
            tokens,
            delay_ms: 0,
            baseline: true,
            dialect: Dialect::Native,
        });
    }
    plans
}

/// A server under test.
pub(crate) struct Server {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) port: u16,
    /// rill's data directory, removed afterwards.
    data_dir: Option<PathBuf>,
}

impl Server {
    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
        if let Some(dir) = self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `program args` pinned to `core` and waits until it logs that it listens.
async fn start(
    core: usize,
    program: &Path,
    args: Vec<String>,
    data_dir: Option<PathBuf>,
    port: u16,
) -> Result<Server, String> {
    let mut command = if which("taskset") {
        let mut command = Command::new("taskset");
        command.arg("-c").arg(core.to_string()).arg(program);
        command
    } else {
        Command::new(program)
    };
    let mut child = command
        .args(&args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let pid = child.id().ok_or("the server exited at once")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (ready, listening) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ready = Some(ready);
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("listening on")
                && let Some(ready) = ready.take()
            {
                let _ = ready.send(());
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), listening)
        .await
        .map_err(|_| format!("{} did not start listening", program.display()))?
        .map_err(|_| format!("{} exited before listening", program.display()))?;
    Ok(Server {
        child,
        pid,
        port,
        data_dir,
    })
}

/// Starts `rill` with `extra` flags and a data directory of its own, pinned
/// to `core`, on a free loopback port.
pub(crate) async fn start_rill(core: usize, rill: &Path, extra: &[&str]) -> Result<Server, String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let data_dir = std::env::temp_dir().join(format!("rill-bench-{}-{}", std::process::id(), port));
    let mut args = vec![
        "--addr".to_owned(),
        format!("127.0.0.1:{port}"),
        "--data-dir".to_owned(),
        data_dir.display().to_string(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    start(core, rill, args, Some(data_dir), port).await
}

/// Whether `program` is on PATH.
pub fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

async fn start_server(settings: &Settings, label: &str, plan: &Plan) -> Result<Server, String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let addr = format!("127.0.0.1:{port}");
    if label == "node-ws" {
        let (script, ws) = settings
            .node_peer
            .as_ref()
            .ok_or("the Node peer is not available")?;
        let args = vec![
            script.display().to_string(),
            ws.display().to_string(),
            port.to_string(),
            plan.tokens.to_string(),
            plan.delay_ms.to_string(),
        ];
        return start(settings.server_core, Path::new("node"), args, None, port).await;
    }
    if label == "baseline" {
        let args = vec![
            "baseline".into(),
            "--addr".into(),
            addr,
            "--tokens".into(),
            plan.tokens.to_string(),
            "--delay-ms".into(),
            plan.delay_ms.to_string(),
        ];
        start(settings.server_core, &settings.this, args, None, port).await
    } else {
        let data_dir =
            std::env::temp_dir().join(format!("rill-bench-{}-{}", std::process::id(), port));
        let args = vec![
            "--addr".into(),
            addr,
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--demo-tokens".into(),
            plan.tokens.to_string(),
            "--demo-delay-ms".into(),
            plan.delay_ms.to_string(),
        ];
        start(
            settings.server_core,
            &settings.rill,
            args,
            Some(data_dir),
            port,
        )
        .await
    }
}

/// The figure a run is ranked by when the median run is chosen.
fn rank(outcome: &Outcome) -> f64 {
    match outcome.scenario {
        Some(Scenario::Idle { .. }) => outcome.server.map_or(0.0, |s| s.rss_per_connection_kib),
        Some(Scenario::Churn { .. }) => outcome.connect_ms.p99,
        _ => outcome.server.map_or(0.0, |s| s.tokens_per_cpu_s),
    }
}

fn median(mut runs: Vec<Outcome>) -> Option<Outcome> {
    runs.sort_by(|a, b| rank(a).total_cmp(&rank(b)));
    let middle = runs.len() / 2;
    runs.into_iter().nth(middle)
}

/// Runs the suite and writes its report.
pub async fn run_suite(settings: Settings) -> Result<SuiteResult, String> {
    let placement = format!(
        "Servers pinned to core {} (taskset{}); load generator on cores {}.",
        settings.server_core,
        if which("taskset") {
            ""
        } else {
            " missing: not pinned"
        },
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                    .map(|v| v.trim().to_owned())
            })
            .unwrap_or_else(|| "?".into()),
    );
    let mut result = SuiteResult {
        machine: Machine::this(),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        runs: settings.runs,
        placement,
        cases: Vec::new(),
    };
    for plan in plans(settings.quick) {
        if !settings.only.is_empty()
            && !settings
                .only
                .iter()
                .any(|o| plan.id.starts_with(o.as_str()))
        {
            continue;
        }
        eprintln!("== {}: {}", plan.id, plan.title);
        let mut case = Case {
            id: plan.id.clone(),
            title: plan.title.to_owned(),
            tokens: plan.tokens,
            delay_ms: plan.delay_ms,
            ..Case::default()
        };
        let mut labels = vec!["rill"];
        if plan.baseline {
            labels.insert(0, "baseline");
            if settings.node_peer.is_some() {
                labels.insert(1, "node-ws");
            }
        }
        for label in &labels {
            let mut runs = Vec::new();
            for _ in 0..settings.runs.max(1) {
                let server = start_server(&settings, label, &plan).await?;
                let load = Load {
                    target: Target::parse(&format!(
                        "ws://127.0.0.1:{}{}",
                        server.port,
                        plan.dialect.path()
                    ))?
                    .speaking(plan.dialect),
                    server_pid: Some(server.pid),
                    label: (*label).to_owned(),
                    deadline: Duration::from_secs(600),
                    progress: settings.progress,
                };
                let mut outcome = run(&load, plan.scenario).await;
                outcome.settings = format!(
                    "{} tokens, {} ms/token, dialect {}",
                    plan.tokens,
                    plan.delay_ms,
                    plan.dialect.name()
                );
                eprintln!(
                    "   {label}: {}/{} done, {:.0} tokens/s, {:.0} tokens per CPU-s, first token p50 {:.1} ms p99 {:.1} ms, RSS/conn {:.1} KiB, errors {}",
                    outcome.completed,
                    outcome.expected,
                    outcome.tokens_per_s,
                    outcome.server.map_or(0.0, |s| s.tokens_per_cpu_s),
                    outcome.first_token_ms.p50,
                    outcome.first_token_ms.p99,
                    outcome.server.map_or(0.0, |s| s.rss_per_connection_kib),
                    outcome.error_count,
                );
                server.stop().await;
                runs.push(outcome);
            }
            case.runs.extend(runs.iter().cloned());
            if let Some(median) = median(runs) {
                case.outcomes.push(median);
            }
        }
        result.cases.push(case);
        crate::report::write(&settings.out, &result).map_err(|e| e.to_string())?;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_ids_are_unique_and_the_other_dialects_run_rill_alone() {
        let plans = plans(false);
        let mut ids: Vec<&str> = plans.iter().map(|p| p.id.as_str()).collect();
        ids.sort_unstable();
        let count = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), count, "two cases share an id");
        for dialect in [Dialect::Seed002, Dialect::Socketio] {
            let cases: Vec<&Plan> = plans.iter().filter(|p| p.dialect == dialect).collect();
            assert_eq!(cases.len(), 2, "{}", dialect.name());
            for case in cases {
                assert!(case.id.starts_with(dialect.name()), "{}", case.id);
                assert!(!case.baseline, "the peers speak only the native dialect");
            }
        }
        // `--only paced-1000` picks cases by prefix: the native ones.
        assert!(
            plans
                .iter()
                .filter(|p| p.id.starts_with("paced-1000"))
                .all(|p| p.dialect == Dialect::Native)
        );
    }
}

//! The `rill-loadtest` command line (see the library for the parts).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use rill_loadtest::client::{self, Target};
use rill_loadtest::scenarios::{self, Load, Scenario};
use rill_loadtest::{baseline, report, suite};

#[derive(Debug, Parser)]
#[command(
    name = "rill-loadtest",
    version,
    about = "Load generator and benchmark report for rill"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one scenario against a server that is already running.
    Run(RunArgs),
    /// Serves the baseline (pre-built frames) until killed.
    Baseline(BaselineArgs),
    /// Runs every case against the baseline and rill and writes the report.
    Suite(SuiteArgs),
    /// Indexing throughput and retrieval latency of a project's documents.
    Documents(DocumentsArgs),
}

#[derive(Debug, clap::Args)]
struct DocumentsArgs {
    /// The rill release binary.
    #[arg(long, default_value = "target/release/rill")]
    rill: PathBuf,
    /// Where `documents.json` goes.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Chunks to index in all (about).
    #[arg(long, default_value_t = 10_000)]
    chunks: usize,
    /// Documents they are spread over.
    #[arg(long, default_value_t = 20)]
    documents: usize,
    /// Questions asked after indexing.
    #[arg(long, default_value_t = 500)]
    questions: usize,
    /// The core rill is pinned to.
    #[arg(long, default_value_t = 0)]
    server_core: usize,
    /// Runs, each against a fresh rill (the medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The server's WebSocket URL (loopback only) [default:
    /// ws://127.0.0.1:3000 and the dialect's path].
    #[arg(long)]
    url: Option<String>,
    /// What the clients speak: native (`/ws/chat`), seed002 (`/ws`) or
    /// socketio (`/socket.io/`, Engine.IO's WebSocket transport).
    #[arg(long, default_value = "native")]
    dialect: String,
    /// stream, idle, churn or resume.
    #[arg(long, default_value = "stream")]
    scenario: String,
    /// Connections (stream, resume, idle: at once; churn: in all).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Questions per connection (stream, resume).
    #[arg(long, default_value_t = 5)]
    messages: usize,
    /// Tokens read before a resume scenario drops its connection.
    #[arg(long, default_value_t = 20)]
    drop_after: usize,
    /// Seconds idle connections are held.
    #[arg(long, default_value_t = 10)]
    hold_s: u64,
    /// Stream: over how long the connections open, evenly spread (ms; 0:
    /// all at once).
    #[arg(long, default_value_t = 0)]
    ramp_ms: u64,
    /// Churn: connections at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// The server's process id, to read its CPU and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The server's name in the output.
    #[arg(long, default_value = "server")]
    label: String,
    /// Hard bound on the run, seconds.
    #[arg(long, default_value_t = 600)]
    deadline_s: u64,
    /// Also write the outcome as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct BaselineArgs {
    /// Where to listen (loopback).
    #[arg(long, default_value = "127.0.0.1:3900")]
    addr: std::net::SocketAddr,
    /// Tokens per reply.
    #[arg(long, default_value_t = 200)]
    tokens: usize,
    /// Pause between tokens, ms.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

#[derive(Debug, clap::Args)]
struct SuiteArgs {
    /// The rill release binary.
    #[arg(long, default_value = "target/release/rill")]
    rill: PathBuf,
    /// Where the report goes.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Runs per case (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only cases whose id starts with one of these (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Sizes divided by ten.
    #[arg(long)]
    quick: bool,
    /// The core the servers are pinned to.
    #[arg(long, default_value_t = 0)]
    server_core: usize,
    /// The `ws` package for the Node peer (skipped when absent or without node).
    #[arg(long, default_value = "end2end/node_modules/ws")]
    node_ws: PathBuf,
    /// The Node peer's script.
    #[arg(long, default_value = "loadtest/peers/node-ws-peer.cjs")]
    node_peer: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rill-loadtest: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run_one(args).await,
            Command::Baseline(args) => serve_baseline(args).await,
            Command::Suite(args) => run_suite(args).await,
            Command::Documents(args) => run_documents(args).await,
        }
    })
}

async fn run_documents(args: DocumentsArgs) -> ExitCode {
    let settings = rill_loadtest::documents::Settings {
        rill: args.rill,
        out: args.out,
        chunks: args.chunks,
        documents: args.documents,
        questions: args.questions,
        server_core: args.server_core,
        runs: args.runs,
    };
    match rill_loadtest::documents::run(&settings).await {
        Ok(outcome) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&outcome).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("rill-loadtest: documents: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run_one(args: RunArgs) -> ExitCode {
    let target = client::Dialect::parse(&args.dialect).and_then(|dialect| {
        let url = args
            .url
            .clone()
            .unwrap_or_else(|| format!("ws://127.0.0.1:3000{}", dialect.path()));
        Target::parse(&url).map(|target| target.speaking(dialect))
    });
    let target = match target {
        Ok(target) => target,
        Err(error) => {
            eprintln!("rill-loadtest: {error}");
            return ExitCode::FAILURE;
        }
    };
    let scenario = match args.scenario.as_str() {
        "stream" => Scenario::Stream {
            connections: args.connections,
            messages: args.messages,
            ramp_ms: args.ramp_ms,
        },
        "resume" => Scenario::Resume {
            connections: args.connections,
            messages: args.messages,
            drop_after: args.drop_after,
        },
        "idle" => Scenario::Idle {
            connections: args.connections,
            hold_s: args.hold_s,
        },
        "churn" => Scenario::Churn {
            connections: args.connections,
            concurrency: args.concurrency,
        },
        other => {
            eprintln!("rill-loadtest: unknown scenario {other:?} (stream, idle, churn, resume)");
            return ExitCode::FAILURE;
        }
    };
    let load = Load {
        target,
        server_pid: args.server_pid,
        label: args.label,
        deadline: Duration::from_secs(args.deadline_s),
        progress: true,
    };
    let mut outcome = scenarios::run(&load, scenario).await;
    outcome.settings = format!("dialect {}", load.target.dialect.name());
    let json = serde_json::to_string_pretty(&outcome).unwrap_or_default();
    if let Some(path) = args.json
        && let Err(error) = std::fs::write(&path, &json)
    {
        eprintln!("rill-loadtest: cannot write {}: {error}", path.display());
    }
    println!("{json}");
    let clean = outcome.completed == outcome.expected
        && outcome.integrity_errors == 0
        && outcome.lost_tokens == 0
        && outcome.duplicated_tokens == 0
        && outcome.alive.is_none_or(|alive| alive == outcome.expected);
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn serve_baseline(args: BaselineArgs) -> ExitCode {
    if !args.addr.ip().is_loopback() {
        eprintln!("rill-loadtest: the baseline listens on loopback only");
        return ExitCode::FAILURE;
    }
    client::raise_file_limit();
    let listener = match baseline::listen(args.addr) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("rill-loadtest: cannot listen on {}: {error}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    println!("baseline listening on {}", args.addr);
    baseline::serve(
        listener,
        baseline::Reply::new(args.tokens),
        Duration::from_millis(args.delay_ms),
    )
    .await;
    ExitCode::SUCCESS
}

async fn run_suite(args: SuiteArgs) -> ExitCode {
    let this = match std::env::current_exe() {
        Ok(path) => path,
        Err(error) => {
            eprintln!("rill-loadtest: cannot find its own binary: {error}");
            return ExitCode::FAILURE;
        }
    };
    if !args.rill.is_file() {
        eprintln!(
            "rill-loadtest: no rill binary at {} (build it: ./x build)",
            args.rill.display()
        );
        return ExitCode::FAILURE;
    }
    let node_peer = (suite::which("node") && args.node_ws.is_dir() && args.node_peer.is_file())
        .then(|| {
            let absolute =
                |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            (absolute(&args.node_peer), absolute(&args.node_ws))
        });
    if node_peer.is_none() {
        eprintln!(
            "rill-loadtest: no Node peer (needs node, {} and {})",
            args.node_ws.display(),
            args.node_peer.display()
        );
    }
    let settings = suite::Settings {
        rill: args.rill,
        this,
        out: args.out.clone(),
        runs: args.runs,
        only: args.only,
        quick: args.quick,
        server_core: args.server_core,
        progress: true,
        node_peer,
    };
    match suite::run_suite(settings).await {
        Ok(result) => {
            print!("{}", report::summary_markdown(&result));
            eprintln!("report: {}", args.out.join("report.html").display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("rill-loadtest: {error}");
            ExitCode::FAILURE
        }
    }
}

//! The `rill` binary: parses the command line and runs the server or a subcommand.

use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: a token and a question each allocate a
/// little, and it measured 10–20 % less server CPU (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use rill::auth::JwtKeys;
use rill::config::{Cli, Command, Config, ServerArgs, TokenArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(ref args)) => mint_token(&cli.server, args),
        Some(Command::Reindex) => reindex(&cli.server),
        Some(Command::Serve) | None => serve(&cli.server),
    }
}

fn mint_token(server: &ServerArgs, args: &TokenArgs) -> ExitCode {
    let config = Config::from_args(server);
    match JwtKeys::load(&config.key_sources(), &config.data_dir) {
        Ok(keys) => {
            println!(
                "{}",
                keys.mint(
                    &args.sub,
                    args.email.as_deref(),
                    args.name.as_deref(),
                    args.ttl
                )
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("rill: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Logs as `RUST_LOG` says, else at `default`.
fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .init();
}

/// The async runtime, or the failure already said.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("rill: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        })
}

fn serve(server: &ServerArgs) -> ExitCode {
    init_logging("info,tower_http=warn");
    let config = Config::from_args(server);
    // Every connection is a file descriptor: take all the kernel allows (the
    // soft limit is often 1024, the hard one far higher).
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open files allowed"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
    // Before the runtime and its threads touch their first memory.
    if let Err(error) = rill::server::allow_huge_pages(server.huge_pages) {
        tracing::warn!(%error, "cannot set whether transparent huge pages are used");
    }
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(failed) => return failed,
    };
    runtime.block_on(async move {
        let addr = config.addr;
        let state = match rill::AppState::new(config).await {
            Ok(state) => state,
            Err(error) => {
                eprintln!("rill: cannot start: {error}");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = shutdown_signal();
        let listener = match rill::server::listen(addr) {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("rill: cannot listen on {addr}: {error} (use --addr or RILL_ADDR)");
                return ExitCode::FAILURE;
            }
        };
        let local = listener.local_addr().unwrap_or(addr);
        tracing::info!(
            "rill {} listening on http://{local} (provider: {}, auth required: {})",
            env!("CARGO_PKG_VERSION"),
            state.engine.provider_name(),
            state.config.auth_required
        );
        if state.config.auth_required {
            tracing::info!(
                "authentication required on every entry point (HS256 secret{})",
                match state.keys.public_keys() {
                    0 => String::new(),
                    n => format!(" and {n} public key(s)"),
                }
            );
        } else {
            tracing::info!(
                "anonymous mode: anyone who can reach this address may chat (tokens are \
                 optional; use --auth-required to require them)"
            );
        }
        match rill::serve(listener, state, shutdown).await {
            Ok(()) => {
                tracing::info!("rill stopped");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("rill: server error: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `rill reindex`: every project's search index rebuilt from the store.
fn reindex(server: &ServerArgs) -> ExitCode {
    init_logging("info");
    let config = Config::from_args(server);
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(failed) => return failed,
    };
    runtime.block_on(async move {
        let state = match rill::AppState::new(config).await {
            Ok(state) => state,
            Err(error) => {
                eprintln!("rill: cannot start: {error}");
                return ExitCode::FAILURE;
            }
        };
        // Documents a stop left processing finish first (they index themselves).
        state.documents.idle().await;
        match state.documents.reindex().await {
            Ok((projects, documents)) => {
                println!("reindexed {documents} document(s) in {projects} project(s)");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("rill: reindex failed: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed before
/// this returns, so a signal that arrives while the server starts is not lost
/// (the default action would kill the process without closing connections).
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
                    _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
                    _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
                },
                _ => {
                    tracing::warn!("cannot install signal handlers; stop rill by killing it");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C: shutting down");
    }
}

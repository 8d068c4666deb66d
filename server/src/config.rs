//! Configuration: the command line, its `RILL_*` environment variables, and the
//! typed [`Config`] the rest of the server reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::provider::openai::OpenAiSettings;

/// rill: a real-time LLM chat server in one binary.
///
/// Every flag can also be set by the environment variable shown next to it.
/// Precedence: flag, then environment, then default.
#[derive(Debug, Parser)]
#[command(name = "rill", version, about, long_about = None)]
pub struct Cli {
    /// What to do; without a subcommand, rill serves.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Server settings.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Subcommands besides serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve (the default when no subcommand is given).
    Serve,
    /// Mint a JWT signed with the configured secret, for trying authenticated clients.
    Token(TokenArgs),
    /// Rebuild every project's search index from the documents in the store
    /// (after restoring a backup, or to reclaim the index's disk space).
    /// Run it with the server stopped, or on an instance that is not serving.
    Reindex,
}

/// `rill token` flags.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (JWT `sub`).
    #[arg(long)]
    pub sub: String,
    /// The user's email (JWT `email`).
    #[arg(long)]
    pub email: Option<String>,
    /// The user's display name (JWT `name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    pub ttl: u64,
}

/// Flags of the server (shared by `rill` and `rill token`, which needs the secret).
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address to listen on. When unset and PORT is set, rill listens on 0.0.0.0:$PORT
    /// (the convention of container platforms).
    #[arg(long, env = "RILL_ADDR")]
    pub addr: Option<SocketAddr>,

    /// Directory for rill's files: the generated JWT secret and, unless
    /// --database-url says otherwise, the SQLite database rill.db.
    #[arg(long, env = "RILL_DATA_DIR", default_value = "rill-data")]
    pub data_dir: PathBuf,

    /// Where conversations are kept: postgres://user:pass@host/db, or
    /// sqlite://path/to/file.db. Unset: SQLite in <data-dir>/rill.db.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Most earlier messages of a conversation sent to the model with a question.
    #[arg(long, env = "RILL_HISTORY_MAX_MESSAGES", default_value_t = 40, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub history_max_messages: u32,

    /// Most characters of earlier messages sent to the model (the oldest are
    /// dropped first, whole messages only).
    #[arg(long, env = "RILL_HISTORY_MAX_CHARS", default_value_t = 32_000)]
    pub history_max_chars: u32,

    /// MiB of recent histories' text the SQLite writer keeps, so that a
    /// conversation's next question is sent with it without reading it back
    /// (0: keep none, read every history from the database).
    #[arg(long, env = "RILL_HISTORY_CACHE_MIB", default_value_t = 16, value_parser = clap::value_parser!(u32).range(0..=65_536))]
    pub history_cache_mib: u32,

    /// Least milliseconds between two saves of a reply being generated (a crash
    /// loses at most this much of it).
    #[arg(long, env = "RILL_CHECKPOINT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=600_000))]
    pub checkpoint_ms: u64,

    /// Let the allocator back memory with transparent huge pages (Linux).
    /// Off by default: while a fresh server's memory grows, each first touch
    /// of a 2 MiB page zeroes all of it in one stall on the thread that
    /// touched it (milliseconds on a virtual machine), and a question or a
    /// token waiting behind that thread waits too. On, memory grows in fewer
    /// page faults, which saved some CPU on some machines (BENCHMARKS.md).
    #[arg(long, env = "RILL_HUGE_PAGES")]
    pub huge_pages: bool,

    /// The key other services present (`Authorization: Bearer <key>`) to
    /// publish to rooms (`POST /api/v1/rooms/{room}/publish`). Unset: the
    /// publish API is off.
    #[arg(long, env = "RILL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// HS256 secret for JWTs. When unset, rill generates one and keeps it in
    /// <data-dir>/jwt-secret, so `rill token` and the server agree.
    #[arg(long, env = "RILL_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// An identity provider's PEM public key (RSA, EC P-256/P-384 or Ed25519):
    /// tokens signed with it (RS*, PS*, ES256/384, EdDSA) are accepted too.
    #[arg(long, env = "RILL_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// A JWKS file (`{"keys": [...]}`, as identity providers publish): tokens
    /// signed with its keys are accepted too (matched by `kid`).
    #[arg(long, env = "RILL_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,

    /// Required `aud` claim of every token (unset: not checked).
    #[arg(long, env = "RILL_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Required `iss` claim of every token (unset: not checked).
    #[arg(long, env = "RILL_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(long, env = "RILL_JWT_LEEWAY_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub jwt_leeway_secs: u64,

    /// Require a valid user token on every entry point: questions, streams,
    /// conversations, on every transport (AUTH_REQUIRED otherwise). Guests are
    /// refused.
    #[arg(long, env = "RILL_AUTH_REQUIRED")]
    pub auth_required: bool,

    /// With --auth-required, seconds a WebSocket may stay open without
    /// authenticating before it is closed (1008).
    #[arg(long, env = "RILL_AUTH_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub auth_timeout_secs: u64,

    /// Where replies come from: the offline demo, or an OpenAI-compatible endpoint.
    #[arg(long, env = "RILL_PROVIDER", value_enum, default_value_t = ProviderKind::Demo)]
    pub provider: ProviderKind,

    /// The OpenAI-compatible API base (OpenAI, Ollama, vLLM, llama.cpp, LiteLLM).
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub openai_base_url: String,

    /// The API key for --provider openai (read from OPENAI_API_KEY; never logged).
    #[arg(
        long,
        env = "OPENAI_API_KEY",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub openai_api_key: Option<String>,

    /// The model used when a request names none (openai provider).
    #[arg(long, env = "RILL_MODEL", default_value = "gpt-4o-mini")]
    pub model: String,

    /// An extra header sent upstream, K=V (repeatable; comma-separated in the variable),
    /// for gateways that need one.
    #[arg(
        long = "openai-header",
        env = "RILL_OPENAI_HEADERS",
        value_delimiter = ','
    )]
    pub openai_headers: Vec<String>,

    /// Seconds to wait for an upstream model's first token.
    #[arg(long, env = "RILL_FIRST_TOKEN_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub first_token_timeout_secs: u64,

    /// Seconds of upstream silence between chunks before the reply is ended as an error.
    #[arg(long, env = "RILL_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,

    /// Retries (with exponential backoff from 1 s) after an upstream 429, before the
    /// first token; then RATE_LIMITED.
    #[arg(long, env = "RILL_UPSTREAM_RETRIES", default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub upstream_retries: u32,

    /// Delay between demo tokens, in milliseconds (0 streams as fast as possible).
    #[arg(long, env = "RILL_DEMO_DELAY_MS", default_value_t = 25)]
    pub demo_delay_ms: u64,

    /// Length of a demo reply, in words (it ends at the end of a sentence, so it may
    /// run a few words longer).
    #[arg(long, env = "RILL_DEMO_TOKENS", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub demo_tokens: u32,

    /// Largest client WebSocket text frame or HTTP request body, in bytes. Larger ones
    /// get MESSAGE_TOO_LARGE; past max(4 × this, 1 MiB) the WebSocket is closed (1009).
    #[arg(long, env = "RILL_MAX_FRAME_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(256..=16_777_216))]
    pub max_frame_bytes: u32,

    /// More personas, from a TOML file of `[[persona]]` tables (id, name,
    /// description, system_prompt, model, temperature, keywords); an entry
    /// with a built-in's id replaces it. Checked at startup (docs/personas.md).
    #[arg(long, env = "RILL_PERSONAS")]
    pub personas: Option<PathBuf>,

    /// What each model costs, from a TOML file (`currency`, then
    /// `[[price]]` tables of model, input_per_million, output_per_million):
    /// replies and conversations show their cost (docs/protocol.md).
    #[arg(long, env = "RILL_PRICES")]
    pub prices: Option<PathBuf>,

    /// Most personas one message may ask for (one stream each).
    #[arg(long, env = "RILL_MAX_PERSONAS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_personas: u32,

    /// Most replies one connection may have generating at once (RATE_LIMITED past it).
    #[arg(long, env = "RILL_MAX_STREAMS_PER_CONNECTION", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_streams_per_connection: u32,

    /// Questions per minute per user or guest, in bursts of up to as many
    /// (RATE_LIMITED with retry_after_ms past it; 0: no limit).
    #[arg(long, env = "RILL_RATE_LIMIT_USER", default_value_t = 60)]
    pub rate_limit_user: u32,

    /// Questions per minute per client IP address (0: no limit).
    #[arg(long, env = "RILL_RATE_LIMIT_IP", default_value_t = 300)]
    pub rate_limit_ip: u32,

    /// Open WebSocket connections in all (OVERLOADED and close 1013 past it; 0: no cap).
    #[arg(long, env = "RILL_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: u32,

    /// Open WebSocket connections per client IP address (RATE_LIMITED and close 1013 past it; 0: no cap).
    #[arg(long, env = "RILL_MAX_CONNECTIONS_PER_IP", default_value_t = 1024)]
    pub max_connections_per_ip: u32,

    /// Open WebSocket connections per user or guest (RATE_LIMITED and close 1013 past it; 0: no cap).
    #[arg(long, env = "RILL_MAX_CONNECTIONS_PER_USER", default_value_t = 64)]
    pub max_connections_per_user: u32,

    /// Deepest nesting of arrays and objects in a client frame or body (INVALID_MESSAGE past it).
    #[arg(long, env = "RILL_MAX_JSON_DEPTH", default_value_t = 32, value_parser = clap::value_parser!(u32).range(2..=128))]
    pub max_json_depth: u32,

    /// Largest document a project accepts, in bytes (DOCUMENT_TOO_LARGE past it).
    #[arg(long, env = "RILL_MAX_DOCUMENT_BYTES", default_value_t = 20 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..=1024 * 1024 * 1024))]
    pub max_document_bytes: u64,

    /// Passages a question in a project retrieves from its documents (0: no retrieval).
    #[arg(long, env = "RILL_RETRIEVAL_TOP_K", default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=32))]
    pub retrieval_top_k: u32,

    /// Project search indexes kept open at once (the least recently used one not in use is closed past it).
    #[arg(long, env = "RILL_MAX_OPEN_INDEXES", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_open_indexes: u32,

    /// Longest question, in characters (MESSAGE_TOO_LARGE past it).
    #[arg(long, env = "RILL_MAX_MESSAGE_CHARS", default_value_t = 32_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_message_chars: u32,

    /// Most replies the server generates at once (OVERLOADED past it).
    #[arg(long, env = "RILL_MAX_STREAMS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,

    /// How long a finished stream stays replayable, in seconds.
    #[arg(long, env = "RILL_STREAM_RETENTION_SECS", default_value_t = 300)]
    pub stream_retention_secs: u64,

    /// Most bytes the finished streams kept for replay hold together (their
    /// text plus an estimate per event and per stream); past it the oldest
    /// are dropped before their retention ends.
    #[arg(long, env = "RILL_STREAM_RETENTION_MAX_BYTES", default_value_t = 256 << 20, value_parser = clap::value_parser!(u64).range(1 << 20..))]
    pub stream_retention_max_bytes: u64,

    /// Seconds a stream with no attached client keeps generating before it is cancelled.
    #[arg(long, env = "RILL_DETACH_GRACE", default_value_t = 60)]
    pub detach_grace: u64,

    /// Most events a stream keeps for replay (older ones are dropped; resuming before
    /// them gets STREAM_NOT_FOUND).
    #[arg(long, env = "RILL_REPLAY_MAX_EVENTS", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(16..))]
    pub replay_max_events: u32,

    /// Most bytes a stream keeps for replay: its events' text plus an estimated
    /// 128 bytes per event (the event, its sharing and its cached encodings).
    #[arg(long, env = "RILL_REPLAY_MAX_BYTES", default_value_t = 4 << 20, value_parser = clap::value_parser!(u32).range(4096..))]
    pub replay_max_bytes: u32,

    /// Seconds between the server's WebSocket pings.
    #[arg(long, env = "RILL_HEARTBEAT_SECS", default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_secs: u64,

    /// Seconds a WebSocket may stay open sending nothing but pings, with no reply
    /// running, before it is closed (1000, "idle timeout"); checked at each
    /// heartbeat. 0: never.
    #[arg(long, env = "RILL_CONNECTION_IDLE_SECS", default_value_t = 0)]
    pub connection_idle_secs: u64,

    /// Seconds without any traffic from a client, after a ping was due, before its
    /// WebSocket is closed.
    #[arg(long, env = "RILL_HEARTBEAT_TIMEOUT_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_timeout_secs: u64,

    /// On SIGTERM/SIGINT, seconds to let running replies finish before they are cut
    /// (and marked interrupted).
    #[arg(long, env = "RILL_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace: u64,

    /// An origin allowed to call the HTTP API from a browser (CORS), e.g. where the
    /// static UI is hosted: https://chat.example.com. Repeat the flag, or separate
    /// origins with commas in the variable; `*` allows any origin.
    #[arg(
        long = "allow-origin",
        env = "RILL_ALLOW_ORIGINS",
        value_delimiter = ','
    )]
    pub allow_origins: Vec<String>,

    /// A reverse proxy's address whose `X-Forwarded-For` is believed (its last
    /// entry is the client, for per-IP rates and caps). Repeat the flag, or
    /// separate addresses with commas in the variable.
    #[arg(
        long = "trusted-proxy",
        env = "RILL_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// Directory of the compiled site (wasm, js, css) when the binary does not embed it.
    #[arg(long, env = "LEPTOS_SITE_ROOT", default_value = "target/site")]
    pub site_root: PathBuf,
}

/// The `--provider` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderKind {
    /// Offline, deterministic demo replies (the default).
    Demo,
    /// An OpenAI-compatible chat completions endpoint.
    Openai,
}

/// The provider to build, with its settings.
#[derive(Debug, Clone)]
pub enum ProviderConfig {
    /// The offline demo.
    Demo,
    /// An OpenAI-compatible endpoint.
    OpenAi(OpenAiSettings),
}

/// The typed configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Where rill keeps its files.
    pub data_dir: PathBuf,
    /// The JWT secret, if given; otherwise it is read from or created in `data_dir`.
    pub jwt_secret: Option<String>,
    /// The publish API's key; `None`: the API is off.
    pub api_key: Option<String>,
    /// An identity provider's PEM public key.
    pub jwt_public_key: Option<PathBuf>,
    /// An identity provider's JWKS file.
    pub jwks_file: Option<PathBuf>,
    /// `aud`, `iss` and leeway rules for every token.
    pub token_rules: crate::auth::TokenRules,
    /// Whether every entry point needs a user token.
    pub auth_required: bool,
    /// How long a WebSocket may stay unauthenticated when auth is required.
    pub auth_timeout: Duration,
    /// Demo provider: delay between tokens.
    pub demo_delay: Duration,
    /// Demo provider: reply length in tokens.
    pub demo_tokens: usize,
    /// Application-level size limit for client frames and bodies.
    pub max_frame_bytes: usize,
    /// The personas file, if any.
    pub personas: Option<PathBuf>,
    /// The prices file, if any.
    pub prices: Option<PathBuf>,
    /// Most personas per message.
    pub max_personas: usize,
    /// Most replies generating at once on one connection.
    pub max_streams_per_connection: usize,
    /// Most replies generating at once on the server.
    pub max_streams: usize,
    /// Question rates and connection caps.
    pub limits: crate::limits::LimitSettings,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Deepest JSON nesting accepted from clients.
    pub max_json_depth: usize,
    /// Longest question, in characters.
    pub max_message_chars: usize,
    /// Documents: the largest file, and passages retrieved per question.
    pub documents: crate::documents::DocumentLimits,
    /// Replay window after a stream ends.
    pub stream_retention: Duration,
    /// Most bytes the finished streams inside that window hold together.
    pub stream_retention_budget: usize,
    /// The site directory when not embedded.
    pub site_root: PathBuf,
    /// How long a stream nobody watches keeps generating.
    pub detach_grace: Duration,
    /// How much history each stream keeps for replay.
    pub replay: crate::hub::ReplayLimits,
    /// The server's WebSocket ping interval (announced to clients).
    pub heartbeat: Duration,
    /// Silence past a due ping before a WebSocket is closed.
    pub heartbeat_timeout: Duration,
    /// How long a WebSocket may idle (nothing but pings, no reply running); zero: forever.
    pub connection_idle: Duration,
    /// How long running replies may finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Origins allowed to call the HTTP API from browsers (`*`: any).
    pub allow_origins: Vec<String>,
    /// Where replies come from.
    pub provider: ProviderConfig,
    /// The database, when not the SQLite file in `data_dir`.
    pub database_url: Option<DatabaseUrl>,
    /// History budget: messages.
    pub history_max_messages: usize,
    /// History budget: characters.
    pub history_max_chars: usize,
    /// Bytes of recent histories' text the SQLite writer keeps.
    pub history_cache_bytes: usize,
    /// Least time between checkpoints of a reply.
    pub checkpoint_interval: Duration,
}

/// A database URL; its password never shows in logs or debug output.
#[derive(Clone)]
pub struct DatabaseUrl(pub String);

impl DatabaseUrl {
    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.clone();
        };
        match rest.split_once('@') {
            Some((credentials, host)) => match credentials.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => url.clone(),
            },
            None => url.clone(),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Config {
    /// Builds the configuration from parsed flags and the standard `PORT` variable.
    pub fn from_args(args: &ServerArgs) -> Self {
        Self::from_args_and_port(args, std::env::var("PORT").ok())
    }

    fn from_args_and_port(args: &ServerArgs, port: Option<String>) -> Self {
        let addr =
            args.addr
                .unwrap_or_else(|| match port.and_then(|p| p.trim().parse::<u16>().ok()) {
                    Some(port) => SocketAddr::from(([0, 0, 0, 0], port)),
                    None => SocketAddr::from(([127, 0, 0, 1], 3000)),
                });
        Config {
            addr,
            data_dir: args.data_dir.clone(),
            jwt_secret: args.jwt_secret.clone().filter(|s| !s.is_empty()),
            api_key: args.api_key.clone().filter(|k| !k.is_empty()),
            jwt_public_key: args.jwt_public_key.clone(),
            jwks_file: args.jwks_file.clone(),
            token_rules: crate::auth::TokenRules {
                audience: args.jwt_audience.clone().filter(|a| !a.is_empty()),
                issuer: args.jwt_issuer.clone().filter(|i| !i.is_empty()),
                leeway_secs: args.jwt_leeway_secs,
            },
            auth_required: args.auth_required,
            auth_timeout: Duration::from_secs(args.auth_timeout_secs),
            demo_delay: Duration::from_millis(args.demo_delay_ms),
            demo_tokens: args.demo_tokens as usize,
            max_frame_bytes: args.max_frame_bytes as usize,
            personas: args.personas.clone(),
            prices: args.prices.clone(),
            max_personas: args.max_personas as usize,
            max_streams_per_connection: args.max_streams_per_connection as usize,
            max_streams: args.max_streams as usize,
            limits: crate::limits::LimitSettings {
                messages_per_minute_per_user: args.rate_limit_user,
                messages_per_minute_per_ip: args.rate_limit_ip,
                max_connections: args.max_connections as usize,
                max_connections_per_ip: args.max_connections_per_ip as usize,
                max_connections_per_user: args.max_connections_per_user as usize,
            },
            trusted_proxies: args.trusted_proxies.clone(),
            max_json_depth: args.max_json_depth as usize,
            max_message_chars: args.max_message_chars as usize,
            documents: crate::documents::DocumentLimits {
                max_bytes: usize::try_from(args.max_document_bytes).unwrap_or(usize::MAX),
                top_k: args.retrieval_top_k as usize,
                open_indexes: args.max_open_indexes as usize,
            },
            stream_retention: Duration::from_secs(args.stream_retention_secs),
            stream_retention_budget: usize::try_from(args.stream_retention_max_bytes)
                .unwrap_or(usize::MAX),
            site_root: args.site_root.clone(),
            detach_grace: Duration::from_secs(args.detach_grace),
            replay: crate::hub::ReplayLimits {
                max_events: args.replay_max_events as usize,
                max_bytes: args.replay_max_bytes as usize,
            },
            heartbeat: Duration::from_secs(args.heartbeat_secs),
            heartbeat_timeout: Duration::from_secs(args.heartbeat_timeout_secs),
            connection_idle: Duration::from_secs(args.connection_idle_secs),
            shutdown_grace: Duration::from_secs(args.shutdown_grace),
            provider: match args.provider {
                ProviderKind::Demo => ProviderConfig::Demo,
                ProviderKind::Openai => ProviderConfig::OpenAi(OpenAiSettings {
                    base_url: args.openai_base_url.clone(),
                    api_key: args.openai_api_key.clone().unwrap_or_default(),
                    default_model: args.model.clone(),
                    headers: args
                        .openai_headers
                        .iter()
                        .filter_map(|h| h.split_once('='))
                        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                        .collect(),
                    first_token_timeout: Duration::from_secs(args.first_token_timeout_secs),
                    idle_timeout: Duration::from_secs(args.idle_timeout_secs),
                    retries: args.upstream_retries,
                    retry_backoff: Duration::from_secs(1),
                }),
            },
            database_url: args
                .database_url
                .clone()
                .filter(|u| !u.trim().is_empty())
                .map(DatabaseUrl),
            history_max_messages: args.history_max_messages as usize,
            history_max_chars: args.history_max_chars as usize,
            history_cache_bytes: (args.history_cache_mib as usize) << 20,
            checkpoint_interval: Duration::from_millis(args.checkpoint_ms),
            allow_origins: args
                .allow_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
        }
    }

    /// A configuration for tests: ephemeral port, fast demo, a temporary data dir.
    pub fn for_tests(data_dir: PathBuf) -> Self {
        let args = ServerArgs::parse_from(["rill"]);
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            jwt_secret: Some("test-secret".into()),
            demo_delay: Duration::from_millis(2),
            demo_tokens: 40,
            ..Config::from_args_and_port(&args, None)
        }
    }

    /// Where the JWT keys come from.
    pub fn key_sources(&self) -> crate::auth::KeySources<'_> {
        crate::auth::KeySources {
            secret: self.jwt_secret.as_deref(),
            public_key: self.jwt_public_key.as_deref(),
            jwks_file: self.jwks_file.as_deref(),
            rules: self.token_rules.clone(),
        }
    }

    /// The hard transport cap on a WebSocket message: past it the connection closes (1009).
    pub fn ws_hard_limit(&self) -> usize {
        (self.max_frame_bytes * 4).max(1 << 20)
    }
}

impl ServerArgs {
    /// Parses only the server flags (used by tests and `Config::for_tests`).
    pub fn parse_from<I, T>(args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Cli::parse_from(args).server
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn default_address_is_loopback_3000() {
        let args = ServerArgs::parse_from(["rill"]);
        let config = Config::from_args_and_port(&args, None);
        assert_eq!(config.addr, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(config.max_frame_bytes, 65_536);
    }

    #[test]
    fn port_variable_binds_all_interfaces_unless_addr_is_given() {
        let args = ServerArgs::parse_from(["rill"]);
        let config = Config::from_args_and_port(&args, Some("8080".into()));
        assert_eq!(config.addr, "0.0.0.0:8080".parse().unwrap());
        let args = ServerArgs::parse_from(["rill", "--addr", "127.0.0.1:9000"]);
        let config = Config::from_args_and_port(&args, Some("8080".into()));
        assert_eq!(config.addr, "127.0.0.1:9000".parse().unwrap());
    }

    #[test]
    fn help_names_every_flag_and_its_variable() {
        let help = Cli::command().render_long_help().to_string();
        for (flag, env) in [
            ("--addr", "RILL_ADDR"),
            ("--data-dir", "RILL_DATA_DIR"),
            ("--jwt-secret", "RILL_JWT_SECRET"),
            ("--auth-required", "RILL_AUTH_REQUIRED"),
            ("--rate-limit-user", "RILL_RATE_LIMIT_USER"),
            ("--rate-limit-ip", "RILL_RATE_LIMIT_IP"),
            ("--max-connections", "RILL_MAX_CONNECTIONS"),
            ("--max-connections-per-ip", "RILL_MAX_CONNECTIONS_PER_IP"),
            (
                "--max-connections-per-user",
                "RILL_MAX_CONNECTIONS_PER_USER",
            ),
            ("--max-json-depth", "RILL_MAX_JSON_DEPTH"),
            ("--trusted-proxy", "RILL_TRUSTED_PROXIES"),
            ("--connection-idle-secs", "RILL_CONNECTION_IDLE_SECS"),
            ("--max-message-chars", "RILL_MAX_MESSAGE_CHARS"),
            ("--auth-timeout-secs", "RILL_AUTH_TIMEOUT_SECS"),
            ("--jwt-public-key", "RILL_JWT_PUBLIC_KEY"),
            ("--jwks-file", "RILL_JWKS_FILE"),
            ("--api-key", "RILL_API_KEY"),
            ("--jwt-audience", "RILL_JWT_AUDIENCE"),
            ("--jwt-issuer", "RILL_JWT_ISSUER"),
            ("--jwt-leeway-secs", "RILL_JWT_LEEWAY_SECS"),
            ("--demo-delay-ms", "RILL_DEMO_DELAY_MS"),
            ("--demo-tokens", "RILL_DEMO_TOKENS"),
            ("--max-frame-bytes", "RILL_MAX_FRAME_BYTES"),
            ("--max-personas", "RILL_MAX_PERSONAS"),
            ("--personas", "RILL_PERSONAS"),
            ("--prices", "RILL_PRICES"),
            ("--stream-retention-secs", "RILL_STREAM_RETENTION_SECS"),
            (
                "--stream-retention-max-bytes",
                "RILL_STREAM_RETENTION_MAX_BYTES",
            ),
            (
                "--max-streams-per-connection",
                "RILL_MAX_STREAMS_PER_CONNECTION",
            ),
            ("--max-streams", "RILL_MAX_STREAMS"),
            ("--site-root", "LEPTOS_SITE_ROOT"),
            ("--detach-grace", "RILL_DETACH_GRACE"),
            ("--replay-max-events", "RILL_REPLAY_MAX_EVENTS"),
            ("--replay-max-bytes", "RILL_REPLAY_MAX_BYTES"),
            ("--heartbeat-secs", "RILL_HEARTBEAT_SECS"),
            ("--heartbeat-timeout-secs", "RILL_HEARTBEAT_TIMEOUT_SECS"),
            ("--shutdown-grace", "RILL_SHUTDOWN_GRACE"),
            ("--allow-origin", "RILL_ALLOW_ORIGINS"),
            ("--provider", "RILL_PROVIDER"),
            ("--openai-base-url", "OPENAI_BASE_URL"),
            ("--openai-api-key", "OPENAI_API_KEY"),
            ("--model", "RILL_MODEL"),
            ("--openai-header", "RILL_OPENAI_HEADERS"),
            (
                "--first-token-timeout-secs",
                "RILL_FIRST_TOKEN_TIMEOUT_SECS",
            ),
            ("--idle-timeout-secs", "RILL_IDLE_TIMEOUT_SECS"),
            ("--upstream-retries", "RILL_UPSTREAM_RETRIES"),
            ("--database-url", "DATABASE_URL"),
            ("--history-max-messages", "RILL_HISTORY_MAX_MESSAGES"),
            ("--history-max-chars", "RILL_HISTORY_MAX_CHARS"),
            ("--history-cache-mib", "RILL_HISTORY_CACHE_MIB"),
            ("--checkpoint-ms", "RILL_CHECKPOINT_MS"),
        ] {
            assert!(help.contains(flag), "help lacks {flag}");
            assert!(help.contains(env), "help lacks {env}");
        }
    }

    #[test]
    fn the_api_key_never_shows_in_debug_output() {
        let args = ServerArgs::parse_from([
            "rill",
            "--provider",
            "openai",
            "--openai-api-key",
            "sk-very-secret-key",
        ]);
        let config = Config::from_args_and_port(&args, None);
        assert!(!format!("{config:?}").contains("sk-very-secret-key"));
    }

    #[test]
    fn database_passwords_never_show() {
        let url = DatabaseUrl("postgres://rill:hunter2@db:5432/rill".into());
        assert_eq!(url.redacted(), "postgres://rill:***@db:5432/rill");
        assert!(!format!("{url:?}").contains("hunter2"));
        let plain = DatabaseUrl("sqlite:///var/lib/rill.db".into());
        assert_eq!(plain.redacted(), "sqlite:///var/lib/rill.db");
    }

    #[test]
    fn frame_limit_is_bounded() {
        assert!(Cli::try_parse_from(["rill", "--max-frame-bytes", "10"]).is_err());
        assert!(Cli::try_parse_from(["rill", "--demo-tokens", "0"]).is_err());
    }

    #[test]
    fn the_retention_budget_is_at_least_a_mebibyte() {
        let parse =
            |bytes: &str| Cli::try_parse_from(["rill", "--stream-retention-max-bytes", bytes]);
        assert!(parse("1048575").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("1048576").is_ok());
        let args = ServerArgs::parse_from(["rill"]);
        let config = Config::from_args_and_port(&args, None);
        assert_eq!(config.stream_retention_budget, 256 << 20, "the default");
    }

    #[test]
    fn the_history_cache_is_in_mebibytes_and_bounded() {
        let parse = |mib: &str| Cli::try_parse_from(["rill", "--history-cache-mib", mib]);
        assert!(parse("-1").is_err());
        assert!(parse("65537").is_err());
        assert!(parse("lots").is_err());
        let config = |args: &[&str]| {
            let args = ServerArgs::parse_from(args);
            Config::from_args_and_port(&args, None).history_cache_bytes
        };
        assert_eq!(config(&["rill"]), 16 << 20, "the default");
        assert_eq!(
            crate::store::StoreOptions::default().history_cache_bytes,
            16 << 20,
            "the store opened without options keeps as much"
        );
        assert_eq!(config(&["rill", "--history-cache-mib", "0"]), 0);
        assert_eq!(config(&["rill", "--history-cache-mib", "3"]), 3 << 20);
    }
}

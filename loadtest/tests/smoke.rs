//! The load tool against the real rill router (in process, port 0) and the
//! baseline: small sizes, every scenario, and the integrity checks must hold.

use std::time::Duration;

use rill_loadtest::client::{Dialect, Target};
use rill_loadtest::scenarios::{Load, Scenario, run};

async fn rill_server(name: &str) -> (std::net::SocketAddr, rill::AppState, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("rill-loadtest-{name}-{}", std::process::id()));
    let mut config = rill::Config::for_tests(dir.clone());
    config.demo_tokens = 30;
    config.demo_delay = Duration::from_millis(1);
    let state = rill::AppState::new(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(rill::serve(listener, state.clone(), std::future::pending()));
    (addr, state, dir)
}

fn load(addr: std::net::SocketAddr, label: &str) -> Load {
    Load {
        target: Target::parse(&format!("ws://{addr}/ws/chat")).unwrap(),
        // This process: the numbers are not the point here, the reading is.
        server_pid: Some(std::process::id()),
        label: label.into(),
        deadline: Duration::from_secs(60),
        progress: false,
    }
}

/// Four clients × two questions, each reply dropped after 5 tokens and
/// resumed on a new connection: every reply whole, nothing lost or repeated.
async fn resumes_cleanly(load: &Load) {
    let resumed = run(
        load,
        Scenario::Resume {
            connections: 4,
            messages: 2,
            drop_after: 5,
        },
    )
    .await;
    assert_eq!(
        (resumed.completed, resumed.expected),
        (8, 8),
        "{}: {:?}",
        load.label,
        resumed.errors
    );
    assert_eq!(
        (
            resumed.lost_tokens,
            resumed.duplicated_tokens,
            resumed.integrity_errors
        ),
        (0, 0, 0),
        "{}",
        load.label
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_clean_against_rill() {
    let (addr, state, dir) = rill_server("native").await;
    let load = load(addr, "rill");

    let stream = run(
        &load,
        Scenario::Stream {
            connections: 8,
            messages: 3,
            ramp_ms: 0,
        },
    )
    .await;
    assert_eq!(
        (stream.completed, stream.expected),
        (24, 24),
        "{:?}",
        stream.errors
    );
    assert_eq!(stream.integrity_errors, 0);
    assert!(stream.tokens >= 24 * 20, "every reply streamed its tokens");
    assert_eq!(stream.first_token_ms.count, 24);
    assert!(stream.server.is_some_and(|s| s.cpu_s >= 0.0));
    // The opening: every client's first reply started, and what that cost.
    let opening = stream.opening_ms.expect("every first reply had a token");
    assert!(opening > 0.0 && opening <= stream.duration_s * 1000.0);
    let opening_cpu = stream
        .server
        .and_then(|s| s.opening_cpu_us_per_connection)
        .expect("the server's CPU read when the last first token came");
    assert!(opening_cpu > 0.0, "eight handshakes and questions cost CPU");

    resumes_cleanly(&load).await;

    let idle = run(
        &load,
        Scenario::Idle {
            connections: 50,
            hold_s: 1,
        },
    )
    .await;
    assert_eq!(idle.alive, Some(50), "{:?}", idle.errors);

    let churn = run(
        &load,
        Scenario::Churn {
            connections: 40,
            concurrency: 4,
        },
    )
    .await;
    assert_eq!(
        (churn.completed, churn.error_count),
        (40, 0),
        "{:?}",
        churn.errors
    );

    state.shutdown.cancel();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_and_socketio_clients_stream_resume_and_idle_clean() {
    let (addr, state, dir) = rill_server("dialects").await;
    for dialect in [Dialect::Seed002, Dialect::Socketio] {
        let mut load = load(addr, dialect.name());
        load.target = Target::parse(&format!("ws://{addr}{}", dialect.path()))
            .unwrap()
            .speaking(dialect);
        let stream = run(
            &load,
            Scenario::Stream {
                connections: 6,
                messages: 2,
                ramp_ms: 0,
            },
        )
        .await;
        assert_eq!(
            (stream.completed, stream.expected, stream.integrity_errors),
            (12, 12, 0),
            "{dialect:?}: {:?}",
            stream.errors
        );
        assert!(
            stream.tokens >= 12 * 20,
            "{dialect:?}: every reply streamed"
        );
        assert_eq!(stream.first_token_ms.count, 12, "{dialect:?}");
        resumes_cleanly(&load).await;
        let idle = run(
            &load,
            Scenario::Idle {
                connections: 20,
                hold_s: 1,
            },
        )
        .await;
        assert_eq!(idle.alive, Some(20), "{dialect:?}: {:?}", idle.errors);
    }
    // A client that speaks the wrong dialect for the path fails clearly.
    let mut load = load(addr, "mismatch");
    load.target = Target::parse(&format!("ws://{addr}{}", Dialect::Socketio.path()))
        .unwrap()
        .speaking(Dialect::Native);
    let refused = run(
        &load,
        Scenario::Stream {
            connections: 1,
            messages: 1,
            ramp_ms: 0,
        },
    )
    .await;
    assert_eq!((refused.completed, refused.error_count), (0, 1));
    state.shutdown.cancel();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_answers_like_rill() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(rill_loadtest::baseline::serve(
        listener,
        rill_loadtest::baseline::Reply::new(25),
        Duration::ZERO,
    ));
    let load = load(addr, "baseline");
    let stream = run(
        &load,
        Scenario::Stream {
            connections: 4,
            messages: 2,
            // Opening over 200 ms: the clients still all finish.
            ramp_ms: 200,
        },
    )
    .await;
    assert_eq!(
        (stream.completed, stream.integrity_errors),
        (8, 0),
        "{:?}",
        stream.errors
    );
    assert_eq!(stream.tokens, 8 * 25);
    // The last client opened 150 ms in (3/4 of the ramp), not at once.
    assert!(
        stream.duration_s >= 0.15,
        "the ramp was ignored: {} s",
        stream.duration_s
    );
    // The opening ends with the last client's first token, after it opened.
    assert!(
        stream.opening_ms.is_some_and(|ms| ms >= 150.0),
        "{:?}",
        stream.opening_ms
    );
    let idle = run(
        &load,
        Scenario::Idle {
            connections: 20,
            hold_s: 0,
        },
    )
    .await;
    assert_eq!(idle.alive, Some(20));
}

//! Serving: the listener, the router, and graceful shutdown.

use std::future::Future;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::AppState;
use crate::routes;

/// Connections the kernel may hold for `accept` (capped by `net.core.somaxconn`):
/// a burst of clients arriving together must queue, not be dropped and retried
/// a second later (tokio's default is 1024).
const LISTEN_BACKLOG: u32 = 4096;

/// How long shutdown waits for connections to send their close frames.
const CLOSE_FRAMES_WAIT: Duration = Duration::from_secs(2);

/// A listener on `addr` with a deep accept queue ([`LISTEN_BACKLOG`]).
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // A restarted server can bind while old connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Whether this process may get transparent huge pages (Linux; elsewhere
/// nothing to do). rill's allocator asks for them on the memory it maps,
/// and where the kernel grants them the first touch of each 2 MiB page
/// zeroes all of it at once, on whichever thread touched it: the runtime's,
/// with every connection waiting, or the SQLite writer's, in the middle of
/// a question's commit. Said to the kernel for the whole process
/// (`PR_SET_THP_DISABLE`), so it holds for every allocator in it and for
/// memory mapped before this call. `--huge-pages` allows them.
pub fn allow_huge_pages(allow: bool) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    rustix::thread::disable_transparent_huge_pages(!allow)?;
    #[cfg(not(target_os = "linux"))]
    let _ = allow;
    Ok(())
}

/// Serves on `listener` until `shutdown` resolves (or the state's shutdown token is
/// cancelled). Then: stop accepting; close WebSockets with 1012 and end SSE
/// responses (clients reconnect and resume); let running replies finish for
/// `--shutdown-grace`, and cut the rest, which end as `interrupted`, keeping
/// their text.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = routes::app(state.clone());
    let token = state.shutdown.clone();
    let engine = state.engine.clone();
    let grace = state.config.shutdown_grace;
    // Every frame is small and wanted now: with Nagle's algorithm a token
    // written while the previous one is unacknowledged would wait for the
    // peer's (delayed) ACK, up to 40 ms.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY");
        }
    });
    // Rate state of clients that went quiet is forgotten once a minute.
    let limits = state.limits.clone();
    let stop = state.shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = every.tick() => limits.forget_idle(),
                () = stop.cancelled() => break,
            }
        }
    });
    // The peer's address reaches handlers (per-IP rates and caps).
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            tokio::select! {
                () = shutdown => {}
                () = token.cancelled() => {}
            }
            token.cancel();
            // The drain deadline also bounds HTTP requests waiting for a reply.
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                engine.interrupt_all();
            });
        })
        .await?;
    state.engine.drain(grace).await;
    let _ = tokio::time::timeout(
        CLOSE_FRAMES_WAIT,
        state.connections.wait_until(|open| *open == 0),
    )
    .await;
    Ok(())
}

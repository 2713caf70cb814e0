//! Listeners and lifecycle: the data port (HTTP/1.1 and h2c, keep-alive, optionally TLS), the
//! admin port, the background tasks (readiness probe, credential refresher, certificate reload),
//! and graceful shutdown. Connections on both ports are served by [`crate::connection`] with the
//! same limits: at most `server.max_connections` open (up to `server.listen_backlog` more waiting
//! in the kernel's accept queue), header and idle timeouts.
//!
//! `Server::bind` then `Server::run(shutdown)` is what both `main` and the tests call; shutdown is
//! a future, so a test can end a server as a signal would.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::admin::{self, AdminState};
use crate::aliases::Aliases;
use crate::cache::{Cache, Clock, MonotonicClock};
use crate::config::Config;
use crate::connection::{self, CloseReason, Limits, Port};
use crate::fleet::{self, Fleet, SharedTier};
use crate::listener::Listener;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::readiness::Readiness;
use crate::tls::TlsAcceptor;
use crate::upstream::{error_chain, Upstream};
use crate::wait::Backoff;

/// A bound, not yet running, ddbcache.
pub struct Server {
    data: Listener,
    admin: Listener,
    proxy: Arc<Proxy>,
    config: Arc<Config>,
    cache: Option<Arc<Cache>>,
    fleet: Fleet,
    admin_state: Arc<AdminState>,
    readiness: Arc<Readiness>,
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    grace: Duration,
}

impl Server {
    /// Binds both ports and builds the upstream client (loading the credential chain).
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        let upstream = Arc::new(
            Upstream::new(&config.upstream)
                .await
                .context("cannot set up the upstream client")?,
        );
        Self::bind_with(config, upstream).await
    }

    /// Binds with a ready-made upstream client (tests inject credentials this way).
    pub async fn bind_with(config: Config, upstream: Arc<Upstream>) -> anyhow::Result<Server> {
        Self::bind_with_clock(config, upstream, MonotonicClock::new()).await
    }

    /// Binds with a ready-made upstream client and the clock the cache keeps its time by (tests
    /// move a `ManualClock` through TTLs instead of waiting for them).
    pub async fn bind_with_clock(
        config: Config,
        upstream: Arc<Upstream>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Server> {
        let tls = match config.tls.enabled() {
            true => Some(TlsAcceptor::load(&config.tls).context("cannot set up TLS")?),
            false => None,
        };
        let backlog = config.server.listen_backlog;
        let data = bind(config.listen.addr, backlog, "listen.addr")?;
        let admin = bind(config.listen.admin_addr, backlog, "listen.admin_addr")?;
        let metrics = Arc::new(Metrics::new());
        let readiness = Arc::new(Readiness::new(metrics.ready.clone()));
        let grace = config.server.shutdown_grace;
        let limits = Limits {
            header_timeout: config.server.header_timeout,
            idle_timeout: config.server.idle_timeout,
        };
        let max_connections = config.server.max_connections;
        for port in ["data", "admin"] {
            for reason in CloseReason::ALL {
                metrics
                    .connections_closed
                    .with_label_values(&[port, reason.label()]);
            }
        }
        let listener = |l, port| {
            let open = metrics.connections_open.with_label_values(&[port]);
            Listener::with_cap(l, port, max_connections, open)
        };
        let (data, admin) = (listener(data, "data"), listener(admin, "admin"));
        let config = Arc::new(config);
        let shared = SharedTier::new(&config, &metrics)?;
        let cache = config.cache.enabled.then(|| {
            let cache = Cache::new(&config, metrics.clone(), clock.clone());
            Arc::new(match &shared {
                Some(tier) => cache.with_tier(Arc::new(tier.clone())),
                None => cache,
            })
        });
        let aliases = Arc::new(Aliases::new(&config.aliases, cache.clone()));
        let fleet = Fleet::new(&config, cache.as_ref(), shared, &aliases, &metrics)?;
        let proxy = Arc::new(Proxy::new(
            config.clone(),
            upstream.clone(),
            cache.clone(),
            fleet.clone(),
            aliases.clone(),
            metrics.clone(),
        ));
        let admin_state = Arc::new(AdminState::new(
            metrics.clone(),
            readiness.clone(),
            cache.clone(),
            config.admin.clone(),
            aliases,
            fleet.clone(),
        ));
        Ok(Server {
            data,
            admin,
            proxy,
            config,
            cache,
            fleet,
            admin_state,
            readiness,
            upstream,
            metrics,
            tls,
            limits,
            grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.data.local_addr()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// The readiness this server reports on `/readyz`.
    pub fn readiness(&self) -> Arc<Readiness> {
        self.readiness.clone()
    }

    /// Serves until `shutdown` resolves; then stops accepting, reports not-ready, lets in-flight
    /// requests finish within the grace period, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Server {
            data,
            admin,
            proxy,
            config,
            cache,
            fleet,
            admin_state,
            readiness,
            upstream,
            metrics,
            tls,
            limits,
            grace,
        } = self;
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        info!(
            listen = %data.local_addr(),
            admin = %admin.local_addr(),
            upstream = upstream.endpoint(),
            tls = tls.is_some(),
            worker_threads = workers,
            "ddbcache serving"
        );
        let (stop, stopping) = watch::channel(false);
        // The admin port keeps serving while the data port drains (probes must see /readyz turn
        // 503, /healthz stay 200); its task is ended with the other background tasks.
        let (_admin_stop, admin_stopping) = watch::channel(false);
        let port = |name, shutdown: &watch::Receiver<bool>| Port {
            name,
            limits,
            shutdown: shutdown.clone(),
            closed: metrics.connections_closed.clone(),
        };
        let mut background = vec![
            tokio::spawn(probe_upstream(
                readiness.clone(),
                upstream.clone(),
                config.upstream.backstop,
            )),
            tokio::spawn(credentials_refresher(upstream.clone())),
            tokio::spawn(admin::serve(
                admin,
                admin_state,
                port("admin", &admin_stopping),
            )),
        ];
        // The fleet bus and stream readers, until this function returns.
        let _fleet = fleet::start(&config, &fleet, cache.as_ref(), &metrics, &upstream);
        if let Some(tls) = &tls {
            background.push(tokio::spawn(tls.clone().reload_forever()));
        }

        let data_port = port("data", &stopping);
        let handler = move |req| proxy.clone().handle(req);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = data.accept_counted() => {
                    let (stream, peer, slot) = accepted.into_parts();
                    let (port, handler) = (data_port.clone(), handler.clone());
                    let Some(tls) = tls.clone() else {
                        tokio::spawn(connection::serve(stream, peer, slot, port, handler));
                        continue;
                    };
                    tokio::spawn(async move {
                        let handshake = tokio::time::timeout(port.limits.header_timeout, tls.accept(stream));
                        match handshake.await {
                            Ok(Ok(stream)) => connection::serve(stream, peer, slot, port, handler).await,
                            Ok(Err(e)) => {
                                port.count_close(CloseReason::TlsHandshake);
                                debug!(peer = %peer, error = %e, "TLS handshake failed");
                            }
                            Err(_) => port.count_close(CloseReason::TlsHandshake),
                        }
                    });
                }
                _ = &mut shutdown => break,
            }
        }

        info!(grace = ?grace, "shutting down: draining in-flight requests");
        readiness.start_draining();
        let drained = data.drained();
        drop(data);
        let _ = stop.send(true);
        if tokio::time::timeout(grace, drained).await.is_err() {
            warn!("grace period over with requests still in flight; exiting anyway");
        }
        for task in background {
            task.abort();
        }
        info!("ddbcache stopped");
        Ok(())
    }
}

/// Listens on `addr` with room for `backlog` connections in the kernel's accept queue (tokio's
/// `TcpListener::bind` leaves 128: clients beyond the connection cap would find it full at once).
fn bind(addr: SocketAddr, backlog: u32, key: &str) -> anyhow::Result<TcpListener> {
    let listen = || {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // As `TcpListener::bind` does: a restarted process can listen again at once.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(backlog)
    };
    listen().with_context(|| format!("cannot listen on {key} {addr}"))
}

/// Binds and runs with a config: what `main` calls.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    Server::bind(config).await?.run(shutdown).await
}

/// How long the readiness probe's first attempt waits for its answer.
const PROBE_FIRST_WAIT: Duration = Duration::from_secs(1);

/// Marks the upstream usable once credentials load and it answers a ListTables; retries with
/// backoff until then. Requests wait for a slow upstream as long as their clients do, so a slow
/// answer is an answer here too: each attempt waits longer than the last ([`probe_waits`]), while
/// a hung connection holds readiness back for no longer than the attempt on it.
async fn probe_upstream(readiness: Arc<Readiness>, upstream: Arc<Upstream>, backstop: Duration) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    for wait in probe_waits(backstop) {
        match upstream.probe(wait).await {
            Ok(()) => {
                readiness.upstream_answered();
                info!("upstream reachable: ready");
                return;
            }
            Err(e) => warn!(error = %error_chain(&e), retry_in = ?backoff.next(), "not ready yet"),
        }
        backoff.wait().await;
    }
}

/// How long each attempt of the readiness probe waits for its answer: [`PROBE_FIRST_WAIT`], then
/// twice as long each time, up to `upstream.backstop` (the probe is a call no client waits for).
fn probe_waits(backstop: Duration) -> impl Iterator<Item = Duration> {
    let first = PROBE_FIRST_WAIT.min(backstop);
    std::iter::successors(Some(first), move |wait| Some((*wait * 2).min(backstop)))
}

/// Keeps signing credentials fresh ahead of their expiry, off the request path.
async fn credentials_refresher(upstream: Arc<Upstream>) {
    let Some(signer) = upstream.signer() else {
        return;
    };
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        if let Err(e) = signer.credentials().await {
            warn!(error = %error_chain(&e), "credential refresh failed");
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_probe_waits_twice_as_long_as_the_last_up_to_the_backstop() {
        let s = Duration::from_secs;
        let waits: Vec<_> = probe_waits(s(60)).take(8).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60].map(s));
        let short = Duration::from_millis(200);
        assert!(probe_waits(short).take(3).all(|w| w == short));
    }
}

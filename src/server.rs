//! Listeners and lifecycle: the data port (HTTP/1.1 and h2c, keep-alive), the admin port, the
//! readiness probe, and graceful shutdown.
//!
//! `Server::bind` then `Server::run(shutdown)` is what both `main` and the tests call; shutdown is
//! a future, so a test can end a server as a signal would.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::upstream::Upstream;

/// What the admin endpoints read: the proxy, its metrics, and the lifecycle flags.
pub struct AppState {
    pub proxy: Proxy,
    pub metrics: Arc<Metrics>,
    upstream_ok: AtomicBool,
    draining: AtomicBool,
    ready: watch::Sender<bool>,
}

impl AppState {
    /// Ready: credentials loaded and the upstream answered once, and not draining. A later
    /// upstream outage does not flip it: hits are still served and misses get retryable errors,
    /// and taking the pod out of its Service would not bring DynamoDB back.
    pub fn is_ready(&self) -> bool {
        self.upstream_ok.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// Follows readiness as it changes (to wait for it instead of polling `/readyz`).
    pub fn watch_ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    fn publish_ready(&self) {
        let ready = self.is_ready();
        self.metrics.ready.set(ready as i64);
        self.ready.send_replace(ready);
    }
}

/// A bound, not yet running, ddbcache.
pub struct Server {
    data: TcpListener,
    admin: TcpListener,
    state: Arc<AppState>,
    upstream: Arc<Upstream>,
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
        let data = TcpListener::bind(config.listen.addr)
            .await
            .with_context(|| format!("cannot listen on listen.addr {}", config.listen.addr))?;
        let admin = TcpListener::bind(config.listen.admin_addr)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on listen.admin_addr {}",
                    config.listen.admin_addr
                )
            })?;
        let metrics = Arc::new(Metrics::new());
        let grace = config.server.shutdown_grace;
        let config = Arc::new(config);
        let state = Arc::new(AppState {
            proxy: Proxy::new(config, upstream.clone(), metrics.clone()),
            metrics,
            upstream_ok: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            ready: watch::Sender::new(false),
        });
        Ok(Server {
            data,
            admin,
            state,
            upstream,
            grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.data
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves; then stops accepting, reports not-ready, lets in-flight
    /// requests finish within the grace period, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Server {
            data,
            admin,
            state,
            upstream,
            grace,
        } = self;
        info!(
            listen = %data.local_addr()?,
            admin = %admin.local_addr()?,
            upstream = upstream.endpoint(),
            "ddbcache serving"
        );
        let probe = tokio::spawn(readiness_probe(state.clone(), upstream.clone()));
        let refresher = tokio::spawn(credentials_refresher(upstream.clone()));
        let admin_task = tokio::spawn(crate::admin::serve(admin, state.clone()));

        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = data.accept() => {
                    let (stream, _) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: back off instead of spinning.
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let state = state.clone();
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(state.proxy.handle(req).await) }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                _ = &mut shutdown => break,
            }
        }

        info!(grace = ?grace, "shutting down: draining in-flight requests");
        state.draining.store(true, Ordering::Release);
        state.publish_ready();
        drop(data);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            warn!("grace period over with requests still in flight; exiting anyway");
        }
        probe.abort();
        refresher.abort();
        admin_task.abort();
        info!("ddbcache stopped");
        Ok(())
    }
}

/// Binds and runs with a config: what `main` calls.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    Server::bind(config).await?.run(shutdown).await
}

/// Marks the upstream usable once credentials load and it answers a ListTables; retries with
/// backoff until then.
async fn readiness_probe(state: Arc<AppState>, upstream: Arc<Upstream>) {
    let mut delay = Duration::from_millis(50);
    loop {
        match upstream.probe().await {
            Ok(()) => {
                state.upstream_ok.store(true, Ordering::Release);
                state.publish_ready();
                info!("upstream reachable: ready");
                return;
            }
            Err(e) => warn!(error = %e, retry_in = ?delay, "not ready yet"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Keeps signing credentials fresh ahead of their expiry, off the request path.
async fn credentials_refresher(upstream: Arc<Upstream>) {
    let Some(signer) = upstream.signer() else {
        return;
    };
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        if let Err(e) = signer.credentials().await {
            warn!(error = %e, "credential refresh failed");
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

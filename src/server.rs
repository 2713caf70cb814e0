//! Listeners and lifecycle: the data port (HTTP/1.1 and h2c, keep-alive), the admin port, the
//! background tasks (readiness probe, credential refresher), and graceful shutdown.
//!
//! `Server::bind` then `Server::run(shutdown)` is what both `main` and the tests call; shutdown is
//! a future, so a test can end a server as a signal would.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::listener::Listener;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::readiness::{self, Readiness};
use crate::upstream::{error_chain, Upstream};

/// A bound, not yet running, ddbcache.
pub struct Server {
    data: Listener,
    admin: Listener,
    proxy: Arc<Proxy>,
    admin_state: Arc<AdminState>,
    readiness: Arc<Readiness>,
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
        let data = bind(config.listen.addr, "listen.addr").await?;
        let admin = bind(config.listen.admin_addr, "listen.admin_addr").await?;
        let metrics = Arc::new(Metrics::new());
        let readiness = Arc::new(Readiness::new(metrics.ready.clone()));
        let grace = config.server.shutdown_grace;
        let proxy = Arc::new(Proxy::new(
            Arc::new(config),
            upstream.clone(),
            metrics.clone(),
        )?);
        let admin_state = Arc::new(AdminState {
            metrics,
            readiness: readiness.clone(),
            cache: proxy.cache().cloned(),
        });
        Ok(Server {
            data: Listener::new(data, "data"),
            admin: Listener::new(admin, "admin"),
            proxy,
            admin_state,
            readiness,
            upstream,
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
            admin_state,
            readiness,
            upstream,
            grace,
        } = self;
        info!(
            listen = %data.local_addr(),
            admin = %admin.local_addr(),
            upstream = upstream.endpoint(),
            "ddbcache serving"
        );
        let background = [
            tokio::spawn(readiness::probe_upstream(
                readiness.clone(),
                upstream.clone(),
            )),
            tokio::spawn(credentials_refresher(upstream.clone())),
            tokio::spawn(admin::serve(admin, admin_state)),
        ];
        // The fleet bus and stream readers, until this function returns.
        let _fleet = proxy.start_fleet();

        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                stream = data.accept() => {
                    let proxy = proxy.clone();
                    let service = service_fn(move |req| {
                        let proxy = proxy.clone();
                        async move { Ok::<_, std::convert::Infallible>(proxy.handle(req).await) }
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
        readiness.start_draining();
        drop(data);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            warn!("grace period over with requests still in flight; exiting anyway");
        }
        for task in background {
            task.abort();
        }
        info!("ddbcache stopped");
        Ok(())
    }
}

async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {key} {addr}"))
}

/// Binds and runs with a config: what `main` calls.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    Server::bind(config).await?.run(shutdown).await
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

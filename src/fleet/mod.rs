//! Fleet coherence: what keeps many sidecars, and writers that use none of them, from serving each
//! other's old values.
//!
//! - [`bus`]: with `[fleet] redis_url`, every write a sidecar forwards is published on Redis
//!   pub/sub before it is answered, and every peer applies it as its own write's invalidation.
//!   While the link is down (or own messages wait to be published), reads bypass the cache.
//! - [`streams`]: with `[streams] tables`, a table's DynamoDB Stream is read and the keys of its
//!   records invalidated, which bounds the staleness of writes made around every sidecar. With a
//!   fleet, one sidecar per table reads ([`lease`]) and publishes what it reads on the bus.
//!   [`kinesis`] does the same from the Kinesis data streams tables stream their changes to
//!   (`[streams] source = "kinesis"`), one reader per data stream.
//!
//! The proxy holds a [`Fleet`] (nothing but `None` when the bus is off): it asks
//! [`Fleet::blocked`] before using the cache and calls [`Fleet::publish`] once per write; the server
//! starts the background work with [`start`].

mod bus;
mod kinesis;
mod lease;
mod shared;
mod streams;

use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::warn;

use crate::aliases::{AliasKey, Aliases};
use crate::cache::Cache;
use crate::config::{Config, FleetConfig};
use crate::metrics::Metrics;
use crate::protocol::writes::WriteScope;
use crate::upstream::Upstream;
use bus::Bus;
pub(crate) use bus::{Blocked, Origin};
pub(crate) use shared::SharedTier;

/// A client of the fleet's Redis: `fleet.redis_url`, with TCP_NODELAY (every message and lookup
/// is a small exchange a request waits for: Nagle's algorithm and delayed ACKs would add tens of
/// milliseconds), trusting `fleet.redis_ca_file` when it names one.
pub(crate) fn redis_client(config: &FleetConfig) -> anyhow::Result<redis::Client> {
    let url = config
        .redis_url
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("fleet.redis_url is not set"))?;
    // redis-rs builds its rustls config from the process-wide provider, and more than one is
    // compiled in (the AWS SDK brings aws-lc-rs): name the one the upstream client uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let info = redis::IntoConnectionInfo::into_connection_info(url)?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    Ok(match &config.redis_ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("fleet.redis_ca_file {}: {e}", path.display()))?;
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )?
        }
        None => redis::Client::open(info)?,
    })
}

/// The proxy's handle on the bus; `None` inside when `[fleet]` is off (or the cache is).
#[derive(Clone, Default)]
pub(crate) struct Fleet {
    bus: Option<Arc<Bus>>,
    /// The shared tier, when the fleet keeps one (its connection is kept by [`start`]).
    shared: Option<SharedTier>,
}

impl Fleet {
    /// The bus of `config.fleet`, applying peers' messages to `cache`; off without a Redis URL or
    /// without a cache.
    pub(crate) fn new(
        config: &Config,
        cache: Option<&Arc<Cache>>,
        shared: Option<SharedTier>,
        aliases: &Arc<Aliases>,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Fleet> {
        let bus = match (cache, config.fleet.enabled()) {
            (Some(cache), true) => Some(Arc::new(Bus::new(
                &config.fleet,
                &config.upstream.region,
                cache.clone(),
                shared.clone(),
                aliases.clone(),
                metrics.clone(),
            )?)),
            _ => None,
        };
        Ok(Fleet { bus, shared })
    }

    /// Why hits may not be served now (`None`: they may). Off: no cost but a branch.
    #[inline]
    pub(crate) fn blocked(&self) -> Option<Blocked> {
        self.bus.as_ref()?.blocked()
    }

    /// Tells the fleet what a write (or control call) invalidated, before it is answered. Waits
    /// at most `fleet.publish_timeout`; never fails (see [`bus`]).
    pub(crate) async fn publish(&self, scope: &WriteScope, origin: Origin) {
        if let Some(bus) = &self.bus {
            bus.publish(scope, origin).await;
        }
    }

    /// Stores an admin alias for the whole fleet, before it is put in force here (without a bus:
    /// nothing to do, the alias is this sidecar's alone). Fails when the fleet's Redis cannot
    /// take it.
    pub(crate) async fn store_alias(
        &self,
        key: &AliasKey,
        table: Option<&str>,
    ) -> Result<(), String> {
        match &self.bus {
            Some(bus) => bus.store_alias(key, table).await,
            None => Ok(()),
        }
    }

    /// Tells every sidecar of the fleet to put the stored aliases in force.
    pub(crate) async fn aliases_changed(&self) {
        if let Some(bus) = &self.bus {
            bus.publish_aliases().await;
        }
    }
}

/// The fleet's background work: the bus thread and the stream readers. Dropping it stops them.
pub(crate) struct Background {
    stop: Option<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts the bus (on a thread of its own, so that peers' invalidations are applied without
/// waiting for data-plane work) and the stream readers.
pub(crate) fn start(
    config: &Config,
    fleet: &Fleet,
    cache: Option<&Arc<Cache>>,
    metrics: &Arc<Metrics>,
    upstream: &Arc<Upstream>,
) -> Background {
    let mut background = Background {
        stop: None,
        tasks: Vec::new(),
    };
    let shared = fleet.shared.clone().map(|s| tokio::spawn(s.run()));
    if let Some(bus) = &fleet.bus {
        let (stop, stopped) = oneshot::channel::<()>();
        let bus = bus.clone();
        let thread = std::thread::Builder::new()
            .name("ddbcache-fleet".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(error = %e, "fleet: cannot start the bus runtime");
                        return;
                    }
                };
                runtime.block_on(async {
                    tokio::select! {
                        _ = bus.run_subscriber() => {}
                        _ = bus.run_publisher() => {}
                        _ = stopped => {}
                    }
                });
            });
        match thread {
            Ok(_) => background.stop = Some(stop),
            Err(e) => warn!(error = %e, "fleet: cannot start the bus thread; hits stay off"),
        }
    }
    if let Some(cache) = cache {
        background.tasks = streams::spawn(
            config,
            cache.clone(),
            metrics.clone(),
            upstream.clone(),
            fleet.bus.clone(),
        );
    }
    background.tasks.extend(shared);
    background
}

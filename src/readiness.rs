//! Readiness: whether this sidecar should receive traffic, as `/readyz` and `ddbcache_ready`
//! report it.
//!
//! Ready means the upstream has answered once (so credentials load and the endpoint is right) and
//! the process is not draining. A later upstream outage does not flip it: hits are still served
//! and misses get retryable errors, and taking the pod out of its Service would not bring DynamoDB
//! back. Both the server (which drains) and the admin port (which reports) depend on this module;
//! neither depends on the other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::upstream::{error_chain, Upstream};
use crate::wait::Backoff;

pub struct Readiness {
    upstream_ok: AtomicBool,
    draining: AtomicBool,
    ready: watch::Sender<bool>,
    gauge: IntGauge,
}

impl Readiness {
    /// Not ready until the upstream answers; `gauge` mirrors the state for Prometheus.
    pub(crate) fn new(gauge: IntGauge) -> Readiness {
        gauge.set(0);
        Readiness {
            upstream_ok: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            ready: watch::Sender::new(false),
            gauge,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.upstream_ok.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// Follows readiness as it changes (to wait for it instead of polling `/readyz`).
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    pub(crate) fn upstream_answered(&self) {
        self.upstream_ok.store(true, Ordering::Release);
        self.publish();
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.publish();
    }

    fn publish(&self) {
        let ready = self.is_ready();
        self.gauge.set(ready as i64);
        self.ready.send_replace(ready);
    }
}

/// Marks the upstream usable once credentials load and it answers a ListTables; retries with
/// backoff until then.
pub(crate) async fn probe_upstream(readiness: Arc<Readiness>, upstream: Arc<Upstream>) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        match upstream.probe().await {
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

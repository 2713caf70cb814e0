//! The accept loop both ports share (and the load generator's baseline server, so that it accepts
//! exactly as ddbcache does): take the next connection, at most `server.max_connections` open at
//! once, and back off instead of spinning when accepting fails (out of file descriptors,
//! for one: the error repeats until a connection closes, and retrying at once would burn a core
//! while making nothing better).
//!
//! The connection cap is a semaphore, as in mini-redis: a slot is taken before accepting, so
//! clients beyond the cap wait in the kernel's accept queue (`server.listen_backlog` long, set
//! where the port is bound) instead of costing memory here, and
//! the slot comes back when the connection's task ends — which also tells shutdown when every
//! connection has closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::wait::Backoff;

/// First and longest pause after a failed accept.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A bound port and what it is for (named in logs and metrics).
pub struct Listener {
    listener: TcpListener,
    port: &'static str,
    slots: Arc<Semaphore>,
    max_connections: u32,
    open: IntGauge,
}

/// An accepted connection and its slot; the slot is given back when this is dropped.
pub(crate) struct Accepted {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    slot: Slot,
}

/// Holds one of the port's connection slots and counts it in `ddbcache_connections_open`.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    open: IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Accepted {
    pub(crate) fn into_parts(self) -> (TcpStream, SocketAddr, Slot) {
        (self.stream, self.peer, self.slot)
    }
}

impl Listener {
    /// A listener without a connection cap worth the name (the load generator's baseline).
    pub fn new(listener: TcpListener, port: &'static str) -> Listener {
        let uncounted = IntGauge::new("connections_open", "not exported").expect("valid gauge");
        Self::with_cap(listener, port, u32::MAX as usize, uncounted)
    }

    /// A listener with at most `max_connections` open, counted in `open`.
    pub(crate) fn with_cap(
        listener: TcpListener,
        port: &'static str,
        max_connections: usize,
        open: IntGauge,
    ) -> Listener {
        let max_connections =
            max_connections.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
        Listener {
            listener,
            port,
            slots: Arc::new(Semaphore::new(max_connections as usize)),
            max_connections,
            open,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The next connection, for a server that keeps no count of its connections.
    pub async fn accept(&self) -> TcpStream {
        self.accept_counted().await.stream
    }

    /// The next connection, with `TCP_NODELAY` set (answers are small and must not wait for
    /// Nagle) and its slot. Waits for a free slot first; failed accepts are retried with
    /// exponential backoff.
    pub(crate) async fn accept_counted(&self) -> Accepted {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the slot semaphore is never closed");
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    self.open.inc();
                    return Accepted {
                        stream,
                        peer,
                        slot: Slot {
                            _permit: permit,
                            open: self.open.clone(),
                        },
                    };
                }
                Err(e) => {
                    warn!(port = self.port, error = %e, retry_in = ?backoff.next(), "accept failed");
                    backoff.wait().await;
                }
            }
        }
    }

    /// A handle that resolves once every connection this port accepted has closed.
    pub(crate) fn drained(&self) -> impl std::future::Future<Output = ()> + 'static {
        let (slots, all) = (self.slots.clone(), self.max_connections);
        async move {
            let _ = slots.acquire_many(all).await;
        }
    }
}

//! The accept loop both ports share (and the load generator's baseline server, so that it accepts
//! exactly as ddbcache does): take the next connection, and back off instead of spinning
//! when accepting fails (out of file descriptors, for one: the error repeats until a connection
//! closes, and retrying at once would burn a core while making nothing better).

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

/// First and longest pause after a failed accept.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A bound port and what it is for (named in logs).
pub struct Listener {
    listener: TcpListener,
    port: &'static str,
}

impl Listener {
    pub fn new(listener: TcpListener, port: &'static str) -> Listener {
        Listener { listener, port }
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The next connection, with `TCP_NODELAY` set (answers are small and must not wait for
    /// Nagle). Failed accepts are retried with exponential backoff.
    pub async fn accept(&self) -> TcpStream {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    return stream;
                }
                Err(e) => {
                    warn!(port = self.port, error = %e, retry_in = ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

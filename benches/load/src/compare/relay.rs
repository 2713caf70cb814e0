//! A TCP relay that can make an upstream fail: it sits between ddbcache and the engine, passes
//! bytes both ways while the upstream is "up", and on cue stands for an outage of one of two
//! kinds, the two ddbcache has to tell apart:
//!
//! - [`Fault::Refuse`]: the endpoint is gone (a DNS name that resolves to nothing, a host that is
//!   down). The listening socket is closed, so a new connection is refused at once, and every
//!   connection already open is reset.
//! - [`Fault::Blackhole`]: the endpoint accepts connections and never answers (a hung service, a
//!   load balancer with nothing behind it). New connections are accepted and never read; bytes on
//!   connections already open stop moving both ways.
//!
//! Passing again ([`FaultRelay::heal`]) reopens the same port; connections held by a blackhole
//! are reset then, since the requests they carry were never answered. It works on bytes, not on
//! HTTP: what ddbcache sees is what the network would do, and a pooled keep-alive connection
//! fails as it would. The test suite's `Relay` (tests/common) works on HTTP requests, to capture
//! and answer them one by one; this one only has to be switched, in a benchmark's own process.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How the relay fails while an outage lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// Connections refused, and those open reset.
    Refuse,
    /// Connections accepted and never answered.
    Blackhole,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Refuse => "refuse",
            Fault::Blackhole => "blackhole",
        }
    }
}

/// `None`: passing bytes.
type Mode = Option<Fault>;

/// A running relay; stops (and resets whatever it holds) when dropped.
pub struct FaultRelay {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultRelay {
    /// A relay on a free loopback port in front of `upstream`, passing.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<FaultRelay> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fault relay")?;
        let addr = listener.local_addr()?;
        let (mode, watch) = watch::channel(None);
        let task = tokio::spawn(accept(listener, addr, upstream, watch));
        Ok(FaultRelay { addr, mode, task })
    }

    /// The URL to give ddbcache as its upstream.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, fail as `fault` says, connections already open included.
    pub fn fail(&self, fault: Fault) {
        self.mode.send_replace(Some(fault));
    }

    /// Pass bytes again, on the same port.
    pub fn heal(&self) {
        self.mode.send_replace(None);
    }
}

impl Drop for FaultRelay {
    fn drop(&mut self) {
        // Connection tasks end as the sender goes: each waits on it.
        self.task.abort();
    }
}

/// The accept loop: a listener while the relay is not refusing, none while it is.
async fn accept(
    mut listener: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(connection(client, upstream, mode.clone()));
                }
            }
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                if *mode.borrow_and_update() != Some(Fault::Refuse) {
                    continue;
                }
                // Closing the listener makes the kernel refuse new connections (and reset those
                // it had queued but not handed out).
                drop(listener);
                if mode.wait_for(|m| *m != Some(Fault::Refuse)).await.is_err() {
                    return;
                }
                listener = match rebind(addr).await {
                    Some(listener) => listener,
                    None => {
                        eprintln!("compare: the fault relay could not listen on {addr} again");
                        return;
                    }
                };
            }
        }
    }
}

/// Listens on `addr` again, retrying briefly: the port was this relay's a moment ago.
async fn rebind(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return Some(listener);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// One client connection, relayed to its own upstream connection until either side closes it
/// or an outage ends it.
async fn connection(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let _ = client.set_nodelay(true);
    if *mode.borrow_and_update() == Some(Fault::Blackhole) {
        return hold(client, mode).await;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return reset(client);
    };
    let _ = server.set_nodelay(true);
    let outage = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        outage = mode.wait_for(Option::is_some) => match outage {
            Ok(fault) => *fault,
            Err(_) => None,
        },
    };
    reset(server);
    match outage {
        Some(Fault::Blackhole) => hold(client, mode).await,
        _ => reset(client),
    }
}

/// Keeps a connection open and unread while the blackhole lasts, then resets it.
async fn hold(client: TcpStream, mut mode: watch::Receiver<Mode>) {
    let _ = mode.wait_for(|m| *m != Some(Fault::Blackhole)).await;
    reset(client);
}

/// Closes with a reset rather than a clean end: the peer sees its connection lost, not a
/// response that ended early.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An upstream that echoes every byte back.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(bytes).await?;
        let mut back = vec![0; bytes.len()];
        stream.read_exact(&mut back).await?;
        Ok(back)
    }

    /// What the relay is to do at once: a bound that fails a broken relay instead of hanging
    /// the test, not a measure of speed.
    async fn soon<T>(what: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), what)
            .await
            .expect("the relay did not act within 10 s")
    }

    fn addr(relay: &FaultRelay) -> SocketAddr {
        relay
            .url()
            .strip_prefix("http://")
            .unwrap()
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn refusing_resets_open_connections_refuses_new_ones_and_heals_on_the_same_port() {
        let relay = FaultRelay::start(echo().await).await.unwrap();
        let mut open = TcpStream::connect(addr(&relay)).await.unwrap();
        assert_eq!(round_trip(&mut open, b"ping").await.unwrap(), b"ping");

        relay.fail(Fault::Refuse);
        // The open connection is reset: reading ends in an error or at the end of the stream.
        let mut buf = [0u8; 4];
        let read = soon(open.read(&mut buf)).await;
        assert!(matches!(read, Err(_) | Ok(0)), "{read:?}");
        // New ones are refused (the listener is closed as soon as the relay sees the change).
        let refused = soon(async {
            loop {
                match TcpStream::connect(addr(&relay)).await {
                    Err(e) => break e,
                    Ok(_) => tokio::task::yield_now().await,
                }
            }
        })
        .await;
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

        relay.heal();
        let mut again = soon(async {
            loop {
                if let Ok(stream) = TcpStream::connect(addr(&relay)).await {
                    break stream;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert_eq!(round_trip(&mut again, b"pong").await.unwrap(), b"pong");
    }

    #[tokio::test]
    async fn a_blackhole_accepts_and_never_answers_until_healed() {
        let relay = FaultRelay::start(echo().await).await.unwrap();
        let mut open = TcpStream::connect(addr(&relay)).await.unwrap();
        assert_eq!(round_trip(&mut open, b"ping").await.unwrap(), b"ping");

        relay.fail(Fault::Blackhole);
        let mut new = TcpStream::connect(addr(&relay)).await.unwrap();
        for stream in [&mut open, &mut new] {
            let unanswered =
                tokio::time::timeout(Duration::from_millis(300), round_trip(stream, b"lost")).await;
            assert!(
                unanswered.is_err(),
                "answered in a blackhole: {unanswered:?}"
            );
        }

        // Healing resets what the blackhole held; new connections pass again.
        relay.heal();
        let mut buf = [0u8; 4];
        let read = soon(new.read(&mut buf)).await;
        assert!(matches!(read, Err(_) | Ok(0)), "{read:?}");
        let mut fresh = TcpStream::connect(addr(&relay)).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b"pong").await.unwrap(), b"pong");
    }
}

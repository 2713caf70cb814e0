//! Keep-alive connections to the upstream, each driven by the task whose exchange uses it.
//!
//! A pooled client in the usual shape (hyper-util's) runs every connection as a task of its own:
//! a request is handed to that task over a channel, its answer comes back over another, and the
//! two tasks wake each other at each step. Here an exchange takes an idle connection (or opens
//! one) and drives it itself, in the request's task, until the whole answer is read; then the
//! connection goes back to the pool for the next exchange. No task, channel or wake-up lies
//! between a request and its upstream's socket.
//!
//! A connection is only ever polled by the exchange that holds it. An idle one is polled once
//! when taken: a connection its server closed meanwhile ends there and is dropped, and a request
//! that a connection refused before writing a byte of it is sent on a new one (never a request
//! that may have reached the upstream: the proxy does not retry what it sent). Idle connections
//! older than `IDLE_TIMEOUT` are not used, and are closed when a connection is put back.

use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tower_service::Service;

/// How long an idle connection is used again: below the idle timeouts of DynamoDB's and common
/// engines' servers (node's 5 s), so that a pooled connection is not closed under a request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;
type Body = Full<Bytes>;

/// Why an exchange got no whole answer.
#[derive(Debug)]
pub(super) enum Failure {
    /// No connection could be opened: nothing was sent.
    Connect(String),
    /// The connection failed while the request was sent or its answer read.
    Io(String),
}

/// Idle connections per endpoint, most recently used last (so the oldest are first).
pub(super) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    idle: Mutex<HashMap<String, VecDeque<Idle>>>,
    /// `upstream.max_idle_per_host`.
    max_idle: usize,
    /// [`IDLE_TIMEOUT`].
    idle_timeout: Duration,
}

struct Idle {
    connection: Connection,
    since: Instant,
}

/// One HTTP/1.1 connection: the half that sends requests, and the half that does the I/O
/// (`None` once it has ended; on the heap, so that moving a connection in and out of the pool
/// moves a pointer rather than its buffers and parser state).
struct Connection {
    sender: http1::SendRequest<Body>,
    io: Option<Box<http1::Connection<Io, Body>>>,
}

impl Pool {
    pub(super) fn new(connector: HttpsConnector<HttpConnector>, max_idle: usize) -> Pool {
        Pool {
            connector,
            idle: Mutex::new(HashMap::new()),
            max_idle,
            idle_timeout: IDLE_TIMEOUT,
        }
    }

    /// Sends `request` to the endpoint `key` (whose URL is `base`) and reads its whole answer.
    /// `request`'s URI is absolute; it is sent in origin form.
    pub(super) async fn exchange(
        &self,
        key: &str,
        base: &Uri,
        mut request: Request<Body>,
    ) -> Result<(http::response::Parts, Bytes), Failure> {
        if let Some(path) = request.uri().path_and_query() {
            *request.uri_mut() = Uri::from(path.clone());
        }
        let (mut connection, response) = loop {
            let (mut connection, pooled) = match self.take(key) {
                Some(idle) => (idle, true),
                // On the heap: a connection is made seldom, and its future (resolving, TCP,
                // TLS, the handshake) would otherwise be most of every exchange's.
                None => (Box::pin(self.connect(base)).await?, false),
            };
            let sent = connection.sender.try_send_request(request);
            match connection.drive(sent).await {
                Ok(response) => break (connection, response),
                // Refused before a byte of it was written (the connection was closing): the
                // request has not been sent, so it may go on another connection.
                Err(mut refused) if pooled && refused.message().is_some() => {
                    request = refused.take_message().expect("checked above");
                }
                Err(failed) => return Err(Failure::Io(super::error_chain(failed.error()))),
            }
        };
        let (parts, body) = response.into_parts();
        let body = connection
            .drive(body.collect())
            .await
            .map_err(|e| Failure::Io(super::error_chain(&e)))?
            .to_bytes();
        self.put_back(key, connection);
        Ok((parts, body))
    }

    /// The most recently used idle connection of `key` that is still open.
    fn take(&self, key: &str) -> Option<Connection> {
        loop {
            let idle = self.idle.lock().get_mut(key)?.pop_back()?;
            let mut connection = idle.connection;
            if idle.since.elapsed() < self.idle_timeout && connection.poll_once() {
                return Some(connection);
            }
        }
    }

    /// Keeps `connection` for the next exchange, if it is still open and there is room. (It is
    /// polled when taken again: once now would be twice per exchange.)
    fn put_back(&self, key: &str, connection: Connection) {
        if connection.io.is_none() || connection.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock();
        let list = match idle.get_mut(key) {
            Some(list) => list,
            None => idle.entry(key.to_owned()).or_default(),
        };
        // Connections too old to be used again are closed here rather than when next taken: the
        // oldest are first. (With no traffic at all, at most `max_idle` of them wait for it.)
        while list
            .front()
            .is_some_and(|oldest| now.duration_since(oldest.since) >= self.idle_timeout)
        {
            list.pop_front();
        }
        if list.len() < self.max_idle {
            list.push_back(Idle {
                connection,
                since: now,
            });
        }
    }

    async fn connect(&self, base: &Uri) -> Result<Connection, Failure> {
        let mut connector = self.connector.clone();
        let io = connector
            .call(base.clone())
            .await
            .map_err(|e| Failure::Connect(super::error_chain(&*e)))?;
        let (sender, io) = http1::handshake(io)
            .await
            .map_err(|e| Failure::Connect(super::error_chain(&e)))?;
        Ok(Connection {
            sender,
            io: Some(Box::new(io)),
        })
    }
}

impl Connection {
    /// Polls the connection's I/O once, without waiting: whether it is still open and ready for
    /// a request (an idle connection notices here that its server closed it).
    fn poll_once(&mut self) -> bool {
        let Some(io) = &mut self.io else {
            return false;
        };
        if ended(io, &mut Context::from_waker(Waker::noop())) {
            self.io = None;
            return false;
        }
        !self.sender.is_closed()
    }

    /// Waits for `task` (a request's answer, or its body) while driving the connection's I/O,
    /// in the caller's task.
    async fn drive<T>(&mut self, task: impl Future<Output = T>) -> T {
        let mut task = pin!(task);
        poll_fn(|cx| {
            if let Poll::Ready(done) = task.as_mut().poll(cx) {
                return Poll::Ready(done);
            }
            if let Some(io) = &mut self.io {
                if ended(io, cx) {
                    // The connection ended (closed, or failed): what waits on it is told so when
                    // it is dropped, if it was not already.
                    self.io = None;
                }
            }
            task.as_mut().poll(cx)
        })
        .await
    }
}

/// Polls a connection's I/O half once: whether the connection has ended.
fn ended(io: &mut http1::Connection<Io, Body>, cx: &mut Context<'_>) -> bool {
    Pin::new(io).poll(cx).is_ready()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection to a listener that accepts and never answers (the handshake sends nothing).
    async fn connection(listener: &tokio::net::TcpListener) -> Connection {
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (sender, io) = http1::handshake(MaybeHttpsStream::Http(TokioIo::new(stream)))
            .await
            .unwrap();
        Connection {
            sender,
            io: Some(Box::new(io)),
        }
    }

    fn pool(max_idle: usize, idle_timeout: Duration) -> Pool {
        let mut pool = Pool::new(
            HttpsConnector::from((HttpConnector::new(), rustls_config())),
            max_idle,
        );
        pool.idle_timeout = idle_timeout;
        pool
    }

    fn rustls_config() -> std::sync::Arc<rustls::ClientConfig> {
        std::sync::Arc::new(
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
    }

    fn idle(pool: &Pool, key: &str) -> usize {
        pool.idle.lock().get(key).map_or(0, VecDeque::len)
    }

    #[tokio::test]
    async fn connections_past_the_idle_timeout_are_closed_when_one_is_put_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let kept = pool(8, Duration::from_secs(3600));
        let expiring = pool(8, Duration::ZERO);
        for _ in 0..3 {
            kept.put_back("a", connection(&listener).await);
            expiring.put_back("a", connection(&listener).await);
        }
        assert_eq!(idle(&kept, "a"), 3);
        // Each put back closed the ones before it, all past a zero timeout.
        assert_eq!(idle(&expiring, "a"), 1);
        assert!(expiring.take("a").is_none(), "too old to be used");
    }

    #[tokio::test]
    async fn at_most_max_idle_are_kept_and_the_newest_is_taken_first() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = pool(2, Duration::from_secs(3600));
        for _ in 0..3 {
            pool.put_back("a", connection(&listener).await);
        }
        assert_eq!(idle(&pool, "a"), 2);
        assert!(pool.take("a").is_some());
        assert!(pool.take("a").is_some());
        assert!(pool.take("a").is_none());
        assert!(pool.take("b").is_none(), "another endpoint's");
    }
}

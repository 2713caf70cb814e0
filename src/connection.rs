//! One client connection on either port, served (HTTP/1.1 or h2c, or either over TLS) with time
//! limits a slow or silent client cannot stretch:
//!
//! - **header timeout**: once a client starts sending a request (its first byte after the
//!   connection went quiet), the request must reach the handler within `server.header_timeout`,
//!   or the connection is closed. This stops clients that trickle headers a byte at a time.
//! - **idle timeout**: a connection with no request in flight and no byte moving either way for
//!   `server.idle_timeout` is shut down gracefully (silent connections, keep-alive connections
//!   left open, clients that stop reading their answer).
//! - the **body timeout** is the admission phase's (`proxy::budget`): it knows when a body ends.
//!
//! hyper's own `header_read_timeout` is not used: for HTTP/1.1 its clock starts when the
//! connection becomes ready for the next request, so it would also close every keep-alive
//! connection idle for longer than the header timeout, and HTTP/2 has no such timeout at all. A
//! small watchdog per connection covers both protocols: the connection's I/O and its handler
//! record progress in [`Activity`] (a few atomic stores), and the watchdog sleeps until the next
//! deadline, never longer than a header timeout. Nothing wakes it per request: a request that
//! begins while it sleeps toward a later deadline has its header deadline at least one header
//! timeout away, so the watchdog, awake again by then, still sees it in time. It runs in the
//! connection's task, and its timer and the shutdown signal are polled only after one of them
//! woke that task ([`Gated`]), not at every wake-up the connection's I/O causes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus::IntCounterVec;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use crate::listener::Slot;

/// The time limits of one port's connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
}

/// Why the server closed a connection: the `reason` label of `ddbcache_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    HeaderTimeout,
    IdleTimeout,
    TlsHandshake,
}

impl CloseReason {
    pub(crate) const ALL: [CloseReason; 3] = [
        CloseReason::HeaderTimeout,
        CloseReason::IdleTimeout,
        CloseReason::TlsHandshake,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::TlsHandshake => "tls_handshake",
        }
    }
}

/// What every connection of a port shares: its limits, the shutdown signal, and where closes are
/// counted.
#[derive(Clone)]
pub(crate) struct Port {
    pub(crate) name: &'static str,
    pub(crate) limits: Limits,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) closed: IntCounterVec,
}

impl Port {
    pub(crate) fn count_close(&self, reason: CloseReason) {
        self.closed
            .with_label_values(&[self.name, reason.label()])
            .inc();
    }
}

const NONE: u64 = u64::MAX;

/// A connection's progress, written by its I/O and its handler and read by its watchdog.
/// Times are milliseconds since the connection was accepted.
struct Activity {
    start: Instant,
    /// `start` on [`crate::clock::monotonic_ms`], the same clock read more cheaply.
    start_ms: u64,
    /// Requests inside the handler.
    in_flight: AtomicUsize,
    /// Last byte in or out, or the last request finishing.
    last_progress: AtomicU64,
    /// First byte read while no request was in flight: a request has begun arriving.
    request_begun: AtomicU64,
    /// The last answer was [`Lingering`]: what still arrives is the rest of its request's body.
    lingering: AtomicBool,
    /// The time of the connection task's current poll, read once at the first progress in it
    /// ([`NONE`] until then): a request's bytes in and its answer out usually move in one poll.
    poll_time: AtomicU64,
}

/// Marks an answer after which an HTTP/1 connection closes while what is still coming of its
/// request's body is read and thrown away (a lingering close: `proxy::admit` refusing a body).
/// The bytes that arrive meanwhile are that body, not the next request beginning, so the header
/// timeout does not cut the linger short (the idle timeout still ends a client that stops
/// sending).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lingering;

/// Whether the connection lingers after `response`: an answer marked [`Lingering`], on HTTP/1.
/// An HTTP/2 connection goes on serving its other streams (the refused stream's remaining frames
/// are its own), so its next requests keep their header timeout.
fn lingers(version: http::Version, response: &Response<Full<Bytes>>) -> bool {
    version < http::Version::HTTP_2 && response.extensions().get::<Lingering>().is_some()
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            start_ms: crate::clock::monotonic_ms(),
            in_flight: AtomicUsize::new(0),
            last_progress: AtomicU64::new(0),
            request_begun: AtomicU64::new(NONE),
            lingering: AtomicBool::new(false),
            poll_time: AtomicU64::new(NONE),
        }
    }

    fn now(&self) -> u64 {
        crate::clock::monotonic_ms().saturating_sub(self.start_ms)
    }

    /// The connection's task is polled again: the time is read afresh at the next progress.
    fn new_poll(&self) {
        self.poll_time.store(NONE, Ordering::Relaxed);
    }

    /// The time of the current poll, for progress of the connection's I/O (which only that poll
    /// makes).
    fn poll_now(&self) -> u64 {
        match self.poll_time.load(Ordering::Relaxed) {
            NONE => {
                let now = self.now();
                self.poll_time.store(now, Ordering::Relaxed);
                now
            }
            now => now,
        }
    }

    fn on_read(&self) {
        let now = self.poll_now();
        self.last_progress.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0 && !self.lingering.load(Ordering::Acquire) {
            // Only the first byte of a request marks its beginning.
            let _ =
                self.request_begun
                    .compare_exchange(NONE, now, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn on_write(&self) {
        self.last_progress.store(self.poll_now(), Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.request_begun.store(NONE, Ordering::Release);
    }

    /// A request's handler is done; `in_poll` when it ran in the connection's task (HTTP/1:
    /// the time of the task's poll is current), not in a task of its own (HTTP/2).
    fn request_finished(&self, in_poll: bool) {
        let now = if in_poll { self.poll_now() } else { self.now() };
        self.last_progress.store(now, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// The next deadline and what passing it means; `None` while a request is in flight (the
    /// body timeout bounds its body; its answer is waited for as long as its client waits).
    fn deadline(&self, limits: &Limits) -> Option<(Instant, CloseReason)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64, after: Duration| self.start + Duration::from_millis(ms) + after;
        match self.request_begun.load(Ordering::Acquire) {
            NONE => Some((
                at(
                    self.last_progress.load(Ordering::Relaxed),
                    limits.idle_timeout,
                ),
                CloseReason::IdleTimeout,
            )),
            begun => Some((at(begun, limits.header_timeout), CloseReason::HeaderTimeout)),
        }
    }
}

/// The connection's I/O, reporting progress to its [`Activity`].
struct Watched<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_write();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_write();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The watchdog's future (its timer and the shutdown signal), polled only after it woke the
/// connection's task. The task wakes two or three times a request for the connection's I/O;
/// polling the timer and the shutdown signal each time would re-check both for nothing.
struct Gated<F> {
    future: Pin<Box<F>>,
    wake: Arc<GateWake>,
    waker: Waker,
    /// The task's waker last registered: the same task polls it every time, so it is
    /// registered again only if it changed.
    registered: Option<Waker>,
}

/// Wakes the task that polls a [`Gated`] future, and remembers that it did.
struct GateWake {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for GateWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Gated<F> {
    fn new(future: F) -> Gated<F> {
        let wake = Arc::new(GateWake {
            // Polled once at first, which hands the future its waker.
            fired: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Gated {
            future: Box::pin(future),
            waker: Waker::from(wake.clone()),
            wake,
            registered: None,
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Whatever task polls last is the one woken.
        if !self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            self.wake.task.register(cx.waker());
            self.registered = Some(cx.waker().clone());
        }
        if !self.wake.fired.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let this = &mut *self;
        this.future
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

/// What woke the watchdog.
enum Watch {
    Shutdown,
    Deadline,
}

/// Decrements the in-flight count however the handler's future ends (finished or dropped).
struct InFlight {
    activity: Arc<Activity>,
    /// The handler runs in the connection's task (HTTP/1).
    in_poll: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.request_finished(self.in_poll);
    }
}

pin_project_lite::pin_project! {
    /// A request's handler, and what its end means to the connection. A future of its own: an
    /// `async` block awaiting the handler's future (kilobytes) would move it once more at its
    /// first poll, and a mapped one moves it out whole when it ends.
    struct Tracked<F> {
        #[pin]
        answer: F,
        in_flight: Option<InFlight>,
        version: http::Version,
    }
}

impl<F: Future<Output = Response<Full<Bytes>>>> Future for Tracked<F> {
    type Output = Result<Response<Full<Bytes>>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.answer.poll(cx));
        if let Some(in_flight) = this.in_flight.take() {
            if lingers(*this.version, &response) {
                // Before the request counts as finished: no byte read in between may be taken
                // for a next request's.
                in_flight.activity.lingering.store(true, Ordering::Release);
            }
        }
        Poll::Ready(Ok(response))
    }
}

/// Serves one connection until it closes, a limit closes it, or shutdown drains it. `slot` is the
/// port's connection slot, given back when this returns.
pub(crate) async fn serve<IO, H, Fut>(io: IO, peer: SocketAddr, slot: Slot, port: Port, handler: H)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let _slot = slot;
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        service_fn(move |req: Request<Incoming>| {
            activity.request_started();
            let version = req.version();
            let in_flight = InFlight {
                activity: activity.clone(),
                in_poll: version < http::Version::HTTP_2,
            };
            Tracked {
                answer: handler(req),
                in_flight: Some(in_flight),
                version,
            }
        })
    };
    let io = Watched {
        io,
        activity: activity.clone(),
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut shutdown = port.shutdown.clone();
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    // After a graceful shutdown was asked for, how long the client has to finish.
    let mut hard_deadline: Option<Instant> = None;
    loop {
        // At most a header timeout away: a request that begins meanwhile is then still seen
        // before its own deadline, without waking the watchdog for it.
        let look_again = Instant::now() + port.limits.header_timeout;
        let next = hard_deadline.unwrap_or_else(|| {
            activity
                .deadline(&port.limits)
                .map_or(look_again, |(at, _)| at.min(look_again))
        });
        // The watchdog: the shutdown signal (until it came) and the next deadline, as one future
        // polled only when one of them woke the task.
        let mut watchdog = Gated::new(async {
            tokio::select! {
                biased;
                _ = shutdown.changed(), if !draining => Watch::Shutdown,
                _ = tokio::time::sleep_until(next) => Watch::Deadline,
            }
        });
        // The connection first, then the watchdog; `None` when the connection ended.
        let woke = std::future::poll_fn(|cx| {
            activity.new_poll();
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                if let Err(e) = result {
                    debug!(port = port.name, error = %e, "connection ended with an error");
                }
                return Poll::Ready(None);
            }
            Pin::new(&mut watchdog).poll(cx).map(Some)
        })
        .await;
        drop(watchdog);
        let Some(watch) = woke else { return };
        match watch {
            Watch::Shutdown => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            Watch::Deadline => {
                if hard_deadline.is_some() {
                    // The client had its chance to finish after a graceful shutdown.
                    return;
                }
                // Progress since the deadline was computed may have moved it: look again.
                let Some((at, reason)) = activity.deadline(&port.limits) else {
                    continue;
                };
                if at > Instant::now() {
                    continue;
                }
                port.count_close(reason);
                debug!(port = port.name, peer = %peer, reason = reason.label(), "closing connection");
                if reason != CloseReason::IdleTimeout {
                    return;
                }
                conn.as_mut().graceful_shutdown();
                hard_deadline = Some(Instant::now() + port.limits.header_timeout);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_marked_answer_on_http1_lingers() {
        let marked = || {
            let mut r = Response::new(Full::new(Bytes::new()));
            r.extensions_mut().insert(Lingering);
            r
        };
        let plain = Response::new(Full::new(Bytes::new()));
        assert!(lingers(http::Version::HTTP_11, &marked()));
        assert!(lingers(http::Version::HTTP_10, &marked()));
        assert!(!lingers(http::Version::HTTP_2, &marked()));
        assert!(!lingers(http::Version::HTTP_11, &plain));
    }
}

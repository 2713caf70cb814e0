//! Keep-alive connections to the upstream: kept and used again, and never used once their server
//! has closed them. The upstream here is a plain TCP server speaking just enough HTTP/1.1 to
//! count connections and to close one at a chosen moment.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::raw::Raw;
use common::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};

const LIST_TABLES: &str = "DynamoDB_20120810.ListTables";
const ANSWER: &str = r#"{"TableNames":[]}"#;

/// An upstream that answers every request `ANSWER`, counts the connections it accepts, and
/// closes its idle connections when told to (as a server whose keep-alive timeout passed does),
/// reporting each close.
struct Upstream {
    endpoint: String,
    accepted: Arc<AtomicUsize>,
    close_idle: broadcast::Sender<()>,
    closed: mpsc::UnboundedReceiver<()>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let (close_idle, _) = broadcast::channel(16);
        let (count, close) = (accepted.clone(), close_idle.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (closed, close) = (closed_tx.clone(), close.subscribe());
                tokio::spawn(async move {
                    answer_on(stream, close).await;
                    let _ = closed.send(());
                });
            }
        });
        Upstream {
            endpoint,
            accepted,
            close_idle,
            closed,
        }
    }

    /// Closes every connection waiting for a request, and waits until one has closed.
    async fn close_idle_connections(&mut self) {
        self.close_idle.send(()).unwrap();
        self.closed.recv().await.unwrap();
    }
}

/// Answers requests on `stream` until the peer closes it, or until told to `close` while it
/// waits for a request.
async fn answer_on(mut stream: TcpStream, mut close: broadcast::Receiver<()>) {
    let mut buf = Vec::new();
    loop {
        // The head, then as much body as its `content-length` says.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            tokio::select! {
                read = stream.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                },
                _ = close.recv(), if buf.is_empty() => {
                    let _ = stream.shutdown().await;
                    return;
                }
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        let answer = format!(
            "HTTP/1.1 200 OK\r\nx-amzn-RequestId: R\r\nx-amz-crc32: {}\r\n\
             Content-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n\r\n{ANSWER}",
            crc32fast::hash(ANSWER.as_bytes()),
            ANSWER.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn list_tables(proxy: &TestProxy) -> StatusCode {
    let answer = Raw::op(LIST_TABLES, "{}").send(&proxy.endpoint).await;
    assert_eq!(answer.body, ANSWER, "the upstream's answer");
    answer.status
}

#[tokio::test]
async fn requests_one_after_another_go_on_one_kept_connection() {
    let upstream = Upstream::start().await;
    let proxy = start_proxy(&upstream.endpoint).await;
    proxy.wait_ready().await;
    for _ in 0..10 {
        assert_eq!(list_tables(&proxy).await, StatusCode::OK);
    }
    // The readiness probe's, kept once it was answered.
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_kept_connection_its_server_closed_is_not_used_again() {
    let mut upstream = Upstream::start().await;
    let proxy = start_proxy(&upstream.endpoint).await;
    proxy.wait_ready().await;
    for i in 0..10 {
        // Sent once the server has closed the connection the last answer came on (the probe's,
        // at first), which ddbcache kept: sent on it, the request would fail.
        upstream.close_idle_connections().await;
        assert_eq!(list_tables(&proxy).await, StatusCode::OK, "request {i}");
    }
    assert_eq!(
        proxy
            .metric("ddbcache_upstream_errors_total{kind=\"io\"}")
            .await,
        0.0
    );
    assert!(upstream.accepted.load(Ordering::SeqCst) >= 11);
}

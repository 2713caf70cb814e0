//! Heap allocations per request, whole, over HTTP: a ddbcache server in this process, counted by
//! a global allocator that counts on every thread but the client's and the upstream's. It answers
//! `REQUESTS` GetItem hits (cache on, every key read once first) and forwards as many GetItems
//! with its cache off, to an upstream in this process that answers every GetItem with the same
//! item; next to it, the bare hyper server `ddbcache-load serve-fixed` is (the same hyper stack,
//! the answer built by the hit's `json_response`) answering the same requests:
//!
//! ```sh
//! cargo bench --bench allocations            # REQUESTS = 20000
//! cargo bench --bench allocations -- 5000
//! ```
//!
//! An allocation is one `alloc` or `realloc` call; its bytes are what was asked for. Background
//! work of the server (the readiness probe, timers) falls in the window too, which is why the
//! counts are taken over many requests and printed with two decimals.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use ddbcache::config::Config;
use ddbcache::server::Server;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Whether this thread's allocations are counted: not the client's nor the upstream's.
    static COUNTED: Cell<bool> = const { Cell::new(true) };
}

fn count(size: usize) {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn uncounted() {
    COUNTED.with(|c| c.set(false));
}

const KEYS: u64 = 1000;

/// The upstream's answers: a key schema for DescribeTable, an item for GetItem, an empty
/// table list for anything else (the readiness probe).
fn upstream_answer(target: &str) -> Bytes {
    let body = match target {
        "DynamoDB_20120810.DescribeTable" => {
            r#"{"Table":{"TableName":"bench","TableStatus":"ACTIVE","KeySchema":[{"AttributeName":"pk","KeyType":"HASH"},{"AttributeName":"sk","KeyType":"RANGE"}],"AttributeDefinitions":[{"AttributeName":"pk","AttributeType":"S"},{"AttributeName":"sk","AttributeType":"S"}]}}"#
        }
        "DynamoDB_20120810.GetItem" => {
            r#"{"Item":{"pk":{"S":"p0000000000"},"sk":{"S":"s000000"},"name":{"S":"ada"},"email":{"S":"ada.0@example.com"},"city":{"S":"Lisbon"},"score":{"N":"4242"},"note":{"S":"order shipped before the weekend"}}}"#
        }
        _ => r#"{"TableNames":[]}"#,
    };
    Bytes::from_static(body.as_bytes())
}

/// An upstream on a thread of its own, uncounted: HTTP/1.1 with keep-alive.
fn start_upstream() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        uncounted();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            listener.set_nonblocking(true).expect("non-blocking");
            let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                stream.set_nodelay(true).ok();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let target = req
                            .headers()
                            .get("x-amz-target")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let _ = req.into_body().collect().await;
                        let body = upstream_answer(&target);
                        let crc = crc32fast::hash(&body).to_string();
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/x-amz-json-1.0")
                                .header("x-amz-crc32", crc)
                                .header("x-amzn-requestid", "UPSTREAM")
                                .body(Full::new(body))
                                .expect("a response"),
                        )
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
    });
    addr
}

/// A ddbcache in front of `upstream` on a runtime of its own (two workers, as on a 2-core
/// machine), its cache on or off; returns its address.
fn start_ddbcache(upstream: SocketAddr, cache: bool) -> SocketAddr {
    let env = [
        ("DDBCACHE_LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("DDBCACHE_ADMIN_ADDR", "127.0.0.1:0".to_owned()),
        ("DDBCACHE_UPSTREAM_ENDPOINT", format!("http://{upstream}")),
        ("DDBCACHE_UPSTREAM_SIGN", "false".to_owned()),
        ("DDBCACHE_LOG_LEVEL", "warn".to_owned()),
        ("DDBCACHE_CACHE_ENABLED", cache.to_string()),
        ("DDBCACHE_ITEM_TTL", "1d".to_owned()),
    ];
    let config = Config::from_toml_and_env("", None, |var| {
        env.iter().find(|(k, _)| *k == var).map(|(_, v)| v.clone())
    })
    .expect("a valid config");
    on_a_runtime_of_its_own(|listening| async move {
        let server = Server::bind(config).await.expect("ddbcache binds");
        listening
            .send(server.local_addr())
            .expect("the address reaches main");
        server
            .run(std::future::pending())
            .await
            .expect("ddbcache runs");
    })
}

/// Runs `serve` on a runtime of its own (two workers, as on a 2-core machine) in a thread of its
/// own; returns the address it sends once it listens.
fn on_a_runtime_of_its_own<F: Future<Output = ()>>(
    serve: impl FnOnce(std::sync::mpsc::Sender<SocketAddr>) -> F + Send + 'static,
) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(serve(tx));
    });
    rx.recv().expect("the server started")
}

/// The bare server: hyper's HTTP/1.1 and h2c stack answering every request with one GetItem
/// answer, built by the function that builds a hit's (as `ddbcache-load serve-fixed` does).
fn start_bare() -> SocketAddr {
    on_a_runtime_of_its_own(|listening| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        listening
            .send(listener.local_addr().expect("its address"))
            .expect("the address reaches main");
        let body = upstream_answer("DynamoDB_20120810.GetItem");
        let crc32 = ddbcache::proxy::headers::crc32_header(&body);
        let builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            stream.set_nodelay(true).ok();
            let (body, crc32) = (body.clone(), crc32.clone());
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (body, crc32) = (body.clone(), crc32.clone());
                async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(ddbcache::proxy::respond::json_response(
                        http::StatusCode::OK,
                        body,
                        crc32,
                    ))
                }
            });
            let conn = builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    })
}

/// One client connection, blocking: sends a GetItem and reads its whole answer.
struct Client {
    stream: TcpStream,
    date: String,
    buf: Vec<u8>,
}

const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=load/20200101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, Signature=0";

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("ddbcache accepts");
        stream.set_nodelay(true).ok();
        Client {
            stream,
            date: ddbcache::upstream::amz_date::format(SystemTime::now()),
            buf: Vec::with_capacity(4096),
        }
    }

    /// GetItem of key `i`; returns the `x-ddbcache` header's value ("" without one).
    fn get_item(&mut self, i: u64) -> String {
        let body = format!(
            r#"{{"TableName":"bench","Key":{{"pk":{{"S":"p{i:010}"}},"sk":{{"S":"s000000"}}}}}}"#
        );
        let request = format!(
            "POST / HTTP/1.1\r\nhost: ddbcache\r\ncontent-type: application/x-amz-json-1.0\r\n\
             x-amz-target: DynamoDB_20120810.GetItem\r\nx-amz-date: {}\r\nauthorization: {}\r\n\
             content-length: {}\r\n\r\n{}",
            self.date,
            AUTHORIZATION,
            body.len(),
            body
        );
        self.stream
            .write_all(request.as_bytes())
            .expect("the request is sent");
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk).expect("the answer is read");
            assert!(n > 0, "ddbcache closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&self.buf[..end]).expect("an ASCII head");
            assert!(head.starts_with("HTTP/1.1 200"), "not a 200: {head}");
            let header = |name: &str| {
                head.lines().find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
            };
            let length: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .expect("a content-length");
            if self.buf.len() >= end + 4 + length {
                return header("x-ddbcache").unwrap_or_default();
            }
        }
    }
}

/// Allocations and bytes of the server while `client` sends `requests` GetItems, per request.
fn measured(client: &mut Client, requests: u64, expect: &str) -> (f64, f64) {
    let (a0, b0) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    for i in 0..requests {
        let outcome = client.get_item(i % KEYS);
        assert_eq!(outcome, expect, "request {i}");
    }
    let (a1, b1) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    (
        (a1 - a0) as f64 / requests as f64,
        (b1 - b0) as f64 / requests as f64,
    )
}

fn main() {
    uncounted();
    let requests: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let upstream = start_upstream();

    let mut bare = Client::connect(start_bare());
    measured(&mut bare, KEYS, "");
    let (bare_allocs, bare_bytes) = measured(&mut bare, requests, "");

    let mut hits = Client::connect(start_ddbcache(upstream, true));
    for i in 0..KEYS {
        hits.get_item(i);
    }
    // The first round of hits settles what grows once (buffers, handles resolved on first use).
    measured(&mut hits, KEYS, "hit");
    let (hit_allocs, hit_bytes) = measured(&mut hits, requests, "hit");

    let mut forwarded = Client::connect(start_ddbcache(upstream, false));
    measured(&mut forwarded, KEYS, "");
    let (fwd_allocs, fwd_bytes) = measured(&mut forwarded, requests, "");

    println!("allocations per request, over {requests} requests on one connection:");
    println!("| request | allocations | bytes allocated |");
    println!("|---|---:|---:|");
    println!("| bare hyper (`serve-fixed`) | {bare_allocs:.2} | {bare_bytes:.0} |");
    println!("| GetItem hit | {hit_allocs:.2} | {hit_bytes:.0} |");
    println!("| GetItem forwarded (cache off) | {fwd_allocs:.2} | {fwd_bytes:.0} |");
}

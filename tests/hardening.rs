//! Hostile clients and broken upstreams: time limits on client connections, the connection cap,
//! the bound on buffered bodies, the admin port's protection of mutating endpoints, TLS on the
//! data port, and how the process behaves out of file descriptors.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::tls::{self, Ca};
use common::*;
use http::StatusCode;

/// A raw client connection, for what no well-behaved client does.
fn raw(endpoint: &str) -> TcpStream {
    let addr = endpoint.trim_start_matches("http://");
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until the server closes the connection; what it sent before closing. Panics if the
/// connection is still open after the read timeout.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
}

/// A whole HTTP/1.1 request with a DynamoDB target and a body.
fn request(target: &str, body: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-amz-json-1.0\r\n\
         x-amz-target: DynamoDB_20120810.{target}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A client that declares a `declared`-byte body for `target`, sends its `first` bytes and stalls.
fn stalled_upload(endpoint: &str, target: &str, declared: usize, first: &str) -> TcpStream {
    let mut s = raw(endpoint);
    let head = format!(
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-amz-json-1.0\r\n\
         x-amz-target: DynamoDB_20120810.{target}\r\ncontent-length: {declared}\r\n\r\n{first}"
    );
    s.write_all(head.as_bytes()).unwrap();
    s
}

/// Reads one response's head and its `content-length` body from a keep-alive connection.
fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("a response");
        assert!(n > 0, "connection closed before a whole response");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + len {
                let status = head[9..12].parse().unwrap();
                return (status, text[end + 4..end + 4 + len].to_string());
            }
        }
    }
}

/// Polls a metric until `ok` holds (bounded).
async fn wait_metric(proxy: &TestProxy, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = proxy.metric(series).await;
        if ok(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{series} stayed at {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const DEAD_UPSTREAM: &str = "http://127.0.0.1:9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_trickling_headers_are_cut_off_at_the_header_timeout() {
    let proxy = start_proxy_with(DEAD_UPSTREAM, |c| {
        c.server.header_timeout = Duration::from_millis(300);
        c.server.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let open = "ddbcache_connections_open{port=\"data\"}";
    const CLIENTS: usize = 50;
    let started = Instant::now();
    let tricklers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut s = raw(&proxy.endpoint);
            std::thread::spawn(move || {
                // A byte every 50 ms: always making progress, never finishing the headers.
                let head = b"POST / HTTP/1.1\r\nhost: x\r\nx-amz-target: DynamoDB_20120810.ListTables\r\nx-padding: ";
                s.write_all(head).unwrap();
                let mut r = s.try_clone().unwrap();
                let reader = std::thread::spawn(move || read_until_closed(&mut r));
                while !reader.is_finished() {
                    if s.write_all(b"a").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                reader.join().unwrap()
            })
        })
        .collect();
    wait_metric(&proxy, open, |v| v == CLIENTS as f64).await;
    for t in tricklers {
        assert!(t.join().unwrap().is_empty(), "nothing is answered");
    }
    let held_for = started.elapsed();
    let held = wait_metric(&proxy, open, |v| v == 0.0).await;
    eprintln!("{CLIENTS} trickling clients: all closed {held_for:?} after connecting (header timeout 300ms); open afterwards: {held}");
    assert_eq!(
        proxy
            .metric("ddbcache_connections_closed_total{port=\"data\",reason=\"header_timeout\"}")
            .await,
        CLIENTS as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed_at_the_idle_timeout_not_the_header_timeout() {
    let proxy = start_proxy_with(DEAD_UPSTREAM, |c| {
        c.server.header_timeout = Duration::from_millis(100);
        c.server.idle_timeout = Duration::from_millis(800);
    })
    .await;
    // Silent from the start.
    let mut silent = raw(&proxy.endpoint);
    // Keep-alive: idle between requests for longer than the header timeout, then idle for good.
    let mut kept = raw(&proxy.endpoint);
    kept.write_all(request("NoSuchOperation", "{}").as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut kept).0, 400);
    std::thread::sleep(Duration::from_millis(400));
    kept.write_all(request("NoSuchOperation", "{}").as_bytes())
        .unwrap();
    assert_eq!(
        read_response(&mut kept).0,
        400,
        "a keep-alive connection idle for less than the idle timeout is still served"
    );
    let (a, b) = (
        std::thread::spawn(move || read_until_closed(&mut silent)),
        std::thread::spawn(move || read_until_closed(&mut kept)),
    );
    assert!(a.join().unwrap().is_empty());
    assert!(b.join().unwrap().is_empty());
    assert_eq!(
        proxy
            .metric("ddbcache_connections_closed_total{port=\"data\",reason=\"idle_timeout\"}")
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_finishes_gets_408_at_the_body_timeout() {
    let proxy = start_proxy_with(DEAD_UPSTREAM, |c| {
        c.server.body_timeout = Duration::from_millis(300);
    })
    .await;
    let mut s = raw(&proxy.endpoint);
    let head = "POST / HTTP/1.1\r\nhost: x\r\nx-amz-target: DynamoDB_20120810.GetItem\r\ncontent-length: 1000\r\n\r\n{\"TableName\":";
    s.write_all(head.as_bytes()).unwrap();
    let answer = String::from_utf8(read_until_closed(&mut s)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("RequestTimeoutException"), "{answer}");
    assert_eq!(
        proxy
            .metric("ddbcache_requests_total{operation=\"GetItem\",status=\"408\"}")
            .await,
        1.0
    );
}

/// A proxy that refuses bodies over `limit` bytes and would wait for a body for an hour (an
/// answer that waited for the body, or for the time it was due, would not come within the read
/// timeout); `edit` sets the rest.
async fn refusing_bodies_over(
    limit: usize,
    edit: impl FnOnce(&mut ddbcache::config::Config),
) -> TestProxy {
    start_proxy_with(DEAD_UPSTREAM, |c| {
        c.server.max_body_bytes = limit as u64;
        c.server.body_timeout = Duration::from_secs(3600);
        edit(c);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_declared_over_the_limit_is_refused_before_any_of_it_arrives() {
    let limit = 64 * 1024;
    let proxy = refusing_bodies_over(limit, |_| {}).await;
    let mut s = stalled_upload(&proxy.endpoint, "PutItem", limit + 1, "");
    let (status, answer) = read_response(&mut s);
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("ValidationException"), "{answer}");
    assert!(
        answer.contains(&format!("limit of {limit} bytes")),
        "{answer}"
    );
    // The connection lingers, reading what is still sent of the body, and closes once it ended.
    s.write_all(" ".repeat(limit + 1).as_bytes()).unwrap();
    assert!(read_until_closed(&mut s).is_empty());
    assert_eq!(
        proxy
            .metric("ddbcache_requests_total{operation=\"PutItem\",status=\"413\"}")
            .await,
        1.0
    );
}

/// What still arrives of a refused body after its 413 is that body, thrown away until it ends:
/// not a next request whose head must arrive within the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_body_still_arriving_after_its_413_is_not_cut_off_at_the_header_timeout() {
    let limit = 64 * 1024;
    let proxy = refusing_bodies_over(limit, |c| {
        c.server.header_timeout = Duration::from_millis(200);
        c.server.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let mut s = stalled_upload(&proxy.endpoint, "PutItem", limit + 1, "");
    let (status, answer) = read_response(&mut s);
    assert_eq!(status, 413, "{answer}");
    // The client sends on, for three header timeouts, then the rest.
    let chunk = [b' '; 1024];
    for _ in 0..4 {
        s.write_all(&chunk).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    s.write_all(" ".repeat(limit + 1 - 4 * chunk.len()).as_bytes())
        .unwrap();
    assert!(read_until_closed(&mut s).is_empty());
    assert_eq!(
        proxy
            .metric("ddbcache_connections_closed_total{port=\"data\",reason=\"header_timeout\"}")
            .await,
        0.0
    );
}

/// The upstream's time limit counts from when the request was whole: a client slow to send its
/// body does not use it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_timeout_counts_from_the_whole_body_not_its_headers() {
    let engine = Engine::dynalite().await;
    let timeout = Duration::from_millis(300);
    let proxy = start_proxy_with(&engine.endpoint(), |c| c.upstream.timeout = Some(timeout)).await;
    let body = "{\"Limit\":1}";
    let mut s = raw(&proxy.endpoint);
    let head = format!(
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-amz-json-1.0\r\n\
         x-amz-target: DynamoDB_20120810.ListTables\r\nx-amz-date: 20260101T000000Z\r\n\
         authorization: AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/dynamodb/aws4_request, \
         SignedHeaders=host, Signature=0\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        &body[..5]
    );
    s.write_all(head.as_bytes()).unwrap();
    // The client takes twice the upstream timeout to send the rest: time passing is the scenario.
    std::thread::sleep(2 * timeout);
    s.write_all(&body.as_bytes()[5..]).unwrap();
    let (status, answer) = read_response(&mut s);
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let proxy = start_proxy_with(DEAD_UPSTREAM, |c| c.server.max_connections = 2).await;
    let open = "ddbcache_connections_open{port=\"data\"}";
    let first = raw(&proxy.endpoint);
    let _second = raw(&proxy.endpoint);
    wait_metric(&proxy, open, |v| v == 2.0).await;
    // The third is queued by the kernel, not served.
    let mut third = raw(&proxy.endpoint);
    third
        .write_all(request("NoSuchOperation", "{}").as_bytes())
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert!(third.read(&mut buf).is_err(), "served beyond the cap");
    assert_eq!(proxy.metric(open).await, 2.0);
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(read_response(&mut third).0, 400);
}

/// The accept-queue length of the socket listening at `endpoint`, as `ss` reports it (a listening
/// socket's Send-Q).
fn listen_backlog(endpoint: &str) -> u32 {
    let port = endpoint.rsplit(':').next().unwrap();
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) reads a listening socket's backlog");
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("{endpoint} is not listening"));
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ports_queue_the_configured_backlog_of_connections() {
    // Below the kernel's cap (net.core.somaxconn, 4096 by default), and not tokio's 128.
    let proxy = start_proxy_with(DEAD_UPSTREAM, |c| c.server.listen_backlog = 1000).await;
    for endpoint in [&proxy.endpoint, &proxy.admin] {
        assert_eq!(listen_backlog(endpoint), 1000, "{endpoint}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_beyond_the_buffer_budget_wait_then_get_a_retryable_503() {
    let engine = Engine::dynalite().await;
    let proxy = start_proxy_with(&engine.endpoint(), |c| {
        c.server.max_body_bytes = 64 * 1024;
        c.server.max_buffered_bytes = 128 * 1024;
        c.server.buffer_wait = Duration::from_millis(200);
    })
    .await;
    let buffered = "ddbcache_request_buffer_bytes";
    // Two slow clients declare near-limit bodies: together they hold the whole budget.
    let body_len = 60 * 1024;
    let body = format!("{{\"Limit\":1,\"x\":\"{}\"}}", "a".repeat(body_len - 20));
    let slow: Vec<TcpStream> = (0..2)
        .map(|_| stalled_upload(&proxy.endpoint, "ListTables", body.len(), &body[..10]))
        .collect();
    wait_metric(&proxy, buffered, |v| v >= 2.0 * body_len as f64).await;

    // A third finds no room: after the wait, a retryable 503 in DynamoDB's shape.
    let (status, _, answer) = dynamodb_post(
        &proxy.endpoint,
        Some("DynamoDB_20120810.ListTables"),
        &[],
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        String::from_utf8_lossy(&answer).contains("ServiceUnavailable"),
        "{answer:?}"
    );
    assert_eq!(
        proxy.metric("ddbcache_request_buffer_refusals_total").await,
        1.0
    );

    // One slow client finishes: its request is answered and its share returns.
    let mut slow = slow.into_iter();
    let mut done = slow.next().unwrap();
    done.write_all(&body.as_bytes()[10..]).unwrap();
    let (status, answer) = read_response(&mut done);
    assert_eq!(status, 400, "dynalite refuses the unknown field: {answer}");
    let (status, _, _) = dynamodb_post(
        &proxy.endpoint,
        Some("DynamoDB_20120810.ListTables"),
        &[],
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    drop(slow);
    wait_metric(&proxy, buffered, |v| v == 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_requests_find_room_while_large_uploads_stall() {
    let engine = Engine::dynalite().await;
    const MIB: usize = 1 << 20;
    let proxy = start_proxy_with(&engine.endpoint(), |c| {
        c.server.max_body_bytes = MIB as u64;
        c.server.max_buffered_bytes = 4 * MIB as u64;
        c.server.buffer_wait = Duration::from_millis(200);
    })
    .await;
    let client = sdk_client(&proxy.endpoint).await;
    let table = unique_table("stalled");
    create_table(&client, &table).await;
    put_v(&client, &table, "p", "s", "v1").await;
    let buffered = "ddbcache_request_buffer_bytes";
    // Four clients each declare a largest PutItem, send its first bytes and stall: together they
    // would hold the whole budget.
    let _uploads: Vec<TcpStream> = (0..4)
        .map(|_| stalled_upload(&proxy.endpoint, "PutItem", MIB, r#"{"TableName":"#))
        .collect();
    wait_metric(&proxy, buffered, |v| v >= 3.0 * MIB as f64).await;

    // Small GetItems from other clients, all at once, are answered while the uploads hold.
    let (get, _) = get_and_query_of(&table, "p", "s");
    let gets: Vec<_> = (0..25)
        .map(|_| {
            let (endpoint, get) = (proxy.endpoint.clone(), get.clone());
            tokio::spawn(async move {
                dynamodb_post(&endpoint, Some("DynamoDB_20120810.GetItem"), &[], get).await
            })
        })
        .collect();
    for get in gets {
        let (status, _, answer) = get.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{answer:?}");
        assert!(
            String::from_utf8_lossy(&answer).contains("v1"),
            "{answer:?}"
        );
    }

    // The large bodies' share held three uploads; the fourth was refused, not the small ones.
    wait_metric(&proxy, "ddbcache_request_buffer_refusals_total", |v| {
        v == 1.0
    })
    .await;
    wait_metric(&proxy, buffered, |v| v == 3.0 * MIB as f64).await;
}

// ---------------------------------------------------------------------------------------------
// Admin port

#[tokio::test]
async fn flush_needs_the_admin_token_while_probes_and_metrics_stay_open() {
    let dir = std::env::temp_dir().join(unique_table("admin-token"));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "first-token\n").unwrap();
    let proxy = start_proxy_with(DEAD_UPSTREAM, |c| {
        c.admin.token_file = Some(token_file.clone())
    })
    .await;
    let flush = format!("{}/cache/flush", proxy.admin);
    let post = |auth: Option<&'static str>| {
        let flush = flush.clone();
        async move {
            let mut headers = vec![];
            if let Some(a) = auth {
                headers.push(("authorization", a));
            }
            admin_post(&flush, &headers).await
        }
    };
    assert_eq!(post(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(post(Some("Bearer wrong")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(post(Some("Bearer first-token")).await, StatusCode::OK);
    for open in ["/metrics", "/healthz", "/cache"] {
        let (status, _, _) = http_get(&format!("{}{open}", proxy.admin)).await;
        assert_eq!(status, StatusCode::OK, "{open}");
    }
    // A rotated Secret applies without a restart.
    std::fs::write(&token_file, "second-token").unwrap();
    assert_eq!(
        post(Some("Bearer first-token")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(post(Some("Bearer second-token")).await, StatusCode::OK);
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn admin_post(url: &str, headers: &[(&str, &str)]) -> StatusCode {
    use http_body_util::Full;
    let mut req = http::Request::post(url)
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    client.request(req).await.unwrap().status()
}

// ---------------------------------------------------------------------------------------------
// The process

/// Starts the ddbcache binary with `env`, `nofile` as its file-descriptor limit; stderr piped.
fn spawn_ddbcache(env: &[(&str, &str)], nofile: Option<u64>) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ddbcache"));
    cmd.arg("--config")
        .arg("/dev/null")
        .env_remove("RUST_LOG")
        .env("DDBCACHE_UPSTREAM_ENDPOINT", DEAD_UPSTREAM)
        .env("DDBCACHE_UPSTREAM_SIGN", "false")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(limit) = nofile {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.spawn().expect("ddbcache starts")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Lines of a child's stderr, as they come.
fn lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn start_up_reports_the_worker_threads_in_plain_text() {
    let (data, admin) = (free_port(), free_port());
    let mut child = spawn_ddbcache(
        &[
            ("DDBCACHE_LISTEN_ADDR", &format!("127.0.0.1:{data}")),
            ("DDBCACHE_ADMIN_ADDR", &format!("127.0.0.1:{admin}")),
            ("DDBCACHE_WORKER_THREADS", "3"),
        ],
        None,
    );
    let rx = lines(&mut child);
    let serving = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a start-up line");
        if line.contains("ddbcache serving") {
            break line;
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(serving.contains("worker_threads=3"), "{serving}");
    assert!(
        !serving.contains('\x1b'),
        "colour codes in a log that is not a terminal: {serving:?}"
    );
}

#[test]
fn out_of_file_descriptors_the_admin_port_backs_off_instead_of_spinning() {
    let (data, admin) = (free_port(), free_port());
    let mut child = spawn_ddbcache(
        &[
            ("DDBCACHE_LISTEN_ADDR", &format!("127.0.0.1:{data}")),
            ("DDBCACHE_ADMIN_ADDR", &format!("127.0.0.1:{admin}")),
            ("DDBCACHE_LOG_LEVEL", "warn"),
            ("DDBCACHE_WORKER_THREADS", "1"),
        ],
        Some(64),
    );
    let rx = lines(&mut child);
    // Wait until the admin port answers, then open connections until the process runs out of
    // descriptors (each accepted connection costs it one).
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", admin)).is_err() {
        assert!(Instant::now() < deadline, "admin port never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _clients: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(("127.0.0.1", admin)).unwrap())
        .collect();
    // Accept failures are logged once per attempt: count them for a second once they start.
    while !rx
        .recv_timeout(Duration::from_secs(30))
        .expect("accepting fails")
        .contains("accept failed")
    {}
    let window = Instant::now();
    let mut attempts = 1;
    while window.elapsed() < Duration::from_secs(1) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
            attempts += line.contains("accept failed") as u32;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // With backoff (5 ms doubling to 1 s) about 8 attempts fit in a second; a spinning loop
    // makes thousands.
    assert!(attempts < 50, "{attempts} accept attempts in one second");
}

// ---------------------------------------------------------------------------------------------
// Broken upstreams

/// A GetItem of (`pk`, `sk`) and a Query of `pk`, as request bodies.
fn get_and_query_of(table: &str, pk: &str, sk: &str) -> (String, String) {
    (
        format!(r#"{{"TableName":"{table}","Key":{{"pk":{{"S":"{pk}"}},"sk":{{"S":"{sk}"}}}}}}"#),
        format!(
            r#"{{"TableName":"{table}","KeyConditionExpression":"pk = :p","ExpressionAttributeValues":{{":p":{{"S":"{pk}"}}}}}}"#
        ),
    )
}

#[tokio::test]
async fn garbage_and_damaged_upstream_answers_are_passed_on_but_never_stored() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxy = start_proxy(&relay.endpoint).await;
    // Written straight to the engine: no recent write through ddbcache keeps answers unstored.
    let direct = sdk_client(&engine.endpoint()).await;
    let table = unique_table("garbage");
    create_table(&direct, &table).await;
    const ROUNDS: usize = 7;
    for i in 0..=ROUNDS {
        direct
            .put_item()
            .table_name(&table)
            .set_item(Some(key(&format!("p{i}"), "1")))
            .send()
            .await
            .unwrap();
    }
    let post = |target: &'static str, body: String| {
        let endpoint = proxy.endpoint.clone();
        async move {
            let target = format!("DynamoDB_20120810.{target}");
            dynamodb_post(&endpoint, Some(&target), &[], body).await
        }
    };
    let outcome = |h: &http::HeaderMap| h["x-ddbcache"].to_str().unwrap().to_string();
    // Each round reads its own item, so no round meets another's entry; the first read learns
    // the table's key schema.
    let (warm_up, _) = get_and_query_of(&table, &format!("p{ROUNDS}"), "1");
    assert_eq!(post("GetItem", warm_up).await.0, StatusCode::OK);
    let cases = [
        (
            "GetItem",
            Fault::Answer(r#"{"message":"Service Unavailable"}"#),
        ),
        ("GetItem", Fault::Answer(r#"{"Item":"garbage"}"#)),
        ("GetItem", Fault::Answer(r#"{"Item":{"pk":"a"}}"#)),
        ("Query", Fault::Answer(r#"{"foo":1}"#)),
        (
            "Query",
            Fault::Answer(r#"{"Items":[{"pk":"a"}],"Count":1,"ScannedCount":1}"#),
        ),
        // Damaged in transit: the client gets the damaged bytes with the upstream's checksum,
        // so an SDK that checks it sees the damage as it would direct; nothing is stored.
        ("GetItem", Fault::CorruptBody),
        ("Query", Fault::CorruptBody),
    ];
    for (i, (op, fault)) in cases.into_iter().enumerate() {
        let (get, query) = get_and_query_of(&table, &format!("p{i}"), "1");
        let body = if op == "GetItem" { get } else { query };
        relay
            .fault(move |t, _| t.ends_with(&format!(".{op}")), fault.clone())
            .await;
        let (status, headers, answer) = post(op, body.clone()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(outcome(&headers), "miss");
        match fault {
            Fault::Answer(garbage) => {
                assert_eq!(answer, garbage.as_bytes(), "passed on as it came")
            }
            _ => {
                let sent: u32 = headers["x-amz-crc32"].to_str().unwrap().parse().unwrap();
                assert_ne!(
                    sent,
                    crc32fast::hash(&answer),
                    "the damage reaches the client's check"
                );
            }
        }
        relay.clear_faults().await;
        let (status, headers, answer) = post(op, body.clone()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(outcome(&headers), "miss", "{op}: {fault:?} was stored");
        assert!(String::from_utf8_lossy(&answer).contains(&format!(r#"{{"S":"p{i}"}}"#)));
        let sent: u32 = headers["x-amz-crc32"].to_str().unwrap().parse().unwrap();
        assert_eq!(sent, crc32fast::hash(&answer));
        let (_, headers, _) = post(op, body.clone()).await;
        assert_eq!(
            outcome(&headers),
            "hit",
            "{op}: the real answer after {fault:?} is stored"
        );
    }
    for (series, count) in [
        (
            "ddbcache_cache_unstored_total{cache=\"item\",reason=\"shape\"}",
            3.0,
        ),
        (
            "ddbcache_cache_unstored_total{cache=\"query\",reason=\"shape\"}",
            2.0,
        ),
        (
            "ddbcache_cache_unstored_total{cache=\"item\",reason=\"checksum\"}",
            1.0,
        ),
        (
            "ddbcache_cache_unstored_total{cache=\"query\",reason=\"checksum\"}",
            1.0,
        ),
    ] {
        assert_eq!(proxy.metric(series).await, count, "{series}");
    }
}

/// A BatchGetItem partly answered from the cache forwards only its misses; when that smaller
/// answer arrives damaged it cannot be merged with the hits, and the client's whole request is
/// sent as it came instead, never an answer missing the keys that hit.
#[tokio::test]
async fn a_damaged_answer_to_a_batch_get_s_misses_never_loses_its_hits() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    let proxy = start_proxy(&relay.endpoint).await;
    let direct = sdk_client(&engine.endpoint()).await;
    let table = unique_table("batchdamage");
    create_table(&direct, &table).await;
    for pk in ["hit", "miss"] {
        direct
            .put_item()
            .table_name(&table)
            .set_item(Some(key(pk, "1")))
            .send()
            .await
            .unwrap();
    }
    let (get_hit, _) = get_and_query_of(&table, "hit", "1");
    let post = |target: &str, body: String| {
        let (endpoint, target) = (
            proxy.endpoint.clone(),
            format!("DynamoDB_20120810.{target}"),
        );
        async move { dynamodb_post(&endpoint, Some(&target), &[], body).await }
    };
    post("GetItem", get_hit.clone()).await;
    assert_eq!(post("GetItem", get_hit).await.1["x-ddbcache"], "hit");
    // Damage the answer to a BatchGetItem that reads the missing key alone.
    relay
        .fault_where(
            |c| {
                let body = String::from_utf8_lossy(&c.body);
                c.target().ends_with(".BatchGetItem") && !body.contains(r#""hit""#)
            },
            Fault::CorruptBody,
        )
        .await;
    let batch = format!(
        r#"{{"RequestItems":{{"{table}":{{"Keys":[{{"pk":{{"S":"hit"}},"sk":{{"S":"1"}}}},{{"pk":{{"S":"miss"}},"sk":{{"S":"1"}}}}]}}}}}}"#
    );
    let (status, headers, answer) = post("BatchGetItem", batch).await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    let mut pks: Vec<&str> = json["Responses"][&table]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pk"]["S"].as_str().unwrap())
        .collect();
    pks.sort();
    assert_eq!(pks, ["hit", "miss"], "{json}");
    let sent: u32 = headers["x-amz-crc32"].to_str().unwrap().parse().unwrap();
    assert_eq!(sent, crc32fast::hash(&answer));
    assert_eq!(
        relay.sent("BatchGetItem").await,
        2,
        "the subset, then the whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_during_an_outage_are_all_answered_within_one_upstream_timeout() {
    let engine = Engine::dynalite().await;
    let relay = Relay::start(&engine.endpoint()).await;
    // The shorter limit, opted into: without it each miss waits as long as its client does.
    let timeout = Duration::from_millis(1000);
    let proxy = start_proxy_with(&relay.endpoint, |c| c.upstream.timeout = Some(timeout)).await;
    let client = sdk_client(&proxy.endpoint).await;
    let table = unique_table("outage");
    create_table(&client, &table).await;
    let (get, _) = get_and_query_of(&table, "a", "1");

    relay
        .fault(|t, _| t.ends_with(".GetItem"), Fault::Blackhole)
        .await;
    const WAITERS: usize = 6;
    let started = Instant::now();
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let (endpoint, get) = (proxy.endpoint.clone(), get.clone());
            tokio::spawn(async move {
                let (status, _, body) =
                    dynamodb_post(&endpoint, Some("DynamoDB_20120810.GetItem"), &[], get).await;
                (status, body, started.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for w in waiters {
        let (status, body, took) = w.await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(String::from_utf8_lossy(&body).contains("ServiceUnavailable"));
        slowest = slowest.max(took);
    }
    eprintln!("{WAITERS} concurrent misses in an outage, upstream timeout {timeout:?}: all answered after {slowest:?}");
    // Each waiter taking its turn as the one to go upstream would take WAITERS × the timeout;
    // sharing the deadline, about one timeout (the bound leaves room for a slow machine).
    assert!(slowest < 3 * timeout, "the slowest waiter took {slowest:?}");
    assert_eq!(
        proxy
            .metric("ddbcache_cache_coalesced_total{cache=\"item\"}")
            .await,
        0.0
    );
}

// ---------------------------------------------------------------------------------------------
// TLS on the data port

/// Sends one request over TLS trusting `ca` (and presenting `client`, a PEM cert and key, if
/// given); the status, or the error that stopped it.
async fn tls_request(
    endpoint: &str,
    ca: &Ca,
    client: Option<&(String, String)>,
) -> Result<StatusCode, String> {
    let mut sender = tls::connect(endpoint.trim_start_matches("http://"), ca, client).await?;
    let req = http::Request::post("/")
        .header("host", "localhost")
        .header("x-amz-target", "DynamoDB_20120810.NoSuchOperation")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    sender
        .send_request(req)
        .await
        .map(|r| r.status())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_with_the_current_certificate_and_checks_client_certificates() {
    let dir = std::env::temp_dir().join(unique_table("tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file, client_ca_file) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    let (first_ca, clients_ca) = (Ca::new("first"), Ca::new("clients"));
    let (cert, key) = first_ca.issue("localhost");
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    std::fs::write(&client_ca_file, clients_ca.pem()).unwrap();
    let proxy = start_proxy_with(DEAD_UPSTREAM, |c| {
        c.tls.cert_file = Some(cert_file.clone());
        c.tls.key_file = Some(key_file.clone());
        c.tls.client_ca_file = Some(client_ca_file.clone());
        c.tls.reload_interval = Duration::from_millis(50);
    })
    .await;
    let client = clients_ca.issue("app");
    let stranger = Ca::new("stranger").issue("app");

    let answered = tls_request(&proxy.endpoint, &first_ca, Some(&client)).await;
    assert!(
        matches!(answered, Ok(s) if s.is_client_error()),
        "DynamoDB's answer to an unknown operation, over TLS: {answered:?}"
    );
    assert!(tls_request(&proxy.endpoint, &first_ca, None).await.is_err());
    assert!(tls_request(&proxy.endpoint, &first_ca, Some(&stranger))
        .await
        .is_err());

    // A renewed certificate from another CA is served without a restart.
    let second_ca = Ca::new("second");
    let (cert, key) = second_ca.issue("localhost");
    std::fs::write(&key_file, key).unwrap();
    std::fs::write(&cert_file, cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tls_request(&proxy.endpoint, &second_ca, Some(&client))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(tls_request(&proxy.endpoint, &first_ca, Some(&client))
        .await
        .is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

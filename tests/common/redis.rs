//! A Redis server for the fleet tests: Debian's `redis-server` (installed by `scripts/setup.sh`)
//! as a child process on a free loopback port, in memory only. Ready once it answers `PING`;
//! killed when dropped (also when a test panics). `stop` and `start_again` take it away and bring
//! it back, empty, on the same port, as an outage would.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = RedisServer { port, child: None };
        server.start_again().await;
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server and waits for it to exit: every connection to it breaks at once.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again, empty, on the same port, and waits until it answers.
    pub async fn start_again(&mut self) {
        self.stop().await;
        let binary = std::env::var("DDBCACHE_TEST_REDIS_SERVER")
            .unwrap_or_else(|_| "redis-server".to_string());
        let child = Command::new(&binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} ({e}): run scripts/setup.sh first (it installs redis-server)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.answers_ping().await {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within {READY_TIMEOUT:?}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends commands on one fresh connection, in order; the first line of each reply.
    pub async fn commands(&self, commands: &[&[&str]]) -> Vec<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("redis-server accepts a connection");
        let mut replies = Vec::new();
        for args in commands {
            let mut request = format!("*{}\r\n", args.len());
            for a in *args {
                request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
            s.write_all(request.as_bytes()).await.unwrap();
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                let mut byte = [0u8; 1];
                s.read_exact(&mut byte).await.unwrap();
                line.push(byte[0]);
            }
            replies.push(String::from_utf8_lossy(&line).trim_end().to_string());
        }
        replies
    }

    async fn answers_ping(&self) -> bool {
        let exchange = async {
            let mut s = TcpStream::connect(("127.0.0.1", self.port)).await?;
            s.write_all(b"PING\r\n").await?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), exchange).await,
            Ok(Ok(b)) if &b == b"+PONG\r\n"
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

//! A Redis server for the fleet tests: Debian's `redis-server` (installed by `scripts/setup.sh`)
//! as a child process on a free loopback port, in memory only unless asked to persist. Ready once
//! it answers `PING`; killed when dropped (also when a test panics). `stop` and `start_again`
//! take it away and bring it back, empty, on the same port, as an outage would; `pause` and
//! `resume` hang it (SIGSTOP, SIGCONT) with its connections open; `crash_to_snapshot` kills it and
//! starts it from its last `SAVE`, as a restart from an old snapshot or a failover to a replica
//! that lagged would. `start_tls` serves `rediss://` only, with certificates made for the test,
//! and ACL users.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Where it keeps its snapshot, when it persists.
    dir: Option<PathBuf>,
    tls: Option<Tls>,
}

/// A TLS-only server: its files, and the user the fleet connects as.
struct Tls {
    dir: PathBuf,
    user: String,
    password: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn scratch_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ddbcache-redis-{what}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir: None,
            tls: None,
        };
        server.start_again().await;
        server
    }

    /// A server that keeps a snapshot on disk (written by [`RedisServer::save`]) and loads it
    /// when it starts again.
    pub async fn start_persistent() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir: Some(scratch_dir("data")),
            tls: None,
        };
        server.start_again().await;
        server
    }

    /// A server that speaks TLS only (certificates from `ca`, which the test's clients trust)
    /// and refuses the default user: the fleet must connect as `user` with its password, an ACL
    /// user allowed the fleet's keys and channels and nothing of Redis's administration.
    pub async fn start_tls(ca: &super::tls::Ca, user: &str, password: &str) -> RedisServer {
        let dir = scratch_dir("tls");
        let (cert, key) = ca.issue("localhost");
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(
            dir.join("users.acl"),
            format!(
                "user default off\n\
                 user {user} on >{password} ~* &* +@all -@admin -@dangerous +info +ping\n\
                 user probe on >probe ~* &* +@all\n"
            ),
        )
        .unwrap();
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir: None,
            tls: Some(Tls {
                dir,
                user: user.to_string(),
                password: password.to_string(),
            }),
        };
        server.start_again().await;
        server
    }

    /// `redis://127.0.0.1:PORT`, or for a TLS server `rediss://USER:PASSWORD@localhost:PORT`.
    pub fn url(&self) -> String {
        match &self.tls {
            Some(t) => format!("rediss://{}:{}@localhost:{}", t.user, t.password, self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The CA file a TLS server's clients must trust.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|t| t.dir.join("ca.pem"))
    }

    /// Kills the server and waits for it to exit: every connection to it breaks at once.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Hangs the server (SIGSTOP): connections stay open and nothing answers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("redis-server is running");
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Writes the snapshot a persistent server starts from.
    pub async fn save(&self) {
        assert!(self.dir.is_some(), "only a persistent server saves");
        assert_eq!(self.commands(&[&["SAVE"]]).await, vec!["+OK"]);
    }

    /// Kills a persistent server without letting it save, and starts it again from its last
    /// [`RedisServer::save`]: what was written since is lost, what was there then is back.
    pub async fn crash_to_snapshot(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Starts it again on the same port (empty, unless it persists), and waits until it answers.
    pub async fn start_again(&mut self) {
        self.stop().await;
        let binary = std::env::var("DDBCACHE_TEST_REDIS_SERVER")
            .unwrap_or_else(|_| "redis-server".to_string());
        let mut command = Command::new(&binary);
        command.args(["--bind", "127.0.0.1", "--protected-mode", "no"]);
        match &self.dir {
            // Snapshots only when told to (SAVE), read at start.
            Some(dir) => command
                .args(["--dir", dir.to_str().unwrap(), "--dbfilename", "dump.rdb"])
                .args(["--save", "", "--appendonly", "no"]),
            None => command.args(["--save", "", "--appendonly", "no"]),
        };
        match &self.tls {
            Some(t) => {
                let file = |name: &str| t.dir.join(name).to_str().unwrap().to_string();
                command
                    .args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .args(["--tls-cert-file", &file("cert.pem")])
                    .args(["--tls-key-file", &file("key.pem")])
                    .args(["--tls-ca-cert-file", &file("ca.pem")])
                    .args(["--tls-auth-clients", "no"])
                    .args(["--aclfile", &file("users.acl")]);
            }
            None => {
                command.args(["--port", &self.port.to_string()]);
            }
        }
        let child = command
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

    /// Sends commands on one fresh connection, in order; the first line of each reply. (Plain
    /// servers only.)
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

    /// Every key matching `pattern`: for tests that look at, or tamper with, what the fleet
    /// keeps. (Plain servers only.)
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// A string key's value. (Plain servers only.)
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// Sets a string key, keeping its expiry. (Plain servers only.)
    pub async fn set(&self, key: &str, value: &[u8]) {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("KEEPTTL")
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    async fn answers_ping(&self) -> bool {
        if self.tls.is_some() {
            // The TLS port answers nothing in plain text: accepting a connection is enough.
            return TcpStream::connect(("127.0.0.1", self.port)).await.is_ok();
        }
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
        for dir in [self.dir.as_ref(), self.tls.as_ref().map(|t| &t.dir)]
            .into_iter()
            .flatten()
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

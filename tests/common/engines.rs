//! Local DynamoDB-compatible engines for the integration tests: dynalite (node, in memory) and
//! moto (python, adds transactions and PartiQL), each a child process on a free loopback port.
//!
//! An `Engine` is ready when it has answered a `ListTables` request, so a test's first call never
//! races the engine's start-up. The child is killed when the `Engine` is dropped, including when a
//! test panics, and `stop` / `start_again` let a test take the upstream away and bring it back on
//! the same port. The engines are installed by `scripts/setup.sh`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long an engine may take to answer its first request (moto loads its backends lazily).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many fresh ports to try when an engine exits right away (another process took the port
/// between our probe and the engine's bind).
const START_ATTEMPTS: usize = 3;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Dynalite,
    Moto,
}

/// A running local engine; see the module docs.
pub struct Engine {
    kind: Kind,
    port: u16,
    child: Option<Child>,
    /// The child's stdout and stderr, shown when it fails to start.
    output: Arc<Mutex<String>>,
}

impl Engine {
    /// dynalite in memory: `node scripts/upstream/node_modules/dynalite/cli.js`
    /// (env `DDBCACHE_TEST_DYNALITE` overrides the path of `cli.js`).
    pub async fn dynalite() -> Engine {
        Engine::start(Kind::Dynalite).await
    }

    /// moto's server: `.venv/bin/moto_server` (env `DDBCACHE_TEST_MOTO_SERVER` overrides the path).
    pub async fn moto() -> Engine {
        Engine::start(Kind::Moto).await
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether this is moto (which has transactions and PartiQL).
    pub fn is_moto(&self) -> bool {
        matches!(self.kind, Kind::Moto)
    }

    /// Kills the engine and waits for it to exit; its port stops answering. All data is lost.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error means the child has already exited, which is what we want.
            let _ = child.kill().await;
        }
    }

    /// Starts the engine again, empty, on the same port, and waits until it answers.
    pub async fn start_again(&mut self) {
        self.stop().await;
        self.output.lock().unwrap().clear();
        self.child = Some(spawn(self.kind, self.port, &self.output));
        if let Err(why) = self.wait_ready().await {
            panic!("{why}");
        }
    }

    async fn start(kind: Kind) -> Engine {
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let output = Arc::new(Mutex::new(String::new()));
            let child = Some(spawn(kind, port, &output));
            let mut engine = Engine {
                kind,
                port,
                child,
                output,
            };
            match engine.wait_ready().await {
                Ok(()) => return engine,
                Err(why) => last_failure = why,
            }
        }
        panic!("{last_failure}");
    }

    /// Polls `ListTables` until it answers 200. Errs if the child exits first (for instance
    /// because its port was taken); panics if it never answers within `READY_TIMEOUT`.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            // The port answering is not enough: another test's engine may have taken it between
            // our probe and this engine's bind (this one then exits). The engine's own line saying
            // it listens on the port proves that the answer came from it.
            if self.says_it_listens() && answers_list_tables(self.port).await {
                return Ok(());
            }
            let child = self.child.as_mut().expect("engine is running");
            if let Ok(Some(status)) = child.try_wait() {
                // Let the output readers catch up with what the child printed before exiting.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(self.failure(&format!("exited with {status} before answering")));
            }
            if Instant::now() > deadline {
                panic!(
                    "{}",
                    self.failure(&format!("did not answer within {READY_TIMEOUT:?}"))
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the engine printed that it listens on its port (dynalite: `listening at:
    /// http://127.0.0.1:PORT`; moto's werkzeug: `Running on http://127.0.0.1:PORT`).
    fn says_it_listens(&self) -> bool {
        let output = self.output.lock().unwrap();
        let address = format!("127.0.0.1:{}", self.port);
        output.lines().any(|l| {
            (l.contains("listening at") || l.contains("Running on")) && l.contains(&address)
        })
    }

    fn failure(&self, what: &str) -> String {
        format!(
            "{:?} on port {} {what}; its output:\n{}",
            self.kind,
            self.port,
            self.output.lock().unwrap()
        )
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // Signals the kill now; `kill_on_drop` is the fallback, and the runtime reaps it.
            let _ = child.start_kill();
        }
    }
}

fn spawn(kind: Kind, port: u16, output: &Arc<Mutex<String>>) -> Child {
    let port_arg = port.to_string();
    let mut command = match kind {
        Kind::Dynalite => {
            let cli = engine_path(
                "DDBCACHE_TEST_DYNALITE",
                "scripts/upstream/node_modules/dynalite/cli.js",
            );
            let mut command = Command::new("node");
            command
                .arg(cli)
                .args(["--host", "127.0.0.1", "--port", &port_arg])
                // Tables are ACTIVE (and gone) at once: tests need not wait out a fake delay.
                .args([
                    "--createTableMs",
                    "0",
                    "--deleteTableMs",
                    "0",
                    "--updateTableMs",
                    "0",
                ]);
            command
        }
        Kind::Moto => {
            let server = engine_path("DDBCACHE_TEST_MOTO_SERVER", ".venv/bin/moto_server");
            let mut command = Command::new(server);
            command.args(["-H", "127.0.0.1", "-p", &port_arg]);
            command
        }
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {kind:?} ({e}): run scripts/setup.sh first"));
    capture(child.stdout.take(), output);
    capture(child.stderr.take(), output);
    child
}

/// The engine's path from `env_var`, else `default` inside the repository; panics if missing.
fn engine_path(env_var: &str, default: &str) -> PathBuf {
    let path = match std::env::var_os(env_var) {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(default),
    };
    assert!(
        path.exists(),
        "{} not found: run scripts/setup.sh first (or set {env_var})",
        path.display()
    );
    path
}

/// Copies a child's output into `output`, which also keeps the pipe drained.
fn capture(stream: Option<impl AsyncRead + Unpin + Send + 'static>, output: &Arc<Mutex<String>>) {
    let Some(stream) = stream else { return };
    let output = Arc::clone(output);
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut output = output.lock().unwrap();
            output.push_str(&line);
            output.push('\n');
        }
    });
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Sends a minimal `ListTables` (with a well-formed but unchecked SigV4 header, which both
/// engines require to be present) and reports whether it was answered with 200.
async fn answers_list_tables(port: u16) -> bool {
    let request = format!(
        "POST / HTTP/1.1\r\n\
         Host: 127.0.0.1:{port}\r\n\
         Content-Type: application/x-amz-json-1.0\r\n\
         X-Amz-Target: DynamoDB_20120810.ListTables\r\n\
         X-Amz-Date: 20200101T000000Z\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20200101/us-east-1/dynamodb/aws4_request, \
         SignedHeaders=host;x-amz-date;x-amz-target, Signature=00\r\n\
         Content-Length: 2\r\n\
         Connection: close\r\n\
         \r\n\
         {{}}"
    );
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    match tokio::time::timeout(Duration::from_secs(2), exchange).await {
        Ok(Ok(response)) => response.starts_with(b"HTTP/1.1 200"),
        _ => false,
    }
}

//! The processes a comparison runs: servers on free loopback ports, pinned to the servers' CPUs
//! with `taskset`, each logging to a file of its own, and always stopped — when the comparison
//! ends, fails or panics (`Drop`), and on Ctrl-C or SIGTERM (the caller races its work against
//! `shutdown_signal`, so unwinding reaches `Drop`). Also what is read about them from `/proc`:
//! CPU time and resident memory.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A started server.
#[derive(Clone, Debug)]
pub struct Proc {
    pub name: String,
    pub pid: u32,
    pub log: PathBuf,
}

pub struct Procs {
    work: PathBuf,
    /// `taskset -c` CPU list for every server, when pinning.
    cpus: Option<String>,
    children: Vec<(Proc, Child)>,
    ports: BTreeSet<u16>,
}

impl Procs {
    pub fn new(work: PathBuf, cpus: Option<String>) -> Procs {
        Procs {
            work,
            cpus,
            children: Vec::new(),
            ports: BTreeSet::new(),
        }
    }

    /// A loopback port nobody listens on (and not handed out before), below the ephemeral
    /// range: the kernel hands ports of that range to every outgoing connection (the generator
    /// opens many) and to every bind to port 0, so a port found free there can be taken again
    /// before the server, started right after, binds it.
    pub fn free_port(&mut self) -> anyhow::Result<u16> {
        let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32768);
        let range = 10_000..ephemeral.max(20_000);
        for _ in 0..1000 {
            let port = rand::random_range(range.clone());
            if !self.ports.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                self.ports.insert(port);
                return Ok(port);
            }
        }
        bail!("no free loopback port found in {range:?}")
    }

    /// Starts `program args` as server `name`, pinned, with stdout and stderr in
    /// `<work>/<name>.log`. `DDBCACHE_*` variables of this process are not passed on: a server's
    /// configuration is what `env` says.
    pub fn spawn<S: AsRef<OsStr>>(
        &mut self,
        name: &str,
        program: impl AsRef<OsStr>,
        args: &[S],
        env: &[(String, String)],
    ) -> anyhow::Result<Proc> {
        let log = self.work.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        // taskset execs the program, so the child's pid is the server's own.
        let mut command = match &self.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(program.as_ref());
                c
            }
            None => Command::new(program.as_ref()),
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("DDBCACHE_") {
                command.env_remove(var);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", program.as_ref()))?;
        let proc = Proc {
            name: name.to_owned(),
            pid: child.id(),
            log,
        };
        self.children.push((proc.clone(), child));
        Ok(proc)
    }

    /// An error naming the server and its log if it has exited.
    pub fn check_alive(&mut self, proc: &Proc) -> anyhow::Result<()> {
        if let Some((_, child)) = self.children.iter_mut().find(|(p, _)| p.pid == proc.pid) {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited ({status}); its log: {}",
                    proc.name,
                    proc.log.display()
                );
            }
        }
        Ok(())
    }

    /// Waits until `port` accepts connections.
    pub async fn wait_port(
        &mut self,
        proc: &Proc,
        port: u16,
        within: Duration,
    ) -> anyhow::Result<()> {
        let listening = async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        };
        self.wait_until(
            proc,
            within,
            &format!("listening on port {port}"),
            listening,
        )
        .await
    }

    /// Waits until ddbcache's `/readyz` answers 200.
    pub async fn wait_ready(
        &mut self,
        proc: &Proc,
        admin: &str,
        within: Duration,
    ) -> anyhow::Result<()> {
        let url = format!("{admin}/readyz");
        let ready = async || {
            let answer =
                crate::client::http_call(http::Method::GET, &url, Duration::from_secs(5)).await;
            matches!(answer, Ok((status, _)) if status.is_success())
        };
        self.wait_until(proc, within, &format!("ready ({url})"), ready)
            .await
    }

    /// Polls `done` until it holds, failing if the server exits or `within` passes first.
    pub(super) async fn wait_until(
        &mut self,
        proc: &Proc,
        within: Duration,
        what: &str,
        mut done: impl AsyncFnMut() -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            self.check_alive(proc)?;
            if done().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} was not {what} within {within:?}; its log: {}",
                    proc.name,
                    proc.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks the server to stop (SIGTERM: ddbcache drains, callgrind writes its profile), kills
    /// it if it has not exited within `within`, and returns how it ended.
    pub async fn stop(&mut self, proc: &Proc, within: Duration) -> anyhow::Result<ExitStatus> {
        let Some(i) = self.children.iter().position(|(p, _)| p.pid == proc.pid) else {
            bail!("{} is not a running server", proc.name);
        };
        let (_, mut child) = self.children.remove(i);
        let _ = Command::new("kill")
            .args(["-TERM", &proc.pid.to_string()])
            .status();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let status = child.wait()?;
                bail!(
                    "{} did not stop within {within:?} of SIGTERM (killed: {status}); its log: {}",
                    proc.name,
                    proc.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
        }
        for (_, child) in &mut self.children {
            let _ = child.wait();
        }
    }
}

/// Pins this process, all its threads, to `cpus`; the servers get theirs at `spawn`.
pub fn pin_self(cpus: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running taskset (util-linux); --no-pin runs without it")?;
    if !status.success() {
        bail!("taskset -a -p -c {cpus} failed ({status})");
    }
    Ok(())
}

/// User plus system CPU seconds a process has used so far (all its threads, living or not); 0
/// once it is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu(&Path::new("/proc").join(pid.to_string()).join("stat"))
}

/// As [`cpu_seconds`], for this process (the load generator).
pub fn own_cpu_seconds() -> f64 {
    stat_cpu(Path::new("/proc/self/stat"))
}

fn stat_cpu(path: &Path) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // After the command name, which may contain spaces: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / clock_ticks()
}

/// `sysconf(_SC_CLK_TCK)`, from `getconf`: the unit of `/proc/<pid>/stat`'s times.
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `/proc/<pid>/status` memory figure (`VmRSS`, `VmHWM`) in bytes.
pub fn memory_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_outside_the_ephemeral_range() {
        let ephemeral: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .map(|r| r.split_whitespace().next().unwrap().parse().unwrap())
            .unwrap_or(32768);
        let mut procs = Procs::new(std::env::temp_dir(), None);
        let ports: BTreeSet<u16> = (0..20).map(|_| procs.free_port().unwrap()).collect();
        assert_eq!(ports.len(), 20);
        assert!(
            ports
                .iter()
                .all(|p| (10_000..ephemeral.max(20_000)).contains(p)),
            "{ports:?}"
        );
    }

    #[test]
    fn reads_its_own_cpu_and_memory() {
        let start = own_cpu_seconds();
        let mut x = 0u64;
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(100) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(
            own_cpu_seconds() > start,
            "100 ms of spinning used no CPU time"
        );
        assert!(memory_bytes(std::process::id(), "VmRSS").is_some_and(|b| b > 0));
        assert_eq!(cpu_seconds(u32::MAX), 0.0);
    }
}

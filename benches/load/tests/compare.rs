//! `ddbcache-load compare`, shrunk to seconds: the scenarios run end to end against the real
//! processes they start (dynalite, serve-fixed, ddbcache in front of dynalite; a Redis and two
//! ddbcache on it for the fleet), and the report has every section, its targets, and hits that
//! really were hits. The instructions scenario is left out: callgrind's start-up alone takes most
//! of a minute on a debug build (its parsing of callgrind's output is tested beside it).

use std::path::Path;
use std::process::Command;

#[test]
fn a_reduced_quick_comparison_writes_the_whole_report() {
    let load = Path::new(env!("CARGO_BIN_EXE_ddbcache-load"));
    let ddbcache = load.with_file_name("ddbcache");
    assert!(
        ddbcache.is_file(),
        "{} is missing: build the workspace (cargo test --workspace builds it)",
        ddbcache.display()
    );
    let out = std::env::temp_dir().join(format!("ddbcache-compare-test-{}.md", std::process::id()));
    let two_cpus = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    let mut command = Command::new(load);
    command
        .args(["compare", "--quick", "--runs", "2", "--duration", "300ms"])
        .args(["--warmup", "100ms", "--keys", "300", "--concurrency", "4"])
        .args(["--mem-keys", "1500", "--mem-capacity", "128KiB"])
        .args(["--scale-keys", "100,300", "--fleet-probes", "20"])
        .args(["--scenarios", "throughput,latency,memory,scale,fleet"])
        .arg("--ddbcache")
        .arg(&ddbcache)
        .arg("--out")
        .arg(&out);
    if !two_cpus {
        command.arg("--no-pin");
    }
    let status = command.status().unwrap();
    assert!(status.success(), "compare failed: {status}");
    let report = std::fs::read_to_string(&out).unwrap();
    std::fs::remove_file(&out).unwrap();

    for heading in [
        "## Machine",
        "## Method",
        "## Targets",
        "## Throughput: 4 requests in flight",
        "## Latency: one request at a time",
        "## Memory with a full cache",
        "## Hit cost by cache size",
        "## Fleet bus: cost and lag",
        "## Raw",
    ] {
        assert!(report.contains(heading), "no {heading} in:\n{report}");
    }
    // Warmed, the cache-on ddbcache answered every measured read from its cache.
    assert!(
        report
            .contains("Hit ratio of the hit runs (ddbcache's /metrics deltas): 100.00%, 100.00%."),
        "{report}"
    );
    // Two runs per target: five targets twice (throughput, latency), two cache sizes, hits and
    // writes with and without the fleet bus.
    let runs = report
        .lines()
        .filter(|l| l.starts_with("{\"") && l.contains("\"run\":"))
        .count();
    assert_eq!(runs, 2 * (5 + 5 + 2 + 2 + 2), "{report}");
    // The bare forwarder answered in front of dynalite (errors would be its 502s).
    let forwarder = report
        .lines()
        .find(|l| l.starts_with("| bare hyper forwarder (serve-forward) |"))
        .expect("a row for the bare forwarder");
    assert!(forwarder.contains("| 0 |"), "{forwarder}");
    // No read through the fleet's peer got an old item once the bus lag had passed.
    assert!(
        report.contains("| probes stale after the bus lag | 0 | 0 | met |"),
        "{report}"
    );
    // Median and range of two runs in every figure of the side-by-side tables.
    let fixed = report
        .lines()
        .find(|l| l.starts_with("| bare hyper (serve-fixed) |"))
        .unwrap();
    assert!(fixed.contains('–'), "{fixed}");
}

#[test]
fn an_outage_run_counts_stale_answers_only_where_stale_if_error_is_on() {
    let load = Path::new(env!("CARGO_BIN_EXE_ddbcache-load"));
    let ddbcache = load.with_file_name("ddbcache");
    let out = std::env::temp_dir().join(format!("ddbcache-outage-test-{}.md", std::process::id()));
    // Connections refused fail reads at once, so stale answers come without waiting for the
    // breaker; the item TTL (1 s, a third of the outage at least) ends inside the outage.
    let status = Command::new(load)
        .args([
            "compare", "--quick", "--runs", "1", "--keys", "300", "--no-pin",
        ])
        .args(["--scenarios", "outage", "--outage-fault", "refuse"])
        .args(["--outage-run", "4s", "--outage", "2s"])
        .arg("--ddbcache")
        .arg(&ddbcache)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "compare failed: {status}");
    let report = std::fs::read_to_string(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    assert!(
        report.contains("## Outage: the upstream down 2s of 4s"),
        "{report}"
    );
    // The stale share of the reads that began during the outage, by configuration.
    let stale = |configuration: &str| -> f64 {
        let row = report
            .lines()
            .find(|l| l.starts_with(&format!("| {configuration} |")))
            .unwrap_or_else(|| panic!("no row {configuration} in:\n{report}"));
        row.split('|').nth(4).unwrap().trim().parse().unwrap()
    };
    assert_eq!(stale("neither (the default)"), 0.0, "{report}");
    assert_eq!(stale("breaker"), 0.0, "{report}");
    assert!(stale("breaker + stale-if-error") > 0.0, "{report}");
    assert!(stale("stale-if-error, no breaker") > 0.0, "{report}");
}

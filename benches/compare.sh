#!/usr/bin/env bash
# Side-by-side benchmark of ddbcache against the limits around it; writes benches/RESULTS.md.
#
# The same GetItem workload (ddbcache-load run) is driven against four targets:
#   fixed   ddbcache-load serve-fixed: a bare hyper server answering a canned GetItem response,
#           i.e. the most this machine's HTTP stack can do
#   hit     ddbcache with a warm item cache, in front of dynalite (every request is a hit)
#   miss    ddbcache with DDBCACHE_CACHE_ENABLED=false in front of the same dynalite
#   direct  dynalite itself
# twice: at CONCURRENCY requests in flight (throughput), and one request at a time (latency, what
# a hop adds). The server's CPU time per request is read from /proc, so the cost of a hit can be
# compared with the bare server's even when the load generator is what limits throughput.
# Optionally (SCALE_KEYS) the hit path is measured at several cache sizes, and (MEM_KEYS) the
# resident memory of a ddbcache whose item cache is full is checked against its capacity.
# benches/README.md explains how to read the results.
#
# Usage (from anywhere; paths are relative to the repository root):
#   benches/compare.sh                 # 10 s per target, 10 000 keys
#   QUICK=1 benches/compare.sh         # 2 s per target, 1 000 keys: a smoke test
#   SCALE_KEYS="1000 100000 1000000" benches/compare.sh
#
# Environment (defaults in brackets):
#   QUICK         1 = short runs for smoke testing [0]
#   DURATION      measured seconds per target [10, QUICK: 2]
#   WARMUP        unmeasured seconds of load before each measurement [2, QUICK: 1]
#   CONCURRENCY   requests in flight in the throughput runs (closed loop) [32]
#   KEYS          items in the table; the warm pass reads each once [10000, QUICK: 1000]
#   ITEM_BYTES    item size [200]
#   ITEM_CAPACITY item cache capacity of the hit target; must hold the largest SCALE_KEYS [1GiB]
#   LOAD_THREADS  ddbcache-load runtime threads (see --threads) [1]
#   LOAD_CPUS     if set, taskset CPU list for ddbcache-load, e.g. 0 []
#   SERVER_CPUS   if set, taskset CPU list for the servers, e.g. 1 []
#   SCALE_KEYS    extra hit-path runs at these cache sizes, e.g. "1000 100000 1000000" []
#   MEM_CAPACITY  item cache capacity of the memory check [64MiB, QUICK: 8MiB]
#   MEM_KEYS      keys read through it, enough to overfill it; 0 skips the check [300000, QUICK: 40000]
#   OUT           report path [benches/RESULTS.md]
#   CARGO_TARGET_DIR  where cargo builds (and this script finds) the release binaries [target]
#
# Needs: cargo, node (dynalite via scripts/setup.sh), curl, jq, awk.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

QUICK="${QUICK:-0}"
if [[ "$QUICK" == 1 ]]; then
    DURATION="${DURATION:-2}"
    WARMUP="${WARMUP:-1}"
    KEYS="${KEYS:-1000}"
    MEM_CAPACITY="${MEM_CAPACITY:-8MiB}"
    MEM_KEYS="${MEM_KEYS:-40000}"
else
    DURATION="${DURATION:-10}"
    WARMUP="${WARMUP:-2}"
    KEYS="${KEYS:-10000}"
    MEM_CAPACITY="${MEM_CAPACITY:-64MiB}"
    MEM_KEYS="${MEM_KEYS:-300000}"
fi
CONCURRENCY="${CONCURRENCY:-32}"
ITEM_BYTES="${ITEM_BYTES:-200}"
ITEM_CAPACITY="${ITEM_CAPACITY:-1GiB}"
LOAD_THREADS="${LOAD_THREADS:-1}"
LOAD_CPUS="${LOAD_CPUS:-}"
SERVER_CPUS="${SERVER_CPUS:-}"
SCALE_KEYS="${SCALE_KEYS:-}"
OUT="${OUT:-benches/RESULTS.md}"
TABLE=bench

say() { printf 'compare: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
for tool in cargo node curl jq awk; do
    command -v "$tool" >/dev/null 2>&1 || die "missing '$tool'"
done
[[ "$DURATION" =~ ^[0-9]+$ && "$WARMUP" =~ ^[0-9]+$ ]] ||
    die "DURATION and WARMUP are whole seconds (e.g. DURATION=10)"

work="$(mktemp -d "${TMPDIR:-/tmp}/ddbcache-bench.XXXXXX")"
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ $status -ne 0 ]]; then
        say "failed; logs kept in $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pin() { # pin CPUS COMMAND...: run under taskset when CPUS is set
    local cpus="$1"
    shift
    if [[ -n "$cpus" ]]; then
        taskset -c "$cpus" "$@"
    else
        "$@"
    fi
}

# exec_pinned CPUS COMMAND...: replace this (sub)shell with COMMAND, under taskset if CPUS is set
exec_pinned() {
    local cpus="$1"
    shift
    if [[ -n "$cpus" ]]; then
        exec taskset -c "$cpus" "$@"
    fi
    exec "$@"
}

# spawn LOG COMMAND...: start a server in the background as its own process (exec, so that $!
# is the server itself, whose CPU time and memory are read from /proc); sets spawned_pid.
spawn() {
    local log="$1"
    shift
    (exec_pinned "$SERVER_CPUS" "$@") >"$log" 2>&1 &
    spawned_pid=$!
    pids+=("$spawned_pid")
}

# A loopback port nobody listens on. Racy in theory; the servers fail loudly if it is taken.
free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            if [[ " ${used_ports[*]:-} " != *" $port "* ]]; then
                used_ports+=("$port")
                echo "$port"
                return
            fi
        fi
    done
    die "no free port found"
}
used_ports=()

# wait_tcp NAME PID PORT: until PORT accepts connections, or PID dies
wait_tcp() {
    for _ in $(seq 1 300); do
        kill -0 "$2" 2>/dev/null || die "$1 exited at startup (log: $work/$1.log)"
        if (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null; then
            return
        fi
        sleep 0.1
    done
    die "$1 did not listen on port $3 within 30 s"
}

# wait_ready NAME PID ADMIN_URL: until /readyz answers 200
wait_ready() {
    for _ in $(seq 1 300); do
        kill -0 "$2" 2>/dev/null || die "$1 exited at startup (log: $work/$1.log)"
        if [[ "$(curl -s -o /dev/null -w '%{http_code}' "$3/readyz" || true)" == 200 ]]; then
            return
        fi
        sleep 0.1
    done
    die "$1 was not ready within 30 s ($3/readyz; log: $work/$1.log)"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
clk_tck="$(getconf CLK_TCK)"
# CPU seconds (user + system) a process has used so far; 0 once it is gone.
cpu_s() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }
    # Fields after the command name (which may contain spaces): utime is the 12th, stime the 13th.
    awk -v tck="$clk_tck" '{ sub(/^.*\) /, ""); printf "%.3f\n", ($12 + $13) / tck }' <<<"$stat"
}

say "building release binaries"
cargo build --release --bin ddbcache --bin ddbcache-load >&2
target_dir="${CARGO_TARGET_DIR:-$root/target}"
load="$target_dir/release/ddbcache-load"
proxy="$target_dir/release/ddbcache"

if [[ ! -f scripts/upstream/node_modules/dynalite/cli.js ]]; then
    say "installing dynalite (scripts/setup.sh)"
    scripts/setup.sh >&2
fi

fixed_port="$(free_port)"
dynalite_port="$(free_port)"
hit_port="$(free_port)"
hit_admin_port="$(free_port)"
miss_port="$(free_port)"
miss_admin_port="$(free_port)"

say "starting serve-fixed on $fixed_port"
spawn "$work/fixed.log" "$load" serve-fixed --addr "127.0.0.1:$fixed_port" --item-bytes "$ITEM_BYTES"
fixed_pid=$spawned_pid

say "starting dynalite on $dynalite_port"
spawn "$work/dynalite.log" node scripts/upstream/node_modules/dynalite/cli.js \
    --host 127.0.0.1 --port "$dynalite_port" --createTableMs 0 --deleteTableMs 0 --updateTableMs 0
dynalite_pid=$spawned_pid

start_ddbcache() { # NAME PORT ADMIN_PORT CACHE_ENABLED CAPACITY
    DDBCACHE_LISTEN_ADDR="127.0.0.1:$2" \
        DDBCACHE_ADMIN_ADDR="127.0.0.1:$3" \
        DDBCACHE_UPSTREAM_ENDPOINT="http://127.0.0.1:$dynalite_port" \
        DDBCACHE_UPSTREAM_SIGN=false \
        DDBCACHE_CACHE_ENABLED="$4" \
        DDBCACHE_ITEM_CAPACITY="$5" \
        DDBCACHE_LOG_LEVEL=warn \
        spawn "$work/$1.log" "$proxy"
}
say "starting ddbcache (cache on) on $hit_port, admin $hit_admin_port"
start_ddbcache ddbcache-hit "$hit_port" "$hit_admin_port" true "$ITEM_CAPACITY"
hit_pid=$spawned_pid
say "starting ddbcache (cache off) on $miss_port, admin $miss_admin_port"
start_ddbcache ddbcache-miss "$miss_port" "$miss_admin_port" false "$ITEM_CAPACITY"
miss_pid=$spawned_pid
if ((MEM_KEYS > 0)); then
    # Started now, while dynalite is idle: after a million-item preload its ListTables (the
    # readiness probe) can take longer than the probe's timeout.
    mem_port="$(free_port)"
    mem_admin_port="$(free_port)"
    say "starting ddbcache (item capacity $MEM_CAPACITY) on $mem_port, admin $mem_admin_port"
    start_ddbcache ddbcache-mem "$mem_port" "$mem_admin_port" true "$MEM_CAPACITY"
    mem_pid=$spawned_pid
fi

wait_tcp fixed "$fixed_pid" "$fixed_port"
wait_tcp dynalite "$dynalite_pid" "$dynalite_port"
wait_ready ddbcache-hit "$hit_pid" "http://127.0.0.1:$hit_admin_port"
wait_ready ddbcache-miss "$miss_pid" "http://127.0.0.1:$miss_admin_port"
if ((MEM_KEYS > 0)); then
    wait_ready ddbcache-mem "$mem_pid" "http://127.0.0.1:$mem_admin_port"
fi

fixed_url="http://127.0.0.1:$fixed_port"
dynalite_url="http://127.0.0.1:$dynalite_port"
hit_url="http://127.0.0.1:$hit_port"
hit_admin="http://127.0.0.1:$hit_admin_port"
miss_url="http://127.0.0.1:$miss_port"

loadgen() { pin "$LOAD_CPUS" "$load" --threads "$LOAD_THREADS" "$@"; }

# preload TABLE KEYS: create the table in dynalite and write KEYS items
preload() {
    say "preloading $2 items into dynalite (table $1)"
    loadgen preload --endpoint "$dynalite_url" --table "$1" --keys "$2" \
        --item-bytes "$ITEM_BYTES" --concurrency 8 >&2
}

# warm_pass URL TABLE KEYS OUT.json: read keys 0..KEYS once each, in order, through URL
warm_pass() {
    say "warm pass: reading $3 keys of $2 once each through $1"
    loadgen run --endpoint "$1" --table "$2" --keys "$3" --mix get=100 --dist seq \
        --requests "$3" --warmup 0s --concurrency "$CONCURRENCY" --quiet --json >"$4"
    local errors not_found
    errors="$(jq '.errors' "$4")"
    not_found="$(jq '.get_not_found' "$4")"
    [[ "$errors" == 0 ]] || die "warm pass had $errors errors: $(jq -c .errors_by_type "$4")"
    [[ "$not_found" == 0 ]] || die "warm pass: $not_found keys not found (preload incomplete?)"
}

preload "$TABLE" "$KEYS"
warm_pass "$hit_url" "$TABLE" "$KEYS" "$work/warm.json"

# measure NAME URL CONCURRENCY SERVER_PID [extra run args...]
# Writes NAME.json (the load generator's report) and NAME.cpu: CPU seconds the server and the
# generator used during the measured DURATION (sampled from /proc at its start and just before
# its end, so warm-up is excluded).
measure() {
    local name="$1" url="$2" conc="$3" server="$4"
    shift 4
    say "measuring $name ($url, $conc in flight) for ${DURATION}s after ${WARMUP}s warm-up"
    # exec in a subshell, so that $! is the generator itself.
    (exec_pinned "$LOAD_CPUS" "$load" --threads "$LOAD_THREADS" run --endpoint "$url" \
        --table "$TABLE" --keys "$KEYS" --mix get=100 --dist uniform --concurrency "$conc" \
        --duration "${DURATION}s" --warmup "${WARMUP}s" --item-bytes "$ITEM_BYTES" --quiet \
        --json "$@" >"$work/$name.json") &
    local gen=$!
    # The generator's own clock starts about 20 ms after launch.
    sleep "$(awk -v w="$WARMUP" 'BEGIN { print w + 0.05 }')"
    local t0 s0 g0 t1 s1 g1
    t0="$(date +%s.%N)"
    s0="$(cpu_s "$server")"
    g0="$(cpu_s "$gen")"
    # Well before the generator stops (it may start late on a loaded machine).
    sleep "$(awk -v d="$DURATION" 'BEGIN { print d - 0.3 }')"
    t1="$(date +%s.%N)"
    s1="$(cpu_s "$server")"
    g1="$(cpu_s "$gen")"
    wait "$gen" || die "ddbcache-load failed measuring $name"
    awk -v s0="$s0" -v s1="$s1" -v g0="$g0" -v g1="$g1" -v t0="$t0" -v t1="$t1" \
        'BEGIN { printf "%.3f %.3f %.3f\n", s1 - s0, g1 - g0, t1 - t0 }' >"$work/$name.cpu"
    sleep 1
}
measure fixed "$fixed_url" "$CONCURRENCY" "$fixed_pid"
measure hit "$hit_url" "$CONCURRENCY" "$hit_pid" --admin "$hit_admin"
measure miss "$miss_url" "$CONCURRENCY" "$miss_pid"
measure direct "$dynalite_url" "$CONCURRENCY" "$dynalite_pid"
measure fixed1 "$fixed_url" 1 "$fixed_pid"
measure hit1 "$hit_url" 1 "$hit_pid" --admin "$hit_admin"
measure miss1 "$miss_url" 1 "$miss_pid"
measure direct1 "$dynalite_url" 1 "$dynalite_pid"

scale_rows=()
largest_scale=0
for n in $SCALE_KEYS; do
    table="bench_$n"
    preload "$table" "$n"
    curl -s -X POST "$hit_admin/cache/flush" >/dev/null
    warm_pass "$hit_url" "$table" "$n" "$work/warm_$n.json"
    sleep 1
    entries="$(curl -s "$hit_admin/cache" | jq '.item.entries')"
    rss="$(rss_kib "$hit_pid")"
    TABLE="$table" KEYS="$n" measure "scale_$n" "$hit_url" "$CONCURRENCY" "$hit_pid" --admin "$hit_admin"
    scale_rows+=("$n $entries $rss")
    if ((n > largest_scale)); then largest_scale=$n; fi
done

mem_row=""
if ((MEM_KEYS > 0)); then
    mem_rss_idle="$(rss_kib "$mem_pid")"
    if ((largest_scale >= MEM_KEYS)); then
        mem_table="bench_$largest_scale"
    else
        mem_table=bench_mem
        preload "$mem_table" "$MEM_KEYS"
    fi
    warm_pass "http://127.0.0.1:$mem_port" "$mem_table" "$MEM_KEYS" "$work/warm_mem.json"
    sleep 1
    curl -s "http://127.0.0.1:$mem_admin_port/cache" >"$work/mem_cache.json"
    mem_evictions="$(curl -s "http://127.0.0.1:$mem_admin_port/metrics" |
        awk '/^ddbcache_cache_evictions_total\{cache="item"\}/ { print $2 }')"
    mem_row="$mem_rss_idle $(rss_kib "$mem_pid") $(awk '/^VmHWM:/ { print $2 }' "/proc/$mem_pid/status")"
fi

# ---- report -------------------------------------------------------------------------------

field() { jq -r "$2 // \"n/a\"" "$work/$1.json"; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
verdict() { # CONDITION (awk expression) -> "met" / "NOT met"
    awk "BEGIN { if ($1) print \"met\"; else print \"**NOT met**\" }"
}
# cpu_per_req NAME WHICH(1 = server, 2 = generator): CPU µs per measured request
cpu_per_req() {
    local rps
    rps="$(field "$1" .throughput_rps)"
    awk -v which="$2" -v rps="$rps" '{ printf "%.1f", $which / ($3 * rps) * 1e6 }' "$work/$1.cpu"
}
row() { # NAME LABEL
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" \
        "$(jq -r '.throughput_rps | round' "$work/$1.json")" \
        "$(field "$1" .latency_us.p50)" "$(field "$1" .latency_us.p90)" \
        "$(field "$1" .latency_us.p99)" "$(field "$1" .latency_us.p999)" \
        "$(field "$1" .latency_us.max)" "$(field "$1" .errors)" \
        "$(cpu_per_req "$1" 1)" "$(cpu_per_req "$1" 2)"
}
table_header() {
    echo "| target | req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | errors | server CPU µs/req | generator CPU µs/req |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
}

rps_ratio="$(calc '%.2f' "$(field hit .throughput_rps) / $(field fixed .throughput_rps)")"
p50_ratio="$(calc '%.2f' "$(field hit .latency_us.p50) / $(field fixed .latency_us.p50)")"
p50_ratio1="$(calc '%.2f' "$(field hit1 .latency_us.p50) / $(field fixed1 .latency_us.p50)")"
cpu_ratio="$(calc '%.2f' "$(cpu_per_req hit 1) / $(cpu_per_req fixed 1)")"
miss_overhead="$(calc '%d' "$(field miss1 .latency_us.p50) - $(field direct1 .latency_us.p50)")"
hit_ratio="$(jq -r '.admin.hit_ratio // empty | . * 100 | tostring | .[0:6]' "$work/hit.json")"
hit_ratio="${hit_ratio:-n/a}"

{
    echo "# ddbcache benchmark results"
    echo
    echo "Generated by \`benches/compare.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC')$([[ "$QUICK" == 1 ]] && echo ' (QUICK=1: short smoke-test runs, not for conclusions)'). How to read this: \`benches/README.md\`."
    echo
    echo "## Machine"
    echo
    echo "- CPU: $(nproc) × $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk -F': ' '/^cpu MHz/ { printf "%.0f MHz", $2; exit }' /proc/cpuinfo), cache $(awk -F': ' '/^cache size/ { print $2; exit }' /proc/cpuinfo)"
    echo "- Memory: $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- Kernel: $(uname -srm)"
    echo "- Rust: $(rustc --version)"
    echo "- ddbcache: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "- dynalite: $(jq -r .version scripts/upstream/node_modules/dynalite/package.json), node $(node --version)"
    echo
    echo "## Workload"
    echo
    echo "- GetItem only, keys uniform over $KEYS items of $ITEM_BYTES B; closed loop; one HTTP/1.1 keep-alive connection per request in flight"
    echo "- ${DURATION}s measured per target after ${WARMUP}s warm-up"
    echo "- generator: \`ddbcache-load --threads $LOAD_THREADS\`$([[ -n "$LOAD_CPUS" ]] && echo ", pinned to CPUs $LOAD_CPUS"); servers: default multi-threaded runtime$([[ -n "$SERVER_CPUS" ]] && echo ", pinned to CPUs $SERVER_CPUS"), all on the same machine"
    echo "- ddbcache: item cache capacity $ITEM_CAPACITY, upstream signing off, log level warn; the hit target was warmed by one sequential pass over all keys"
    echo "- CPU µs/req: user + system CPU time of the process during the measured period (/proc), divided by the requests answered"
    echo
    echo "## Throughput: $CONCURRENCY requests in flight"
    echo
    table_header
    row fixed "bare hyper (serve-fixed)"
    row hit "ddbcache, cache hit"
    row miss "ddbcache, cache off (miss path)"
    row direct "dynalite direct"
    echo
    echo "Hit ratio during the hit run (ddbcache /metrics deltas): ${hit_ratio}%."
    echo
    echo "## Latency: one request at a time"
    echo
    table_header
    row fixed1 "bare hyper (serve-fixed)"
    row hit1 "ddbcache, cache hit"
    row miss1 "ddbcache, cache off (miss path)"
    row direct1 "dynalite direct"
    echo
    echo "## Targets"
    echo
    echo "| measure | value | target | |"
    echo "|---|---:|---:|---|"
    echo "| hit throughput / bare hyper throughput ($CONCURRENCY in flight) | $rps_ratio | ≥ 0.80 | $(verdict "$rps_ratio >= 0.8") |"
    echo "| hit p50 / bare hyper p50 ($CONCURRENCY in flight) | $p50_ratio | ≤ 1.25 | $(verdict "$p50_ratio <= 1.25") |"
    echo "| hit p50 / bare hyper p50 (1 in flight) | $p50_ratio1 | ≤ 1.25 | $(verdict "$p50_ratio1 <= 1.25") |"
    echo "| miss p50 − dynalite direct p50 (1 in flight) | $miss_overhead µs | ≤ 100 µs | $(verdict "$miss_overhead <= 100") |"
    if ((${#scale_rows[@]} > 1)); then
        read -r n_small _ <<<"${scale_rows[0]}"
        read -r n_large _ <<<"${scale_rows[-1]}"
        flat_rps="$(calc '%.2f' "$(field "scale_$n_large" .throughput_rps) / $(field "scale_$n_small" .throughput_rps)")"
        flat_cpu="$(calc '%.2f' "$(cpu_per_req "scale_$n_large" 1) / $(cpu_per_req "scale_$n_small" 1)")"
        echo "| hit throughput at $n_large items / at $n_small items | $flat_rps | ≥ 0.80 | $(verdict "$flat_rps >= 0.8") |"
        echo "| hit server CPU per request at $n_large items / at $n_small items | $flat_cpu | ≤ 1.20 | $(verdict "$flat_cpu <= 1.2") |"
    fi
    if [[ -n "$mem_row" ]]; then
        read -r _ mem_rss mem_hwm <<<"$mem_row"
        mem_cap="$(jq -r .item.capacity_bytes "$work/mem_cache.json")"
        mem_bound="$(calc '%.1f' "1.25 * $mem_cap / 1048576 + 30")"
        mem_rss_mib="$(calc '%.1f' "$mem_rss / 1024")"
        echo "| RSS with a full item cache of $MEM_CAPACITY | $mem_rss_mib MiB | ≤ 1.25 × capacity + 30 MiB = $mem_bound MiB | $(verdict "$mem_rss_mib <= $mem_bound") |"
    fi
    echo
    echo "Supplementary: ddbcache's server CPU per hit is $cpu_ratio× the bare server's per answer; that ratio is the hit path's cost independent of what limits throughput on a shared machine."
    echo
    echo "Where a hit's CPU goes, and what was changed because of it: \`benches/README.md\`, \"Profiling a hit\"."
    echo
    if ((${#scale_rows[@]} > 0)); then
        echo "## Hit cost by cache size"
        echo
        echo "Each table was preloaded, the cache flushed, every key read once, then measured as above ($CONCURRENCY in flight)."
        echo
        echo "| items cached | req/s | p50 µs | p99 µs | hit ratio | server CPU µs/req | RSS MiB |"
        echo "|---:|---:|---:|---:|---:|---:|---:|"
        for entry in "${scale_rows[@]}"; do
            read -r n entries rss <<<"$entry"
            f="$work/scale_$n.json"
            printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$entries" \
                "$(jq -r '.throughput_rps | round' "$f")" "$(jq -r .latency_us.p50 "$f")" \
                "$(jq -r .latency_us.p99 "$f")" \
                "$(jq -r '.admin.hit_ratio // "n/a" | if type == "number" then (. * 1000 | round / 10 | tostring) + "%" else . end' "$f")" \
                "$(cpu_per_req "scale_$n" 1)" "$(calc '%.1f' "$rss / 1024")"
        done
        echo
    fi
    if [[ -n "$mem_row" ]]; then
        read -r mem_idle mem_rss mem_hwm <<<"$mem_row"
        echo "## Memory with a full cache"
        echo
        echo "A separate ddbcache with item capacity $MEM_CAPACITY read $MEM_KEYS distinct items once each (more than fit, so it evicted as it went)."
        echo
        echo "| RSS at start | RSS full | peak RSS | entries | bytes weighed | capacity | evictions |"
        echo "|---:|---:|---:|---:|---:|---:|---:|"
        printf '| %s MiB | %s MiB | %s MiB | %s | %s MiB | %s MiB | %s |\n' \
            "$(calc '%.1f' "$mem_idle / 1024")" "$(calc '%.1f' "$mem_rss / 1024")" \
            "$(calc '%.1f' "$mem_hwm / 1024")" "$(jq -r .item.entries "$work/mem_cache.json")" \
            "$(calc '%.1f' "$(jq -r .item.bytes "$work/mem_cache.json") / 1048576")" \
            "$(calc '%.0f' "$(jq -r .item.capacity_bytes "$work/mem_cache.json") / 1048576")" \
            "${mem_evictions:-n/a}"
        echo
    fi
    echo "## Raw"
    echo
    echo "Per-target JSON from \`ddbcache-load run --json\`, and CPU seconds (server, generator) over the measured period:"
    echo
    echo '```json'
    for f in "$work"/*.cpu; do
        name="$(basename "$f" .cpu)"
        read -r server_cpu gen_cpu _ <"$f"
        jq -c '{target: "'"$name"'", throughput_rps, latency_us, errors, errors_by_type, cache_header, admin, server_cpu_s: '"$server_cpu"', generator_cpu_s: '"$gen_cpu"'}' "$work/$name.json"
    done
    echo '```'
} >"$OUT"

say "wrote $OUT"
sed -n '/^## Throughput/,/^## Raw/p' "$OUT" | sed '$d' >&2

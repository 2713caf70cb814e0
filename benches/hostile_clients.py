#!/usr/bin/env python3
"""Memory and connections of a ddbcache process under hostile clients, for choosing limits and
the allocator.

  spike:  24 slow clients each send a body just under server.max_body_bytes and stall before
          the last bytes; RSS is sampled while they hold their bodies, and again after they gave
          up and the process has been idle for a while (is the memory returned?).
  trickle: N clients each send a request's headers a byte at a time and never finish them; after
          --hold seconds (more than server.header_timeout), how many connections does ddbcache
          still hold, and its RSS.
  steady: N distinct GetItems fill the item cache from `ddbcache-load serve-fixed` (every answer
          an item of --item-bytes); RSS is read once the cache holds them all.
  starve: --uploads clients each declare a 16 MiB PutItem, send 15 MiB of it and stall; meanwhile
          --clients other clients each send one small GetItem (answered by `serve-fixed`): how
          many of them are answered 200, and how many uploads the budget holds.

  benches/hostile_clients.py spike  --ddbcache target/release/ddbcache [--preload /usr/lib/.../libjemalloc.so.2]
  benches/hostile_clients.py trickle --ddbcache target/release/ddbcache [--clients 50 --hold 15]
  benches/hostile_clients.py steady --ddbcache target/release/ddbcache --load target/release/ddbcache-load
  benches/hostile_clients.py starve --ddbcache target/release/ddbcache --load target/release/ddbcache-load [--uploads 4 --clients 25]

Extra DDBCACHE_* settings come from the environment (e.g. DDBCACHE_MAX_BUFFERED_BYTES=4GiB to
see the process without the buffered-body bound). Only loopback addresses are used.
"""
import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def stop(*procs):
    for proc in procs:
        proc.terminate()
        proc.wait()


def ddbcache_env():
    """The DDBCACHE_* settings this run was given, for its report."""
    return {k: v for k, v in os.environ.items() if k.startswith("DDBCACHE_")}


def wait_port(port, proc):
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {port} never opened")


def start_ddbcache(args, upstream, extra_env=None):
    data, admin = free_port(), free_port()
    env = dict(os.environ)
    env.update({
        "DDBCACHE_LISTEN_ADDR": f"127.0.0.1:{data}",
        "DDBCACHE_ADMIN_ADDR": f"127.0.0.1:{admin}",
        "DDBCACHE_UPSTREAM_ENDPOINT": upstream,
        "DDBCACHE_UPSTREAM_SIGN": "false",
        "DDBCACHE_LOG_LEVEL": "error",
    })
    env.update(extra_env or {})
    if args.preload:
        env["LD_PRELOAD"] = args.preload
    proc = subprocess.Popen([args.ddbcache, "--config", "/dev/null"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(data, proc)
    return proc, data, admin


def metric(admin, series):
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return 0.0


HEADERS = {
    "content-type": "application/x-amz-json-1.0",
    "authorization": "AWS4-HMAC-SHA256 Credential=AKID/20200101/us-east-1/dynamodb/aws4_request, "
                     "SignedHeaders=host;x-amz-date;x-amz-target, Signature=0",
    "x-amz-date": "20200101T000000Z",
}


def spike(args):
    proc, port, _ = start_ddbcache(args, "http://127.0.0.1:9")
    try:
        time.sleep(1)
        idle = rss_mib(proc.pid)
        size = args.body_bytes
        head = (f"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-amz-json-1.0\r\n"
                f"x-amz-target: DynamoDB_20120810.ListTables\r\ncontent-length: {size}\r\n\r\n")
        body = b'{"x":"' + b"a" * (size - 8) + b'"}'
        socks = []

        def slow_client():
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(head.encode())
            try:
                s.sendall(body[:-1024])  # all but the last KiB, then stall
            except OSError:
                pass  # refused (503) and closed before the body was all sent
            socks.append(s)

        threads = [threading.Thread(target=slow_client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = 0.0
        for _ in range(20):
            peak = max(peak, rss_mib(proc.pid))
            time.sleep(0.1)
        for s in socks:
            s.close()
        time.sleep(args.settle)
        after = rss_mib(proc.pid)
        print(json.dumps({"mode": "spike", "preload": args.preload, "clients": args.clients,
                          "body_bytes": size, "idle_mib": round(idle, 1),
                          "peak_mib": round(peak, 1), "after_mib": round(after, 1),
                          "env": ddbcache_env()}))
    finally:
        stop(proc)


def trickle(args):
    proc, port, _ = start_ddbcache(args, "http://127.0.0.1:9")
    try:
        head = (b"POST / HTTP/1.1\r\nhost: x\r\n"
                b"x-amz-target: DynamoDB_20120810.ListTables\r\nx-padding: ")
        socks = []
        for _ in range(args.clients):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(head)
            s.setblocking(False)
            socks.append(s)
        open_socks = set(range(len(socks)))
        started = time.monotonic()
        while time.monotonic() - started < args.hold:
            for i in list(open_socks):
                try:
                    if socks[i].recv(1024) == b"":
                        open_socks.discard(i)  # closed by ddbcache
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    open_socks.discard(i)
                    continue
                try:
                    socks[i].send(b"a")  # one more header byte: never the end of the headers
                except OSError:
                    open_socks.discard(i)
            time.sleep(0.1)
        print(json.dumps({"mode": "trickle", "clients": args.clients, "hold_s": args.hold,
                          "still_held": len(open_socks), "rss_mib": round(rss_mib(proc.pid), 1),
                          "env": ddbcache_env()}))
        for s in socks:
            s.close()
    finally:
        stop(proc)


def serve_fixed(args):
    upstream_port = free_port()
    fixed = subprocess.Popen([args.load, "serve-fixed", "--addr", f"127.0.0.1:{upstream_port}",
                              "--item-bytes", str(args.item_bytes)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(upstream_port, fixed)
    return fixed, f"http://127.0.0.1:{upstream_port}"


def steady(args):
    fixed, upstream = serve_fixed(args)
    proc, port, _ = start_ddbcache(args, upstream, {"DDBCACHE_ITEM_CAPACITY": "1GiB"})
    try:
        idle = rss_mib(proc.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        headers = dict(HEADERS, **{"x-amz-target": "DynamoDB_20120810.GetItem"})
        for i in range(args.entries):
            body = json.dumps({"TableName": "t", "Key": {"pk": {"S": f"key-{i}"}}})
            conn.request("POST", "/", body, headers)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                sys.exit(f"GetItem answered {r.status}")
        time.sleep(1)
        full = rss_mib(proc.pid)
        admin_stats = None
        print(json.dumps({"mode": "steady", "preload": args.preload, "entries": args.entries,
                          "item_bytes": args.item_bytes, "idle_mib": round(idle, 1),
                          "full_mib": round(full, 1),
                          "per_entry_bytes": round((full - idle) * 2**20 / args.entries)}))
    finally:
        stop(proc, fixed)


def starve(args):
    fixed, upstream = serve_fixed(args)
    proc, port, admin = start_ddbcache(args, upstream)
    try:
        declared, sent = 16 * 2**20, 15 * 2**20
        head = (f"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-amz-json-1.0\r\n"
                f"x-amz-target: DynamoDB_20120810.PutItem\r\ncontent-length: {declared}\r\n\r\n")
        body = b'{"TableName":"t","Item":{"pk":{"S":"' + b"a" * sent
        uploads = []

        def upload():
            s = socket.create_connection(("127.0.0.1", port))
            uploads.append(s)
            s.sendall(head.encode())
            try:
                s.sendall(body[:sent])  # then stall, holding the connection open
            except OSError:
                pass  # refused (503) and closed before the body was all sent

        threads = [threading.Thread(target=upload) for _ in range(args.uploads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        held = metric(admin, "ddbcache_request_buffer_bytes")
        statuses = []

        def get_item(i):
            started = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                body = json.dumps({"TableName": "t", "Key": {"pk": {"S": f"key-{i}"}}})
                conn.request("POST", "/", body,
                             dict(HEADERS, **{"x-amz-target": "DynamoDB_20120810.GetItem"}))
                r = conn.getresponse()
                r.read()
                statuses.append((r.status, time.monotonic() - started))
            except OSError as e:
                statuses.append((str(e), time.monotonic() - started))

        gets = [threading.Thread(target=get_item, args=(i,)) for i in range(args.clients)]
        for t in gets:
            t.start()
        for t in gets:
            t.join()
        ok = sum(1 for status, _ in statuses if status == 200)
        counts = {}
        for status, _ in statuses:
            counts[str(status)] = counts.get(str(status), 0) + 1
        print(json.dumps({"mode": "starve", "uploads": args.uploads, "clients": args.clients,
                          "buffered_mib_while_held": round(held / 2**20, 1),
                          "get_items_ok": ok, "statuses": counts,
                          "slowest_get_item_s": round(max(t for _, t in statuses), 2),
                          "buffer_refusals": metric(admin, "ddbcache_request_buffer_refusals_total"),
                          "env": ddbcache_env()}))
        for s in uploads:
            s.close()
    finally:
        stop(proc, fixed)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["spike", "trickle", "steady", "starve"])
    p.add_argument("--ddbcache", default="target/release/ddbcache")
    p.add_argument("--load", default="target/release/ddbcache-load")
    p.add_argument("--preload", help="an allocator to LD_PRELOAD (jemalloc, mimalloc)")
    p.add_argument("--clients", type=int, default=24)
    p.add_argument("--uploads", type=int, default=4, help="stalled 16 MiB uploads (starve)")
    p.add_argument("--body-bytes", type=int, default=16 * 2**20 - 4096)
    p.add_argument("--settle", type=float, default=10.0, help="idle seconds before 'after'")
    p.add_argument("--hold", type=float, default=15.0, help="seconds of trickling (trickle)")
    p.add_argument("--entries", type=int, default=50_000)
    p.add_argument("--item-bytes", type=int, default=400)
    args = p.parse_args()
    {"spike": spike, "trickle": trickle, "steady": steady, "starve": starve}[args.mode](args)


if __name__ == "__main__":
    main()

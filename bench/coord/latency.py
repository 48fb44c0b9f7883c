#!/usr/bin/env python3
"""What each coordination primitive costs next to a plain put, not a test: one client, one
keep-alive HTTP connection to one node, requests back to back. Prints a markdown table of
latency percentiles (ms) per operation and its ratio to a plain put's median.

    python3 bench/coord/latency.py HOST:PORT [N]

Operations (N of each, default 500):
  put            PUT /v1/kv/K (100-byte value)
  put ?lease=    PUT /v1/kv/K?lease=ID
  lease grant    POST /v1/lease
  keepalive      POST /v1/lease/ID/keepalive
  lock           POST /v1/lock/NAME, uncontended (then released, not timed)
  unlock         DELETE /v1/lock/NAME?token=T
  campaign       POST /v1/election/NAME, uncontended (then resigned, not timed)
  watch notify   from sending a PUT to its event arriving on an open GET /v1/watch (another
                 connection to the same node)
"""
import http.client
import json
import socket
import statistics
import sys
import threading
import time

VALUE = b"x" * 100


def conn(addr):
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    c.connect()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def call(c, method, path, body=None):
    c.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
    r = c.getresponse()
    data = r.read()
    if r.status >= 300:
        raise RuntimeError(f"{method} {path}: {r.status} {data[:200]!r}")
    return json.loads(data) if data else None


def timed(samples, f):
    t = time.perf_counter()
    out = f()
    samples.append((time.perf_counter() - t) * 1000.0)
    return out


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    addr = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    c = conn(addr)
    res = {}
    lease = call(c, "POST", "/v1/lease", json.dumps({"ttl_ms": 600000}))["id"]

    res["put"] = s = []
    for i in range(n):
        timed(s, lambda: call(c, "PUT", f"/v1/kv/bench/put/{i % 1000}", VALUE))
    res["put ?lease="] = s = []
    for i in range(n):
        # One key per lease at most KEYS_PER_LEASE_MAX: reuse 500 keys.
        timed(s, lambda: call(c, "PUT", f"/v1/kv/bench/leased/{i % 500}?lease={lease}", VALUE))
    res["lease grant"] = s = []
    grants = []
    for _ in range(n):
        grants.append(timed(s, lambda: call(c, "POST", "/v1/lease", json.dumps({"ttl_ms": 60000})))["id"])
    res["keepalive"] = s = []
    for _ in range(n):
        timed(s, lambda: call(c, "POST", f"/v1/lease/{lease}/keepalive"))
    for g in grants:
        call(c, "DELETE", f"/v1/lease/{g}")
    res["lock"] = s = []
    res["unlock"] = u = []
    for i in range(n):
        held = timed(s, lambda: call(c, "POST", "/v1/lock/bench", json.dumps({"lease": lease, "wait_ms": 5000})))
        timed(u, lambda: call(c, "DELETE", f"/v1/lock/bench?token={held['fencing_token']}"))
    res["campaign"] = s = []
    for i in range(n):
        won = timed(s, lambda: call(c, "POST", "/v1/election/bench",
                                    json.dumps({"lease": lease, "value": "me", "wait_ms": 5000})))
        call(c, "DELETE", f"/v1/election/bench?token={won['fencing_token']}")

    # Watch notify: a streaming GET on its own connection; each PUT's event is awaited before the
    # next PUT is sent.
    w = conn(addr)
    w.request("GET", "/v1/watch?prefix=bench/watch/&progress_ms=60000")
    stream = w.getresponse()
    assert stream.status == 200, stream.status
    got = threading.Event()
    want = {"rev": None}

    def reader():
        while True:
            line = stream.fp.readline()
            if not line:
                return
            line = line.strip()
            # Chunked framing: size lines are hex, event lines are JSON.
            if not line.startswith(b"{"):
                continue
            ev = json.loads(line)
            if ev.get("type") == "put" and ev.get("value") == "w":
                got.set()

    threading.Thread(target=reader, daemon=True).start()
    res["watch notify"] = s = []
    for i in range(n):
        got.clear()
        t = time.perf_counter()
        call(c, "PUT", f"/v1/kv/bench/watch/{i % 100}", b"w")
        if not got.wait(10):
            raise RuntimeError("a watch event did not arrive within 10 s")
        s.append((time.perf_counter() - t) * 1000.0)
    call(c, "DELETE", f"/v1/lease/{lease}")

    base = statistics.median(res["put"])
    print(f"| operation (n={n}, 1 client, {addr}) | p50 ms | p90 ms | p99 ms | mean ms | p50 / put p50 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, xs in res.items():
        print(f"| {name} | {pct(xs, 50):.2f} | {pct(xs, 90):.2f} | {pct(xs, 99):.2f} | "
              f"{statistics.mean(xs):.2f} | {statistics.median(xs) / base:.2f}x |")


if __name__ == "__main__":
    main()

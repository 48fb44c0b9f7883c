#!/usr/bin/env python3
"""Tombstone collection, measured: a three-node multi-master cluster on 127.0.0.1, N keys written
and then deleted through node 1, and what each node holds afterwards.

Prints, per phase: registers (`rampart_mm_registers`), RSS (VmRSS of each node) and data file
size, and how long collection took. After collection the nodes are restarted, which compacts a
mostly empty data file (`rampart-storage`: at least 64 MiB and at most 25 % live).

    cargo build --release -p rampart-cli && python3 bench/tombstones/space.py

Settings (environment): RAMPART_BIN, N (keys, default 1000000), GRACE_MS (tombstone grace,
default 3000), REQUEST_TIMEOUT_MS (default 1000; the grace must be at least twice it plus 1 s),
TIMEOUT_S (each wait, default 900). Servers are the children of this script,
stopped by their PIDs; every wait has a deadline.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("RAMPART_BIN") or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release", "rampart")
N = int(os.environ.get("N", "1000000"))
GRACE_MS = int(os.environ.get("GRACE_MS", "3000"))
# The shortest grace a node takes is twice the request timeout plus 1 s.
REQUEST_TIMEOUT_MS = int(os.environ.get("REQUEST_TIMEOUT_MS", "1000"))
TIMEOUT_S = float(os.environ.get("TIMEOUT_S", "900"))
BATCH = 1000


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def resp_command(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    def __init__(self, addr):
        host, p = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(p)), timeout=60)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self._line()
        if line[:1] in (b"+", b":"):
            return line[1:]
        if line[:1] == b"-":
            return RuntimeError(line[1:].decode())
        raise RuntimeError("unexpected reply %r" % line[:80])

    def pipeline(self, commands, depth=8):
        """Sends commands with at most `depth` unanswered; retries a command that errs."""
        pending = []
        todo = list(commands)
        while todo or pending:
            while todo and len(pending) < depth:
                c = todo.pop(0)
                self.s.sendall(c)
                pending.append(c)
            r = self.reply()
            c = pending.pop(0)
            if isinstance(r, Exception):
                time.sleep(0.05)
                todo.append(c)


def metric(http, name):
    body = urllib.request.urlopen("http://%s/metrics" % http, timeout=10).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise RuntimeError("%s not in /metrics" % name)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    if not os.access(BIN, os.X_OK):
        sys.exit("no rampart binary at %s" % BIN)
    work = tempfile.mkdtemp(prefix="rampart-bench-gc.")
    nodes = {i: {"peer": "127.0.0.1:%d" % port(), "resp": "127.0.0.1:%d" % port(), "http": "127.0.0.1:%d" % port()} for i in (1, 2, 3)}
    initial = ",".join("%d=%s" % (i, n["peer"]) for i, n in nodes.items())
    procs = {}

    def start(i):
        n = nodes[i]
        log = open(os.path.join(work, "n%d.log" % i), "a")
        procs[i] = subprocess.Popen(
            [BIN, "server", "--id", str(i), "--data-dir", os.path.join(work, "n%d" % i), "--replication", "multi-master",
             "--peer-addr", n["peer"], "--resp-addr", n["resp"], "--http-addr", n["http"], "--initial-cluster", initial,
             "--request-timeout-ms", str(REQUEST_TIMEOUT_MS), "--tombstone-grace-ms", str(GRACE_MS)],
            stdout=log, stderr=log, env=dict(os.environ, RAMPART_LOG="warn"))

    def wait(what, cond):
        deadline = time.time() + TIMEOUT_S
        while True:
            try:
                if cond():
                    return
            except Exception:
                pass
            if time.time() > deadline:
                raise RuntimeError("timed out waiting for " + what)
            time.sleep(0.5)

    def report(label):
        print("%-40s" % label, end="")
        for i in (1, 2, 3):
            size = os.path.getsize(os.path.join(work, "n%d" % i, "rampart.redb"))
            print(" n%d: %8d registers %6.1f MB file %6.1f MB RSS |" % (
                i, metric(nodes[i]["http"], "rampart_mm_registers"), size / 1e6, rss_kb(procs[i].pid) / 1e3), end="")
        print(flush=True)

    try:
        for i in nodes:
            start(i)
        wait("health", lambda: all(urllib.request.urlopen("http://%s/v1/health" % n["http"], timeout=2).status == 200 for n in nodes.values()))
        c = Conn(nodes[1]["resp"])
        report("started")
        t = time.time()
        c.pipeline([resp_command("MSET", *[x for k in range(b, min(b + BATCH, N)) for x in ("t:%d" % k, "v%d" % k)]) for b in range(0, N, BATCH)])
        print("wrote %d keys in %.1f s" % (N, time.time() - t))
        report("after writing")
        t = time.time()
        c.pipeline([resp_command("DEL", *["t:%d" % k for k in range(b, min(b + BATCH, N))]) for b in range(0, N, BATCH)])
        print("deleted %d keys in %.1f s" % (N, time.time() - t))
        report("after deleting (tombstones)")
        t = time.time()
        wait("collection", lambda: all(metric(n["http"], "rampart_mm_registers") <= 10 for n in nodes.values()))
        print("collected in %.1f s after the last delete (grace %d ms)" % (time.time() - t, GRACE_MS))
        report("after collection")
        for i in (1, 2, 3):
            procs[i].terminate()
            procs[i].wait(timeout=60)
            start(i)
        wait("health after restart", lambda: all(urllib.request.urlopen("http://%s/v1/health" % n["http"], timeout=2).status == 200 for n in nodes.values()))
        report("after a restart (compaction)")
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

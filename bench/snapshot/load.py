#!/usr/bin/env python3
"""Loads KEYS keys of VALUE_BYTES bytes each into a rampart node over RESP, one SET at a time,
then SMALL_KEYS keys of 16 bytes.

Usage: load.py HOST:PORT KEYS VALUE_BYTES SMALL_KEYS
Values are pseudo-random bytes (one random block, rotated per key), so no layer can compress
them. Bounded: exactly KEYS writes, each with a 60 s socket timeout; exits non-zero on any error.
"""
import os
import socket
import sys
import time


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    keys, value_bytes, small_keys = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    block = os.urandom(value_bytes)
    s = socket.create_connection((host, int(port)), timeout=60)
    f = s.makefile("rb")
    started = time.monotonic()
    for i in range(keys):
        key = b"bench:%08d" % i
        r = i % 4093
        value = block[r:] + block[:r]
        s.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(key), key, len(value)) + value + b"\r\n")
        line = f.readline()
        if line != b"+OK\r\n":
            sys.exit(f"SET {key!r} answered {line!r}")
        if (i + 1) % 500 == 0:
            rate = (i + 1) * value_bytes / (time.monotonic() - started) / 2**20
            print(f"loaded {i + 1}/{keys} keys ({rate:.0f} MiB/s)", flush=True)
    print(f"loaded {keys} keys of {value_bytes} bytes in {time.monotonic() - started:.1f} s", flush=True)
    for i in range(small_keys):
        key = b"small:%08d" % i
        s.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$16\r\n%016d\r\n" % (len(key), key, i))
        line = f.readline()
        if line != b"+OK\r\n":
            sys.exit(f"SET {key!r} answered {line!r}")
    print(f"loaded {small_keys} small keys", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Samples VmRSS of the given PIDs every 0.2 s, appending "unix_time pid rss_kib" lines to OUT,
until STOP_FILE exists or DEADLINE_S seconds have passed (bounded). Usage: rss.py OUT STOP_FILE DEADLINE_S PID..."""
import os
import sys
import time

out, stop, deadline = sys.argv[1], sys.argv[2], time.time() + float(sys.argv[3])
pids = sys.argv[4:]
with open(out, "a") as f:
    while time.time() < deadline and not os.path.exists(stop):
        for pid in pids:
            try:
                with open(f"/proc/{pid}/status") as st:
                    for line in st:
                        if line.startswith("VmRSS:"):
                            f.write(f"{time.time():.3f} {pid} {line.split()[1]}\n")
            except OSError:
                pass
        f.flush()
        time.sleep(0.2)

#!/usr/bin/env bash
# What a TTL costs next to a plain write, not a test: a three-node cluster on 127.0.0.1 (MODE:
# leader | multi-master), redis-benchmark against one node (node 1: the leader, in leader mode),
# SET without a TTL, SET ... EX 3600, and GET of keys that have a TTL, with 1 and 50 clients.
# Prints redis-benchmark's summary lines (requests per second, latency percentiles in ms).
#
#   cargo build --release -p rampart-cli && bash bench/expiry/latency.sh
#
# Settings: RAMPART_BIN, MODE (leader), N (requests per run: 20000), WORK, KEEP_WORK. Servers are
# stopped by the PIDs this script started; every wait has a deadline.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${RAMPART_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/rampart}"
mode="${MODE:-leader}"
n="${N:-20000}"
[ -x "$bin" ] || { echo "no rampart binary at $bin"; exit 1; }
command -v redis-benchmark >/dev/null || { echo "needs redis-benchmark (apt-get install redis-tools)"; exit 1; }
work="${WORK:-$(mktemp -d /tmp/rampart-bench-ttl.XXXXXX)}"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "${KEEP_WORK:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for i in 1 2 3; do eval "peer$i=127.0.0.1:$(port) resp$i=127.0.0.1:$(port) http$i=127.0.0.1:$(port)"; done
for i in 1 2 3; do
    eval "p=\$peer$i r=\$resp$i h=\$http$i"
    RAMPART_LOG=warn "$bin" server --id "$i" --data-dir "$work/n$i" --replication "$mode" --peer-addr "$p" \
        --resp-addr "$r" --http-addr "$h" --initial-cluster "1=$peer1,2=$peer2,3=$peer3" >"$work/n$i.log" 2>&1 &
    pids+=($!)
done
host=${resp1%:*} p1=${resp1##*:}
deadline=$(($(date +%s) + 120))
if [ "$mode" = leader ]; then
    # Make node 1 the node measured: wait for a leader, then use whichever node leads.
    until leader=$(curl -sf "http://$http1/v1/status" | python3 -c 'import json,sys; l=json.load(sys.stdin)["leader_id"]; assert l; print(l)' 2>/dev/null); do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "no leader"; exit 1; }; sleep 0.2
    done
    eval "r=\$resp$leader"; p1=${r##*:}
fi
until [ "$(redis-cli -h "$host" -p "$p1" SET bench:ready 1 2>/dev/null)" = OK ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "never took a write"; exit 1; }; sleep 0.2
done
bench() { # label clients args...
    local label=$1 c=$2; shift 2
    printf '%-22s c=%-3s ' "$label" "$c"
    redis-benchmark -h "$host" -p "$p1" -n "$n" -c "$c" -r 100000 -q "$@" 2>/dev/null | tr '\r' '\n' | grep 'requests per second' | tail -1
}
for c in 1 50; do
    bench "SET" "$c" SET "k:__rand_int__" v
    bench "SET EX 3600" "$c" SET "k:__rand_int__" v EX 3600
    bench "GET (keys with TTL)" "$c" GET "k:__rand_int__"
done

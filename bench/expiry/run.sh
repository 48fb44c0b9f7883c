#!/usr/bin/env bash
# Expiry space benchmark, not a test: a three-node cluster on 127.0.0.1 takes KEYS keys set with
# a TTL of TTL_MS (SET k v PX TTL_MS, pipelined through redis-cli --pipe), then waits until the
# expirer has removed every one of them. Reports, per node, DBSIZE, the data file's size and the
# RSS before the load, right after it, and once every key is gone; then a second round of the
# same keys shows whether the data file reuses the freed space or grows.
#
#   cargo build --release -p rampart-cli
#   bash bench/expiry/run.sh                   # KEYS=1000000 TTL_MS=1000 MODE=leader
#   MODE=multi-master bash bench/expiry/run.sh
#
# Settings (environment): RAMPART_BIN (default target/release/rampart, or
# $CARGO_TARGET_DIR/release/rampart), KEYS (1000000), TTL_MS (1000), VALUE_BYTES (100), MODE
# (leader | multi-master), ROUNDS (2), SNAPSHOT_LOGS (leader mode's --snapshot-logs, 1000), WORK (a new dir under /tmp), KEEP_WORK (set: keep it). Every wait
# has a deadline (DEADLINE_S, 900); the servers are stopped by the PIDs this script started.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${RAMPART_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/rampart}"
keys="${KEYS:-1000000}"
ttl_ms="${TTL_MS:-1000}"
value_bytes="${VALUE_BYTES:-100}"
mode="${MODE:-leader}"
# Leader mode keeps its log until a snapshot covers it: with the default (20,000 entries) a
# round of pipelined SETs (about 100 per entry) stays in the log, and its space with it.
snapshot_logs="${SNAPSHOT_LOGS:-1000}"
mode_args=()
[ "$mode" = leader ] && mode_args=(--snapshot-logs "$snapshot_logs")
deadline_s="${DEADLINE_S:-900}"
[ -x "$bin" ] || { echo "no rampart binary at $bin (cargo build --release -p rampart-cli)"; exit 1; }
command -v redis-cli >/dev/null || { echo "needs redis-cli (apt-get install redis-tools)"; exit 1; }
work="${WORK:-$(mktemp -d /tmp/rampart-bench-expiry.XXXXXX)}"
mkdir -p "$work"

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "${KEEP_WORK:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for n in 1 2 3; do
    eval "peer$n=127.0.0.1:$(port) resp$n=127.0.0.1:$(port) http$n=127.0.0.1:$(port)"
done
initial="1=$peer1,2=$peer2,3=$peer3"
for n in 1 2 3; do
    eval "p=\$peer$n r=\$resp$n h=\$http$n"
    RAMPART_LOG=warn "$bin" server --id "$n" --data-dir "$work/n$n" --replication "$mode" \
        --peer-addr "$p" --resp-addr "$r" --http-addr "$h" --initial-cluster "$initial" \
        "${mode_args[@]}" >"$work/n$n.log" 2>&1 &
    pids+=($!)
done
node_pids=("${pids[@]}")

# wait_until DEADLINE_S WHAT COMMAND...: polls COMMAND every 0.2 s.
wait_until() {
    local deadline=$(($(date +%s) + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then echo "timed out waiting for $what"; exit 1; fi
        sleep 0.2
    done
}
serves() { [ "$(redis-cli -u "redis://$resp1" SET bench:ready 1)" = OK ]; }
wait_until 120 "the cluster to take writes" serves
redis-cli -u "redis://$resp1" DEL bench:ready >/dev/null

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
file_kib() { du -sk "$work/n$1/rampart.redb" | cut -f1; }
report() { # label
    for n in 1 2 3; do
        eval "r=\$resp$n"
        printf '%-14s node %s: dbsize %8s  data file %8s KiB  rss %7s KiB\n' "$1" "$n" \
            "$(redis-cli -u "redis://$r" DBSIZE)" "$(file_kib "$n")" "$(rss "${node_pids[$((n - 1))]}")"
    done
}

python3 - "$work/load.resp" "$keys" "$ttl_ms" "$value_bytes" <<'EOF'
import sys
path, keys, ttl, vb = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
value = b"v" * vb
with open(path, "wb") as f:
    for i in range(keys):
        k = b"exp:%09d" % i
        f.write(b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$2\r\nPX\r\n$%d\r\n%s\r\n"
                % (len(k), k, len(value), value, len(ttl), ttl.encode()))
EOF

empty() { for n in 1 2 3; do eval "r=\$resp$n"; [ "$(redis-cli -u "redis://$r" DBSIZE)" = 0 ] || return 1; done; }
report "before"
for round in $(seq 1 "${ROUNDS:-2}"); do
    t0=$(date +%s.%N)
    redis-cli -u "redis://$resp1" --pipe <"$work/load.resp" | tail -1
    t1=$(date +%s.%N)
    report "loaded ($round)"
    wait_until "$deadline_s" "every key to expire" empty
    t2=$(date +%s.%N)
    echo "round $round: load $(python3 -c "print(f'{$t1-$t0:.1f}')") s, all $keys keys gone $(python3 -c "print(f'{$t2-$t1:.1f}')") s after"
    report "expired ($round)"
    if [ -n "${SHOW_STATUS:-}" ]; then curl -sf "http://$http1/v1/status"; echo; fi
done
for n in 1 2 3; do
    eval "h=\$http$n"
    echo "node $n: $(curl -sf "http://$h/metrics" | grep -E '^rampart_[a-z_]*expired' | tr '\n' ' ')"
done

#!/usr/bin/env bash
# Where one put's time goes, and how a node fares with data larger than its caches. Not a test.
#
#   cargo build --release -p rampart-cli
#   bash bench/put/run.sh budget leader         # 1-client puts for 10 s on the leader, storage
#   bash bench/put/run.sh budget multi-master   #   counters before and after, a 1-client GET probe
#   bash bench/put/run.sh big                   # multi-master: 16 clients of 100 KB values for
#                                               #   LOAD_S s, then RSS, disk and 128-client puts
#
# Needs kvload (../shared/bench/kvload, built by ../shared/bench/kv/compare.sh into
# /tmp/rampart-bench-kvload-target; KVLOAD overrides), redis-benchmark, curl, python3.
# Settings (environment): RAMPART_BIN (default target/release/rampart), PORT_BASE (27100: peer
# PORT_BASE+1..3, RESP +11..13, HTTP +21..23), LOAD_S (100), WORK (a new dir under /tmp).
# Three nodes on 127.0.0.1, started and stopped by PID; the work dir is removed at the end. Every
# wait has a deadline. `big` writes about 3 x 2.5 GB.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${RAMPART_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/rampart}"
kvload="${KVLOAD:-/tmp/rampart-bench-kvload-target/release/kvload}"
base="${PORT_BASE:-27100}"
what="${1:-budget}"
mode="${2:-leader}"
[ "$what" = big ] && mode=multi-master
[ -x "$bin" ] || { echo "no rampart binary at $bin (cargo build --release -p rampart-cli)"; exit 1; }
[ -x "$kvload" ] || { echo "no kvload at $kvload (run ../shared/bench/kv/compare.sh once, or set KVLOAD)"; exit 1; }
work="${WORK:-$(mktemp -d /tmp/rampart-bench-put.XXXXXX)}"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cluster="1=127.0.0.1:$((base + 1)),2=127.0.0.1:$((base + 2)),3=127.0.0.1:$((base + 3))"
for i in 1 2 3; do
  "$bin" server --id "$i" --data-dir "$work/n$i" --peer-addr "127.0.0.1:$((base + i))" \
    --resp-addr "127.0.0.1:$((base + 10 + i))" --http-addr "127.0.0.1:$((base + 20 + i))" \
    --initial-cluster "$cluster" --replication "$mode" > "$work/log$i" 2>&1 &
  pids+=("$!")
done
http() { curl -s --max-time 2 "127.0.0.1:$((base + 20 + $1))$2"; }
leader=1
for _ in $(seq 150); do
  ready=0
  for i in 1 2 3; do
    if [ "$mode" = leader ]; then
      http "$i" /v1/status | grep -q '"leader_id":[1-9]' && ready=$((ready + 1))
    else
      redis-cli -p $((base + 10 + i)) ping 2>/dev/null | grep -q PONG && ready=$((ready + 1))
    fi
  done
  [ "$ready" = 3 ] && break
  sleep 0.2
done
[ "$ready" = 3 ] || { echo "the cluster did not start; logs in $work"; tail -5 "$work"/log*; exit 1; }
if [ "$mode" = leader ]; then
  leader=$(http 1 /v1/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader_id"])')
fi
all="127.0.0.1:$((base + 11)),127.0.0.1:$((base + 12)),127.0.0.1:$((base + 13))"
result() { grep RESULT | tr ' ' '\n' | grep -E "^(ops_per_s|p50_ms|p99_ms|errors|timeouts)=" | tr '\n' ' '; echo; }

counters() {
  for i in 1 2 3; do
    http "$i" /metrics | awk -v n="$i" '/^rampart_storage_(journal_appends|journal_append_seconds|lazy_commits|lazy_commit_seconds)_total /{print n, $1, $2}'
  done
}

case "$what" in
budget)
  counters > "$work/before"
  echo "$mode, 1 client, 100-byte puts for 10 s on node $leader ($(date -u +%FT%TZ)):"
  "$kvload" bench --proto resp --endpoints "127.0.0.1:$((base + 10 + leader))" --workload put --clients 1 \
    --duration 10 --keys 10000 --value-size 100 | result
  counters > "$work/after"
  python3 - "$work/before" "$work/after" <<'EOF'
import sys
def load(p):
    d = {}
    for line in open(p):
        n, name, v = line.split()
        d[(n, name)] = float(v)
    return d
a, b = load(sys.argv[1]), load(sys.argv[2])
delta = lambda n, name: b.get((n, name), 0) - a.get((n, name), 0)
for n in "123":
    ja, js = delta(n, "rampart_storage_journal_appends_total"), delta(n, "rampart_storage_journal_append_seconds_total")
    la, ls = delta(n, "rampart_storage_lazy_commits_total"), delta(n, "rampart_storage_lazy_commit_seconds_total")
    print(f"  node {n}: {ja:.0f} journaled writes, mean {js / ja * 1e6 if ja else 0:.0f} us; "
          f"{la:.0f} lazy commits, mean {ls / la * 1e6 if la else 0:.0f} us")
EOF
  echo "  1-client GET on the same node (the client round trip):"
  redis-benchmark -p $((base + 10 + leader)) -t get -c 1 -n 20000 -r 10000 -q 2>/dev/null | tr '\r' '\n' | grep -a 'requests per second' | tail -1
  ;;
big)
  echo "load: 16 clients of 100 KB values, 40,000 keys, ${LOAD_S:-100} s ($(date -u +%FT%TZ))"
  "$kvload" bench --proto resp --endpoints "$all" --workload put --clients 16 --duration "${LOAD_S:-100}" \
    --warmup 0 --keys 40000 --value-size 100000 --key-prefix big/ --timeout-ms 20000 | result
  for i in 1 2 3; do
    p=${pids[$((i - 1))]}
    echo "  node $i: $(grep -E 'VmRSS|VmHWM' /proc/"$p"/status | tr -s ' \t' ' ' | tr '\n' ' ')disk $(du -sh "$work/n$i" | cut -f1), $(http "$i" /metrics | grep '^rampart_mm_registers ')"
  done
  echo "then 128 clients of 100-byte puts to new keys for 8 s:"
  "$kvload" bench --proto resp --endpoints "$all" --workload put --clients 128 --duration 8 --keys 10000 \
    --value-size 100 --key-prefix small/ | result
  ;;
*)
  echo "usage: $0 budget [leader|multi-master] | big"; exit 2 ;;
esac

#!/usr/bin/env bash
# What locks, elections, leases and watches cost next to a plain put, not a test: a three-node
# leader-mode cluster on 127.0.0.1, then `latency.py` (one client, keep-alive HTTP) against the
# leader and against a follower, then the shared bench's kvload (plain HTTP puts, 1 client) for
# the reference figure.
#
#   cargo build --release -p rampart-cli && bash bench/coord/latency.sh
#
# Settings: RAMPART_BIN, N (operations of each kind: 500), KVLOAD (the shared bench's kvload
# binary; skipped when absent), WORK, KEEP_WORK. Servers are stopped by the PIDs this script
# started; every wait has a deadline.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${RAMPART_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/rampart}"
n="${N:-500}"
kvload="${KVLOAD:-/tmp/rampart-bench-kvload-target/release/kvload}"
[ -x "$bin" ] || { echo "no rampart binary at $bin"; exit 1; }
work="${WORK:-$(mktemp -d /tmp/rampart-bench-coord.XXXXXX)}"
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
    RAMPART_LOG=warn "$bin" server --id "$i" --data-dir "$work/n$i" --replication leader --peer-addr "$p" \
        --resp-addr "$r" --http-addr "$h" --initial-cluster "1=$peer1,2=$peer2,3=$peer3" >"$work/n$i.log" 2>&1 &
    pids+=($!)
done
deadline=$(($(date +%s) + 120))
until leader=$(curl -sf "http://$http1/v1/status" | python3 -c 'import json,sys; l=json.load(sys.stdin)["leader_id"]; assert l; print(l)' 2>/dev/null); do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "no leader"; exit 1; }; sleep 0.2
done
eval "lh=\$http$leader"
follower=$(( leader % 3 + 1 )); eval "fh=\$http$follower"
until curl -sf -XPUT "http://$lh/v1/kv/bench-ready" -d 1 >/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "never took a write"; exit 1; }; sleep 0.2
done
echo "## $(date -u +%F) rampart $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'), leader node $leader"
echo
echo "### To the leader"
python3 "$here/latency.py" "$lh" "$n"
echo
echo "### To a follower (it forwards writes and keepalives to the leader)"
python3 "$here/latency.py" "$fh" "$n"
if [ -x "$kvload" ]; then
    echo
    echo "### Shared bench: kvload --proto http --workload put --clients 1 --duration 10 (to the leader)"
    "$kvload" bench --proto http --endpoints "$lh" --workload put --clients 1 --duration 10 --value-size 100 | grep -v '^#' || true
fi

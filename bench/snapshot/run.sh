#!/usr/bin/env bash
# Streamed snapshot benchmark (leader mode), not a test: one leader holding DATA_MIB MiB of
# keys builds a snapshot, ships it over 127.0.0.1 to an empty follower, which installs it.
# Reports the times of each step and the peak RSS (VmHWM, and VmRSS sampled per phase) of both
# processes.
#
#   cargo build --release -p rampart-cli
#   bash bench/snapshot/run.sh            # DATA_MIB=4096 (4 GiB) by default
#
# Settings (environment): RAMPART_BIN (default target/release/rampart, or
# $CARGO_TARGET_DIR/release/rampart), DATA_MIB (4096), VALUE_BYTES (1000000), WORK (a new dir
# under /tmp), KEEP_WORK (set: keep the work dir and logs). Disk: about 6 x DATA_MIB while it runs (the leader's log and keys, its snapshot, the
# follower's received file and staged keys); it refuses to start with less free, and deletes
# everything it wrote when it ends. Every wait has a deadline; both servers are stopped (by the
# PIDs this script started) on exit.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${RAMPART_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/rampart}"
data_mib="${DATA_MIB:-4096}"
value_bytes="${VALUE_BYTES:-1000000}"
[ -x "$bin" ] || { echo "no rampart binary at $bin (cargo build --release -p rampart-cli)"; exit 1; }

data_bytes=$((data_mib * 1024 * 1024))
keys=$(((data_bytes + value_bytes - 1) / value_bytes))
# Then small writes, so that the log a snapshot keeps behind it (a quarter of --snapshot-logs)
# holds only small entries: openraft probes a new follower with up to 512 entries from that log
# before it sends the snapshot, and 512 entries of 1 MB fit neither a peer frame (64 MiB) nor
# the AppendEntries deadline (the heartbeat interval). See the report of this benchmark.
small_keys=$((keys / 2 + 100))
# One snapshot, taken once every big key and most small ones are applied.
snapshot_logs=$((keys + small_keys - 60))
need_kib=$((data_mib * 6 * 1024))
base="$(dirname "${WORK:-/tmp/x}")"
free_kib=$(df -Pk "$base" | awk 'NR==2 {print $4}')
if [ "$free_kib" -lt "$need_kib" ]; then
    echo "needs $((need_kib / 1024 / 1024)) GiB free in $base, has $((free_kib / 1024 / 1024)) GiB"
    exit 1
fi
work="${WORK:-$(mktemp -d /tmp/rampart-bench-snapshot.XXXXXX)}"
mkdir -p "$work"

pids=()
cleanup() {
    touch "$work/rss.stop" 2>/dev/null || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "${KEEP_WORK:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for n in 1 2; do
    eval "peer$n=127.0.0.1:$(port) resp$n=127.0.0.1:$(port) http$n=127.0.0.1:$(port)"
done
now() { date +%s.%N; }
# wait_until DEADLINE_S WHAT COMMAND...: polls COMMAND every 0.5 s.
wait_until() {
    local deadline=$(($(date +%s) + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then echo "timed out waiting for $what"; exit 1; fi
        sleep 0.5
    done
}
status() { curl -sf "http://$1/v1/status"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', 0))"; }

start_node() { # id peer resp http initial-cluster
    RAMPART_LOG=info,openraft=warn "$bin" server --id "$1" --data-dir "$work/n$1" \
        --peer-addr "$2" --resp-addr "$3" --http-addr "$4" --initial-cluster "$5" \
        --snapshot-logs "$snapshot_logs" >"$work/n$1.log" 2>&1 &
    pids+=($!)
}

echo "data set: $keys keys x $value_bytes bytes ($(python3 -c "print(f'{$keys*$value_bytes/2**30:.2f}')") GiB), snapshot after $snapshot_logs entries, work dir $work"
start_node 1 "$peer1" "$resp1" "$http1" "1=$peer1"
leader_pid=${pids[0]}
is_leader() { [ "$(status "$http1" | field role)" = leader ]; }
wait_until 60 "node 1 to lead" is_leader
python3 "$here/rss.py" "$work/rss.log" "$work/rss.stop" 7200 "$leader_pid" &
pids+=($!)

t_load=$(now)
python3 "$here/load.py" "$resp1" "$keys" "$value_bytes" "$small_keys"
t_loaded=$(now)
has_snapshot() { [ "$(status "$http1" | field snapshot_index)" -gt 0 ]; }
wait_until 3600 "the leader's snapshot" has_snapshot
wait_until 60 "the build's log line" grep -q "snapshot built" "$work/n1.log"
t_built=$(now)
snap_file=$(ls "$work/n1/snapshots/"*.rsnap)
snap_bytes=$(stat -c %s "$snap_file")
snap_index=$(status "$http1" | field snapshot_index)
du_leader=$(du -sk "$work/n1" | cut -f1)

# An empty follower, outside the initial cluster, added as a learner: it needs the snapshot.
start_node 2 "$peer2" "$resp2" "$http2" "1=$peer1"
follower_pid=${pids[-1]}
python3 "$here/rss.py" "$work/rss.log" "$work/rss.stop" 7200 "$follower_pid" &
pids+=($!)
responds() { status "$http2"; }
wait_until 60 "node 2 to answer" responds
t_add=$(now)
curl -sf -m 3600 -X POST "http://$http1/v1/cluster/members" \
    -d "{\"id\":2,\"peer_addr\":\"$peer2\",\"resp_addr\":\"$resp2\",\"http_addr\":\"$http2\"}" \
    -H 'content-type: application/json' >"$work/add.out" 2>&1 &
pids+=($!)
caught_up() { [ "$(status "$http2" | field applied_index)" -ge "$snap_index" ]; }
wait_until 3600 "node 2 to install the snapshot" caught_up
t_installed=$(now)
wait_until 60 "the install's log line" grep -q "snapshot installed" "$work/n2.log"
du_follower=$(du -sk "$work/n2" | cut -f1)
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
hwm_leader=$(hwm "$leader_pid")
hwm_follower=$(hwm "$follower_pid")
# The follower serves the data: same count, same bytes for a sample key.
count1=$(redis-cli -u "redis://$resp1" DBSIZE)
count2=$(redis-cli -u "redis://$resp2" DBSIZE)
sample=$(printf 'bench:%08d' $((keys / 2)))
sum1=$(redis-cli -u "redis://$resp1" --no-raw GET "$sample" | md5sum | cut -c1-12)
sum2=$(redis-cli -u "redis://$resp2" --no-raw GET "$sample" | md5sum | cut -c1-12)
touch "$work/rss.stop"

python3 - "$work" "$leader_pid" "$follower_pid" <<EOF
import re, sys, datetime
work, lp, fp = sys.argv[1], sys.argv[2], sys.argv[3]
def ts(line):
    t = line.split()[0].rstrip("Z")
    return datetime.datetime.fromisoformat(t[:26]).replace(tzinfo=datetime.timezone.utc).timestamp()
def find(path, text):
    for line in open(path):
        if text in line:
            return line
    sys.exit(f"no '{text}' in {path}")
def ms(line):
    return int(re.search(r"elapsed_ms=(\d+)", line).group(1))
built = find(f"{work}/n1.log", "snapshot built")
recv0 = find(f"{work}/n2.log", "receiving a snapshot")
recvd = find(f"{work}/n2.log", "snapshot received")
inst = find(f"{work}/n2.log", "snapshot installed")
t_build_start = ts(find(f"{work}/n1.log", "snapshot build starting"))
phases = {
    "load": ($t_load, $t_loaded),
    "build": (t_build_start, ts(built)),
    "ship+install": ($t_add, $t_installed),
}
rss = [l.split() for l in open(f"{work}/rss.log")]
def peak(pid, a, b):
    v = [int(r[2]) for r in rss if r[1] == pid and a <= float(r[0]) <= b]
    return f"{max(v) / 1024:.0f} MiB" if v else "-"
print()
print(f"snapshot: {$snap_bytes / 2**30:.2f} GiB, index $snap_index, keys on leader / follower: $count1 / $count2, sample value md5 $sum1 / $sum2")
print(f"load (with $small_keys small keys): {$t_loaded - $t_load:.1f} s ({$keys * $value_bytes / 2**20 / ($t_loaded - $t_load):.0f} MiB/s)")
print(f"build: {ms(built) / 1000:.1f} s")
print(f"ship (first chunk to last): {ms(recvd) / 1000:.1f} s ({$snap_bytes / 2**20 / max(ms(recvd), 1) * 1000:.0f} MiB/s)")
print(f"check received file: {ts(inst) - ts(recvd) - ms(inst) / 1000:.1f} s; install (stage + swap): {ms(inst) / 1000:.1f} s")
print(f"add member to caught up: {$t_installed - $t_add:.1f} s")
for name, (a, b) in phases.items():
    print(f"peak RSS during {name}: leader {peak(lp, a, b)}, follower {peak(fp, a, b)}")
print(f"VmHWM (whole run): leader {$hwm_leader / 1024:.0f} MiB, follower {$hwm_follower / 1024:.0f} MiB")
print(f"disk: leader data dir {$du_leader / 2**20:.1f} GiB, follower {$du_follower / 2**20:.1f} GiB")
EOF
[ "$count1" = "$count2" ] && [ "$sum1" = "$sum2" ] || { echo "follower data differs from the leader's"; exit 1; }

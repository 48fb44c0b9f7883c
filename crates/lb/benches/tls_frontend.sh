#!/usr/bin/env bash
# L7 round robin through rampart lb, cleartext vs TLS frontend, in
# interleaved rounds (REPS), each DUR seconds after a WARM-second warm-up:
# 3 single-process nginx backends (ports 18101-18103) as in the shared
# benchmark (../shared/bench/lb/run.sh), wrk -t2 -c64 over 64 URIs with
# keep-alive, one LB worker thread, health checks on, listening on
# 127.0.0.1:18080. 127.0.0.1 only; every process started here is stopped by
# PID on exit. Needs nginx, wrk (built with OpenSSL, as Debian's is), openssl.
#   cargo build --release -p rampart-lb --example lb_standalone
#   bash crates/lb/benches/tls_frontend.sh          # REPS=3 DUR=10 WARM=1
# Prints one line per run: req/s, p99, LB CPU (cores, and µs per request).
set -euo pipefail
LB_BIN=${LB_BIN:-${CARGO_TARGET_DIR:-target}/release/examples/lb_standalone}
DUR=${DUR:-10}; REPS=${REPS:-3}; WARM=${WARM:-1}
W=${WORKDIR:-/tmp/rampart-lb-tls-bench}; rm -rf "$W"; mkdir -p "$W/tmp"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
for i in 1 2 3; do
  cat > "$W/b$i.conf" <<C
daemon off; master_process off; worker_processes 1; pid $W/b$i.pid; error_log $W/b$i.err warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $W/tmp/b$i-body; proxy_temp_path $W/tmp/b$i-p;
  fastcgi_temp_path $W/tmp/b$i-f; uwsgi_temp_path $W/tmp/b$i-u; scgi_temp_path $W/tmp/b$i-s;
  keepalive_requests 100000000; keepalive_timeout 75s; default_type text/plain;
  server { listen 127.0.0.1:1810$i backlog=4096; location / { return 200 "ok from backend$i\n"; } } }
C
  nginx -c "$W/b$i.conf" & PIDS+=($!)
done
cat > "$W/paths.lua" <<'L'
local reqs, n, i = {}, 64, 0
function init(args) for k = 0, n - 1 do reqs[k] = wrk.format("GET", "/obj/" .. k) end end
function request() i = (i + 1) % n; return reqs[i] end
L
# Certificates: a CA and a localhost certificate (openssl, only for the bench).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
  -keyout "$W/ca-key.pem" -out "$W/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout "$W/lb-key.pem" -out "$W/lb.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$W/ext"
openssl x509 -req -in "$W/lb.csr" -CA "$W/ca.pem" -CAkey "$W/ca-key.pem" -CAcreateserial -days 2 \
  -extfile "$W/ext" -out "$W/lb.pem" 2>/dev/null
for tls in off on; do
  {
    echo '[[frontend]]'; echo 'name = "web"'; echo 'listen = "127.0.0.1:18080"'
    echo '[frontend.health]'; echo 'interval_ms = 500'
    if [ $tls = on ]; then echo '[frontend.tls]'; echo "cert = \"$W/lb.pem\""; echo "key = \"$W/lb-key.pem\""; fi
    for i in 1 2 3; do echo '[[frontend.backend]]'; echo "addr = \"127.0.0.1:1810$i\""; done
  } > "$W/lb-$tls.toml"
done
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
for p in 18101 18102 18103; do wait_port $p; done
echo "date: $(date -u +%FT%TZ)  load: $(cut -d' ' -f1-3 /proc/loadavg)  wrk: $(wrk -v 2>&1 | head -1)"
for r in $(seq "$REPS"); do
  for tls in off on; do
    scheme=http; [ $tls = on ] && scheme=https
    "$LB_BIN" --config "$W/lb-$tls.toml" --threads 1 & lbpid=$!
    wait_port 18080
    url="$scheme://127.0.0.1:18080/"
    wrk -t2 -c64 -d${WARM}s -s "$W/paths.lua" "$url" >/dev/null 2>&1 || true
    c0=$(awk '{print $14+$15}' /proc/$lbpid/stat)
    out=$(wrk -t2 -c64 -d${DUR}s --latency -s "$W/paths.lua" "$url")
    c1=$(awk '{print $14+$15}' /proc/$lbpid/stat)
    rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    p99=$(echo "$out" | awk '$1=="99%"{print $2}')
    errs=$(echo "$out" | awk '/Non-2xx|Socket errors/{print}' | tr '\n' ' ')
    cpu=$(awk -v a=$c0 -v b=$c1 -v d=$DUR 'BEGIN{printf "%.2f", (b-a)/100/d}')
    us=$(awk -v a=$c0 -v b=$c1 -v r=$rps -v d=$DUR 'BEGIN{printf "%.1f", (b-a)*10000/(r*d)}')
    echo "round $r tls=$tls req/s=$rps p99=$p99 lb_cpu_cores=$cpu lb_cpu_us_per_req=$us load=$(cut -d' ' -f1 /proc/loadavg) $errs"
    kill $lbpid; wait $lbpid 2>/dev/null || true
  done
done

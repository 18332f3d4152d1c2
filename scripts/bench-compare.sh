#!/usr/bin/env bash
# pairdb against its neighbours, same machine, same run, same wrk settings: `pairdb dev` (LSM with
# fsync always and never, and the memory engine), a bare hyper server, redis (redis-benchmark)
# and a 3-member etcd cluster (its JSON gateway, linearizable reads). Prints one table with
# req/s, p50, p99 and the ratios pairdb/etcd and pairdb/hyper.
#
#   scripts/bench-compare.sh                 # 10 s per row, wrk -t2 -c64, 100-byte values
#   DURATION=30s CONNECTIONS=128 scripts/bench-compare.sh
#
# Needs wrk, redis-server/redis-benchmark and etcd-server (installed with apt when missing, as
# root). Everything listens on loopback ports of its own and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
VALUE_BYTES=${VALUE_BYTES:-100}
KEYS=${KEYS:-1000}
# The offered rates of the constant-rate latency rows (pairdb-loadtest, open model).
RATES=${RATES:-2000 10000}

need() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
  else
    echo "bench-compare needs $cmd: sudo apt-get install -y $pkg" >&2; exit 1
  fi
}
need wrk wrk
need redis-server redis-server
need etcd etcd-server

cargo build --release --bin pairdb --bin pairdb-loadtest --example hello
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 150); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done; echo "no answer from $1" >&2; return 1; }

# "name req/s p50_ms p99_ms" lines.
results="$work/results.txt"
: >"$results"
to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 }; printf "%.3f", v }'; }
wrk_row() {
  local name=$1; shift
  local out="$work/$(echo "$name" | tr ' /' '__').txt"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" >"$out" 2>&1 || true
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' "$out")
  p50=$(awk '$1=="50%" {print $2}' "$out" | to_ms)
  p99=$(awk '$1=="99%" {print $2}' "$out" | to_ms)
  errors=$(awk '/Non-2xx or 3xx responses/ {print $NF}' "$out")
  [ -n "$errors" ] && echo "warning: $name had $errors non-2xx answers" >&2
  echo "$name|${rps:-0}|${p50:-0}|${p99:-0}" >>"$results"
  echo "$name: ${rps:-0} req/s, p50 ${p50:-?} ms, p99 ${p99:-?} ms" >&2
}

value=$(head -c "$VALUE_BYTES" /dev/zero | tr '\0' v)

# --- bare hyper --------------------------------------------------------------------------------
hello_port=$(free_port)
./target/release/examples/hello "127.0.0.1:$hello_port" >/dev/null 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$hello_port/"
wrk_row "hyper hello" "http://127.0.0.1:$hello_port/"

# --- pairdb dev --------------------------------------------------------------------------------
export PAIRDB_ADMIN_KEY=bench-admin-key
pairdb_rows() {
  local label=$1; shift
  local port; port=$(free_port)
  ./target/release/pairdb dev --http "127.0.0.1:$port" --data-dir "$work/data-$port" "$@" >"$work/dev-$port.log" 2>&1 &
  local pid=$!
  pids+=($pid)
  wait_http "http://127.0.0.1:$port/readyz"
  local base="http://127.0.0.1:$port"
  tenant() {
    curl -sf -X POST "$base/v1/tenants" -H "Authorization: Bearer $PAIRDB_ADMIN_KEY" \
      -H 'Content-Type: application/json' \
      -d "{\"tenant_id\":\"$1\",\"replication_factor\":$2,\"rate_limit\":{\"requests_per_second\":100000000,\"burst\":100000000}}" |
      sed -E 's/.*"api_key":"([^"]+)".*/\1/'
  }
  local one three
  one=$(tenant rf1 1)
  three=$(tenant rf3 3)
  for key in $one $three; do
    # Load the keys, 8 at a time.
    seq 0 $((KEYS - 1)) | xargs -P 8 -I{} curl -sf -o /dev/null -X PUT "$base/v1/kv/key-{}" \
      -H "Authorization: Bearer $key" --data-binary "$value"
  done
  cat >"$work/get.lua" <<LUA
local counter = 0
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
wrk.headers["X-Consistency"] = os.getenv("BENCH_LEVEL")
request = function()
  counter = counter + 1
  return wrk.format("GET", "/v1/kv/key-" .. (counter % $KEYS))
end
LUA
  cat >"$work/put.lua" <<LUA
local counter = 0
wrk.method = "PUT"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
wrk.headers["X-Consistency"] = "quorum"
wrk.body = string.rep("v", $VALUE_BYTES)
request = function()
  counter = counter + 1
  return wrk.format(nil, "/v1/kv/key-" .. (counter % $KEYS))
end
LUA
  BENCH_KEY=$one BENCH_LEVEL=one wrk_row "pairdb $label GET RF1 one" -s "$work/get.lua" "$base"
  BENCH_KEY=$three BENCH_LEVEL=quorum wrk_row "pairdb $label GET RF3 quorum" -s "$work/get.lua" "$base"
  BENCH_KEY=$three wrk_row "pairdb $label PUT RF3 quorum" -s "$work/put.lua" "$base"
  # Latency at constant offered rates (open model: latency counts from when each request was
  # due, so a stall is not hidden by the load tool waiting for it).
  for RATE in $RATES; do
  cat >"$work/rate.toml" <<TOML
[scenarios.rate]
executor = "constant-arrival-rate"
rate = $RATE
time_unit = "1s"
duration = "$DURATION"
pre_allocated_vus = 256
max_vus = 2048
record_count = $KEYS
consistency = "quorum"

[[scenarios.rate.requests]]
weight = 1
method = "GET"
key = "key-{n}"
distribution = "uniform"
checks = ["status == 200"]
TOML
  ./target/release/pairdb-loadtest run "$work/rate.toml" --url "$base" --api-key "$three" --quiet \
    --summary-export "$work/rate-$port-$RATE.json" >"$work/rate-$port-$RATE.txt" 2>&1 || true
  python3 - "$work/rate-$port-$RATE.json" "pairdb $label GET RF3 quorum at $RATE/s" >>"$results" <<'PY' || true
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
d = m.get("http_req_duration", {})
reqs = m.get("http_reqs", {}).get("rate", 0)
dropped = m.get("dropped_iterations", {}).get("count", 0)
print(f"{sys.argv[2]} ({dropped:.0f} dropped)|{reqs}|{d.get('med', 0):.3f}|{d.get('p(99)', 0):.3f}")
PY
  tail -1 "$results" >&2
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
pairdb_rows "memory" --engine memory
pairdb_rows "lsm fsync never" --engine lsm --fsync never
pairdb_rows "lsm fsync always" --engine lsm --fsync always

# --- redis ---------------------------------------------------------------------------------------
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --dir "$work" --logfile "$work/redis.log" --pidfile "$work/redis.pid"
sleep 0.5
redis-benchmark -p "$redis_port" -q -t set,get -n 200000 -c "$CONNECTIONS" -d "$VALUE_BYTES" \
  --precision 3 >"$work/redis.txt" 2>/dev/null || true
redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
tr '\r' '\n' <"$work/redis.txt" | awk -F'[:, =]+' '/requests per second/ {
  name = $1; rps = $2; p50 = "0"
  for (i = 1; i <= NF; i++) if ($i == "p50") p50 = $(i + 1)
  printf "redis %s|%s|%s|-\n", name, rps, p50 }' >>"$results"

# --- etcd: three members on loopback -------------------------------------------------------------
declare -a client_ports peer_ports
for i in 1 2 3; do client_ports[$i]=$(free_port); peer_ports[$i]=$(free_port); done
cluster=""
for i in 1 2 3; do cluster+="e$i=http://127.0.0.1:${peer_ports[$i]},"; done
cluster=${cluster%,}
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$work/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:${client_ports[$i]}" \
    --advertise-client-urls "http://127.0.0.1:${client_ports[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
    --initial-cluster "$cluster" --initial-cluster-state new \
    --initial-cluster-token bench >"$work/etcd-$i.log" 2>&1 &
  pids+=($!)
done
etcd_url="http://127.0.0.1:${client_ports[1]}"
for _ in $(seq 1 100); do
  curl -sf -X POST "$etcd_url/v3/kv/put" -d '{"key":"cHJvYmU=","value":"eA=="}' >/dev/null 2>&1 && break
  sleep 0.2
done
b64() { printf '%s' "$1" | base64 -w0; }
seq 0 $((KEYS - 1)) | xargs -P 8 -I{} sh -c "curl -sf -o /dev/null -X POST '$etcd_url/v3/kv/put' -d \"{\\\"key\\\":\\\"\$(printf 'key-%s' {} | base64 -w0)\\\",\\\"value\\\":\\\"$(b64 "$value")\\\"}\""
cat >"$work/etcd-get.lua" <<LUA
local counter = 0
wrk.method = "POST"
local function b64(s)
  local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  return ((s:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#s % 3 + 1])
end
keys = {}
for i = 0, $KEYS - 1 do keys[i] = b64("key-" .. i) end
value = b64(string.rep("v", $VALUE_BYTES))
request = function()
  counter = counter + 1
  local key = keys[counter % $KEYS]
  if os.getenv("ETCD_OP") == "put" then
    return wrk.format(nil, "/v3/kv/put", nil, '{"key":"' .. key .. '","value":"' .. value .. '"}')
  end
  return wrk.format(nil, "/v3/kv/range", nil, '{"key":"' .. key .. '"}')
end
LUA
ETCD_OP=get wrk_row "etcd GET (linearizable)" -s "$work/etcd-get.lua" "$etcd_url"
ETCD_OP=put wrk_row "etcd PUT" -s "$work/etcd-get.lua" "$etcd_url"

# --- the table -----------------------------------------------------------------------------------
python3 - "$results" <<'PY'
import sys
rows = [line.rstrip("\n").split("|") for line in open(sys.argv[1]) if line.strip()]
by = {r[0]: r for r in rows}
def rps(name):
    try:
        return float(by[name][1])
    except (KeyError, ValueError):
        return 0.0
print("\n| system | req/s | p50 ms | p99 ms | vs etcd | vs Redis | vs hyper |")
print("|---|---|---|---|---|---|---|")
for name, r, p50, p99 in rows:
    ratio_etcd = ratio_redis = ratio_hyper = ""
    if name.startswith("pairdb") and "/s" not in name:
        put = "PUT" in name
        other = "etcd PUT" if put else "etcd GET (linearizable)"
        if rps(other):
            ratio_etcd = f"{rps(name) / rps(other):.2f}×"
        redis = "redis SET" if put else "redis GET"
        if rps(redis):
            ratio_redis = f"{rps(name) / rps(redis):.1%}"
        if rps("hyper hello"):
            ratio_hyper = f"{rps(name) / rps('hyper hello'):.1%}"
    print(f"| {name} | {float(r or 0):,.0f} | {p50} | {p99} | {ratio_etcd} | {ratio_redis} | {ratio_hyper} |")
PY
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $VALUE_BYTES-byte values, $KEYS keys; redis-benchmark -c $CONNECTIONS -n 200000 (p99 not printed by -q); the '/s' rows: pairdb-loadtest, constant arrival rate, latency from each request's due time."

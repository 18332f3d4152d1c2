#!/usr/bin/env bash
# PUT and GET throughput and latency of `pairdb dev` (LSM engine, fsync always, unless ENGINE/FSYNC say otherwise), measured with wrk over
# loopback. Prints wrk's summaries (requests/s and the latency distribution, p99 included).
#
#   scripts/bench-http.sh                 # 30 s per phase, 2 threads, 32 connections
#   DURATION=10s CONNECTIONS=64 scripts/bench-http.sh
#   ENGINE=memory scripts/bench-http.sh    # the memory engine instead of the LSM engine
#   STORES=postgres+redis scripts/bench-http.sh   # metadata in a throwaway PostgreSQL, idempotency
#                                                 # records and the tenant cache in a throwaway Redis
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-30s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
VALUE_BYTES=${VALUE_BYTES:-100}
KEYS=${KEYS:-10000}
PORT=${PORT:-18080}
ENGINE=${ENGINE:-lsm}
FSYNC=${FSYNC:-always}
# ADMISSION=off: the gateway without rate limiting and idempotency records (what they cost).
ADMISSION=${ADMISSION:-on}
# IDEMPOTENCY_KEYS=1: every PUT carries a key of its own, as the SDK's do (a store round trip each).
IDEMPOTENCY_KEYS=${IDEMPOTENCY_KEYS:-0}
# STORES=postgres+redis: the production stores (PostgreSQL from /usr/lib/postgresql, redis-server;
# Redis without persistence, PostgreSQL with fsync on), else the embedded ones.
STORES=${STORES:-embedded}

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    echo "bench-http needs wrk: sudo apt-get install -y wrk" >&2; exit 1
  fi
fi

cargo build --release --bin pairdb
work=$(mktemp -d)
chmod 755 "$work"
pid=
pgbin=
cleanup() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  if [ -n "$pgbin" ]; then
    as_postgres "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
    redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export PAIRDB_ADMIN_KEY=bench-admin-key
flags=()
[ "$ADMISSION" = off ] && flags+=(--no-admission)
if [ "$STORES" = postgres+redis ]; then
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  mkdir "$work/pg"
  [ "$(id -u)" -eq 0 ] && chown postgres "$work/pg"
  as_postgres "$pgbin/initdb" -D "$work/pg" -U postgres --auth=trust --no-sync >/dev/null
  pg_port=$(free_port)
  as_postgres "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w \
    -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1" start >/dev/null
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --dir "$work" --logfile "$work/redis.log" >/dev/null
  flags+=(--metadata-url "postgres://postgres@127.0.0.1:$pg_port/postgres" --redis-url "redis://127.0.0.1:$redis_port")
fi
./target/release/pairdb dev --engine "$ENGINE" --fsync "$FSYNC" --http 127.0.0.1:$PORT --data-dir "$work/data" "${flags[@]}" >"$work/dev.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
  sleep 0.2
done
API_KEY=$(curl -sf -X POST "http://127.0.0.1:$PORT/v1/tenants" \
  -H "Authorization: Bearer $PAIRDB_ADMIN_KEY" -H 'Content-Type: application/json' \
  -d '{"tenant_id":"bench","rate_limit":{"requests_per_second":1000000,"burst":1000000}}' \
  | sed -E 's/.*"api_key":"([^"]+)".*/\1/')
export API_KEY VALUE_BYTES KEYS IDEMPOTENCY_KEYS

cat >"$work/put.lua" <<'LUA'
local counter = 0
wrk.method = "PUT"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("API_KEY")
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.body = string.rep("v", tonumber(os.getenv("VALUE_BYTES")))
local keys = tonumber(os.getenv("KEYS"))
local with_keys = os.getenv("IDEMPOTENCY_KEYS") == "1"
-- Each wrk thread has its own Lua state: number them, so their idempotency keys differ.
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
request = function()
  counter = counter + 1
  if with_keys then
    wrk.headers["Idempotency-Key"] = "t" .. tostring(tid) .. "-" .. counter
  end
  return wrk.format(nil, "/v1/kv/key-" .. (counter % keys))
end
response = function(status)
  if status ~= 200 then error("PUT answered " .. status) end
end
LUA
cat >"$work/get.lua" <<'LUA'
local counter = 0
wrk.headers["Authorization"] = "Bearer " .. os.getenv("API_KEY")
local keys = tonumber(os.getenv("KEYS"))
request = function()
  counter = counter + 1
  return wrk.format("GET", "/v1/kv/key-" .. (counter % keys))
end
response = function(status)
  if status ~= 200 then error("GET answered " .. status) end
end
LUA

# Baseline in the same run: the gateway answering /healthz (no auth, no coordinator, no
# replicas), so the key-value figures can be quoted as a ratio of what HTTP alone costs here.
echo "== baseline: GET /healthz (gateway only) =="
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$PORT/healthz" | tee "$work/base.txt"
echo
echo "== PUT (quorum, RF 3, ${VALUE_BYTES}-byte values, ${KEYS} keys, engine ${ENGINE}, fsync ${FSYNC}, stores ${STORES}, admission ${ADMISSION}, client idempotency keys ${IDEMPOTENCY_KEYS}) =="
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/put.lua" "http://127.0.0.1:$PORT" | tee "$work/put.txt"
echo
echo "== GET (quorum, RF 3) =="
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/get.lua" "http://127.0.0.1:$PORT" | tee "$work/get.txt"

rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
echo
echo "== summary =="
awk -v b="$(rps "$work/base.txt")" -v p="$(rps "$work/put.txt")" -v g="$(rps "$work/get.txt")" 'BEGIN {
  printf "baseline %.0f req/s; PUT %.0f req/s (%.2f of baseline); GET %.0f req/s (%.2f of baseline)\n", b, p, p / b, g, g / b }'

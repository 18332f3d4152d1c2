#!/usr/bin/env bash
# Runs scenario files with pairdb-loadtest against a fresh `pairdb dev` (a throwaway data dir,
# its own port), each as a throwaway tenant; prints each summary and exits with the last failing
# run's code (99: a threshold failed).
#
#   scripts/loadtest.sh                                  # loadtest/scenarios/smoke.toml
#   scripts/loadtest.sh loadtest/scenarios/ycsb-*.toml   # several, one after another
#   YCSB_TABLE=1 scripts/loadtest.sh loadtest/scenarios/ycsb-{a,b,c,d,e,f}.toml
#       # then one table of them, with redis-benchmark GET/SET on the same machine for scale
#   ENGINE=memory PORT=18480 scripts/loadtest.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-18480}
ENGINE=${ENGINE:-lsm}
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(loadtest/scenarios/smoke.toml)

cargo build --release --bin pairdb --bin pairdb-loadtest
work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && { kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; }; rm -rf "$work"' EXIT
export PAIRDB_ADMIN_KEY=loadtest-admin-key
./target/release/pairdb dev --engine "$ENGINE" --http 127.0.0.1:$PORT --data-dir "$work/data" >"$work/dev.log" 2>&1 &
pid=$!
for _ in $(seq 1 150); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { cat "$work/dev.log"; exit 1; }

status=0
for file in "${scenarios[@]}"; do
  name=$(basename "$file" .toml)
  set +e
  ./target/release/pairdb-loadtest run "$file" --url "http://127.0.0.1:$PORT" \
    --admin-key "$PAIRDB_ADMIN_KEY" --summary-export "$work/$name.json"
  code=$?
  set -e
  [ $code -ne 0 ] && status=$code
done

if [ "${YCSB_TABLE:-0}" = 1 ]; then
  if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
    redis-server --port 0 --unixsocket "$work/redis.sock" --save '' --appendonly no --daemonize yes \
      --dir "$work" --logfile "$work/redis.log"
    for _ in $(seq 1 50); do [ -S "$work/redis.sock" ] && break; sleep 0.1; done
    redis-benchmark -s "$work/redis.sock" -q -t set,get -n 200000 -c 32 -d 100 >"$work/redis.txt" 2>/dev/null || true
    redis-cli -s "$work/redis.sock" shutdown nosave >/dev/null 2>&1 || true
  fi
  python3 - "$work" "${scenarios[@]}" <<'PY'
import json, os, sys
work, files = sys.argv[1], sys.argv[2:]
print("\n| workload | ops due | ops done | dropped | HTTP requests | p50 ms | p95 ms | p99 ms | p99.9 ms | failed |")
print("|---|---|---|---|---|---|---|---|---|---|")
for f in files:
    name = os.path.basename(f)[:-5]
    try:
        m = json.load(open(os.path.join(work, name + ".json")))["metrics"]
    except Exception:
        continue
    d = m.get("http_req_duration", {})
    done = m.get("iterations", {}).get("count", 0)
    dropped = m.get("dropped_iterations", {}).get("count", 0)
    reqs = m.get("http_reqs", {}).get("count", 0)
    failed = m.get("http_req_failed", {}).get("value", 0) * 100
    print(f"| {name} | {done + dropped:,.0f} | {done:,.0f} | {dropped:,.0f} | {reqs:,.0f} | {d.get('med', 0):.2f} | "
          f"{d.get('p(95)', 0):.2f} | {d.get('p(99)', 0):.2f} | {d.get('p(99.9)', 0):.2f} | {failed:.2f} % |")
path = os.path.join(work, "redis.txt")
if os.path.exists(path):
    print("\nredis-benchmark, same machine (32 clients, 100-byte values):")
    for chunk in open(path).read().replace("\r", "\n").splitlines():
        if "requests per second" in chunk:
            print("  " + chunk.strip())
PY
fi
exit $status

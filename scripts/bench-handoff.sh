#!/usr/bin/env bash
# How fast a returning node is caught up from hints: three `pairdb storage` processes, a
# coordinator and a gateway (release build) on loopback; node-3 is killed, RECORDS records of
# FIELD bytes are written at RF 3 (quorum) while it is gone, then it restarts on its data. Prints
# the hints the leaders hold and the time from the restart until they hold none (every missed
# write delivered). FSYNC=always|never (default always), RECORDS (default 20000), FIELD (default 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin pairdb -p pairdb -p pairdb-loadtest
D=$(mktemp -d /tmp/pairdb-bench-handoff.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$D"' EXIT
export PAIRDB_INTERNAL_TOKEN=bench-token PAIRDB_KEY_SECRET=bench-secret
export PAIRDB_ADMIN_KEY=pdbadmin_bench_handoff RUST_LOG=info
B=./target/release/pairdb
FS=${FSYNC:-always}
node() {
  $B storage --node-id node-$1 --listen 127.0.0.1:1720$1 --data-dir "$D/n$1" --fsync "$FS" \
    --metrics-listen 127.0.0.1:1730$1 >> "$D/n$1.log" 2>&1 &
}
node 1; node 2; node 3
N3=$!
sleep 1
$B coordinator --listen 127.0.0.1:17210 --metadata-url "sqlite://$D/meta.db" \
  --initial-nodes node-1=127.0.0.1:17201,node-2=127.0.0.1:17202,node-3=127.0.0.1:17203 > "$D/coord.log" 2>&1 &
sleep 2
$B gateway --http 127.0.0.1:18091 --coordinators 127.0.0.1:17210 --metadata-url "sqlite://$D/meta.db" > "$D/gw.log" 2>&1 &
sleep 2
kill -9 "$N3"; wait "$N3" 2>/dev/null || true
sleep 3
cat > "$D/load.toml" <<T
[scenarios.load]
executor = "constant-arrival-rate"
rate = 1
time_unit = "1s"
duration = "1s"
pre_allocated_vus = 1
max_vus = 1
workload = "ycsb-c"
record_count = ${RECORDS:-20000}
field_length = ${FIELD:-1000}
T
./target/release/pairdb-loadtest run "$D/load.toml" --url http://127.0.0.1:18091 --quiet > "$D/load.out" 2>&1
pending() {
  local total=0
  for m in 17301 17302; do
    v=$(curl -s "http://127.0.0.1:$m/metrics" | awk '/^pairdb_hints_pending /{print $2}')
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
held=$(pending)
t0=$(date +%s.%N)
node 3
while [ "$(pending)" != "0" ]; do sleep 0.1; done
echo "fsync $FS: $held hints delivered in $(echo "$(date +%s.%N) - $t0" | bc) s after node-3 restarted"

#!/usr/bin/env bash
# How fast a joining node receives its share: three `pairdb storage` processes, a coordinator
# and a gateway (release build) on loopback, RECORDS records of FIELD bytes loaded at RF 3 with
# pairdb-loadtest, then a fourth node started with --join. Prints the migration's streamed keys,
# bytes and MiB/s (from the coordinator's log) and the time from the join to `done`.
# FSYNC=always|never (default always), MBPS (the coordinator's --stream-mb-per-sec, default 0:
# unpaced), RECORDS (default 100000), FIELD (default 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin pairdb -p pairdb -p pairdb-loadtest
D=$(mktemp -d /tmp/pairdb-bench-join.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$D"' EXIT
export PAIRDB_INTERNAL_TOKEN=bench-token PAIRDB_KEY_SECRET=bench-secret
export PAIRDB_ADMIN_KEY=pdbadmin_bench_join RUST_LOG=info
B=./target/release/pairdb
FS=${FSYNC:-always}
for i in 1 2 3; do
  $B storage --node-id node-$i --listen 127.0.0.1:1710$i --data-dir "$D/n$i" --fsync "$FS" > "$D/n$i.log" 2>&1 &
done
sleep 1
$B coordinator --listen 127.0.0.1:17200 --metadata-url "sqlite://$D/meta.db" \
  --initial-nodes node-1=127.0.0.1:17101,node-2=127.0.0.1:17102,node-3=127.0.0.1:17103 \
  --stream-mb-per-sec "${MBPS:-0}" > "$D/coord.log" 2>&1 &
sleep 2
$B gateway --http 127.0.0.1:18090 --coordinators 127.0.0.1:17200 --metadata-url "sqlite://$D/meta.db" > "$D/gw.log" 2>&1 &
sleep 2
cat > "$D/load.toml" <<T
[scenarios.load]
executor = "constant-arrival-rate"
rate = 1
time_unit = "1s"
duration = "1s"
pre_allocated_vus = 1
max_vus = 1
workload = "ycsb-c"
record_count = ${RECORDS:-100000}
field_length = ${FIELD:-1000}
T
./target/release/pairdb-loadtest run "$D/load.toml" --url http://127.0.0.1:18090 --quiet > "$D/load.out" 2>&1
t0=$(date +%s.%N)
$B storage --node-id node-4 --listen 127.0.0.1:17104 --data-dir "$D/n4" --fsync "$FS" --join http://127.0.0.1:17200 > "$D/n4.log" 2>&1 &
for _ in $(seq 1 1200); do
  grep -q "migration done" "$D/coord.log" && break
  sleep 0.25
done
echo "fsync $FS: join to done in $(echo "$(date +%s.%N) - $t0" | bc) s"
sed 's/\x1b\[[0-9;]*m//g' "$D/coord.log" | grep -o 'every range streamed.*' || { echo "no migration finished"; exit 1; }

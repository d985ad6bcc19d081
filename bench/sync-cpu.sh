#!/usr/bin/env bash
# What one agent sync costs: a local 3-node cluster (TLS as shipped), `outpost bench sync`
# with N simulated agents syncing as fast as they can (closed loop, so the machine's whole
# capacity goes to syncs), and the CPU used per sync by the three node processes and by the
# simulator (the agents' side), from /proc before and after the sync phase.
#   usage: bench/sync-cpu.sh [OUTPOST_BIN] [AGENTS] [SECONDS]
# Figures are printed, never asserted. The nodes and the simulator share this machine.
set -u
BIN=${1:-target/release/outpost}; N=${2:-200}; S=${3:-20}
[ -x "$BIN" ] || { echo "no outpost binary at $BIN (cargo build --release)"; exit 1; }
export OUTPOST_ENROLL_RATE=5000 # every agent enrolls before the syncs start
. "$(dirname "$0")/local-cluster.sh" sync-cpu
"$BIN" bench sync --data-dir "$W/n1" --clients "$N" --seconds "$S" --interval 0s --json >"$W/out.json" &
B=$!
# The sync phase starts once every agent is enrolled: the bench logs nothing, so wait for
# the nodes' client count to reach N through the local status of node 1.
for i in $(seq 1 600); do
  c=$("$BIN" client list --json --data-dir "$W/n1" 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null)
  [ "${c:-0}" -ge "$N" ] && break; sleep 0.5
done
sleep 1
n0=$(ticks "${PIDS[@]}"); b0=$(ticks $B); t0=$(date +%s.%N)
sleep $(( S - 3 > 1 ? S - 3 : 1 ))
n1=$(ticks "${PIDS[@]}"); b1=$(ticks $B); t1=$(date +%s.%N)
wait $B || { echo "bench sync failed"; exit 1; }
python3 - "$W/out.json" "$n0" "$n1" "$b0" "$b1" "$t0" "$t1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); n0, n1, b0, b1 = map(int, sys.argv[2:6]); t0, t1 = map(float, sys.argv[6:8]); hz = int(sys.argv[8])
syncs = d['syncs_per_s'] * (t1 - t0)
print(f"agents={d['clients']} syncs_per_s={d['syncs_per_s']:.0f} errors={d['errors']} p50_ms={d['p50_ms']:.2f} p99_ms={d['p99_ms']:.2f} "
      f"node_cpu_us_per_sync={(n1 - n0) / hz / max(syncs, 1) * 1e6:.0f} agent_cpu_us_per_sync={(b1 - b0) / hz / max(syncs, 1) * 1e6:.0f}")
PY

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
W=$(mktemp -d /tmp/outpost-sync-cpu.XXXXXX); PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && { kill -9 "$p"; wait "$p"; } 2>/dev/null; done; rm -rf "$W"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }
export OUTPOST_ENROLL_RATE=5000
A1=$(port)
"$BIN" init --data-dir "$W/n1" --name n1 --api-addr 127.0.0.1:$A1 --peer-addr 127.0.0.1:$(port) --no-mdns >/dev/null || exit 1
"$BIN" serve --data-dir "$W/n1" >"$W/n1.log" 2>&1 & PIDS+=($!)
sleep 1
for n in n2 n3; do
  tok=$("$BIN" token create --kind node --data-dir "$W/n1" 2>/dev/null) || exit 1
  "$BIN" join --data-dir "$W/$n" --name $n --api-addr 127.0.0.1:$(port) --peer-addr 127.0.0.1:$(port) --token "$tok" --peer 127.0.0.1:$A1 --no-mdns >/dev/null || exit 1
  "$BIN" serve --data-dir "$W/$n" >"$W/$n.log" 2>&1 & PIDS+=($!)
done
for i in $(seq 1 80); do
  v=$("$BIN" status --json --data-dir "$W/n1" 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(1 for m in d["members"] if m.get("voter")), d.get("leader_id"))' 2>/dev/null)
  case "$v" in "3 None"|"") sleep 0.5;; 3\ *) break;; *) sleep 0.5;; esac
done
sleep 3 # each node hashes its own executable once at start
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
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

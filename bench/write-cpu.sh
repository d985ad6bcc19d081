#!/usr/bin/env bash
# Write throughput, latency and node CPU per write of a local 3-node cluster (TLS and fsync on,
# as shipped): `outpost bench write` with 64 clients, then with one, and the CPU the three
# node processes used per acknowledged write (from /proc/PID/stat before and after).
#   usage: bench/write-cpu.sh [OUTPOST_BIN] [SECONDS]
# Figures are printed, never asserted. The nodes and the load generator share this machine.
set -u
BIN=${1:-target/release/outpost}; S=${2:-8}
[ -x "$BIN" ] || { echo "no outpost binary at $BIN (cargo build --release)"; exit 1; }
. "$(dirname "$0")/local-cluster.sh" write-cpu
run() {
  local c0 out c1
  c0=$(ticks "${PIDS[@]}")
  out=$("$BIN" bench write --data-dir "$W/n1" --clients "$1" --seconds "$2" --json) || { echo "bench write failed"; exit 1; }
  c1=$(ticks "${PIDS[@]}")
  python3 - "$out" "$c0" "$c1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
d = json.loads(sys.argv[1]); c0, c1, hz = map(int, sys.argv[2:])
print(f"clients={d['clients']} writes_per_s={d['writes_per_s']:.0f} p50_ms={d['p50_ms']:.2f} p99_ms={d['p99_ms']:.2f} "
      f"node_cpu_us_per_write={(c1 - c0) / hz / max(d['writes'], 1) * 1e6:.0f}")
PY
}
run 64 "$S"
run 1 "$(( S / 2 > 1 ? S / 2 : 2 ))"

#!/usr/bin/env bash
# Write throughput, latency and node CPU per write of a local 3-node cluster (TLS and fsync on,
# as shipped): `outpost bench write` with 64 clients, then with one, and the CPU the three
# node processes used per acknowledged write (from /proc/PID/stat before and after).
#   usage: bench/write-cpu.sh [OUTPOST_BIN] [SECONDS]
# Figures are printed, never asserted. The nodes and the load generator share this machine.
set -u
BIN=${1:-target/release/outpost}; S=${2:-8}
[ -x "$BIN" ] || { echo "no outpost binary at $BIN (cargo build --release)"; exit 1; }
W=$(mktemp -d /tmp/outpost-write-cpu.XXXXXX); PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && { kill -9 "$p"; wait "$p"; } 2>/dev/null; done; rm -rf "$W"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }
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
ticks() { local t=0; for p in "${PIDS[@]}"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
run() {
  local c0 out c1
  c0=$(ticks)
  out=$("$BIN" bench write --data-dir "$W/n1" --clients "$1" --seconds "$2" --json) || { echo "bench write failed"; exit 1; }
  c1=$(ticks)
  python3 - "$out" "$c0" "$c1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
d = json.loads(sys.argv[1]); c0, c1, hz = map(int, sys.argv[2:])
print(f"clients={d['clients']} writes_per_s={d['writes_per_s']:.0f} p50_ms={d['p50_ms']:.2f} p99_ms={d['p99_ms']:.2f} "
      f"node_cpu_us_per_write={(c1 - c0) / hz / max(d['writes'], 1) * 1e6:.0f}")
PY
}
run 64 "$S"
run 1 "$(( S / 2 > 1 ? S / 2 : 2 ))"

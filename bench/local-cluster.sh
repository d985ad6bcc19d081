# Sourced by the bench scripts: starts a 3-node cluster of "$BIN" on 127.0.0.1 in a new
# temporary directory $W (TLS and fsync on, as shipped), its node PIDs in PIDS, and removes
# everything when the script exits. Usage: BIN=... . bench/local-cluster.sh NAME
W=$(mktemp -d "/tmp/outpost-$1.XXXXXX"); PIDS=()
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
# CPU ticks (user + system) used so far by the given processes.
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }

#!/usr/bin/env bash
# Where a replicated write's cost goes: `outpost bench write` (64 clients, 1 KiB, 3 local nodes,
# TLS and fsync on) against an EXPERIMENT build in which parts of the write path can be switched
# off, one variant after the other in one sitting, so the ratios hold on a noisy machine:
#   full      nothing switched off (the shipped code paths)
#   requests  no request-id row per write            (exactly-once is gone)
#   audit     requests + no audit row per write       (the audit chain is gone)
#   apply     no SQLite apply at all for the bench's writes (the state is not written)
#   log       no SQLite Raft log (kept in memory, no fsync)
#   apply,log both
# The experiment build is HEAD with bench/write-ablation.patch applied, built in its own target
# directory (the first run builds everything: several minutes). Its switches are the
# OUTPOST_ABLATE environment variable of the nodes; they exist only in that build, never in a
# shipped one. Figures are printed, never asserted.
#   usage: bench/write-ablation.sh [SECONDS] [ROUNDS]
set -u
S=${1:-8}; ROUNDS=${2:-2}
REPO=$(cd "$(dirname "$0")/.." && pwd)
TD=${ABLATION_TARGET_DIR:-/tmp/outpost-ablation-target}
SRC=$(mktemp -d /tmp/outpost-ablation-src.XXXXXX)
trap 'git -C "$REPO" worktree remove --force "$SRC" >/dev/null 2>&1; rm -rf "$SRC"' EXIT
git -C "$REPO" worktree add --detach "$SRC" HEAD >/dev/null 2>&1 || { echo "cannot make a worktree of $REPO"; exit 1; }
git -C "$SRC" apply "$REPO/bench/write-ablation.patch" || {
  echo "bench/write-ablation.patch no longer applies to HEAD: refresh it from the code it switches off"; exit 1; }
cargo build --release -q --manifest-path "$SRC/Cargo.toml" --target-dir "$TD" || { echo "the experiment build failed"; exit 1; }
BIN=$TD/release/outpost
one() {
  # A fresh cluster per variant, removed when the subshell ends.
  (
    export OUTPOST_ABLATE=$1
    . "$REPO/bench/local-cluster.sh" ablation
    c0=$(ticks "${PIDS[@]}")
    out=$(OUTPOST_ABLATE= "$BIN" bench write --data-dir "$W/n1" --clients 64 --seconds "$S" --json) || { echo "bench write failed"; exit 1; }
    c1=$(ticks "${PIDS[@]}")
    python3 - "$1" "$out" "$c0" "$c1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
name, out = sys.argv[1], json.loads(sys.argv[2]); c0, c1, hz = map(int, sys.argv[3:])
print(f"{name or 'full':<10} writes_per_s={out['writes_per_s']:>7.0f} errors={out['errors']} p50_ms={out['p50_ms']:.2f} "
      f"node_cpu_us_per_write={(c1 - c0) / hz / max(out['writes'], 1) * 1e6:.0f}")
PY
  )
}
for r in $(seq 1 "$ROUNDS"); do
  for v in "" requests requests,audit apply log apply,log; do one "$v"; done
done

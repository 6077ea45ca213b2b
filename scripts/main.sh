#!/usr/bin/env bash
# Foundation's main job: two local nodes exchanging traffic across channels.
#   1. this machine's topology and the placement the runtime would choose;
#   2. fdn-isolate: two processes, 64-byte pings on `coordination` with and
#      without 1 MiB bulk traffic on `data`, a stalled data consumer, and the
#      same traffic forced through one FIFO channel;
#   3. fdn-perf: 64 B ping-pong, 64 B and 1 MiB streaming between two nodes,
#      over TCP and over shared memory;
#   4. the runtime micro-benchmarks (fdn-bench);
# then one results table. Every figure comes from this run.
# Usage: scripts/main.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh

quick=0
[ "${1:-}" = "--quick" ] && quick=1
secs=3; reps=3
[ "$quick" = 1 ] && secs=1 && reps=1

dir=build/release
if [ ! -f "$dir/build.ninja" ]; then
  meson setup "$dir" -Dbuildtype=release -Dtests=false >/dev/null
fi
ninja -C "$dir" -j"$(nproc)" >/dev/null

out=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$out"
}
trap cleanup EXIT

echo "== Topology and placement (fdn-topo)"
"$dir/tools/fdn-topo"

echo
echo "== Head-of-line isolation between two nodes (fdn-isolate, ${secs} s per scenario)"
"$dir/tools/fdn-isolate" --duration "$secs" --json "$out/isolate.json"

echo
echo "== Two nodes, one channel at a time (fdn-perf, ${secs} s per run), over TCP and shm"
secret="$out/cluster.secret"
# Starts an fdn-perf server listening on $1 and sets $addr to its address.
start_server() {
  "$dir/tools/fdn-perf" server --listen "$1" --cpu 1 --secret-file "$secret" \
    >"$out/server.log" 2>&1 &
  server_pid=$!
  addr=
  for _ in $(seq 50); do
    addr=$(grep -Eo '(tcp|shm)://[^ ]+' "$out/server.log" | head -1 || true)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { cat "$out/server.log"; exit 1; }
}
stop_server() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=; }
# --transport: a tcp:// address of this host would otherwise go through shm.
perf() { "$dir/tools/fdn-perf" "$@" --connect "$addr" --transport "$tp" --cpu 0 \
  --secret-file "$secret" --duration "$secs" --json; }
for tp in tcp shm; do
  if [ "$tp" = tcp ]; then start_server tcp://127.0.0.1:0; else start_server 'shm://@'; fi
  perf lat --size 64 >"$out/$tp-lat64.json"
  perf bw --size 64 >"$out/$tp-bw64.json"
  perf bw --size 1048576 >"$out/$tp-bw1m.json"
  stop_server
done

echo
echo "== Runtime micro-benchmarks (fdn-bench)"
python3 bench/run.py --bench "$dir/bench/fdn-bench" --repetitions "$reps" \
  --filter 'cacheline|roundtrip|spsc_ring_throughput/batch:32|pool_alloc_free/bytes:64$' \
  --json "$out/bench.json" >/dev/null

python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
iso = json.loads((out / "isolate.json").read_text())
bench = json.loads((out / "bench.json").read_text())

rows = []
for name in ("idle", "bulk", "stalled", "fifo"):
    s = iso["scenarios"][name]
    rows.append((f"isolate: {name} ping one-way p50 / p99 (us)",
                 f"{s['p50_us']:.1f} / {s['p99_us']:.1f}",
                 f"bulk {s['bulk_gbytes_per_s']:.2f} GB/s" if s["bulk_gbytes_per_s"] else ""))
verdict = iso.get("verdict", {})
rows.append(("isolate: verdict", "holds" if verdict.get("holds") else "does not hold",
             verdict.get("text", "")[:60]))
for tp in ("tcp", "shm"):
    lat = json.loads((out / f"{tp}-lat64.json").read_text())
    bw64 = json.loads((out / f"{tp}-bw64.json").read_text())
    bw1m = json.loads((out / f"{tp}-bw1m.json").read_text())
    rows.append((f"fdn-perf {tp}: 64 B one-way p50 / p99 (us)",
                 f"{lat['p50_us']:.2f} / {lat['p99_us']:.2f}", f"{lat['messages']} round trips"))
    rows.append((f"fdn-perf {tp}: 64 B streaming (msg/s)", f"{bw64['messages_per_s']:,.0f}", ""))
    rows.append((f"fdn-perf {tp}: 1 MiB streaming (GB/s)", f"{bw1m['gbytes_per_s']:.2f}", ""))
for r in bench.get("targets", []):
    rows.append((f"fdn-bench: {r['target']}", f"{r['value']} {r['result']}", r.get("detail", "")))

w0 = max(len(r[0]) for r in rows)
w1 = max(len(r[1]) for r in rows)
print("\n== Results (this run; loopback, 2 pinned nodes)")
for a, b, c in rows:
    print(f"{a:<{w0}}  {b:>{w1}}  {c}")
PY

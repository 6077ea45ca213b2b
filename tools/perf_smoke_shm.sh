#!/usr/bin/env bash
# Smoke test of fdn-perf over the shared-memory transport: a server on a free
# abstract unix-socket name (shm://@; the bound name is read from its first
# line), one short lat run at 8 bytes, one short bw run and one bw --verify
# run with --json, their transport and counts checked (every message built
# with fdn_peer_msg_alloc crosses by reference: zero_copy), the server
# stopped with SIGTERM. Never a judgement on timings.
#
# usage: perf_smoke_shm.sh PATH/TO/fdn-perf
set -euo pipefail

perf=${1:?usage: perf_smoke_shm.sh PATH/TO/fdn-perf}
work=$(mktemp -d)
server_pid=

cleanup() {
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

secret="$work/cluster.secret"
: >"$work/server.out"
"$perf" server --listen shm://@ --secret-file "$secret" >"$work/server.out" 2>&1 &
server_pid=$!

addr=
for _ in $(seq 100); do
    addr=$(sed -n 's/^fdn-perf server: listening on //p' "$work/server.out")
    [[ -n $addr ]] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.out" >&2; exit 1; }
    sleep 0.1
done
[[ $addr == shm://@?* ]] || { echo "server did not announce an shm address: '$addr'" >&2; exit 1; }
echo "server on $addr"

"$perf" lat --connect "$addr" --secret-file "$secret" --size 8 --iters 2000 --json \
    >"$work/lat.json"
"$perf" bw --connect "$addr" --secret-file "$secret" --iters 500 --size 256K --json \
    >"$work/bw.json"
"$perf" bw --connect "$addr" --secret-file "$secret" --iters 300 --size 1M --verify --json \
    >"$work/bwv.json"
cat "$work/lat.json" "$work/bw.json" "$work/bwv.json"

python3 - "$work/lat.json" "$work/bw.json" "$work/bwv.json" <<'PY'
import json
import sys

lat = json.load(open(sys.argv[1]))
bw = json.load(open(sys.argv[2]))
bwv = json.load(open(sys.argv[3]))
assert lat["zero_copy"] == lat["pings"] > 2000, lat
assert bw["zero_copy"] == bw["sent"], bw
assert bwv["zero_copy"] == bwv["sent"] == 300, bwv
v = bwv["verify"]
assert v["delivered"] == 300 and v["lost"] == v["corrupted"] == v["reordered"] == 0, bwv
assert lat["transport"] == "shm" and bw["transport"] == "shm", (lat, bw)
assert lat["messages"] == 2000 and lat["size"] == 8, lat
order = [lat[k] for k in ["p50_us", "p90_us", "p99_us", "p999_us", "p9999_us", "max_us"]]
assert all(v > 0 for v in order) and order == sorted(order), lat
assert bw["sent"] == 500 and bw["messages"] == 500, bw   # reliable: all confirmed
assert bw["size"] == 262144 and bw["gbytes_per_s"] > 0, bw
print("json ok")
PY

kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=
cat "$work/server.out"
[[ $status -eq 0 ]] || { echo "server exited with $status after SIGTERM" >&2; exit 1; }
echo "fdn-perf shm smoke: ok"

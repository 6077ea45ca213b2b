#!/usr/bin/env bash
# Smoke test of fdn-perf: a server on a free loopback port (port 0; the bound
# address is read from its first line), one short lat run, one short bw run
# and one bw --verify run with --json, their keys checked with python3 (the
# verify run must have lost, duplicated, reordered and corrupted nothing),
# the server stopped with SIGTERM and its exit status checked. Never a
# judgement on timings.
#
# usage: perf_smoke.sh PATH/TO/fdn-perf
set -euo pipefail

perf=${1:?usage: perf_smoke.sh PATH/TO/fdn-perf}
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

# Its own secret file, so the test never touches the user's.
secret="$work/cluster.secret"

# The file exists before the server starts: a background job's redirection
# happens in the child, and the loop below may read first.
: >"$work/server.out"
"$perf" server --listen tcp://127.0.0.1:0 --secret-file "$secret" >"$work/server.out" 2>&1 &
server_pid=$!

addr=
for _ in $(seq 100); do
    addr=$(sed -n 's/^fdn-perf server: listening on //p' "$work/server.out")
    [[ -n $addr ]] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.out" >&2; exit 1; }
    sleep 0.1
done
[[ -n $addr ]] || { echo "server did not announce its address" >&2; exit 1; }
echo "server on $addr"

"$perf" lat --connect "$addr" --secret-file "$secret" --iters 2000 --json >"$work/lat.json"
"$perf" bw --connect "$addr" --secret-file "$secret" --iters 2000 --size 4096 --json \
    >"$work/bw.json"
# Exit status 3 would mean the stream was not delivered intact.
"$perf" bw --connect "$addr" --secret-file "$secret" --iters 2000 --size 4096 --verify --json \
    >"$work/verify.json"
cat "$work/lat.json" "$work/bw.json" "$work/verify.json"

python3 - "$work/lat.json" "$work/bw.json" "$work/verify.json" <<'EOF'
import json
import sys

lat = json.load(open(sys.argv[1]))
bw = json.load(open(sys.argv[2]))
verify = json.load(open(sys.argv[3]))

lat_keys = ["p50_us", "p90_us", "p99_us", "p999_us", "p9999_us", "max_us", "mean_us",
            "messages", "size", "channel", "transport"]
bw_keys = ["messages_per_s", "gbytes_per_s", "messages", "sent", "size", "channel",
           "transport"]
missing = [k for k in lat_keys if k not in lat] + [k for k in bw_keys if k not in bw]
assert not missing, f"missing keys: {missing}"

assert lat["messages"] == 2000, lat
assert lat["size"] == 64 and lat["channel"] == "coordination" and lat["transport"] == "tcp"
order = [lat[k] for k in ["p50_us", "p90_us", "p99_us", "p999_us", "p9999_us", "max_us"]]
assert all(v > 0 for v in order), lat
assert order == sorted(order), f"percentiles out of order: {order}"

assert bw["sent"] == 2000 and bw["messages"] == 2000, bw   # reliable: all confirmed
assert bw["size"] == 4096 and bw["channel"] == "data"
assert bw["messages_per_s"] > 0 and bw["gbytes_per_s"] > 0, bw
assert "verify" not in bw, bw

v = verify["verify"]
assert sorted(v) == ["corrupted", "delivered", "duplicated", "lost", "reordered"], v
assert v == {"delivered": 2000, "lost": 0, "duplicated": 0, "reordered": 0, "corrupted": 0}, v
assert verify["sent"] == 2000 and verify["messages"] == 2000, verify
print("json ok")
EOF

# Usage errors are exit status 2: a tcp:// address with --transport shm is one
# (perf_smoke_shm.sh runs shm itself).
set +e
"$perf" lat --connect "$addr" --transport shm 2>"$work/shm.err"
status=$?
set -e
[[ $status -eq 2 ]] || { echo "--transport shm: exit $status, expected 2" >&2; exit 1; }
grep -q "does not match --transport" "$work/shm.err"

# --verify needs room for its 16-byte header, and is for bw only.
set +e
"$perf" bw --connect "$addr" --size 8 --verify 2>"$work/verify.err"
status=$?
set -e
[[ $status -eq 2 ]] || { echo "--verify --size 8: exit $status, expected 2" >&2; exit 1; }
grep -q "verify needs --size of at least 16 bytes" "$work/verify.err"

kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=
cat "$work/server.out"
[[ $status -eq 0 ]] || { echo "server exited with $status after SIGTERM" >&2; exit 1; }
grep -q "fdn-perf server: stopped" "$work/server.out"
echo "fdn-perf smoke: ok"

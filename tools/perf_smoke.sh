#!/usr/bin/env bash
# Smoke test of fdn-perf over one transport: a server on a free address
# (tcp: loopback port 0; shm: an abstract unix-socket name, shm://@; the bound
# address is read from its first line), one short lat run, one short bw run
# and one bw --verify run with --json, their keys checked with python3 (the
# verify run must have lost, duplicated, reordered and corrupted nothing;
# over shm every message, built with fdn_peer_msg_alloc, crosses by
# reference: zero_copy; over tcp none does),
# the server stopped with SIGTERM and its exit status checked. Never a
# judgement on timings.
#
# usage: perf_smoke.sh PATH/TO/fdn-perf [tcp|shm]
set -euo pipefail

perf=${1:?usage: perf_smoke.sh PATH/TO/fdn-perf [tcp|shm]}
transport=${2:-tcp}
# --transport tcp keeps a tcp:// address on TCP (not the same-host shm).
case $transport in
tcp) listen=tcp://127.0.0.1:0 other=shm lend=() lat_size=64 bw_size=4096 bw_iters=2000 ;;
# shm: --lend-min 1 lends even the 8-byte pings (the default copies them).
shm) listen=shm://@ other=tcp lat_size=8 bw_size=262144 bw_iters=500 lend=(--lend-min 1) ;;
*) echo "unknown transport '$transport'" >&2; exit 2 ;;
esac
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
"$perf" server --listen "$listen" --secret-file "$secret" >"$work/server.out" 2>&1 &
server_pid=$!

addr=
for _ in $(seq 100); do
    addr=$(sed -n 's/^fdn-perf server: listening on //p' "$work/server.out")
    [[ -n $addr ]] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.out" >&2; exit 1; }
    sleep 0.1
done
[[ $addr == "${listen%%://*}://"?* ]] || { echo "server did not announce a $transport address: '$addr'" >&2; exit 1; }
echo "server on $addr"

"$perf" lat --connect "$addr" --transport "$transport" --secret-file "$secret" \
    "${lend[@]}" --size "$lat_size" --iters 2000 --json >"$work/lat.json"
"$perf" bw --connect "$addr" --transport "$transport" --secret-file "$secret" \
    --iters "$bw_iters" --size "$bw_size" --json >"$work/bw.json"
# Exit status 3 would mean the stream was not delivered intact.
"$perf" bw --connect "$addr" --transport "$transport" --secret-file "$secret" \
    --iters "$bw_iters" --size "$bw_size" --verify --json >"$work/verify.json"
cat "$work/lat.json" "$work/bw.json" "$work/verify.json"

python3 - "$work/lat.json" "$work/bw.json" "$work/verify.json" "$transport" "$lat_size" \
    "$bw_size" "$bw_iters" <<'EOF'
import json
import sys

lat = json.load(open(sys.argv[1]))
bw = json.load(open(sys.argv[2]))
verify = json.load(open(sys.argv[3]))
transport = sys.argv[4]
lat_size, bw_size, bw_iters = (int(a) for a in sys.argv[5:8])

lat_keys = ["p50_us", "p90_us", "p99_us", "p999_us", "p9999_us", "max_us", "mean_us",
            "messages", "size", "channel", "transport"]
bw_keys = ["messages_per_s", "gbytes_per_s", "messages", "sent", "size", "channel",
           "transport"]
missing = [k for k in lat_keys if k not in lat] + [k for k in bw_keys if k not in bw]
assert not missing, f"missing keys: {missing}"

assert lat["messages"] == 2000, lat
assert lat["size"] == lat_size and lat["channel"] == "coordination", lat
assert lat["transport"] == transport and bw["transport"] == transport, (lat, bw)
lent = transport == "shm"
assert lat["zero_copy"] == (lat["pings"] if lent else 0) and lat["pings"] > 2000, lat
assert bw["zero_copy"] == (bw["sent"] if lent else 0), bw
assert verify["zero_copy"] == (verify["sent"] if lent else 0), verify
order = [lat[k] for k in ["p50_us", "p90_us", "p99_us", "p999_us", "p9999_us", "max_us"]]
assert all(v > 0 for v in order), lat
assert order == sorted(order), f"percentiles out of order: {order}"

assert bw["sent"] == bw_iters and bw["messages"] == bw_iters, bw   # reliable: all confirmed
assert bw["size"] == bw_size and bw["channel"] == "data"
assert bw["messages_per_s"] > 0 and bw["gbytes_per_s"] > 0, bw
assert "verify" not in bw, bw

v = verify["verify"]
assert sorted(v) == ["corrupted", "delivered", "duplicated", "lost", "reordered"], v
assert v == {"delivered": bw_iters, "lost": 0, "duplicated": 0, "reordered": 0,
             "corrupted": 0}, v
assert verify["sent"] == bw_iters and verify["messages"] == bw_iters, verify
print("json ok")
EOF

# Usage errors are exit status 2: an address of one transport with
# --transport naming the other is one.
set +e
"$perf" lat --connect "$addr" --transport "$other" 2>"$work/mismatch.err"
status=$?
set -e
[[ $status -eq 2 ]] || { echo "--transport $other: exit $status, expected 2" >&2; exit 1; }
grep -q "does not match --transport" "$work/mismatch.err"

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
echo "fdn-perf $transport smoke: ok"

#!/usr/bin/env bash
# The reliability soak (issue 5; docs/RELIABILITY.md, docs/PERFORMANCE.md
# "Reliability"): N messages (default 1,000,000) on a reliable channel with
# `fdn-perf bw --verify`, twice against one loopback TCP server:
#
#   clean    no faults, no kills: the reference rate
#   faulted  the client's connections killed from outside with ss -K about
#            every 100 ms, and FDN_FAULTS='seed=S,drop=0.01' on the sender
#            (1 % of its DATA frames dropped, each recovered by a session
#            resumption)
#
# The faulted run must report 0 lost, 0 duplicated, 0 reordered and 0
# corrupted; the cost of resumption is its messages/s over the clean run's,
# printed as a ratio, with both runs' JSON and a summary JSON line
# ("soak: {...}"). Exit 0 when intact, 1 otherwise, 77 (skip) without root
# or a kernel whose ss -K works.
#
# usage: bench/soak.sh [--iters N] [--size BYTES] [--seed S] PATH/TO/fdn-perf
#   full run:  bench/soak.sh build/clang/tools/fdn-perf
#   CI:        bench/soak.sh --iters 20000 build/clang/tools/fdn-perf
set -uo pipefail

iters=1000000
size=256
seed=20261101
while [[ $# -gt 1 ]]; do
    case $1 in
    --iters) iters=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
perf=${1:?usage: soak.sh [--iters N] [--size BYTES] [--seed S] PATH/TO/fdn-perf}

[[ $(id -u) -eq 0 ]] || { echo "SKIP: needs root for ss -K"; exit 77; }
command -v ss >/dev/null || { echo "SKIP: no ss (iproute2)"; exit 77; }

work=$(mktemp -d)
secret="$work/cluster.secret"
server_pid=
killer_pid=
cleanup() {
    [[ -n $killer_pid ]] && kill "$killer_pid" 2>/dev/null && wait "$killer_pid" 2>/dev/null
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT

: >"$work/server.out"
"$perf" server --listen tcp://127.0.0.1:0 --transport tcp --secret-file "$secret" \
    >"$work/server.out" 2>&1 &
server_pid=$!
addr=
for _ in $(seq 100); do
    addr=$(sed -n 's/^fdn-perf server: listening on //p' "$work/server.out")
    [[ -n $addr ]] && break
    sleep 0.1
done
[[ -n $addr ]] || { cat "$work/server.out" >&2; echo "server did not start" >&2; exit 1; }
port=${addr##*:}

# A million messages at the faulted rate take minutes; the bound is generous
# and only there so that a hang fails.
bound=$((120 + iters / 500))
client() { # name, then environment assignments
    local name=$1; shift
    local status=0
    env "$@" timeout "$bound" "$perf" bw --connect "$addr" --transport tcp \
        --secret-file "$secret" --verify --json --iters "$iters" --size "$size" \
        >"$work/$name.json" 2>"$work/$name.err" || status=$?
    echo "$name: exit $status"
    cat "$work/$name.json"
    grep -v '^$' "$work/$name.err"
    return $status
}

status=0
client clean FDN_FAULTS= || status=1

client faulted "FDN_FAULTS=seed=$seed,drop=0.01" &
client_pid=$!
# The kills start once the session is up (both lanes connected: the second
# is dialled only after the first has authenticated). A connection killed
# before that is a failed connect, which nothing resumes, not a loss.
for _ in $(seq 200); do
    lanes=$(ss -Htn state established dst 127.0.0.1 dport = ":$port" 2>/dev/null | wc -l)
    [[ $lanes -ge 2 ]] && break
    kill -0 "$client_pid" 2>/dev/null || break
    sleep 0.01
done
(
    while :; do
        ss -K dst 127.0.0.1 dport = ":$port" >/dev/null 2>&1
        sleep 0.1
    done
) &
killer_pid=$!
wait "$client_pid" || status=1
kill "$killer_pid" 2>/dev/null
wait "$killer_pid" 2>/dev/null
killer_pid=

kill -TERM "$server_pid"
wait "$server_pid" || status=1
server_pid=

python3 - "$work/clean.json" "$work/faulted.json" "$iters" "$seed" <<'EOF' || status=1
import json, sys
clean = json.load(open(sys.argv[1]))
faulted = json.load(open(sys.argv[2]))
iters, seed = int(sys.argv[3]), int(sys.argv[4])
for run in (clean, faulted):
    v = run["verify"]
    assert v == {"delivered": iters, "lost": 0, "duplicated": 0, "reordered": 0,
                 "corrupted": 0}, v
s = faulted["session"]
assert s["interrupted"] > 0 and s["resumed"] > 0, s
ratio = faulted["messages_per_s"] / clean["messages_per_s"]
summary = {
    "messages": iters, "size": clean["size"], "seed": seed,
    "clean_messages_per_s": round(clean["messages_per_s"], 1),
    "faulted_messages_per_s": round(faulted["messages_per_s"], 1),
    "faulted_over_clean": round(ratio, 4),
    "interrupted": s["interrupted"], "resumed": s["resumed"],
    "retransmitted": s["retransmitted"], "verify": faulted["verify"],
}
print("soak:", json.dumps(summary))
print(f"soak: {iters} messages intact across {s['interrupted']} interruptions; "
      f"resumption cost: {ratio:.4f} of the clean rate "
      f"({summary['faulted_messages_per_s']} vs {summary['clean_messages_per_s']} msg/s)")
EOF
exit $status

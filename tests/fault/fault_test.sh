#!/usr/bin/env bash
# Fault tests with real processes (issue 5, docs/RELIABILITY.md): an fdn-perf
# server and an `fdn-perf bw --verify` client, with their connections hurt
# from outside. Each mode is one meson test of the `fault` suite:
#
#   sskill     ss -K kills the client's connections every 50 ms while it
#              streams (from the moment its session is up); the run must end
#              intact (0 lost, duplicated, reordered,
#              corrupted) and must have resumed at least once
#   sigkill    the server is killed with SIGKILL mid-stream: without a restart
#              the client ends at its --session-timeout (-ETIMEDOUT); with a
#              restart on the same port it meets a new incarnation and ends
#              at once (-ECONNRESET); either way it says so, with the count
#              of undelivered messages, exits 1 and neither hangs nor crashes;
#              a new run against the restarted server is intact
#   partition  two network namespaces joined by a veth pair; nftables in the
#              client's drops everything it sends. With its connections
#              killed and healed before the session timeout, the run resumes
#              and ends intact; left alive (a silent partition), the
#              client's heartbeat (--idle-timeout 300) finds them dead, says
#              "idle timeout" and counts it, and the run resumes once healed
#              and ends intact; kept past the session timeout, the client
#              ends with -ETIMEDOUT and says so
#   tbf        the same namespaces with a tbf bottleneck (50 Mbit/s) on the
#              client's side, and FDN_FAULTS on both ends (client: drop, dup,
#              delay, reorder, reset of what it sends; server: drop, dup, reset
#              of what it receives): the run ends intact
#
# All bounded in time (timeout(1) on every client); addresses only on
# loopback or in namespaces this script creates and deletes. Needs root,
# ip netns and nft for partition and tbf, and a kernel whose ss -K works
# (CONFIG_INET_DIAG_DESTROY) for sskill and partition: else exit 77 (skip)
# with the reason. A failing run prints its FDN_FAULTS seed line (the
# client's stderr), so it can be replayed.
#
# usage: fault_test.sh MODE PATH/TO/fdn-perf
set -uo pipefail

mode=${1:?usage: fault_test.sh MODE PATH/TO/fdn-perf}
perf=${2:?usage: fault_test.sh MODE PATH/TO/fdn-perf}
work=$(mktemp -d)
secret="$work/cluster.secret"
server_pid=
killer_pid=
namespaces=()

cleanup() {
    [[ -n $killer_pid ]] && kill "$killer_pid" 2>/dev/null && wait "$killer_pid" 2>/dev/null
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
    fi
    for ns in "${namespaces[@]}"; do
        ip netns del "$ns" 2>/dev/null   # its nft table, veth end and processes' sockets go too
    done
    rm -rf "$work"
}
trap cleanup EXIT

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || skip "needs root (network namespaces, ss -K)"; }

# ss -K needs CONFIG_INET_DIAG_DESTROY: kill a connection of our own and see.
need_ss_kill() {
    command -v ss >/dev/null || skip "no ss (iproute2)"
    python3 - <<'EOF' || skip "ss -K cannot kill sockets here (kernel without CONFIG_INET_DIAG_DESTROY?)"
import socket, subprocess, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
port = srv.getsockname()[1]
cli = socket.create_connection(("127.0.0.1", port)); acc, _ = srv.accept()
subprocess.run(["ss", "-K", "dst", "127.0.0.1", "dport", "=", f":{port}"], capture_output=True)
try:
    cli.settimeout(1); cli.send(b"x"); cli.recv(1)
except OSError:
    sys.exit(0)
sys.exit(1)
EOF
}

need_netns() {
    need_root
    command -v ip >/dev/null || skip "no ip (iproute2)"
    command -v nft >/dev/null || skip "no nft (nftables; scripts/deps.sh installs it)"
    ip netns add "fdnflt-probe-$$" 2>/dev/null || skip "cannot create a network namespace"
    ip netns del "fdnflt-probe-$$"
}

# Starts the server (in namespace $1 if not empty) on address $2; sets
# server_pid and addr.
start_server() {
    local ns=$1 listen=$2 log="$work/server.out"
    : >"$log"
    if [[ -n $ns ]]; then
        ip netns exec "$ns" "$perf" server --listen "$listen" --transport tcp \
            --secret-file "$secret" >>"$log" 2>&1 &
    else
        "$perf" server --listen "$listen" --transport tcp --secret-file "$secret" >>"$log" 2>&1 &
    fi
    server_pid=$!
    addr=
    for _ in $(seq 100); do
        addr=$(sed -n 's/^fdn-perf server: listening on //p' "$log" | tail -1)
        [[ -n $addr ]] && return 0
        kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; fail "server did not start"; }
        sleep 0.1
    done
    fail "server did not announce its address"
}

stop_server() {
    kill -TERM "$server_pid" 2>/dev/null
    local status=0
    wait "$server_pid" || status=$?
    server_pid=
    [[ $status -eq 0 ]] || { cat "$work/server.out" >&2; fail "server exited with $status"; }
}

# Runs `fdn-perf bw --verify --json` (in namespace $1 if not empty) with the
# remaining arguments, bounded by $CLIENT_TIMEOUT seconds; the JSON goes to
# $work/bw.json, stderr to $work/bw.err; returns the exit status.
CLIENT_TIMEOUT=90
run_client() {
    local ns=$1; shift
    local cmd=(timeout "$CLIENT_TIMEOUT" "$perf" bw --connect "$addr" --transport tcp
               --secret-file "$secret" --verify --json "$@")
    [[ -n $ns ]] && cmd=(ip netns exec "$ns" "${cmd[@]}")
    local status=0
    "${cmd[@]}" >"$work/bw.json" 2>"$work/bw.err" || status=$?
    return $status
}

# The last run must have exited 0, delivered every message intact, and (with
# $1 = resumed) lost its connections at least once.
check_intact() {
    local status=$1 want=${2:-}
    cat "$work/bw.json"
    grep -v '^$' "$work/bw.err" >&2
    [[ $status -eq 0 ]] || fail "bw --verify exited with $status"
    python3 - "$work/bw.json" "$want" <<'EOF' || fail "the run was not intact"
import json, sys
r = json.load(open(sys.argv[1]))
v = r["verify"]
assert v["lost"] == v["duplicated"] == v["reordered"] == v["corrupted"] == 0, v
assert v["delivered"] == r["sent"] == r["messages"], r
if sys.argv[2] == "resumed":
    assert r["session"]["interrupted"] > 0, f"nothing interrupted the session: {r['session']}"
    assert r["session"]["resumed"] > 0, r["session"]
print("intact:", v, r["session"])
EOF
}

# Kills the connections to port $2 (from namespace $1 if not empty) every
# $3 seconds, in the background (killer_pid).
start_killer() {
    local ns=$1 port=$2 every=$3
    (
        while :; do
            if [[ -n $ns ]]; then
                ip netns exec "$ns" ss -K dport = ":$port" >/dev/null 2>&1
            else
                ss -K dst 127.0.0.1 dport = ":$port" >/dev/null 2>&1
            fi
            sleep "$every"
        done
    ) &
    killer_pid=$!
}

# Waits until the client (pid $2) has both lanes to port $1 established, or
# has gone. The second lane is dialled only once the first authenticated,
# so the session is up: a kill before that would be a failed connect, which
# nothing resumes, not a loss.
wait_session_up() {
    local port=$1 client=$2
    for _ in $(seq 500); do
        (( $(ss -Htn state established dst 127.0.0.1 dport = ":$port" | wc -l) >= 2 )) && return
        kill -0 "$client" 2>/dev/null || return
        sleep 0.01
    done
}

stop_killer() {
    kill "$killer_pid" 2>/dev/null
    wait "$killer_pid" 2>/dev/null
    killer_pid=
}

port_of() { echo "${1##*:}"; }

# Two namespaces, client A and server B, joined by veth (10.203.X.1 and .2);
# sets ns_a, ns_b, server_ip.
make_namespaces() {
    local subnet=$(($$ % 256))
    ns_a="fdnfltA-$$"
    ns_b="fdnfltB-$$"
    server_ip="10.203.$subnet.2"
    ip netns add "$ns_a" && namespaces+=("$ns_a") || fail "ip netns add $ns_a"
    ip netns add "$ns_b" && namespaces+=("$ns_b") || fail "ip netns add $ns_b"
    ip -n "$ns_a" link add vethA type veth peer name vethB netns "$ns_b" || fail "veth"
    ip -n "$ns_a" link set lo up && ip -n "$ns_b" link set lo up || fail "lo up"
    ip -n "$ns_a" addr add "10.203.$subnet.1/30" dev vethA || fail "addr A"
    ip -n "$ns_b" addr add "$server_ip/30" dev vethB || fail "addr B"
    ip -n "$ns_a" link set vethA up && ip -n "$ns_b" link set vethB up || fail "veth up"
}

# nftables in the client's namespace: everything it sends is dropped.
partition() {
    ip netns exec "$ns_a" nft -f - <<EOF || fail "nft partition"
table inet fdnfault {
    chain out {
        type filter hook output priority 0; policy accept;
        ip daddr $server_ip drop
    }
}
EOF
}

heal() { ip netns exec "$ns_a" nft delete table inet fdnfault || fail "nft heal"; }

# ---- Modes ------------------------------------------------------------------

mode_sskill() {
    need_root
    need_ss_kill
    start_server "" tcp://127.0.0.1:0
    local port
    port=$(port_of "$addr")
    run_client "" --duration 3 --size 512 &
    local client=$!
    wait_session_up "$port" "$client"
    start_killer "" "$port" 0.05
    local status=0
    wait "$client" || status=$?
    stop_killer
    check_intact $status resumed
    stop_server
}

mode_sigkill() {
    start_server "" tcp://127.0.0.1:0
    local port
    port=$(port_of "$addr")
    # 1. Killed and not restarted: the session ends at its timeout.
    run_client "" --duration 30 --size 512 --session-timeout 2 &
    local client=$!
    sleep 1
    kill -KILL "$server_pid"; wait "$server_pid" 2>/dev/null; server_pid=
    local status=0 start=$SECONDS
    wait "$client" || status=$?
    cat "$work/bw.err"
    [[ $status -eq 1 ]] || fail "client exit $status after its server died, expected 1"
    grep -q "ended: Connection timed out; [0-9]* reliable messages undelivered" "$work/bw.err" ||
        fail "the client did not say its session timed out"
    (( SECONDS - start < 20 )) || fail "the client took $((SECONDS - start)) s to give up"
    # 2. Killed and restarted on the same port: a new incarnation ends the
    #    old session at once.
    start_server "" "tcp://127.0.0.1:$port"
    run_client "" --duration 30 --size 512 --session-timeout 20 &
    client=$!
    sleep 1
    kill -KILL "$server_pid"; wait "$server_pid" 2>/dev/null; server_pid=
    start_server "" "tcp://127.0.0.1:$port"
    status=0
    start=$SECONDS
    wait "$client" || status=$?
    cat "$work/bw.err"
    [[ $status -eq 1 ]] || fail "client exit $status after its server restarted, expected 1"
    grep -q "ended: Connection reset by peer; [0-9]* reliable messages undelivered" \
        "$work/bw.err" || fail "the client did not say the server restarted"
    (( SECONDS - start < 15 )) || fail "the client took $((SECONDS - start)) s to notice"
    # 3. The restarted server serves a new run.
    run_client "" --iters 5000 --size 512
    check_intact $?
    stop_server
}

mode_partition() {
    need_netns
    need_ss_kill
    make_namespaces
    start_server "$ns_b" "tcp://$server_ip:0"
    local port
    port=$(port_of "$addr")
    # 1. Healed in time: 1.5 s of partition, the connections killed during
    #    it, a session timeout of 10 s.
    run_client "$ns_a" --duration 4 --size 512 --session-timeout 10 &
    local client=$!
    sleep 1
    partition
    ip netns exec "$ns_a" ss -K dport = ":$port" >/dev/null 2>&1
    sleep 1.5
    heal
    local status=0
    wait "$client" || status=$?
    check_intact $status resumed
    # 2. Silent: the same partition, but nothing kills the connections, so
    #    TCP alone would retransmit for minutes. The client's heartbeat
    #    (nothing received for 300 ms) declares them dead, and the session
    #    resumes once healed, 1.5 s later.
    run_client "$ns_a" --duration 4 --size 512 --session-timeout 10 --idle-timeout 300 &
    client=$!
    sleep 1
    partition
    sleep 1.5
    heal
    status=0
    wait "$client" || status=$?
    check_intact $status resumed
    python3 - "$work/bw.json" <<'EOF' || fail "the heartbeat did not find the partition"
import json, sys
s = json.load(open(sys.argv[1]))["session"]
assert s["idle_timeouts"] > 0, s
EOF
    grep -q "idle timeout: nothing received for [0-9]* ms; session interrupted" "$work/bw.err" ||
        fail "the client did not say it found a connection silent"
    # 3. Past the session timeout (2 s): the client ends and says why.
    run_client "$ns_a" --duration 30 --size 512 --session-timeout 2 &
    client=$!
    sleep 1
    partition
    ip netns exec "$ns_a" ss -K dport = ":$port" >/dev/null 2>&1
    status=0
    local start=$SECONDS
    wait "$client" || status=$?
    heal
    cat "$work/bw.err"
    [[ $status -eq 1 ]] || fail "client exit $status across a long partition, expected 1"
    grep -q "ended: Connection timed out; [0-9]* reliable messages undelivered" "$work/bw.err" ||
        fail "the client did not say its session timed out"
    (( SECONDS - start < 20 )) || fail "the client took $((SECONDS - start)) s to give up"
    stop_server
}

mode_tbf() {
    need_netns
    make_namespaces
    ip netns exec "$ns_a" tc qdisc add dev vethA root tbf rate 50mbit burst 32kbit latency 50ms ||
        skip "no tbf qdisc"
    FDN_FAULTS='seed=5151,dir=rx,drop=0.002,dup=0.002,reset=0.001' \
        start_server "$ns_b" "tcp://$server_ip:0"
    FDN_FAULTS='seed=5150,drop=0.002,dup=0.002,delay=0.01:100us-2ms,reorder=0.005:8,reset=0.001' \
        run_client "$ns_a" --iters 20000 --size 1024
    check_intact $? resumed
    grep -q "fault layer: seed=5150" "$work/bw.err" || fail "no fault layer seed line (client)"
    grep -q "fault layer: seed=5151" "$work/server.out" || fail "no fault layer seed line (server)"
    stop_server
}

case $mode in
sskill) mode_sskill ;;
sigkill) mode_sigkill ;;
partition) mode_partition ;;
tbf) mode_tbf ;;
*) echo "unknown mode $mode" >&2; exit 2 ;;
esac
echo "fault test $mode: ok"

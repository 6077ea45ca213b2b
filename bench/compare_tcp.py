#!/usr/bin/env python3
"""Foundation against its peers over loopback TCP, side by side.

Runs, alternating in rounds, with both ends pinned (server on --server-cpu,
client on --client-cpu):

  1. 64 B ping-pong:   fdn-perf lat          vs  sockperf pp --tcp
                                             vs  ucx_perftest tag_lat (UCX_TLS=tcp,self)
  2. 64 B streaming:   fdn-perf bw           vs  ucx_perftest tag_bw  (UCX_TLS=tcp,self)
  3. 1 MiB streaming:  fdn-perf bw --size 1M vs  iperf3

and prints a table of medians, median ratios and the targets of the issue
(informational: timings are never pass/fail tests; see BENCHMARKS.md).

What each number means:
  fdn-perf lat   one-way latency = round trip / 2, percentiles from an
                 fdn_histogram (upper bucket edge, at most ~3% high).
  sockperf pp    one-way latency = round trip / 2 ("percentile 50.000" etc.,
                 usec); sockperf's own default message rate applies, as in
                 the invocation BENCHMARKS.md names.
  ucx tag_lat    the "50.0%ile" column of the Final line: ucx_perftest's
                 typical (median) one-way latency, usec; ucx prints one
                 percentile per run, so only p50 is compared.
  ucx tag_bw     the "overall" message rate of the Final line, msg/s.
  fdn-perf bw    messages/s and GB/s of payload that the server confirmed
                 receiving, from the first send to the confirmation.
  iperf3         end.sum_received.bits_per_second / 8e9, GB/s of payload
                 received.

ucx_perftest runs a number of iterations, not a duration: a short
calibration run per test measures its rate, and each measured run gets
rate x duration iterations.

Exit status: 0 when every tool ran (whatever the timings), 1 when one failed
to run or its output could not be read, 2 for bad arguments.

Standard library only.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ToolError(Exception):
    """A tool did not run, failed, or printed what we cannot read."""


# ---- Processes ---------------------------------------------------------------


def free_port():
    """A TCP port that was free a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def listening(port):
    """True when some socket listens on the port. Read from /proc rather than
    probed with a connection: iperf3 -1 and ucx_perftest serve exactly one."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except FileNotFoundError:
            continue
    return False


def pinned(cpu, argv):
    return ["taskset", "-c", str(cpu)] + argv


def stop_process(proc, first_signal=signal.SIGINT):
    """Stops a process we started (and its process group, which is its own):
    first_signal, then SIGTERM, then SIGKILL, waiting for each."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((first_signal, 3), (signal.SIGTERM, 3), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


class Server:
    """A server process for one measurement: started in its own session,
    awaited until it listens, and always stopped on exit."""

    def __init__(self, argv, port, log_path, env=None):
        self.argv, self.port, self.log_path, self.env = argv, port, log_path, env
        self.proc = None

    def __enter__(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.wait_listening()
        except BaseException:
            stop_process(self.proc)  # __exit__ does not run when __enter__ fails
            raise
        return self

    def log_tail(self):
        with open(self.log_path, errors="replace") as f:
            return "\n".join(f.read().strip().splitlines()[-3:])

    def wait_listening(self):
        deadline = time.monotonic() + 10
        while not listening(self.port):
            if self.proc.poll() is not None:
                raise ToolError(f"server exited with {self.proc.returncode}: "
                                f"{' '.join(self.argv)}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ToolError(f"server did not listen on {self.port}: {' '.join(self.argv)}")
            time.sleep(0.02)

    def __exit__(self, *exc):
        stop_process(self.proc)
        return False


def run_client(argv, timeout_s, env=None):
    """Runs a client to completion; returns its stdout. Killed (with its
    process group) when it overruns."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_process(proc, signal.SIGTERM)
        proc.communicate()
        raise ToolError(f"timed out after {timeout_s:.0f} s: {' '.join(argv)}")
    finally:
        stop_process(proc, signal.SIGTERM)
    if proc.returncode != 0:
        tail = "\n".join((err or out).strip().splitlines()[-5:])
        raise ToolError(f"exit {proc.returncode}: {' '.join(argv)}\n{tail}")
    return out


# ---- Tools -------------------------------------------------------------------


class Bench:
    """How each tool is started and its output read."""

    def __init__(self, args, workdir):
        self.args = args
        self.duration = args.duration
        self.timeout = 3 * args.duration + 30
        self.secret = os.path.join(workdir, "cluster.secret")
        self.logdir = workdir
        self.ucx_iters = {}
        self.ucx_env = dict(os.environ, UCX_TLS="tcp,self")

    def server_log(self, name):
        return os.path.join(self.logdir, f"{name}-server.log")

    # -- Foundation --

    def fdn(self, mode, size):
        """fdn-perf client against its server; returns its JSON result."""
        a = self.args
        port = free_port()
        server = [a.fdn_perf, "server", "--listen", f"tcp://{HOST}:{port}", "--cpu",
                  str(a.server_cpu), "--secret-file", self.secret]
        client = [a.fdn_perf, mode, "--connect", f"tcp://{HOST}:{port}", "--cpu",
                  str(a.client_cpu), "--secret-file", self.secret, "--size", str(size),
                  "--duration", str(self.duration), "--json"] + a.fdn_args.split()
        with Server(server, port, self.server_log("fdn-perf")):
            out = run_client(client, self.timeout)
        try:
            result = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise ToolError(f"fdn-perf printed no JSON: {out[-300:]!r}")
        result["command"] = " ".join(client)
        return result

    # -- sockperf --

    def sockperf_lat(self, size):
        a = self.args
        port = free_port()
        server = pinned(a.server_cpu, ["sockperf", "sr", "--tcp", "-i", HOST, "-p", str(port)])
        client = pinned(a.client_cpu, ["sockperf", "pp", "--tcp", "-i", HOST, "-p", str(port),
                                       "-t", str(self.duration), "-m", str(size)])
        with Server(server, port, self.server_log("sockperf")):
            out = run_client(client, self.timeout)
        result = parse_sockperf(out)
        result["command"] = " ".join(client)
        return result

    # -- ucx_perftest --

    def ucx_once(self, test, size, iters):
        a = self.args
        port = free_port()
        server = ["ucx_perftest", "-p", str(port), "-c", str(a.server_cpu)]
        client = ["ucx_perftest", HOST, "-p", str(port), "-c", str(a.client_cpu), "-t", test,
                  "-s", str(size), "-n", str(iters)]
        with Server(server, port, self.server_log("ucx_perftest"), env=self.ucx_env):
            out = run_client(client, self.timeout, env=self.ucx_env)
        result = parse_ucx(out)
        result["command"] = "UCX_TLS=tcp,self " + " ".join(client)
        return result

    def ucx(self, test, size):
        """A run sized to last about --duration, from a calibration run."""
        key = (test, size)
        if key not in self.ucx_iters:
            probe = self.ucx_once(test, size, 2000 if test.endswith("lat") else 20000)
            rate = probe["msg_rate_overall"]
            self.ucx_iters[key] = max(1000, int(rate * self.duration))
            log(f"  ucx_perftest {test} -s {size}: calibrated {rate:,.0f}/s "
                f"-> -n {self.ucx_iters[key]}")
        return self.ucx_once(test, size, self.ucx_iters[key])

    # -- iperf3 --

    def iperf3(self):
        a = self.args
        port = free_port()
        server = pinned(a.server_cpu, ["iperf3", "-s", "-1", "-p", str(port)])
        client = pinned(a.client_cpu, ["iperf3", "-c", HOST, "-p", str(port), "-t",
                                       str(self.duration), "-J"])
        with Server(server, port, self.server_log("iperf3")):
            out = run_client(client, self.timeout)
        result = parse_iperf3(out)
        result["command"] = " ".join(client)
        return result


# ---- Parsers -----------------------------------------------------------------


def parse_sockperf(out):
    """sockperf's summary: one-way latency (half round trip) in usec."""
    text = ANSI.sub("", out)
    wanted = {"50.000": "p50_us", "90.000": "p90_us", "99.000": "p99_us",
              "99.900": "p999_us", "99.990": "p9999_us"}
    result = {}
    for rank, value in re.findall(r"percentile\s+([\d.]+)\s*=\s*([\d.]+)", text):
        if rank in wanted:
            result[wanted[rank]] = float(value)
    m = re.search(r"<MAX> observation\s*=\s*([\d.]+)", text)
    if m:
        result["max_us"] = float(m.group(1))
    m = re.search(r"avg-latency=([\d.]+)", text)
    if m:
        result["mean_us"] = float(m.group(1))
    m = re.search(r"\[Valid Duration\].*?ReceivedMessages=(\d+)", text)
    if m:
        result["messages"] = int(m.group(1))
    if "p50_us" not in result or "p99_us" not in result:
        raise ToolError(f"cannot read sockperf's percentiles from: {text[-400:]!r}")
    return result


def parse_ucx(out):
    """ucx_perftest's Final line: iterations, 50.0%ile latency, average and
    overall latency (usec, one-way for *_lat tests), bandwidth average and
    overall (MB/s), message rate average and overall (msg/s)."""
    for line in out.splitlines():
        if line.startswith("Final:"):
            f = line.split()[1:]
            if len(f) >= 8:
                try:
                    v = [float(x.replace(",", "")) for x in f[:8]]
                except ValueError:
                    break
                return {"iterations": int(v[0]), "p50_us": v[1], "mean_us": v[2],
                        "overall_us": v[3], "mbytes_per_s": v[5], "msg_rate_avg": v[6],
                        "msg_rate_overall": v[7]}
    raise ToolError(f"no Final line in ucx_perftest's output: {out[-400:]!r}")


def parse_iperf3(out):
    try:
        end = json.loads(out)["end"]
        received = end["sum_received"]
        return {"gbytes_per_s": received["bits_per_second"] / 8e9,
                "sent_gbytes_per_s": end["sum_sent"]["bits_per_second"] / 8e9,
                "seconds": received["seconds"], "bytes": received["bytes"]}
    except (ValueError, KeyError, TypeError) as e:
        raise ToolError(f"cannot read iperf3's JSON ({e}): {out[-300:]!r}")


# ---- The comparison ------------------------------------------------------------

# (test, tool, how to run it). Within a test the tools alternate: each round
# starts with a different one, so no tool always runs first on a cold machine.
def plan(bench):
    return {
        "lat64": [("fdn-perf", lambda: bench.fdn("lat", 64)),
                  ("sockperf", lambda: bench.sockperf_lat(64)),
                  ("ucx tag_lat", lambda: bench.ucx("tag_lat", 64))],
        "bw64": [("fdn-perf", lambda: bench.fdn("bw", 64)),
                 ("ucx tag_bw", lambda: bench.ucx("tag_bw", 64))],
        "bw1m": [("fdn-perf", lambda: bench.fdn("bw", 1 << 20)),
                 ("iperf3", lambda: bench.iperf3())],
    }


# metric row: (label, test, fdn key, peer tool, peer key, target ratio, direction)
# direction "le": Foundation's value <= target x peer's; "ge": >=.
ROWS = [
    ("64 B p50 one-way (us)", "lat64", "p50_us", "sockperf", "p50_us", 1.0, "le"),
    ("64 B p50 one-way (us)", "lat64", "p50_us", "ucx tag_lat", "p50_us", 1.0, "le"),
    ("64 B p99 one-way (us)", "lat64", "p99_us", "sockperf", "p99_us", 1.0, "le"),
    ("64 B messages/s", "bw64", "messages_per_s", "ucx tag_bw", "msg_rate_overall", 10.0, "ge"),
    ("1 MiB GB/s", "bw1m", "gbytes_per_s", "iperf3", "gbytes_per_s", 0.9, "ge"),
]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run_rounds(bench, rounds):
    """results[test][tool] = list of per-round results (None where it failed)."""
    tests = plan(bench)
    results = {t: {tool: [] for tool, _ in runs} for t, runs in tests.items()}
    failures = []
    for r in range(rounds):
        for test, runs in tests.items():
            order = runs[r % len(runs):] + runs[:r % len(runs)]
            for tool, run in order:
                log(f"round {r + 1}/{rounds}: {test}: {tool}")
                try:
                    results[test][tool].append(run())
                except ToolError as e:
                    log(f"  FAILED: {e}")
                    failures.append(f"{test}/{tool}: {e}")
                    results[test][tool].append(None)
    return results, failures


def per_round_pairs(results, row):
    _, test, fkey, peer, pkey, _, _ = row
    pairs = []
    for f, p in zip(results[test]["fdn-perf"], results[test][peer]):
        if f is not None and p is not None and f.get(fkey) and p.get(pkey):
            pairs.append((f[fkey], p[pkey]))
    return pairs


def summarize(results):
    rows = []
    for row in ROWS:
        label, test, fkey, peer, pkey, target, direction = row
        pairs = per_round_pairs(results, row)
        summary = {"metric": label, "peer": peer, "rounds": len(pairs),
                   "target": f"{'<=' if direction == 'le' else '>='} {target:g}x {peer}"}
        if pairs:
            ratio = statistics.median(f / p for f, p in pairs)
            ok = ratio <= target if direction == "le" else ratio >= target
            summary.update(fdn_median=statistics.median(f for f, _ in pairs),
                           peer_median=statistics.median(p for _, p in pairs),
                           ratio_median=ratio, verdict="PASS" if ok else "MISS")
        else:
            summary.update(fdn_median=None, peer_median=None, ratio_median=None,
                           verdict="n/a")
        rows.append(summary)
    return rows


def fmt(v):
    if v is None:
        return "-"
    if v >= 1e5:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.1f}"
    return f"{v:.3f}"


def print_table(rows, args):
    print()
    print(f"Foundation vs peers over loopback TCP: {args.rounds} round(s) of {args.duration:g} s, "
          f"server on CPU {args.server_cpu}, client on CPU {args.client_cpu}; medians; "
          "ratio = median over rounds of Foundation / peer")
    head = ("metric", "Foundation", "peer", "peer median", "ratio", "target", "verdict")
    lines = [(r["metric"], fmt(r["fdn_median"]), r["peer"], fmt(r["peer_median"]),
              "-" if r["ratio_median"] is None else f"{r['ratio_median']:.3f}",
              r["target"], r["verdict"]) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    for line in [head, tuple("-" * w for w in widths)] + lines:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())


def find_fdn_perf():
    """The newest fdn-perf in a build directory of this repository, else PATH."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = []
    for entry in os.listdir(root):
        path = os.path.join(root, entry, "tools", "fdn-perf")
        if entry.startswith("build") and os.access(path, os.X_OK):
            found.append((os.path.getmtime(path), path))
    if found:
        return max(found)[1]
    return shutil.which("fdn-perf")


def check_tools(args):
    missing = [t for t in ("taskset", "sockperf", "ucx_perftest", "iperf3") if not shutil.which(t)]
    if not args.fdn_perf or not os.access(args.fdn_perf, os.X_OK):
        missing.append("fdn-perf (build it, or pass --fdn-perf PATH)")
    return missing


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fdn-perf", help="path to fdn-perf (default: newest build*/tools/fdn-perf)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    p.add_argument("--quick", action="store_true", help="CI smoke: 1 round of 1 s runs")
    p.add_argument("--server-cpu", type=int, default=1)
    p.add_argument("--client-cpu", type=int, default=0)
    p.add_argument("--fdn-args", default="",
                   help="extra fdn-perf client options, e.g. \"--inflight 16M\" (default none: "
                        "the library's defaults are what is compared)")
    p.add_argument("--json", metavar="OUT", help="write raw results and medians to OUT")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 1.0
    if args.rounds < 1 or args.duration <= 0:
        p.error("--rounds must be >= 1 and --duration > 0")
    args.fdn_perf = args.fdn_perf or find_fdn_perf()
    return args


def main():
    args = parse_args()
    missing = check_tools(args)
    if missing:
        log("missing: " + ", ".join(missing) + " (scripts/deps.sh --bench-peers installs the peers)")
        return 1
    log(f"fdn-perf: {args.fdn_perf}")
    with tempfile.TemporaryDirectory(prefix="fdn-compare-") as workdir:
        bench = Bench(args, workdir)
        try:
            results, failures = run_rounds(bench, args.rounds)
        except KeyboardInterrupt:
            log("interrupted")
            return 1
    rows = summarize(results)
    print_table(rows, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": {k: v for k, v in vars(args).items()}, "results": results,
                       "summary": rows, "failures": failures}, f, indent=2)
    if failures:
        print(f"\n{len(failures)} run(s) failed:", *failures, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

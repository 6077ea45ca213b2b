#!/usr/bin/env python3
"""Foundation beside its peers, message size by message size, in one run.

For each message size (8 B to 4 MiB by default) and each round, every tool
runs once, round-robin (each round starts with a different tool), so a slow
phase of the shared machine hits all tools alike. Server on --server-cpu,
client on --client-cpu: fdn-perf, zmq_perf and ucx_perftest pin themselves
(--cpu / -c), sockperf and iperf3 run under taskset.

Latency (ping-pong; one-way = round trip / 2, microseconds, p50 and p99):
  fdn-tcp    fdn-perf lat --transport tcp
  fdn-shm    fdn-perf lat --transport shm (absent while fdn-perf says "not
             built yet" and exits 2: no number is ever made up)
  ucx-posix  ucx_perftest -t tag_lat, UCX_TLS=posix,cma,self (--ucx-shm-tls)
  ucx-tcp    ucx_perftest -t tag_lat, UCX_TLS=tcp,self, UCX_NET_DEVICES=lo
  sockperf   sockperf ping-pong --tcp (14 B to 1 MiB - 1: its limits)
  zmq-tcp    bench/peers/zmq_perf lat, PAIR over tcp://127.0.0.1
  zmq-ipc    bench/peers/zmq_perf lat, PAIR over ipc:// (a unix socket)
  floor      fdn-bench BM_cacheline_pingpong: one cache line handed between
             the two cores (the physical floor; sizes up to 64 B)
  ring-floor fdn-bench BM_cacheline_ring_pingpong/lines:256: the floor with
             each message in a fresh line, as any ring moves data
  box-floor  fdn-bench BM_cacheline_ring_pingpong/lines:1: the floor with
             one line per direction, reused, as the express box moves data
  shm-ring   fdn-bench BM_shm_ring_pingpong/bytes:40: transport/shm's rings
             alone, with an 8 B message's record (8 B only)
  shm-box    fdn-bench BM_shm_box_pingpong/bytes:40: the same through
             transport/shm's express boxes (8 B only)
  copy-floor fdn-bench BM_copy_pingpong/bytes:SIZE: the copies of fdn-shm's
             round trip alone (the echo into shared memory and out of it;
             512 B to 4 MiB)
Bandwidth (one-way streaming; GB/s of payload and messages/s):
  fdn-tcp, fdn-shm, ucx-posix (tag_bw), ucx-tcp (tag_bw), sockperf
  (throughput, below 1 MiB), iperf3 (one stream, sizes from 64 KiB; writes
  of min(size, 1 MiB)), zmq-tcp, zmq-ipc.

The printed legend says what each tool does with the payload; run with
--list to see it without measuring. Ratios are Foundation / peer within the
same transport family (fdn-tcp against the TCP peers, fdn-shm against the
shared-memory ones), the median over rounds of per-round ratios.

  bench/compare.py                          # 3 rounds of 2 s, every size
  bench/compare.py --sizes 8,64,1M --rounds 5 --duration 5 --json out.json
  bench/compare.py --tiny                   # CI smoke: 1 round, 2 sizes, < 1 min
  bench/compare.py --plot-dir docs/img --markdown table.md

Exit status: 0 when every tool that is present ran (whatever the timings),
1 when a run failed or printed what cannot be read, 2 for bad arguments.
Timings are never pass/fail (the targets section is information).

Standard library only.
"""

import argparse
import datetime
import json
import math
import os
import re
import shlex
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
DEFAULT_SIZES = "8,64,512,4K,64K,1M,4M"
TINY_SIZES = "64,1M"
SOCKPERF_MAX = (1 << 20) - 1   # sockperf -m refuses 1 MiB and more
IPERF3_MIN = 64 << 10          # iperf3 only for the bandwidth sizes
IPERF3_MAX_BLOCK = 1 << 20     # iperf3 -l refuses more than 1 MiB
SOCKPERF_MIN = 14              # sockperf -m refuses less (its header)
SOCKPERF_SERVER_MAX = 65507    # sockperf sr's default -m: it drops larger messages
FLOOR_MAX = 64                 # the floor is one cache line
COPY_FLOOR_SIZES = (512, 4 << 10, 64 << 10, 1 << 20, 4 << 20)  # as fdn_bench.cc registers
COORDINATION_MAX = 1 << 20     # fdn channel 'coordination': largest message
UCX_PERCENTILE_WINDOW = 2048   # ucx_perftest's TIMING_QUEUE_SIZE


class ToolError(Exception):
    """A tool did not run, failed, or printed what we cannot read."""


class Absent(Exception):
    """A tool that cannot take part in this run (not installed, not built,
    or not for this size). Its rows say so; it is not a failure."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- Processes ---------------------------------------------------------------


def free_port():
    """A TCP port that was free a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def tcp_listening(port):
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
    if proc is None or proc.poll() is not None:
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
    awaited until ready, always stopped on exit. ready is either a TCP port
    (ready when it listens) or a regex matched against the server's output
    (its first group, if any, is the address it announces)."""

    def __init__(self, argv, log_path, port=None, announce=None, env=None):
        self.argv, self.log_path, self.port, self.env = argv, log_path, port, env
        self.announce = re.compile(announce) if announce else None
        self.proc = None
        self.address = None

    def __enter__(self):
        with open(self.log_path, "w") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.wait_ready()
        except BaseException:
            stop_process(self.proc)   # __exit__ does not run when __enter__ fails
            raise
        return self

    def output(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_ready(self):
        deadline = time.monotonic() + 15
        while True:
            if self.port is not None and tcp_listening(self.port):
                return
            if self.announce:
                m = self.announce.search(self.output())
                if m:
                    self.address = m.group(1) if m.groups() else None
                    return
            if self.proc.poll() is not None:
                raise ToolError(f"server exited with {self.proc.returncode}: "
                                f"{shlex.join(self.argv)}\n{tail(self.output())}",
                                self.proc.returncode, self.output())
            if time.monotonic() > deadline:
                raise ToolError(f"server not ready after 15 s: {shlex.join(self.argv)}")
            time.sleep(0.02)

    def __exit__(self, *exc):
        stop_process(self.proc)
        return False


def tail(text, lines=4):
    return "\n".join(text.strip().splitlines()[-lines:])


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
        raise ToolError(f"timed out after {timeout_s:.0f} s: {shlex.join(argv)}")
    finally:
        stop_process(proc, signal.SIGTERM)
    if proc.returncode != 0:
        raise ToolError(f"exit {proc.returncode}: {shlex.join(argv)}\n{tail(err or out)}",
                        proc.returncode, (err or "") + (out or ""))
    return out


def last_json_line(out, tool):
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    raise ToolError(f"{tool} printed no JSON: {out[-300:]!r}")


# ---- Parsers -----------------------------------------------------------------


def parse_sockperf_pp(out):
    """sockperf's ping-pong summary: one-way latency (half round trip), usec."""
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


def parse_sockperf_tp(out, size):
    """sockperf's throughput summary: the sender's message rate."""
    text = ANSI.sub("", out)
    m = re.search(r"Message Rate is\s+([\d.]+)\s*\[msg/sec\]", text)
    if not m:
        raise ToolError(f"cannot read sockperf's message rate from: {text[-400:]!r}")
    rate = float(m.group(1))
    return {"messages_per_s": rate, "gbytes_per_s": rate * size / 1e9}


def parse_ucx(out):
    """ucx_perftest's Final line: iterations, the percentile asked for with
    -R, average and overall latency (usec, one-way for *_lat tests),
    bandwidth average and overall (MB/s), message rate average and overall."""
    for line in out.splitlines():
        if line.startswith("Final:"):
            f = line.split()[1:]
            if len(f) >= 8:
                try:
                    v = [float(x.replace(",", "")) for x in f[:8]]
                except ValueError:
                    break
                return {"iterations": int(v[0]), "percentile_us": v[1], "mean_us": v[2],
                        "overall_us": v[3], "mbytes_per_s": v[5], "msg_rate_avg": v[6],
                        "messages_per_s": v[7]}
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


# ---- Tools -------------------------------------------------------------------


def warmup_for(size, tiny):
    """Round trips before measuring: enough to settle, few enough that a
    4 MiB ping-pong does not spend longer warming up than measuring."""
    if tiny:
        return 200 if size <= (64 << 10) else 20
    if size <= (4 << 10):
        return 10000
    if size <= (64 << 10):
        return 2000
    return 100


class Tool:
    """One column of the comparison. kind is 'lat' or 'bw'; family is the
    transport family its ratios are taken within ('tcp' or 'shm')."""
    name = kind = family = None
    payload = ""
    fdn = False

    def __init__(self, ctx):
        self.ctx = ctx
        self.absent = None          # reason, once known

    def check(self):
        """The reason this tool cannot run at all, or None."""
        return None

    def size_reason(self, size):
        """The reason this tool does not run at this size, or None."""
        return None

    def run(self, size):
        raise NotImplementedError


def program_missing(path, hint):
    if path and os.access(path, os.X_OK):
        return None
    return f"not installed ({hint})"


class Context:
    """What every tool needs: options, a scratch directory, timeouts."""

    def __init__(self, args, workdir):
        self.args = args
        self.workdir = workdir
        self.secret = os.path.join(workdir, "cluster.secret")
        self.serial = 0
        self.ucx_rates = {}

    def unique(self, stem):
        self.serial += 1
        return os.path.join(self.workdir, f"{stem}-{self.serial}")

    def log_path(self, name):
        return self.unique(name.replace("/", "-")) + ".log"

    @property
    def duration(self):
        return self.args.duration

    @property
    def whole_seconds(self):
        """sockperf -t and iperf3 -t take whole seconds."""
        return max(1, round(self.args.duration))

    def timeout(self, seconds=None):
        return 4 * (seconds or self.args.duration) + 60


# -- Foundation --

class FdnPerf(Tool):
    fdn = True
    PAYLOAD = {
        "tcp": ("Foundation node on each side (authenticated handshake, channel framing, "
                "credits); {op}: the message is a pooled buffer sent by reference (no user-space "
                "copy), framed and written with io_uring SENDMSG (one kernel copy each way on "
                "loopback); the receiver reads into provided buffers and core copies what it "
                "keeps"),
        "shm": ("Foundation node on each side over the shm transport; {op}: the message is "
                "built with fdn_peer_msg_alloc; from 1 KiB (the node's lend_min) it is in the "
                "connection's shared pool and crosses by reference, no copy at all (a 16-byte "
                "REF record beside the frame header in the ring; the receiver's handler gets "
                "the sender's buffer read-only and gives it back with a RELEASE record); below "
                "1 KiB it is copied into the ring and out of it (two user-space copies); no "
                "system call while both sides are busy. bw "
                "without --verify: the server never reads the payload; lat: the echo is the "
                "server's copy (transport/shm.c)"),
    }

    def __init__(self, ctx, kind, transport):
        super().__init__(ctx)
        self.kind, self.family, self.transport = kind, transport, transport
        self.name = f"fdn-{transport}"
        op = ("channel 'coordination' ('perf' above 1 MiB, coordination's largest message: "
              "as urgent, sized like data), ping-pong" if kind == "lat"
              else "channel 'data', streaming")
        self.payload = self.PAYLOAD[transport].format(op=op)

    def check(self):
        return program_missing(self.ctx.args.fdn_perf, "build fdn-perf, or pass --fdn-perf")

    def listen_address(self):
        if self.transport == "tcp":
            return f"tcp://{HOST}:0"
        return self.ctx.args.shm_listen.format(path=self.ctx.unique("fdn-shm") + ".sock")

    def run(self, size):
        a = self.ctx.args
        mode = self.kind
        server = [a.fdn_perf, "server", "--transport", self.transport, "--listen",
                  self.listen_address(), "--cpu", str(a.server_cpu),
                  "--secret-file", self.ctx.secret]
        try:
            with Server(server, self.ctx.log_path(self.name),
                        announce=r"listening on (\S+)") as srv:
                client = [a.fdn_perf, mode, "--transport", self.transport, "--connect",
                          srv.address, "--cpu", str(a.client_cpu), "--secret-file",
                          self.ctx.secret, "--size", str(size), "--duration",
                          f"{self.ctx.duration:g}", "--json"]
                if mode == "lat":
                    client += ["--warmup", str(warmup_for(size, a.tiny))]
                    if size > COORDINATION_MAX:
                        client += ["--channel", "perf"]
                client += a.fdn_args.split()
                out = run_client(client, self.ctx.timeout())
        except ToolError as e:
            # fdn-perf's documented "not built yet": exit status 2 (usage)
            # with that sentence. Only this turns into an absent row.
            status = e.args[1] if len(e.args) > 1 else None
            text = e.args[2] if len(e.args) > 2 else ""
            if status == 2 and "not built yet" in text:
                line = next((l for l in text.splitlines() if "not built yet" in l), text)
                raise Absent(f"fdn-perf --transport {self.transport} exits 2: {line.strip()}")
            raise
        result = last_json_line(out, "fdn-perf")
        result["command"] = shlex.join(client)
        return result


# -- ucx_perftest --

class UcxPerftest(Tool):
    def __init__(self, ctx, kind, family):
        super().__init__(ctx)
        self.kind, self.family = kind, family
        self.test = "tag_lat" if kind == "lat" else "tag_bw"
        self.name = "ucx-posix" if family == "shm" else "ucx-tcp"
        a = ctx.args
        if family == "shm":
            self.env_vars = {"UCX_TLS": a.ucx_shm_tls}
            tls = a.ucx_shm_tls.split(",")
            large = ("above ~6 KiB, rendezvous: the receiver reads the sender's buffer "
                     "with CMA (process_vm_readv, one kernel copy, no FIFO)"
                     if "cma" in tls else
                     "no zero-copy transport enabled: large messages are fragmented "
                     "through the FIFO as well")
            self.payload = (f"UCP tag-matching {self.test}, UCX_TLS={a.ucx_shm_tls}: up to 92 B "
                            "eager short (inline in a posix shm FIFO element); up to ~6-8 KiB "
                            f"eager copy-in/copy-out through the FIFO; {large}. "
                            "Busy-polling; receive buffers preposted")
        else:
            self.env_vars = {"UCX_TLS": "tcp,self", "UCX_NET_DEVICES": "lo"}
            self.payload = (f"UCP tag-matching {self.test} over UCT tcp on lo: eager bcopy "
                            "into the socket (one kernel copy each way); large messages by "
                            "rendezvous, the data sent as zcopy put over the same sockets. "
                            "Busy-polling")
        if kind == "lat":
            self.payload += (f"; p50 and p99 are two runs (-R 50, -R 99), each percentile over "
                             f"ucx_perftest's last {UCX_PERCENTILE_WINDOW} round trips")

    def check(self):
        return program_missing(shutil.which("ucx_perftest"), "apt-get install ucx-utils")

    @property
    def env(self):
        return dict(os.environ, **self.env_vars)

    def env_text(self):
        return " ".join(f"{k}={v}" for k, v in self.env_vars.items())

    def once(self, size, iters, rank=None):
        a = self.ctx.args
        port = free_port()
        server = ["ucx_perftest", "-p", str(port), "-c", str(a.server_cpu)]
        client = ["ucx_perftest", HOST, "-p", str(port), "-c", str(a.client_cpu), "-t",
                  self.test, "-s", str(size), "-n", str(iters),
                  "-w", str(min(warmup_for(size, a.tiny), max(10, iters // 10)))]
        if rank is not None:
            client += ["-R", str(rank)]
        with Server(server, self.ctx.log_path(self.name), port=port, env=self.env):
            out = run_client(client, self.ctx.timeout(), env=self.env)
        result = parse_ucx(out)
        result["command"] = self.env_text() + " " + shlex.join(client)
        return result

    def iterations(self, size, share):
        """ucx_perftest runs a count, not a duration: the count that lasts
        share x --duration at the rate this test last ran at this size (a
        short calibration run the first time)."""
        key = (self.name, self.test, size)
        if key not in self.ctx.ucx_rates:
            big = size > (64 << 10)
            probe = (200 if big else 5000) if self.kind == "lat" else (500 if big else 20000)
            if self.ctx.args.tiny:
                return probe
            result = self.once(size, probe)
            self.ctx.ucx_rates[key] = result["messages_per_s"]
            log(f"    calibrated {self.name} {self.test} -s {size}: "
                f"{result['messages_per_s']:,.0f} msg/s")
        return max(100, int(self.ctx.ucx_rates[key] * self.ctx.duration * share))

    def remember_rate(self, size, result):
        self.ctx.ucx_rates[(self.name, self.test, size)] = result["messages_per_s"]

    def run(self, size):
        if self.kind == "lat":
            n = self.iterations(size, 0.5)
            r50 = self.once(size, n, 50)
            r99 = self.once(size, n, 99)
            self.remember_rate(size, r50)
            return {"p50_us": r50["percentile_us"], "p99_us": r99["percentile_us"],
                    "mean_us": r50["mean_us"], "messages": r50["iterations"],
                    "command": r50["command"] + "   (and -R 99)"}
        n = self.iterations(size, 1.0)
        r = self.once(size, n)
        self.remember_rate(size, r)
        return {"messages_per_s": r["messages_per_s"],
                "gbytes_per_s": r["messages_per_s"] * size / 1e9,
                "messages": r["iterations"], "command": r["command"]}


# -- sockperf --

class Sockperf(Tool):
    name = "sockperf"
    family = "tcp"

    def __init__(self, ctx, kind):
        super().__init__(ctx)
        self.kind = kind
        if kind == "lat":
            self.payload = ("kernel TCP, blocking recv: send() and recv() copy the payload "
                            "(one kernel copy each way); server echoes; sockperf's own "
                            "default message rate (as BENCHMARKS.md names it)")
        else:
            self.payload = ("kernel TCP, send() as fast as it goes (one kernel copy); the rate "
                            "is what the sender handed to send(), the receiver only drains")

    def check(self):
        return (program_missing(shutil.which("sockperf"), "apt-get install sockperf")
                or program_missing(shutil.which("taskset"), "apt-get install util-linux"))

    def size_reason(self, size):
        if size > SOCKPERF_MAX:
            return "sockperf -m takes at most 1 MiB - 1"
        if size < SOCKPERF_MIN:
            return f"sockperf -m takes at least {SOCKPERF_MIN} B (its header)"
        return None

    def run(self, size):
        a = self.ctx.args
        port = free_port()
        server = pinned(a.server_cpu, ["sockperf", "sr", "--tcp", "-i", HOST, "-p", str(port),
                                       "-m", str(max(SOCKPERF_SERVER_MAX, size))])
        sub = "pp" if self.kind == "lat" else "tp"
        client = pinned(a.client_cpu, ["sockperf", sub, "--tcp", "-i", HOST, "-p", str(port),
                                       "-t", str(self.ctx.whole_seconds), "-m", str(size)])
        with Server(server, self.ctx.log_path("sockperf"), port=port):
            out = run_client(client, self.ctx.timeout(self.ctx.whole_seconds))
        result = parse_sockperf_pp(out) if self.kind == "lat" else parse_sockperf_tp(out, size)
        result["command"] = shlex.join(client)
        return result


# -- iperf3 --

class Iperf3(Tool):
    name = "iperf3"
    kind = "bw"
    family = "tcp"
    payload = ("one TCP stream, write() of -l bytes (one kernel copy each way), no message "
               "boundaries; GB/s is what the receiver got; msg/s = that / size")

    def check(self):
        return (program_missing(shutil.which("iperf3"), "apt-get install iperf3")
                or program_missing(shutil.which("taskset"), "apt-get install util-linux"))

    def size_reason(self, size):
        if size < IPERF3_MIN:
            return "iperf3 runs at the bandwidth sizes (64 KiB and up)"
        return None

    def run(self, size):
        a = self.ctx.args
        port = free_port()
        block = min(size, IPERF3_MAX_BLOCK)
        server = pinned(a.server_cpu, ["iperf3", "-s", "-1", "-p", str(port)])
        client = pinned(a.client_cpu, ["iperf3", "-c", HOST, "-p", str(port), "-t",
                                       str(self.ctx.whole_seconds), "-l", str(block), "-J"])
        with Server(server, self.ctx.log_path("iperf3"), port=port):
            out = run_client(client, self.ctx.timeout(self.ctx.whole_seconds))
        result = parse_iperf3(out)
        result["messages_per_s"] = result["gbytes_per_s"] * 1e9 / size
        result["write_size"] = block
        result["command"] = shlex.join(client)
        return result


# -- libzmq harness --

class ZmqPerf(Tool):
    def __init__(self, ctx, kind, family):
        super().__init__(ctx)
        self.kind, self.family = kind, family
        self.name = "zmq-ipc" if family == "shm" else "zmq-tcp"
        via = "a unix socket (ipc://)" if family == "shm" else "TCP on 127.0.0.1"
        self.payload = (f"libzmq PAIR over {via}: the client's buffer is handed over without "
                        "a copy (zmq_msg_init_data), libzmq's I/O thread writes it to the "
                        "socket (one kernel copy) and the peer's I/O thread reads it into its "
                        "own buffer (one kernel copy), handed to the application without a "
                        "copy; application and I/O thread share each side's CPU")
        if kind == "lat":
            self.payload += "; the server sends the received message back as it is"

    def check(self):
        return program_missing(self.ctx.args.zmq_perf,
                               "build bench/peers/zmq_perf (needs libzmq3-dev), or pass "
                               "--zmq-perf")

    def run(self, size):
        a = self.ctx.args
        if self.family == "shm":
            listen = "ipc://" + self.ctx.unique("zmq") + ".sock"
        else:
            listen = f"tcp://{HOST}:*"
        server = [a.zmq_perf, "server", "--listen", listen, "--cpu", str(a.server_cpu)]
        with Server(server, self.ctx.log_path(self.name),
                    announce=r"listening on (\S+)") as srv:
            client = [a.zmq_perf, self.kind, "--connect", srv.address, "--cpu",
                      str(a.client_cpu), "--size", str(size), "--duration",
                      f"{self.ctx.duration:g}", "--json"]
            if self.kind == "lat":
                client += ["--warmup", str(warmup_for(size, a.tiny))]
            out = run_client(client, self.ctx.timeout())
        result = last_json_line(out, "zmq_perf")
        result["command"] = shlex.join(client)
        return result


# -- the physical floor, and what a ring costs above it --

class BenchFloor(Tool):
    """A one-way time from an fdn-bench ping-pong between two pinned threads:
    the mean (fdn-bench keeps no percentiles)."""
    kind = "lat"
    family = "shm"
    benchmark = None   # the fdn-bench benchmark instance, e.g. "BM_x/arg:1"

    def check(self):
        return program_missing(self.ctx.args.fdn_bench,
                               "build fdn-bench (Google Benchmark), or pass --fdn-bench")

    def benchmark_at(self, size):
        """The benchmark instance that measures SIZE."""
        return self.benchmark

    def run(self, size):
        a = self.ctx.args
        min_time = 0.05 if a.tiny else max(0.1, self.ctx.duration / 2)
        argv = [a.fdn_bench, f"--benchmark_filter=^{self.benchmark_at(size)}(/real_time)?$",
                f"--benchmark_min_time={min_time:g}", "--benchmark_format=json"]
        out = run_client(argv, self.ctx.timeout())
        try:
            entries = json.loads(out)["benchmarks"]
            entry = next(e for e in entries if e.get("run_type", "iteration") == "iteration")
        except (ValueError, KeyError, StopIteration) as e:
            raise ToolError(f"cannot read fdn-bench's JSON ({e}): {out[-300:]!r}")
        if entry.get("error_occurred") or entry.get("skipped"):
            raise Absent("fdn-bench skipped it: " + str(entry.get("error_message")
                                                        or entry.get("skip_message")))
        one_way = entry["one_way_ns"] / 1e3
        return {"p50_us": one_way, "p99_us": None, "mean_us": one_way,
                "command": shlex.join(argv)}


class CachelineFloor(BenchFloor):
    name = "floor"
    benchmark = "BM_cacheline_pingpong"
    payload = ("fdn-bench BM_cacheline_pingpong: one 64-byte cache line handed between two "
               "pinned threads, no payload copied; the mean one-way time (it has no "
               "percentiles); the size does not apply")

    def size_reason(self, size):
        if size > FLOOR_MAX:
            return "the floor is one cache line (sizes up to 64 B)"
        return None


class RingFloor(CachelineFloor):
    name = "ring-floor"
    benchmark = "BM_cacheline_ring_pingpong/lines:256"
    payload = ("fdn-bench BM_cacheline_ring_pingpong/lines:256: the floor with each message "
               "in the next of 256 lines per direction, as a ring moves data; no payload "
               "copied; mean one-way time; the size does not apply")


class BoxFloor(CachelineFloor):
    name = "box-floor"
    benchmark = "BM_cacheline_ring_pingpong/lines:1"
    payload = ("fdn-bench BM_cacheline_ring_pingpong/lines:1: the floor with one line per "
               "direction, reused, as the express box moves data; no payload copied; mean "
               "one-way time; the size does not apply")


class ShmRing(BenchFloor):
    name = "shm-ring"
    benchmark = "BM_shm_ring_pingpong/bytes:40"
    payload = ("fdn-bench BM_shm_ring_pingpong/bytes:40: transport/shm's two rings alone, no "
               "Foundation above them: a 40-byte record (an 8-byte message and its frame "
               "header) written, read and copied out at each end; mean one-way time")

    def size_reason(self, size):
        if size != 8:
            return "the ring alone is measured with an 8-byte message's record only"
        return None


class ShmBox(ShmRing):
    name = "shm-box"
    benchmark = "BM_shm_box_pingpong/bytes:40"
    payload = ("fdn-bench BM_shm_box_pingpong/bytes:40: the same 40 bytes through "
               "transport/shm's express boxes (one per direction), no Foundation above them; "
               "mean one-way time")


class CopyFloor(BenchFloor):
    name = "copy-floor"
    payload = ("fdn-bench BM_copy_pingpong/bytes:SIZE: the copies of fdn-shm's round trip "
               "from lend_min up and nothing else, between two pinned threads: the ping is a "
               "number in a cache line (fdn-shm's crosses by reference), the echo is copied "
               "into a shared buffer by the ponger and out of it by the pinger; buffers at "
               "the same page offset, memcpy's best case; mean one-way time")

    def benchmark_at(self, size):
        return f"BM_copy_pingpong/bytes:{size}"

    def size_reason(self, size):
        if size not in COPY_FLOOR_SIZES:
            return ("fdn-bench registers the copy floor at " +
                    ", ".join(human_size(s) for s in COPY_FLOOR_SIZES) + " only")
        return None


def make_tools(ctx):
    lat = [FdnPerf(ctx, "lat", "tcp"), FdnPerf(ctx, "lat", "shm"),
           UcxPerftest(ctx, "lat", "shm"), UcxPerftest(ctx, "lat", "tcp"),
           Sockperf(ctx, "lat"), ZmqPerf(ctx, "lat", "tcp"), ZmqPerf(ctx, "lat", "shm"),
           CachelineFloor(ctx), RingFloor(ctx), BoxFloor(ctx), ShmRing(ctx), ShmBox(ctx),
           CopyFloor(ctx)]
    bw = [FdnPerf(ctx, "bw", "tcp"), FdnPerf(ctx, "bw", "shm"),
          UcxPerftest(ctx, "bw", "shm"), UcxPerftest(ctx, "bw", "tcp"),
          Sockperf(ctx, "bw"), Iperf3(ctx), ZmqPerf(ctx, "bw", "tcp"), ZmqPerf(ctx, "bw", "shm")]
    wanted = ctx.args.tools
    pick = (lambda t: True) if not wanted else (lambda t: t.name in wanted)
    return {"lat": [t for t in lat if pick(t)], "bw": [t for t in bw if pick(t)]}


TOOL_NAMES = ["fdn-tcp", "fdn-shm", "ucx-posix", "ucx-tcp", "sockperf", "iperf3", "zmq-tcp",
              "zmq-ipc", "floor", "ring-floor", "box-floor", "shm-ring", "shm-box",
              "copy-floor"]


# ---- The rounds ----------------------------------------------------------------


def run_rounds(ctx, tools, sizes, rounds):
    """results[kind][size][tool] = per-round results (None: failed or absent).
    absent[kind][tool] = why a tool took no part (everywhere, or per size)."""
    results = {k: {s: {t.name: [] for t in ts} for s in sizes} for k, ts in tools.items()}
    absent = {k: {} for k in tools}
    failures = []
    for kind, ts in tools.items():
        for t in ts:
            reason = t.check()
            if reason:
                t.absent = reason
                absent[kind][t.name] = reason
    total = rounds * sum(len(ts) for ts in tools.values()) * len(sizes)
    done = 0
    for r in range(rounds):
        for size in sizes:
            for kind in ("lat", "bw"):
                ts = tools[kind]
                if not ts:
                    continue
                order = ts[r % len(ts):] + ts[:r % len(ts)]
                for t in order:
                    done += 1
                    cell = results[kind][size][t.name]
                    if t.absent:
                        cell.append(None)
                        continue
                    why = t.size_reason(size)
                    if why:
                        absent[kind].setdefault(f"{t.name}@{size}", why)
                        cell.append(None)
                        continue
                    log(f"[{done}/{total}] round {r + 1}/{rounds}, {human_size(size)}, "
                        f"{kind}: {t.name}")
                    try:
                        cell.append(t.run(size))
                    except Absent as e:
                        t.absent = str(e)
                        absent[kind][t.name] = str(e)
                        log(f"    absent: {e}")
                        cell.append(None)
                    except ToolError as e:
                        msg = e.args[0]
                        log(f"    FAILED: {msg}")
                        failures.append(f"{kind} {human_size(size)} {t.name}: {msg}")
                        cell.append(None)
    return results, absent, failures


# ---- Summaries -----------------------------------------------------------------

METRICS = {"lat": ("p50_us", "p99_us"), "bw": ("gbytes_per_s", "messages_per_s")}


def medians(results):
    """med[kind][size][tool][metric] = median over rounds, or None."""
    med = {}
    for kind, by_size in results.items():
        med[kind] = {}
        for size, by_tool in by_size.items():
            med[kind][size] = {}
            for tool, runs in by_tool.items():
                m = {}
                for key in METRICS[kind]:
                    vals = [r[key] for r in runs if r and r.get(key) is not None]
                    m[key] = statistics.median(vals) if vals else None
                m["rounds"] = sum(1 for r in runs if r)
                med[kind][size][tool] = m
    return med


def family_of(tools, kind, name):
    return next(t.family for t in tools[kind] if t.name == name)


def ratios(results, tools):
    """rat[kind][size][peer][metric] = median over rounds of fdn / peer, fdn
    being fdn-perf on the peer's transport family; None when either side
    has no value in any round."""
    rat = {}
    for kind, by_size in results.items():
        rat[kind] = {}
        for size, by_tool in by_size.items():
            rat[kind][size] = {}
            for peer, runs in by_tool.items():
                if peer.startswith("fdn-"):
                    continue
                fdn = f"fdn-{family_of(tools, kind, peer)}"
                own = by_tool.get(fdn, [])
                rat[kind][size][peer] = {"fdn": fdn}
                for key in METRICS[kind]:
                    per_round = [f[key] / p[key] for f, p in zip(own, runs)
                                 if f and p and f.get(key) and p.get(key)]
                    rat[kind][size][peer][key] = (statistics.median(per_round)
                                                  if per_round else None)
    return rat


# Issue targets, informational (BENCHMARKS.md: timings are never pass/fail).
# (label, kind, size, peer, metric, bound, direction)
TARGETS = [
    ("8 B p50 <= 0.5x ucx posix tag_lat", "lat", 8, "ucx-posix", "p50_us", 0.5, "le"),
    ("8 B p50 <= 4x the cache-line floor", "lat", 8, "floor", "p50_us", 4.0, "le"),
    ("64 B msg/s >= 2x ucx posix tag_bw", "bw", 64, "ucx-posix", "messages_per_s", 2.0, "ge"),
    ("1 MiB GB/s >= 1.5x ucx posix", "bw", 1 << 20, "ucx-posix", "gbytes_per_s", 1.5, "ge"),
    ("64 B p50 <= 1x sockperf", "lat", 64, "sockperf", "p50_us", 1.0, "le"),
    ("64 B p50 <= 1x ucx tcp tag_lat", "lat", 64, "ucx-tcp", "p50_us", 1.0, "le"),
    ("64 B p99 <= 1x sockperf", "lat", 64, "sockperf", "p99_us", 1.0, "le"),
    ("64 B msg/s >= 10x ucx tcp tag_bw", "bw", 64, "ucx-tcp", "messages_per_s", 10.0, "ge"),
    ("1 MiB GB/s >= 0.9x iperf3", "bw", 1 << 20, "iperf3", "gbytes_per_s", 0.9, "ge"),
]


def judge_targets(rat, tools, absent):
    out = []
    for label, kind, size, peer, key, bound, direction in TARGETS:
        if size not in rat.get(kind, {}) or peer not in rat[kind][size]:
            continue
        fdn = f"fdn-{family_of(tools, kind, peer)}"
        # msg/s and GB/s ratios are the same number for one size; iperf3 has
        # no messages, so bandwidth targets read GB/s.
        value = rat[kind][size][peer].get(key if key in METRICS[kind] else "gbytes_per_s")
        if fdn in absent[kind] or peer in absent[kind]:
            verdict = f"{fdn if fdn in absent[kind] else peer} absent"
        elif value is None:
            verdict = "n/a"
        else:
            ok = value <= bound if direction == "le" else value >= bound
            verdict = "met" if ok else "missed"
        out.append({"target": label, "fdn": fdn, "peer": peer, "size": size, "metric": key,
                    "ratio": value, "verdict": verdict})
    return out


# ---- Output --------------------------------------------------------------------


def human_size(n):
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if n >= (1 << shift) and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def parse_size(text):
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)i?[bB]?\s*", text)
    if not m:
        raise ValueError(text)
    shift = {"": 0, "k": 10, "m": 20}[m.group(2).lower()]
    value = int(m.group(1)) << shift
    if not 1 <= value <= (64 << 20):
        raise ValueError(text)
    return value


def num(v, unit=""):
    if v is None:
        return "-"
    if unit == "rate":
        if v >= 1e6:
            return f"{v / 1e6:.2f} M"
        if v >= 1e3:
            return f"{v / 1e3:.1f} K"
        return f"{v:.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def ratio_text(v):
    if v is None:
        return "-"
    return f"{v:.2f}x" if v >= 0.1 else f"{v:.2g}x"


def render(head, rows, markdown):
    """An aligned text table, or a markdown one."""
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    out = []
    for line in [head, tuple("-" * w for w in widths)] + rows:
        out.append("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())
    return "\n".join(out)


def absent_cell(absent, kind, name, size):
    if name in absent[kind]:
        return "absent"
    if f"{name}@{size}" in absent[kind]:
        return "n/a"
    return "-"


def tables(med, rat, absent, tools, sizes, markdown=False):
    """The latency, bandwidth and ratio tables: one row per tool (or pair),
    one column per message size. A list of (title, table)."""
    parts = []
    head = ["tool"] + [human_size(s) for s in sizes]
    lat_tools = [t.name for t in tools["lat"]]
    bw_tools = [t.name for t in tools["bw"]]

    def cells(kind, name, fmt):
        row = [name]
        for s in sizes:
            m = med[kind][s][name]
            first = METRICS[kind][0]
            row.append(absent_cell(absent, kind, name, s) if m[first] is None else fmt(m))
        return row

    if lat_tools:
        rows = [cells("lat", n, lambda m: f"{num(m['p50_us'])} / {num(m['p99_us'])}")
                for n in lat_tools]
        parts.append(("Latency, one-way (round trip / 2): p50 / p99 in microseconds, "
                      "median over rounds", render(head, rows, markdown)))
    if bw_tools:
        rows = [cells("bw", n, lambda m: f"{num(m['gbytes_per_s'])} "
                                        f"({num(m['messages_per_s'], 'rate')}/s)")
                for n in bw_tools]
        parts.append(("Bandwidth, one-way streaming: GB/s of payload (messages/s), "
                      "median over rounds", render(head, rows, markdown)))

    def ratio_rows(kind, names, fmt):
        rows = []
        for name in names:
            if name.startswith("fdn-"):
                continue
            fdn = f"fdn-{family_of(tools, kind, name)}"
            row = [f"{fdn} / {name}"]
            for s in sizes:
                r = rat[kind][s][name]
                if fdn in absent[kind]:
                    row.append(f"{fdn} absent")
                elif name in absent[kind]:
                    row.append("absent")
                elif f"{name}@{s}" in absent[kind]:
                    row.append("n/a")
                else:
                    row.append(fmt(r))
            rows.append(row)
        return rows

    def lat_ratio(r):
        if r["p50_us"] is None:
            return "-"
        if r["p99_us"] is None:
            return ratio_text(r["p50_us"])
        return f"{ratio_text(r['p50_us'])} ({ratio_text(r['p99_us'])})"

    rows = ratio_rows("lat", lat_tools, lat_ratio)
    if rows:
        parts.append(("Latency ratio Foundation / peer, p50 (p99), median of per-round ratios "
                      "(below 1: Foundation is faster)", render(["pair"] + head[1:], rows,
                                                                markdown)))
    rows = ratio_rows("bw", bw_tools, lambda r: ratio_text(r["gbytes_per_s"]))
    if rows:
        parts.append(("Bandwidth ratio Foundation / peer, GB/s, median of per-round ratios "
                      "(above 1: Foundation moves more)", render(["pair"] + head[1:], rows,
                                                                markdown)))
    return parts


def targets_table(judged, markdown=False):
    rows = [(j["target"], f"{j['fdn']} vs {j['peer']}", ratio_text(j["ratio"]), j["verdict"])
            for j in judged]
    return render(["target (issues 3 and 4)", "compared", "ratio", "result"], rows, markdown)


def legend(tools):
    seen, lines = set(), []
    for kind in ("lat", "bw"):
        for t in tools[kind]:
            key = (t.name, kind)
            if key in seen:
                continue
            seen.add(key)
            lines.append(f"  {t.name:<9} {kind:<3}  {t.payload}")
    return "\n".join(lines)


def absent_lines(absent):
    lines = []
    for kind, reasons in absent.items():
        for name, why in reasons.items():
            if "@" not in name:
                lines.append(f"  {name} ({kind}): {why}")
    return lines


def write_markdown(path, parts, judged, absent, args, tools, started):
    with open(path, "w") as f:
        f.write(f"Command: `{args.command_line}`, {started}; server on CPU {args.server_cpu}, "
                f"client on CPU {args.client_cpu}.\n\n")
        for title, table in parts:
            f.write(f"{title}:\n\n{table}\n\n")
        if judged:
            f.write(targets_table(judged, markdown=True) + "\n\n")
        lines = absent_lines(absent)
        if lines:
            f.write("Absent:\n\n" + "\n".join("-" + l[1:] for l in lines) + "\n\n")
        f.write("What each tool does with the payload:\n\n")
        for line in legend(tools).splitlines():
            name, kind, text = line.split(None, 2)
            f.write(f"- **{name}** ({kind}): {text}\n")


# ---- Plots ---------------------------------------------------------------------


def gp_quote(text):
    """A gnuplot double-quoted string (backslash escapes; a newline breaks
    the line in a title)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'



def plot(med, tools, sizes, absent, plot_dir, args, started):
    """Three log-log PNGs with gnuplot: latency, bandwidth and message rate
    against message size. Returns the files written."""
    if not shutil.which("gnuplot"):
        log("--plot-dir: gnuplot is not installed (apt-get install gnuplot-nox); no plots")
        return []
    os.makedirs(plot_dir, exist_ok=True)
    specs = [
        ("compare-latency.png", "lat", "p50_us", "one-way latency p50 (us, RTT/2)",
         "Latency against message size (p50; dashed: p99)", "p99_us"),
        ("compare-bandwidth.png", "bw", "gbytes_per_s", "GB/s of payload",
         "Streaming bandwidth against message size", None),
        ("compare-msgrate.png", "bw", "messages_per_s", "messages/s",
         "Streaming message rate against message size", None),
    ]
    written = []
    subtitle = (f"{args.rounds} round(s) x {args.duration:g} s, medians; loopback, "
                f"CPU {args.server_cpu}/{args.client_cpu}; {started}")
    with tempfile.TemporaryDirectory(prefix="fdn-compare-plot-") as tmp:
        for png, kind, key, ylabel, title, key2 in specs:
            data = os.path.join(tmp, png + ".dat")
            series = []
            with open(data, "w") as f:
                for t in tools[kind]:
                    points = [(s, med[kind][s][t.name][key]) for s in sizes
                              if med[kind][s][t.name][key]]
                    if not points:
                        continue
                    f.write(f"# {t.name}\n")
                    for s, v in points:
                        v2 = med[kind][s][t.name].get(key2) if key2 else None
                        f.write(f"{s} {v} {v2 if v2 else 'NaN'}\n")
                    f.write("\n\n")
                    series.append(t.name)
            if not series:
                continue
            missing = sorted(n for n in absent[kind] if "@" not in n)
            note = f" (absent: {', '.join(missing)})" if missing else ""
            out = os.path.join(plot_dir, png)
            lines = [
                "set terminal pngcairo size 1100,700 font ',11'",
                f"set output {gp_quote(out)}",
                f"set title {gp_quote(title + note + chr(10) + subtitle)} noenhanced",
                "set xlabel 'message size (bytes)'",
                f"set ylabel {gp_quote(ylabel)}",
                "set logscale xy",
                "set xtics (" + ", ".join(f"{gp_quote(human_size(s))} {s}" for s in sizes) + ")",
                f"set xrange [{sizes[0] / 2}:{sizes[-1] * 2}]",
                "set grid xtics ytics mxtics mytics",
                "set key outside right top noenhanced",
                "set datafile missing 'NaN'",
            ]
            plots = []
            for i, name in enumerate(series):
                width = 3 if name.startswith("fdn-") else 1.5
                plots.append(f"{gp_quote(data)} index {i} using 1:2 with linespoints lw {width} "
                             f"lc {i + 1} pt {i + 1} title {gp_quote(name)}")
                if key2:
                    plots.append(f"{gp_quote(data)} index {i} using 1:3 with lines dt 2 "
                                 f"lc {i + 1} notitle")
            lines.append("plot " + ", \\\n     ".join(plots))
            script = os.path.join(tmp, png + ".gp")
            with open(script, "w") as f:
                f.write("\n".join(lines) + "\n")
            proc = subprocess.run(["gnuplot", script], capture_output=True, text=True)
            if proc.returncode != 0:
                log(f"gnuplot failed for {png}: {tail(proc.stderr)}")
                continue
            written.append(out)
    return written


# ---- Command line --------------------------------------------------------------


def find_build_binary(rel):
    """The newest build*/REL of this repository, else None."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = []
    for entry in os.listdir(root):
        path = os.path.join(root, entry, rel)
        if entry.startswith("build") and os.access(path, os.X_OK):
            found.append((os.path.getmtime(path), path))
    return max(found)[1] if found else None


def sibling(path, rel):
    """REL in the same build directory as PATH (a build's tools/fdn-perf)."""
    if not path:
        return None
    candidate = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), rel)
    return candidate if os.access(candidate, os.X_OK) else None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=None,
                   help=f"message sizes, comma-separated, K and M suffixes (default "
                        f"{DEFAULT_SIZES})")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--duration", type=float, default=2.0,
                   help="seconds per measurement (default 2; sockperf and iperf3 round it to "
                        "whole seconds, at least 1)")
    p.add_argument("--tiny", action="store_true",
                   help=f"CI smoke: 1 round of 0.2 s runs at {TINY_SIZES} (well under a minute)")
    p.add_argument("--tools", help="only these tools, comma-separated: " + ",".join(TOOL_NAMES))
    p.add_argument("--server-cpu", type=int, default=1)
    p.add_argument("--client-cpu", type=int, default=0)
    p.add_argument("--fdn-perf", help="fdn-perf (default: newest build*/tools/fdn-perf)")
    p.add_argument("--fdn-bench", help="fdn-bench, for the floor (default: beside fdn-perf)")
    p.add_argument("--zmq-perf", help="zmq_perf (default: beside fdn-perf, "
                                      "build*/bench/zmq_perf)")
    p.add_argument("--fdn-args", default="",
                   help="extra fdn-perf client options (default none: the library's defaults "
                        "are what is compared)")
    p.add_argument("--shm-listen", default="shm://@",
                   help="fdn-perf server --listen for the shm transport (default %(default)s: "
                        "any free abstract unix-socket name; {path} in the value becomes a "
                        "fresh path in a scratch directory); the client connects to the "
                        "address the server announces")
    p.add_argument("--ucx-shm-tls", default="posix,cma,self",
                   help="UCX_TLS for the ucx-posix peer (default %(default)s: posix shared "
                        "memory FIFO, CMA for the zero-copy rendezvous; posix,self leaves "
                        "the FIFO alone)")
    p.add_argument("--json", metavar="FILE", help="write raw results, medians and ratios")
    p.add_argument("--plot-dir", metavar="DIR",
                   help="draw compare-{latency,bandwidth,msgrate}.png there (gnuplot)")
    p.add_argument("--markdown", metavar="FILE", help="also write the tables as markdown")
    p.add_argument("--list", action="store_true",
                   help="print the tools, what each does with the payload, and whether it "
                        "is present; measure nothing")
    args = p.parse_args(argv)
    args.command_line = shlex.join(["bench/compare.py"] + (argv if argv is not None
                                                           else sys.argv[1:]))
    if args.tiny:
        args.rounds, args.duration = 1, 0.2
        args.sizes = args.sizes or TINY_SIZES
    try:
        args.sizes = sorted({parse_size(s) for s in (args.sizes or DEFAULT_SIZES).split(",")})
    except ValueError as e:
        p.error(f"--sizes: cannot read {e} (1 .. 64M, e.g. 8,4K,1M)")
    if args.rounds < 1 or args.duration <= 0:
        p.error("--rounds must be >= 1 and --duration > 0")
    if args.server_cpu == args.client_cpu:
        p.error("--server-cpu and --client-cpu must differ")
    if args.tools:
        args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
        unknown = [t for t in args.tools if t not in TOOL_NAMES]
        if unknown:
            p.error(f"--tools: unknown {', '.join(unknown)} (known: {', '.join(TOOL_NAMES)})")
    args.fdn_perf = args.fdn_perf or find_build_binary("tools/fdn-perf") or \
        shutil.which("fdn-perf")
    args.fdn_bench = args.fdn_bench or sibling(args.fdn_perf, "bench/fdn-bench")
    args.zmq_perf = args.zmq_perf or sibling(args.fdn_perf, "bench/zmq_perf") or \
        find_build_binary("bench/zmq_perf")
    return args


def main(argv=None):
    args = parse_args(argv)
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    with tempfile.TemporaryDirectory(prefix="fdn-compare-") as workdir:
        ctx = Context(args, workdir)
        tools = make_tools(ctx)
        if args.list:
            print(legend(tools))
            for kind in ("lat", "bw"):
                for t in tools[kind]:
                    print(f"  {t.name} ({kind}): {t.check() or 'present'}")
            return 0
        log(f"fdn-perf: {args.fdn_perf}\nzmq_perf: {args.zmq_perf}\nfdn-bench: "
            f"{args.fdn_bench}\nsizes: {', '.join(human_size(s) for s in args.sizes)}; "
            f"{args.rounds} round(s) of {args.duration:g} s")
        try:
            results, absent, failures = run_rounds(ctx, tools, args.sizes, args.rounds)
        except KeyboardInterrupt:
            log("interrupted")
            return 1

    med = medians(results)
    rat = ratios(results, tools)
    judged = judge_targets(rat, tools, absent)
    parts = tables(med, rat, absent, tools, args.sizes)

    plots = plot(med, tools, args.sizes, absent, args.plot_dir, args, started) \
        if args.plot_dir else []
    if args.markdown:
        write_markdown(args.markdown, tables(med, rat, absent, tools, args.sizes, True),
                       judged, absent, args, tools, started)
    if args.json:
        config = {k: v for k, v in vars(args).items()}
        doc = {"started": started, "config": config,
               "tools": {f"{t.name}/{k}": {"name": t.name, "kind": k, "family": t.family,
                                           "payload": t.payload, "absent": t.absent}
                         for k, ts in tools.items() for t in ts},
               "sizes": args.sizes,
               "results": {k: {str(s): v for s, v in by.items()} for k, by in results.items()},
               "medians": {k: {str(s): v for s, v in by.items()} for k, by in med.items()},
               "ratios": {k: {str(s): v for s, v in by.items()} for k, by in rat.items()},
               "absent": absent, "targets": judged, "failures": failures, "plots": plots}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)

    # The tables last (BENCHMARKS.md): the legend and absences first.
    print(f"\nFoundation beside its peers ({args.command_line}; {started}): "
          f"{args.rounds} round(s) of {args.duration:g} s, server on CPU {args.server_cpu}, "
          f"client on CPU {args.client_cpu}, loopback")
    print("\nWhat each tool does with the payload:")
    print(legend(tools))
    lines = absent_lines(absent)
    if lines:
        print("\nAbsent (no numbers are shown for these):")
        print("\n".join(lines))
    if failures:
        print(f"\n{len(failures)} run(s) failed:")
        print("\n".join("  " + f.splitlines()[0] for f in failures))
    if judged:
        print("\nTargets (information, not a test):")
        print(targets_table(judged))
    for title, table in parts:
        print(f"\n{title}:")
        print(table)
    if plots:
        print("\nplots: " + ", ".join(plots))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""CI smoke test of bench/compare.py (meson test bench/compare-smoke).

Runs `compare.py --tiny` against the peers and checks its output, never its
timings: exit status 0, the tables on stdout, JSON that parses and has a
median for every tool that is present at every size it runs, fdn-shm either
measured or absent with fdn-perf's own reason, and the plots when gnuplot is
installed.

Exits 77 (skip) naming what is missing when a peer is not installed
(scripts/deps.sh --bench-peers installs them) or zmq_perf was not built.

  compare_smoke.py --fdn-perf BUILD/tools/fdn-perf [--zmq-perf BUILD/bench/zmq_perf]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fdn-perf", required=True)
    p.add_argument("--zmq-perf")
    args = p.parse_args()

    missing = [f"{t} (scripts/deps.sh --bench-peers)"
               for t in ("ucx_perftest", "sockperf", "iperf3", "taskset")
               if not shutil.which(t)]
    if not args.zmq_perf or not os.access(args.zmq_perf, os.X_OK):
        missing.append("zmq_perf (not built: libzmq3-dev missing at configure time)")
    if (os.cpu_count() or 1) < 2:
        missing.append("a second CPU (client and server are pinned apart)")
    if missing:
        print("SKIP: compare.py needs " + ", ".join(missing))
        return SKIP

    with tempfile.TemporaryDirectory(prefix="fdn-compare-smoke-") as tmp:
        out_json = os.path.join(tmp, "compare.json")
        plots = os.path.join(tmp, "plots")
        cmd = [sys.executable, os.path.join(HERE, "compare.py"), "--tiny",
               "--fdn-perf", args.fdn_perf, "--zmq-perf", args.zmq_perf,
               "--json", out_json, "--plot-dir", plots]
        print("running:", " ".join(cmd), flush=True)
        start = time.monotonic()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=170)
        print(proc.stdout)
        print(f"compare.py --tiny: exit {proc.returncode} in {time.monotonic() - start:.1f} s")
        assert proc.returncode == 0, f"compare.py exited {proc.returncode}"

        for title in ("Latency, one-way", "Bandwidth, one-way", "Latency ratio Foundation / peer",
                      "Bandwidth ratio Foundation / peer",
                      "What each tool does with the payload"):
            assert title in proc.stdout, f"no '{title}' section on stdout"

        with open(out_json) as f:
            doc = json.load(f)
        for key in ("config", "tools", "sizes", "results", "medians", "ratios", "absent",
                    "targets", "failures"):
            assert key in doc, f"JSON without '{key}'"
        assert doc["failures"] == [], doc["failures"]
        sizes = [str(s) for s in doc["sizes"]]
        assert sizes == ["64", str(1 << 20)], sizes

        # Every tool that is installed ran at every size it takes part in.
        for ident, tool in doc["tools"].items():
            kind, name = tool["kind"], tool["name"]
            if tool["absent"]:
                assert name in ("fdn-shm", "floor", "ring-floor", "box-floor", "shm-ring",
                                "shm-box", "copy-floor"), \
                    f"{ident} absent: {tool['absent']}"
                continue
            metric = "p50_us" if kind == "lat" else "gbytes_per_s"
            for s in sizes:
                if f"{name}@{s}" in doc["absent"][kind]:
                    continue
                m = doc["medians"][kind][s][name]
                assert m[metric] and m[metric] > 0, f"{ident} at {s} B: no {metric}: {m}"

        # fdn-shm: measured, or absent with fdn-perf's "not built yet".
        shm = doc["tools"]["fdn-shm/lat"]
        if shm["absent"]:
            assert "not built yet" in shm["absent"], shm["absent"]
            print("fdn-shm absent:", shm["absent"])
        for kind in ("lat", "bw"):
            ratio = doc["ratios"][kind]["64"]["ucx-tcp"]
            assert ratio["fdn"] == "fdn-tcp", ratio

        if shutil.which("gnuplot"):
            for png in ("compare-latency.png", "compare-bandwidth.png", "compare-msgrate.png"):
                path = os.path.join(plots, png)
                assert os.path.getsize(path) > 1000, f"{png} missing or empty"
    print("compare.py smoke: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

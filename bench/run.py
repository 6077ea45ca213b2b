#!/usr/bin/env python3
"""Runs fdn-bench and prints the report table.

Every figure is the median of several repetitions of one run, interleaved in
random order so that the peer and Foundation alternate, and the targets are
judged on ratios and rates within that same run (see docs/PERFORMANCE.md):
the machine is shared, so an absolute time means little. The PASS/MISS column is information, never a test: the exit code is 0
whatever the timings say (non-zero only when the benchmark could not run).

  bench/run.py                              # build/release/bench/fdn-bench, 5 x 0.2 s
  bench/run.py --bench build-bench/bench/fdn-bench --repetitions 3
  bench/run.py --quick                      # CI smoke: 1 x 0.01 s
  bench/run.py --from results.json --json table.json
"""

import argparse
import json
import re
import shlex
import statistics
import subprocess
import sys

DEFAULT_BENCH = "build/release/bench/fdn-bench"

# The targets. Each is judged from medians of the same run.
ROUNDTRIP = "BM_worker_msg_roundtrip"
PINGPONG = "BM_cacheline_pingpong"
SPSC = "BM_spsc_ring_throughput"
ROUNDTRIP_MAX_RATIO = 3.0
SPSC_MIN_MMSGS = 20.0

TIME_UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", default=DEFAULT_BENCH,
                   help="fdn-bench binary (default: %(default)s)")
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="read Google Benchmark JSON from FILE instead of running")
    p.add_argument("--repetitions", type=int, default=5,
                   help="repetitions of each benchmark; medians are reported (default: 5)")
    p.add_argument("--min-time", type=float, default=0.2,
                   help="minimum seconds per repetition (default: 0.2)")
    p.add_argument("--filter", metavar="REGEX", help="run only benchmarks matching REGEX")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke run: 1 repetition of 0.01 s")
    p.add_argument("--json", metavar="OUT", help="also write the table as JSON to OUT")
    p.add_argument("--no-interleave", action="store_true",
                   help="run each benchmark's repetitions back to back instead of "
                        "interleaving all repetitions in random order")
    args = p.parse_args(argv)
    if args.quick:
        args.repetitions, args.min_time = 1, 0.01
    if args.repetitions < 1 or args.min_time <= 0:
        p.error("--repetitions must be >= 1 and --min-time > 0")
    return args


def bench_command(args):
    # Google Benchmark 1.7.1 takes --benchmark_min_time as plain seconds.
    cmd = [args.bench,
           "--benchmark_format=json",
           f"--benchmark_repetitions={args.repetitions}",
           f"--benchmark_min_time={args.min_time}",
           "--benchmark_report_aggregates_only=true"]
    # Interleaved repetitions alternate the peer (ping-pong) and Foundation
    # over the whole run, so a slow phase of the shared machine (or the
    # hypervisor moving a vCPU) hits both sides of a ratio alike.
    if args.repetitions > 1 and not args.no_interleave:
        cmd.append("--benchmark_enable_random_interleaving=true")
    if args.filter:
        cmd.append(f"--benchmark_filter={args.filter}")
    return cmd


def run_bench(cmd):
    """Runs the benchmark; its stderr (warnings) passes through."""
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, check=False)
    except OSError as e:
        sys.exit(f"run.py: cannot run {cmd[0]}: {e} (build it, or pass --bench PATH)")
    if proc.returncode != 0:
        sys.exit(f"run.py: {cmd[0]} exited with status {proc.returncode}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        sys.exit(f"run.py: {cmd[0]} did not print JSON: {e}")


def load_file(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"run.py: cannot read {path}: {e}")


def display_name(run_name):
    """BM_x/arg:1/real_time -> BM_x/arg:1: the timing mode is the same for all."""
    return re.sub(r"/(real_time|manual_time)$", "", run_name)


def error_of(entry):
    """The skip reason of an entry (1.7.1: error_*; later versions: skip_*)."""
    if entry.get("error_occurred") or entry.get("skipped"):
        return entry.get("error_message") or entry.get("skip_message") or "skipped"
    return None


def summarize(results):
    """One row per benchmark instance, in the binary's order.

    With repetitions, Google Benchmark reports a "median" aggregate; with one
    repetition (or with --from a file without aggregates) the median of the
    iteration entries is taken here. Skipped benchmarks keep their reason."""
    order, medians, runs, errors = {}, {}, {}, {}
    for e in results.get("benchmarks", []):
        name = e.get("run_name", e["name"])
        # Interleaved repetitions come out shuffled: list the benchmarks in
        # the binary's registration order again.
        order.setdefault(name, (e.get("family_index", len(order)),
                                e.get("per_family_instance_index", 0)))
        if e.get("run_type") == "aggregate":
            if e.get("aggregate_name") == "median":
                medians[name] = e
        elif error_of(e):
            errors.setdefault(name, error_of(e))
        else:
            runs.setdefault(name, []).append(e)

    rows = []
    for name in sorted(order, key=order.get):
        row = {"benchmark": display_name(name), "run_name": name}
        if name in medians:
            values, reps = medians[name], medians[name].get("repetitions", 1)
        elif name in runs:
            values, reps = median_entry(runs[name]), len(runs[name])
        else:
            row["skipped"] = errors.get(name, "no result")
            rows.append(row)
            continue
        unit = TIME_UNIT_NS.get(values.get("time_unit", "ns"), 1.0)
        row["ns_per_op"] = values["real_time"] * unit
        row["repetitions"] = reps
        for key in ("items_per_second", "one_way_ns", "ns_per_timer"):
            if key in values:
                row[key] = values[key]
        if values.get("label"):
            row["label"] = values["label"]
        rows.append(row)
    return rows


def median_entry(entries):
    """Field-by-field median of numeric fields over repetitions."""
    out = dict(entries[0])
    for key, value in entries[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(e[key] for e in entries if key in e)
    return out


def find(rows, family):
    """Measured rows of a benchmark family (name up to the first '/')."""
    return [r for r in rows if r["benchmark"].split("/")[0] == family and "skipped" not in r]


def batch_of(row):
    m = re.search(r"/batch:(\d+)", row["benchmark"])
    return int(m.group(1)) if m else None


def judge_targets(rows):
    targets = []

    rt, pp = find(rows, ROUNDTRIP), find(rows, PINGPONG)
    t = {"target": f"worker round trip / cache-line ping-pong <= {ROUNDTRIP_MAX_RATIO:g}x",
         "value": None, "result": "n/a"}
    if rt and pp:
        ratio = rt[0]["ns_per_op"] / pp[0]["ns_per_op"]
        t.update(value=round(ratio, 2),
                 detail=f'{rt[0]["ns_per_op"]:.1f} ns / {pp[0]["ns_per_op"]:.1f} ns',
                 result="PASS" if ratio <= ROUNDTRIP_MAX_RATIO else "MISS")
    else:
        t["detail"] = "not measured in this run (filtered out or skipped)"
    targets.append(t)

    batched = [r for r in find(rows, SPSC)
               if (batch_of(r) or 0) > 1 and "items_per_second" in r]
    t = {"target": f"SPSC ring, batched, > {SPSC_MIN_MMSGS:g} M msg/s per pair",
         "value": None, "result": "n/a"}
    if batched:
        best = max(batched, key=lambda r: r["items_per_second"])
        mmsgs = best["items_per_second"] / 1e6
        t.update(value=round(mmsgs, 1), detail=f'best at batch {batch_of(best)}',
                 result="PASS" if mmsgs > SPSC_MIN_MMSGS else "MISS")
    else:
        t["detail"] = "not measured in this run (filtered out or skipped)"
    targets.append(t)
    return targets


def format_table(header, lines):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    rule = "  ".join("-" * w for w in widths)
    fmt = lambda cells: "  ".join(  # noqa: E731 - numbers right, text left
        str(c).rjust(w) if i and i < len(widths) - 1 else str(c).ljust(w)
        for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([fmt(header), rule] + [fmt(l) for l in lines])


def number(value, digits):
    return "-" if value is None else f"{value:,.{digits}f}"


def print_report(rows, targets, context, command):
    print(f"# command: {command}")
    cpus = context.get("allowed_cpus")
    print(f"# host: {context.get('host_name', '?')}, {context.get('num_cpus', '?')} CPUs"
          + (f", allowed {cpus}" if cpus else "")
          + f", load average {context.get('load_avg', '?')}")
    reps = sorted({r["repetitions"] for r in rows if "repetitions" in r})
    print(f"# medians of {'/'.join(map(str, reps)) or '?'} repetitions; "
          "ns/op is real (wall-clock) time per iteration")
    print()
    lines = []
    for r in rows:
        if "skipped" in r:
            lines.append([r["benchmark"], "-", "-", "-", "skipped: " + r["skipped"]])
            continue
        ips = r.get("items_per_second")
        extra = r.get("one_way_ns", r.get("ns_per_timer"))
        lines.append([r["benchmark"], number(r["ns_per_op"], 1),
                      number(ips / 1e6 if ips else None, 2), number(extra, 1),
                      r.get("label", "")])
    print(format_table(["benchmark", "ns/op", "M items/s", "one-way|per-timer ns", "notes"],
                       lines))
    print()
    print(format_table(["target (informational)", "value", "result", "from"],
                       [[t["target"], "-" if t["value"] is None else t["value"],
                         t["result"], t.get("detail", "")] for t in targets]))


def main(argv):
    args = parse_args(argv)
    if args.from_file:
        command = f"(read from {args.from_file})"
        results = load_file(args.from_file)
    else:
        cmd = bench_command(args)
        command = shlex.join(cmd)
        print(f"running: {command}", file=sys.stderr, flush=True)
        results = run_bench(cmd)
    rows = summarize(results)
    if not rows:
        sys.exit("run.py: no benchmark results (does --filter match anything?)")
    targets = judge_targets(rows)
    context = results.get("context", {})
    print_report(rows, targets, context, command)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"command": command, "context": context, "rows": rows,
                       "targets": targets}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

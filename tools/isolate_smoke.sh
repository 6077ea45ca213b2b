#!/bin/bash
# Smoke test of fdn-isolate: a short run of the four scenarios on loopback
# (over TCP, or over shared memory when the second argument is shm), then a
# check that the JSON report has every scenario and every key. The
# latencies themselves are results, not assertions: nothing here judges them.
# usage: isolate_smoke.sh path/to/fdn-isolate [tcp|shm]
set -euo pipefail

isolate=${1:?usage: isolate_smoke.sh path/to/fdn-isolate [tcp|shm]}
transport=${2:-tcp}
out=$(mktemp -d "${TMPDIR:-/tmp}/fdn-isolate-smoke.XXXXXX")
trap 'rm -rf "$out"' EXIT

"$isolate" --transport "$transport" --duration 1 --bulk-size 65536 --json "$out/iso.json" \
    > "$out/report.txt"
cat "$out/report.txt"
grep -Eq '^(HOLDS|DOES NOT HOLD): ' "$out/report.txt"

python3 - "$out/iso.json" "$transport" <<'EOF'
import json, sys

with open(sys.argv[1]) as f:
    report = json.load(f)

scenario_keys = ["p50_us", "p90_us", "p99_us", "p999_us", "p9999_us", "max_us", "mean_us",
                 "messages", "bulk_gbytes_per_s"]
for top in ["scenarios", "ratios", "verdict", "config"]:
    assert top in report, f"missing top-level key {top}"
assert report["config"]["transport"] == sys.argv[2], f"ran over {report['config']['transport']}"
for name in ["idle", "bulk", "stalled", "fifo"]:
    scenario = report["scenarios"].get(name)
    assert scenario is not None, f"missing scenario {name}"
    for key in scenario_keys:
        assert isinstance(scenario.get(key), (int, float)), f"{name}: missing or bad {key}"
    assert scenario["messages"] > 0, f"{name}: no pings measured"
    assert scenario["server_seq_errors"] == 0, f"{name}: bulk messages lost or reordered"
    quantiles = [scenario[k] for k in scenario_keys[:6]]
    assert quantiles == sorted(quantiles), f"{name}: percentiles out of order {quantiles}"
# Bulk traffic must really have flowed where it should, and stalled where it should.
assert report["scenarios"]["bulk"]["bulk_gbytes_per_s"] > 0, "bulk: no bulk bytes confirmed"
assert report["scenarios"]["fifo"]["bulk_gbytes_per_s"] > 0, "fifo: no bulk bytes confirmed"
assert report["scenarios"]["stalled"]["data_credit_stalls"] > 0, "stalled: data never stalled"
assert report["scenarios"]["idle"]["bulk_gbytes_per_s"] == 0, "idle: bulk bytes flowed"
for key in ["bulk_over_idle_p99", "stalled_over_idle_p99", "fifo_over_bulk_p99"]:
    assert key in report["ratios"], f"missing ratio {key}"
assert isinstance(report["verdict"]["holds"], bool)
assert report["verdict"]["text"].startswith(("HOLDS: ", "DOES NOT HOLD: "))
print("fdn-isolate smoke: JSON report complete")
EOF

#!/usr/bin/env bash
# Foundation's main job, as it stands: builds an optimised libfdn, shows this
# machine's topology and the worker placement the runtime chooses, then runs
# the runtime micro-benchmarks and prints a table of results with the ratios
# against the in-process peer (a raw cache-line ping-pong between two cores).
# Channels and transports (issue 3) do not exist yet; when they land this job
# becomes two nodes exchanging traffic across channels.
# Usage: scripts/main.sh [--quick] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh

dir=build/release
if [ ! -f "$dir/build.ninja" ]; then
  meson setup "$dir" -Dbuildtype=release -Dtests=false >/dev/null
fi
ninja -C "$dir" -j"$(nproc)" >/dev/null

echo "== Topology and placement (fdn-topo)"
"$dir/tools/fdn-topo"
echo
echo "== Runtime micro-benchmarks (fdn-bench, pinned, median of repetitions)"
python3 bench/run.py --bench "$dir/bench/fdn-bench" "$@"

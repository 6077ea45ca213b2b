#!/usr/bin/env bash
# Builds Foundation three ways and runs the test suite in each:
#   asan   gcc, AddressSanitizer + UndefinedBehaviorSanitizer, warnings as errors: every test
#          but the fault suite
#   clang  clang, optimised, warnings as errors: every test, and a short run of
#          each libFuzzer target (tests/fuzz); the fault suite (tests/fault: real
#          processes, ss -K, SIGKILL, nftables partitions, tbf, a short soak)
#          runs here only, since it streams for seconds and kills by port
#   tsan   clang, ThreadSanitizer: the concurrent suite
# Ends with "N passed, N failed, N skipped", counted from meson's JSON test logs.
# Usage: scripts/test.sh [BUILD_ROOT]   (default: build/)
set -uo pipefail
cd "$(dirname "$0")/.."
# --bench-peers: the bench suite's smoke run of bench/compare.py needs
# sockperf, iperf3, ucx_perftest, libzmq and gnuplot (it skips without them).
bash scripts/deps.sh --bench-peers || exit 1

root=${1:-build}
status=0

configure() { # dir, then meson options
  local dir=$1; shift
  if [ -f "$dir/build.ninja" ]; then
    meson configure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
}

run_build() { # name, compiler, test args, meson options...
  local name=$1 compiler=$2 test_args=$3; shift 3
  local dir="$root/$name"
  rm -f "$dir/meson-logs/testlog.json" # never count an earlier run's results
  echo "=== $name: configure and build"
  local cxx=g++
  [ "$compiler" = clang ] && cxx=clang++
  if ! CC=$compiler CXX=$cxx configure "$dir" "$@" ||
     ! ninja -C "$dir" -j"$(nproc)" >"$dir.build.log" 2>&1; then
    tail -50 "$dir.build.log" 2>/dev/null
    echo "=== $name: BUILD FAILED"
    status=1
    return
  fi
  echo "=== $name: test"
  # shellcheck disable=SC2086
  meson test -C "$dir" --print-errorlogs --num-processes 1 $test_args || status=1
}

mkdir -p "$root"
# UBSan only reports by default; a report must fail its test.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
run_build asan gcc "--no-suite fault" -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=true
run_build clang clang "" -Dbuildtype=release -Dwerror=true -Dfuzz=true
run_build tsan clang "--suite concurrent" -Db_sanitize=thread -Db_lundef=false

counts=$(python3 - "$root" <<'PY'
import json, pathlib, sys
ok = fail = skip = 0
for log in sorted(pathlib.Path(sys.argv[1]).glob("*/meson-logs/testlog.json")):
    for line in log.read_text().splitlines():
        result = json.loads(line)["result"]
        if result in ("OK", "EXPECTEDFAIL"):
            ok += 1
        elif result == "SKIP":
            skip += 1
        else:
            fail += 1
print(ok, fail, skip)
PY
)
read -r passed failed skipped <<<"$counts"
# A build that failed to compile ran no tests: count it as a failure.
[ "$status" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$status" -eq 0 ]

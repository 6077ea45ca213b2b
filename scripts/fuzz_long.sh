#!/usr/bin/env bash
# The long fuzz run of one libFuzzer target (issue 5: at least 10^7
# executions per target, 0 crashes), documented in tests/fuzz/README.md.
#
#   scripts/fuzz_long.sh TARGET [EXECS]      TARGET: frame, handshake, reassembly, ...
#                                            EXECS: default 10000000
#
# Builds the fuzz targets in $FUZZ_BUILD (default build-fuzz; configured with
# clang and -Dfuzz=true when absent), then runs TARGET for EXECS executions,
# starting from the checked-in seeds (tests/fuzz/corpus/TARGET) plus what
# earlier long runs found, kept in $FUZZ_BUILD/tests/fuzz/long-corpus-TARGET
# (the seeds in the repository are never written). Extra arguments after
# EXECS go to libFuzzer, e.g. -jobs=2 -workers=2 or -max_total_time=3600.
# A crash leaves crash-<sha1> in $FUZZ_BUILD/tests/fuzz/ and the exit status
# is nonzero; the last lines printed give the executions run.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:?usage: scripts/fuzz_long.sh TARGET [EXECS] [libFuzzer options...]}
execs=${2:-10000000}
shift $(($# >= 2 ? 2 : 1))
build=${FUZZ_BUILD:-build-fuzz}

[[ $execs =~ ^[0-9]+$ ]] || { echo "EXECS must be a number, not \"$execs\"" >&2; exit 2; }
seeds=tests/fuzz/corpus/$target
[[ -f tests/fuzz/fuzz_$target.c ]] || {
    echo "no fuzz target \"$target\" (tests/fuzz/fuzz_*.c)" >&2
    exit 2
}

if [[ ! -f $build/build.ninja ]]; then
    CC=clang CXX=clang++ meson setup "$build" -Dbuildtype=release -Dfuzz=true -Dbench=disabled
fi
ninja -C "$build" "tests/fuzz/fuzz_$target"

corpus=$build/tests/fuzz/long-corpus-$target
mkdir -p "$corpus"
fuzzer=$build/tests/fuzz/fuzz_$target
echo "== $fuzzer: $execs executions, corpus $corpus, seeds $seeds"
# -print_final_stats prints stat::number_of_executed_units at the end.
"$fuzzer" -runs="$execs" -print_final_stats=1 -artifact_prefix="$build/tests/fuzz/" "$@" \
    "$corpus" "$seeds"

#!/usr/bin/env bash
# The short fuzz run of one target (meson test, suite fuzz): libFuzzer starts
# from a temporary copy of the target's checked-in seeds and adds what it
# finds there, so a test run never writes into the repository and every run
# starts from the same seeds. Crash inputs go to ARTIFACT_DIR. The copy is
# removed afterwards.
#
# usage: run_fuzz.sh FUZZER SEED_DIR ARTIFACT_DIR [libFuzzer options...]
set -euo pipefail

fuzzer=${1:?usage: run_fuzz.sh FUZZER SEED_DIR ARTIFACT_DIR [options...]}
seeds=${2:?seed directory}
artifacts=${3:?artifact directory}
shift 3

work=$(mktemp -d "${TMPDIR:-/tmp}/fdn-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [[ -d $seeds ]]; then
    cp -R "$seeds/." "$work/"
    echo "$(basename "$fuzzer"): $(find "$work" -type f | wc -l) seeds from $seeds"
else
    echo "$(basename "$fuzzer"): warning: no seeds at $seeds; starting from nothing" >&2
fi
mkdir -p "$artifacts"
"$fuzzer" "$@" -artifact_prefix="$artifacts/" "$work"

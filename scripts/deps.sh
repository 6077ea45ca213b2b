#!/usr/bin/env bash
# Installs what Foundation needs to build, test and benchmark on Debian 12.
# Idempotent: installs only missing packages, and refreshes the package lists
# only when something is missing.
set -euo pipefail

packages=(
  build-essential meson ninja-build pkg-config clang llvm
  liburing-dev libhwloc-dev hwloc libbenchmark-dev
  iproute2 jq
  nftables   # tests/fault: partitions between network namespaces
)
if [ "${1:-}" = "--bench-peers" ]; then
  packages+=(sockperf iperf3 ucx-utils libzmq3-dev libnng-dev gnuplot-nox)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
echo "installing: ${missing[*]}"
"${as_root[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

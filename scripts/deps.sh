#!/usr/bin/env bash
# Installs the Debian 12 packages AgentFlow needs, idempotently: a no-op when all are present.
# Usage: scripts/deps.sh [build|test|all]   (test adds what the test suite runs: promtool, curl)
set -euo pipefail

build_pkgs=(
  g++ lld cmake ninja-build ccache pkg-config make python3
  libcaf-dev protobuf-compiler libprotobuf-dev libssl-dev
  libspdlog-dev libfmt-dev nlohmann-json3-dev libyaml-cpp-dev libcli11-dev libgoogle-perftools-dev
  prometheus-cpp-dev libboost-dev catch2 libbenchmark-dev libsqlite3-dev libpq-dev
)
# postgresql-15: the throwaway server the persistence tests start (tests/persistence).
test_pkgs=(prometheus curl procps postgresql-15 sqlite3)
dev_pkgs=(clang clang-format clang-tidy)

case "${1:-all}" in
  build) want=("${build_pkgs[@]}") ;;
  test) want=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
  all) want=("${build_pkgs[@]}" "${test_pkgs[@]}" "${dev_pkgs[@]}") ;;
  *) echo "usage: $0 [build|test|all]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "deps: installing ${missing[*]}" >&2
if [[ $(id -u) -ne 0 ]]; then
  echo "deps: not root; run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
apt-get install -y -q --no-install-recommends "${missing[@]}" >&2

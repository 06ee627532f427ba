#!/usr/bin/env bash
# Installs a build tree into a temp prefix, builds examples/external-consumer against it with
# find_package(agentflow) and runs it. Temp dirs are removed on any exit.
# Usage: install_and_consume.sh <build dir> <source dir> <cmake> <c++ compiler> <build type>
#                               <sanitize ON|OFF> [generator]
set -euo pipefail

if [[ $# -lt 6 ]]; then
  echo "usage: $0 <build dir> <source dir> <cmake> <c++ compiler> <build type> <ON|OFF> [generator]" >&2
  exit 2
fi
build_dir=$1 src_dir=$2 cmake=$3 cxx=$4 build_type=$5 sanitize=$6 generator=${7:-}

work=$(mktemp -d "${TMPDIR:-/tmp}/af-packaging.XXXXXX")
trap 'rm -rf "$work"' EXIT
# A signal (ctest's timeout, ^C) exits through the EXIT trap too.
trap 'exit 130' INT
trap 'exit 143' TERM
prefix=$work/prefix
consumer_build=$work/consumer-build

step_log=""
# fail MESSAGE: prints the message and the end of the current step's log, then exits 1.
fail() {
  echo "FAIL: $*" >&2
  if [[ -n $step_log && -s $step_log ]]; then
    echo "----- $(basename "$step_log") (last 80 lines)" >&2
    tail -n 80 "$step_log" >&2
  fi
  exit 1
}

echo "== install $build_dir -> $prefix"
install_args=(--install "$build_dir" --prefix "$prefix")
[[ -n $build_type ]] && install_args+=(--config "$build_type")
step_log=$work/install.log
"$cmake" "${install_args[@]}" >"$step_log" 2>&1 || fail "cmake --install failed"

# What a consumer needs: public headers, generated Protobuf headers, the libraries and a
# package that finds CAF (Debian's libcaf-dev ships no CMake config).
for f in include/af/agent.hpp include/af/node.hpp include/af/v1/runtime.pb.h \
         include/af/v1/envelope.pb.h; do
  [[ -f $prefix/$f ]] || fail "not installed: $f"
done
pkg_dir=$(dirname "$(find "$prefix" -name agentflowConfig.cmake -print -quit)")
[[ -n $pkg_dir && -f $pkg_dir/agentflowConfig.cmake ]] || fail "agentflowConfig.cmake not installed"
for f in agentflowConfigVersion.cmake agentflowTargets.cmake FindCAF.cmake; do
  [[ -f $pkg_dir/$f ]] || fail "not installed: $pkg_dir/$f"
done
# The installed package must be relocatable: no paths into the source or build tree.
if leaks=$(grep -rlF -e "$src_dir/" -e "$build_dir/" "$pkg_dir"); then
  fail "the installed package refers to the source or build tree: $leaks"
fi

echo "== configure examples/external-consumer against $prefix"
cfg_args=(-S "$src_dir/examples/external-consumer" -B "$consumer_build"
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CXX_COMPILER="$cxx"
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
[[ -n $generator ]] && cfg_args+=(-G "$generator")
[[ -n $build_type ]] && cfg_args+=(-DCMAKE_BUILD_TYPE="$build_type")
if command -v ccache >/dev/null 2>&1; then
  cfg_args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
if [[ $sanitize == ON ]]; then
  # The installed static libraries are instrumented: the consumer needs the same runtime.
  cfg_args+=(-DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer"
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined")
fi
step_log=$work/configure.log
"$cmake" "${cfg_args[@]}" >"$step_log" 2>&1 || fail "configuring the consumer failed"
found_dir=$(sed -n 's/^agentflow_DIR:PATH=//p' "$consumer_build/CMakeCache.txt")
[[ $found_dir == "$prefix"/* ]] || fail "find_package(agentflow) used '$found_dir', not the prefix"

echo "== build"
step_log=$work/build.log
"$cmake" --build "$consumer_build" -j1 >"$step_log" 2>&1 || fail "building the consumer failed"
if grep -q "warning:" "$step_log"; then
  fail "the consumer built with warnings"
fi

echo "== run"
step_log=$work/run.log
"$consumer_build/greeter_app" >"$step_log" 2>&1 || fail "greeter_app exited with $?"
cat "$step_log"
grep -qx "reply: hello, agentflow (from greeter)" "$step_log" || fail "unexpected reply"
grep -qx "error: validation: greet: name must not be empty" "$step_log" \
  || fail "unexpected error line"
echo "PASS"

#!/usr/bin/env bash
# CTest driver: installs the volt build in $1 to a temporary prefix and builds tests/consumer against it
# with find_package(volt), then builds it again with add_subdirectory of the source tree.
# $4 = full: the add_subdirectory build compiles and runs the whole program; compile: it configures and
# compiles the consumer's own source only. The embedded library cannot hit the compiler cache of the main
# build (its precompiled header and generated headers sit one folder deeper, so ccache's relative paths
# differ): building it in full costs a whole library build (~8 min on 2 cores), so one leg does that and
# the other checks what differs per LibTorch (imported targets, include paths, definitions).
set -euo pipefail
build_dir=$1 source_dir=$2 prefix_path=$3 embedded_build=${4:-full}
# Inside the build tree, at a fixed path, so that ccache hits across runs and fresh clones.
work="$build_dir/consumer-test"
rm -rf "$work"
mkdir -p "$work"
log="$work/log"
quiet() { "$@" >>"$log" 2>&1 || { echo "failed: $*"; cat "$log"; exit 1; }; }
quiet cmake --install "$build_dir" --prefix "$work/prefix"
common=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
quiet cmake -S "$source_dir/tests/consumer" -B "$work/installed" "${common[@]}" \
  "-DCMAKE_PREFIX_PATH=$work/prefix;$prefix_path"
quiet cmake --build "$work/installed"
"$work/installed/consumer"
quiet cmake -S "$source_dir/tests/consumer" -B "$work/embedded" "${common[@]}" -DVOLT_SOURCE_DIR="$source_dir" \
  -DVOLT_BUILD_TESTS=OFF -DVOLT_BUILD_TOOLS=OFF "-DCMAKE_PREFIX_PATH=$prefix_path"
if [ "$embedded_build" = full ]; then
  quiet cmake --build "$work/embedded"
  "$work/embedded/consumer"
else
  quiet cmake --build "$work/embedded" --target CMakeFiles/consumer.dir/main.cpp.o
  echo "consumer (add_subdirectory): configured and compiled"
fi

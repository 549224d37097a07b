#!/usr/bin/env bash
# CTest driver: installs the volt build in $1 to a temporary prefix and builds tests/consumer against it
# with find_package(volt), then builds it again with add_subdirectory of the source tree; runs both.
set -euo pipefail
build_dir=$1 source_dir=$2 prefix_path=$3
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
quiet cmake --build "$work/embedded"
"$work/embedded/consumer"

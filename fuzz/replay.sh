#!/usr/bin/env bash
# Replays volt's checkpoint fuzz corpus plus generated hostile variants under ASan + UBSan.
#
#   fuzz/replay.sh BUILD_DIR [extra cmake arguments]
#
# Configures and builds fuzz/ into BUILD_DIR (Ninja, clang++-14 or $VOLT_FUZZ_CXX), writes the variants
# of fuzz/mutate.py into BUILD_DIR/mutations, and runs every seed and variant once through its reader's
# fuzzer. Fails on any crash, sanitizer report, leak, timeout, oversized allocation, or error that is not
# a volt::Error naming the file (the fuzzers abort on those). Crashing inputs are kept in
# BUILD_DIR/artifacts; each batch's log is in BUILD_DIR/logs.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 BUILD_DIR [extra cmake arguments]" >&2
  exit 2
fi
build=$(realpath -m "$1")
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
cxx=${VOLT_FUZZ_CXX:-clang++-14}
python=${VOLT_FUZZ_PYTHON:-/usr/bin/python3}
jobs=${VOLT_FUZZ_JOBS:-$(nproc)}
start=$SECONDS

command -v "$cxx" >/dev/null || { echo "replay.sh: $cxx not found" >&2; exit 2; }
command -v ninja >/dev/null || { echo "replay.sh: ninja not found" >&2; exit 2; }
# A build that shares ccache with the main ones (see the Makefile) needs the same relaxations for the
# precompiled header.
export CCACHE_SLOPPINESS=${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}

cmake -S "$here" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" "$@" >"$build.configure.log" 2>&1 ||
  { cat "$build.configure.log" >&2; exit 1; }
mv "$build.configure.log" "$build/configure.log"
cmake --build "$build" -j "$jobs" >"$build/build.log" 2>&1 || { tail -50 "$build/build.log" >&2; exit 1; }

rm -rf "$build/logs" "$build/artifacts" "$build/outcomes"
mkdir -p "$build/logs" "$build/artifacts" "$build/outcomes"
for reader in torch_file safetensors; do
  "$python" "$here/mutate.py" "$here/corpus/$reader" "$build/mutations/$reader" --format "$reader" >/dev/null
done

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

status=0
summary=()
for reader in torch_file safetensors; do
  fuzzer="$build/${reader}_fuzzer"
  outcomes="$build/outcomes/$reader"
  : >"$outcomes"
  files=$(find "$here/corpus/$reader" "$build/mutations/$reader" -type f | wc -l)
  # A fuzzer takes ~2 s to start (LibTorch under ASan): two batches per job, $jobs processes at a time,
  # each writing its own log.
  batch=$(( (files + 2 * jobs - 1) / (2 * jobs) ))
  set +e
  find "$here/corpus/$reader" "$build/mutations/$reader" -type f -print0 | sort -z |
    VOLT_FUZZ_OUTCOMES="$outcomes" xargs -0 -n "$batch" -P "$jobs" sh -c '
      log=$(mktemp "$0/logs/'"$reader"'.XXXXXX")
      fuzzer=$1
      shift
      "$fuzzer" -rss_limit_mb=2048 -timeout=30 -artifact_prefix="$0/artifacts/'"$reader"'-" "$@" >"$log" 2>&1 || {
        echo "replay.sh: '"$reader"' fuzzer failed (log: $log); last input:" >&2
        grep "^Running: " "$log" | tail -1 >&2
        grep -v "^Running: \|^Executed \|^INFO: " "$log" | head -80 >&2
        exit 1
      }' "$build" "$fuzzer"
  rc=$?
  set -e
  # Belt and braces: a report that did not stop the process still fails the replay.
  if grep -l "ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:\|==volt-fuzz==" "$build/logs/$reader".* >/dev/null 2>&1; then
    echo "replay.sh: sanitizer or volt-fuzz reports in the $reader logs" >&2
    rc=1
  fi
  errors=$(grep -c '^error$' "$outcomes" || true)
  ok=$(grep -c '^ok$' "$outcomes" || true)
  [[ $rc -eq 0 ]] || status=1
  summary+=("$reader: $files files replayed, $errors ended in volt::Error, $ok parsed fine$([[ $rc -eq 0 ]] || echo ', FAILED')")
done

echo "fuzz replay ($((SECONDS - start)) s): ${summary[0]}; ${summary[1]}"
exit $status

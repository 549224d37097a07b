#!/usr/bin/env bash
# Installs what volt needs to build and test, idempotently and without questions:
#   - Debian packages (LibTorch 1.13.1, Python torch 1.13 as a test oracle, build tools, libraries);
#   - a Python virtual environment OUTSIDE the clone with torch 2.x (the second LibTorch leg and oracle),
#     Lightning, safetensors, tensorboard and numpy, pinned.
# Usage: scripts/install-deps.sh [--no-venv]
# Environment: VOLT_CACHE (default ~/.cache/volt) holds the venv and ccache so fresh clones reuse them.
set -euo pipefail

VOLT_CACHE="${VOLT_CACHE:-$HOME/.cache/volt}"
VENV="$VOLT_CACHE/venv"
want_venv=1
[ "${1:-}" = "--no-venv" ] && want_venv=0

# Pinned versions of the 2.x leg; bump together and re-run `make test`.
TORCH_VERSION=2.15.0
LIGHTNING_VERSION=2.6.6
SAFETENSORS_VERSION=0.8.0
TENSORBOARD_VERSION=2.21.0
NUMPY_VERSION=2.3.5

debian_packages=(
  build-essential cmake ninja-build ccache git pkg-config
  libtorch-dev python3-torch python3-numpy python3-venv python3-pip
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  nlohmann-json3-dev libcli11-dev libfmt-dev
  clang-format clang-14 libclang-rt-14-dev
  zlib1g-dev dataset-fashion-mnist time
  libgloo-dev iproute2
)

sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)

missing=()
for p in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: Debian packages present"
fi

if [ "$want_venv" = 1 ]; then
  stamp="$VENV/.volt-pins"
  pins="torch==$TORCH_VERSION lightning==$LIGHTNING_VERSION safetensors==$SAFETENSORS_VERSION tensorboard==$TENSORBOARD_VERSION numpy==$NUMPY_VERSION"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$pins" ] && "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    echo "install-deps: venv present at $VENV"
  else
    echo "install-deps: creating venv at $VENV with $pins (a few GB, once)"
    mkdir -p "$VOLT_CACHE"
    # Debian's interpreter, so the venv does not depend on whatever python3 is first on PATH.
    [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir $pins
    echo "$pins" >"$stamp"
  fi
fi

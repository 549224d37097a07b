# volt — two commands on a fresh Debian machine:
#   make demo   installs what is missing, builds, runs the main job
#   make test   installs what is missing, builds against both LibTorch targets, runs every test on each
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

VOLT_CACHE ?= $(HOME)/.cache/volt
VENV := $(VOLT_CACHE)/venv
JOBS ?= $(shell nproc)
export VOLT_CACHE
# The compiler cache lives outside the clone, keyed on paths relative to it, so fresh clones reuse it.
export CCACHE_DIR ?= $(VOLT_CACHE)/ccache
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_MAXSIZE ?= 8G
# Bumped when cached objects may be stale: with the header mtime checks relaxed (below, for the PCH), a
# header changed while its includer compiled can be cached against the new header's contents.
export CCACHE_NAMESPACE := volt-2026-12-02
# Precompiled headers are cacheable only with these relaxations (ccache manual, "Precompiled headers").
export CCACHE_SLOPPINESS := pch_defines,time_macros,include_file_mtime,include_file_ctime
# The CUDA kernels of the 2.x leg target Hopper (the H100/H200 GPUs volt is run on).
export TORCH_CUDA_ARCH_LIST ?= 9.0

BUILD_113 := build/lt113
BUILD_2 := build/lt2
CMAKE_COMMON := -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER_LAUNCHER=ccache

.PHONY: all deps build build-113 build-2 test test-113 test-2 demo format clean

all: build

deps:
	bash scripts/install-deps.sh

build-113:
	cmake -S . -B $(BUILD_113) $(CMAKE_COMMON) >/dev/null
	cmake --build $(BUILD_113) -j $(JOBS)

# LibTorch 2.x from the venv's torch wheel. Its root goes on the prefix path too, so that its own
# libraries are found before Debian's libtorch in /usr/lib.
build-2:
	torch_root=$$($(VENV)/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))'); \
	cmake -S . -B $(BUILD_2) $(CMAKE_COMMON) -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache \
	  "-DCMAKE_PREFIX_PATH=$$torch_root/share/cmake;$$torch_root" \
	  $$([ -x /usr/local/cuda/bin/nvcc ] && echo -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc) >/dev/null
	cmake --build $(BUILD_2) -j $(JOBS)

build: deps
	$(MAKE) --no-print-directory build-113 build-2

test-113:
	@echo "=== LibTorch leg: $$($(BUILD_113)/bin/volt version)"
	ctest --test-dir $(BUILD_113) --output-on-failure -j $(JOBS)

test-2:
	@echo "=== LibTorch leg: $$($(BUILD_2)/bin/volt version)"
	VOLT_PYTHON=$(VENV)/bin/python ctest --test-dir $(BUILD_2) --output-on-failure -j $(JOBS)

test: deps
	$(MAKE) --no-print-directory build-113 test-113 build-2 test-2

# The demo needs Debian's packages only (no venv) and the CLI only (not the test suite).
demo:
	bash scripts/install-deps.sh --no-venv
	cmake -S . -B $(BUILD_113) $(CMAKE_COMMON) >/dev/null
	cmake --build $(BUILD_113) -j $(JOBS) --target volt_cli
	$(BUILD_113)/bin/volt demo --root build/volt_demo

format:
	clang-format -i $$(git ls-files '*.h' '*.cpp' '*.cu')

clean:
	rm -rf build

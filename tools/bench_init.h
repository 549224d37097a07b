// `volt bench init`: builds a GPT of a given shape in each init mode, each in its own process, and prints
// one JSON line per mode with its time, peak memory and ratios to the naive LibTorch path.
#pragma once

#include <CLI/CLI.hpp>

namespace volt::tools {

void add_bench_init_commands(CLI::App& bench);

}  // namespace volt::tools

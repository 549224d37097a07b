// `volt bench load`: loading a GPT checkpoint the naive LibTorch way (float32 build and init, whole file
// read into memory, load_state_dict, cast) and volt's way (empty init, streaming zero-copy load), each in
// its own process, beside the floor: reading the file's bytes from the page cache.
#pragma once

#include <CLI/CLI.hpp>

namespace volt::tools {

void add_bench_load_commands(CLI::App& bench);

}  // namespace volt::tools

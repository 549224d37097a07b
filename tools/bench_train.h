// `volt bench train`: steps per second of the Trainer against a hand-written LibTorch loop on the same
// model, data and precision, in interleaved child processes (one JSON line per mode).
#pragma once

#include <CLI/CLI.hpp>

namespace volt::tools {
void add_bench_train_commands(CLI::App& bench);
}

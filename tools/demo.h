// `volt demo`: the main job — train a CNN on Fashion-MNIST with the Trainer, then rebuild it from its
// checkpoint under init_module(empty_init=true) and compare with the naive LibTorch path.
#pragma once

#include <CLI/CLI.hpp>

namespace volt::tools {
void add_demo_commands(CLI::App& app);
}

// Options of volt::Trainer, named as Lightning's Trainer arguments:
// `volt::TrainerOptions().accelerator("cuda").devices(1).precision("bf16-true")`
#pragma once

#include "volt/core/precision.h"
#include "volt/init/init_options.h"

#include <torch/arg.h>

#include <string>

namespace volt {

struct TrainerOptions {
  /// "cpu", "cuda" (or "gpu"), "auto".
  TORCH_ARG(std::string, accelerator) = "auto";
  /// Devices (processes on CPU) to train on; -1 for all visible.
  TORCH_ARG(int64_t, devices) = 1;
  /// Lightning's precision strings; an unknown one throws when set.
  TORCH_ARG(Precision, precision) = Precision("32-true");
  /// "auto" or "single" (one device). Distributed strategies come with volt's distributed layer.
  TORCH_ARG(std::string, strategy) = "auto";
  /// Generator of init_module's parameter init (InitRng::kLibTorch for LibTorch's exact values).
  TORCH_ARG(InitRng, init_rng) = InitRng::kCounter;
  /// Where logs and checkpoints go.
  TORCH_ARG(std::string, default_root_dir) = ".";
};

}  // namespace volt

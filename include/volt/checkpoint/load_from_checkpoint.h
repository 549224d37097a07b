// Lightning's `Model.load_from_checkpoint(path)` for LibTorch modules: construct the module from the
// checkpoint's hyper-parameters — inside the caller's init scope, so `trainer.init_module(true)` makes the
// construction free — then load its weights.
#pragma once

#include <string>

#include "volt/checkpoint/checkpoint.h"
#include "volt/checkpoint/hparams.h"
#include "volt/checkpoint/load_state_dict.h"
#include "volt/error.h"

namespace volt {

/// `ModuleHolder` is a TORCH_MODULE holder whose module has a constructor taking `const volt::HParams&`.
///
///   volt::models::GPT gpt{nullptr};
///   { auto scope = trainer.init_module(/*empty_init=*/true);
///     gpt = volt::load_from_checkpoint<volt::models::GPT>("gpt.ckpt"); }
template <typename ModuleHolder>
ModuleHolder load_from_checkpoint(const std::string& path, const HParams& overrides = {},
                                  const LoadOptions& options = {}) {
  const Checkpoint ckpt = Checkpoint::load(path);
  HParams hparams(ckpt.hyper_parameters);
  VOLT_CHECK(
      !hparams.empty() || !overrides.empty(), "'", path,
      "' holds no hyper_parameters, so volt cannot construct the module: construct it yourself and call "
      "volt::load_from_checkpoint(path, module), or pass the hyper-parameters as overrides");
  hparams.update(overrides);
  ModuleHolder module(hparams);
  load_state_dict(*module, ckpt.state_dict, options);
  return module;
}

/// Loads into a module you constructed; returns what matched (see load_state_dict).
template <typename ModuleHolder>
LoadReport load_from_checkpoint(const std::string& path, ModuleHolder& module,
                                const LoadOptions& options = {}) {
  return load_state_dict(*module, Checkpoint::load(path).state_dict, options);
}

}  // namespace volt

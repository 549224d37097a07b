// A training checkpoint with Lightning's top-level layout, so that `.ckpt` files move between volt and
// Python Lightning in both directions.
#pragma once

#include <cstdint>
#include <string>

#include "volt/checkpoint/value.h"

namespace volt {

/// The keys of a Lightning `.ckpt`, typed where Lightning's meaning is fixed:
///
///   volt::Checkpoint ckpt = volt::Checkpoint::load("epoch=3.ckpt");
///   for (const auto& [name, tensor] : ckpt.state_dict.to_dict()) ...
///   ckpt.epoch += 1;
///   ckpt.save("resumed.ckpt");
struct Checkpoint {
  /// name -> tensor, an OrderedDict as `Module.state_dict()` gives.
  Value state_dict = Value::dict(/*ordered=*/true);
  /// The module's saved hyper-parameters (`save_hyperparameters()`).
  Value hyper_parameters = Value::dict();
  int64_t epoch = 0;
  int64_t global_step = 0;
  /// One optimizer `state_dict()` per optimizer: {"state": {param_index: {...}}, "param_groups": [...]}.
  Value optimizer_states = Value::list();
  Value lr_schedulers = Value::list();
  /// Callback state keyed by the callback's state key, e.g. "ModelCheckpoint{'monitor': ...}".
  Value callbacks = Value::dict();
  /// Loop progress ("fit_loop", "validate_loop", ...).
  Value loops = Value::dict();
  /// Every other top-level key ("pytorch-lightning_version", "hparams_name", user keys), kept as read.
  Value extra = Value::dict();

  /// From a Lightning-shaped dict. A bare state dict (str -> tensor, as `torch.save(model.state_dict())`
  /// or a safetensors file holds) becomes `state_dict` with the other fields empty.
  static Checkpoint from_value(const Value& value);
  /// Lightning's key order; keys of `extra` follow.
  Value to_value() const;

  /// Any format volt reads (see CheckpointReader); tensors view the file without copying.
  static Checkpoint load(const std::string& path);
  /// The format follows the extension. A `.safetensors` file holds `state_dict` only, with epoch and
  /// global_step in its metadata; other fields are lost there, so volt refuses unless `lossy` is true.
  void save(const std::string& path, bool lossy = false) const;
};

}  // namespace volt

// The precision plugin (Lightning's `plugins/precision`): the one home of what a precision means in the
// loops — the dtype modules are converted to, the dtype batches are cast to, the forward context
// (autocast for the "-mixed" precisions), backward with loss scaling ("16-mixed") and the optimizer step
// with unscale / clip / skip. Strategies hold one; the Trainer never tests a precision itself.
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <functional>
#include <memory>

#include "volt/checkpoint/checkpoint.h"
#include "volt/checkpoint/value.h"
#include "volt/core/autocast_guard.h"
#include "volt/core/precision.h"
#include "volt/strategies/grad_scaler.h"

namespace volt {

class PrecisionPlugin {
 public:
  /// Throws volt::Error for "16-mixed" on the CPU (LibTorch's CPU autocast computes in bfloat16 only).
  PrecisionPlugin(Precision precision, c10::DeviceType device);
  virtual ~PrecisionPlugin() = default;
  PrecisionPlugin(PrecisionPlugin&&) = default;
  PrecisionPlugin& operator=(PrecisionPlugin&&) = default;

  const Precision& precision() const { return precision_; }
  /// Floating parameters and buffers to the precision's parameter dtype on `device`; integer and bool
  /// tensors keep their dtype (LibTorch's Module::to would cast them too). A no-op for tensors already
  /// there, such as a model built in init_module().
  virtual void convert_module(torch::nn::Module& module, c10::Device device) const;
  /// The dtype floating batch tensors are cast to: the parameter dtype for "-true", none for "-mixed"
  /// (autocast casts per op, as in Lightning).
  c10::optional<c10::ScalarType> input_dtype() const;
  /// Autocast for the "-mixed" precisions while the returned guard lives; nullptr otherwise.
  std::unique_ptr<AutocastGuard> forward_context() const;
  /// backward() of the (scaled, for "16-mixed") loss.
  virtual void backward(const at::Tensor& loss);
  /// Unscales the gradients ("16-mixed"), calls `clip` when they are finite, then steps — or skips the
  /// step when they are not and backs the scale off. Returns whether the optimizer stepped.
  virtual bool optimizer_step(torch::optim::Optimizer& optimizer, const std::function<void()>& clip);

  /// The loss scaler of "16-mixed" (nullptr otherwise).
  GradScaler* scaler() const { return scaler_.get(); }
  /// Lightning's Precision.state_dict(): the scaler's state (PyTorch's GradScaler keys), empty without one.
  virtual Value state_dict() const;
  virtual void load_state_dict(const Value& state);
  /// The checkpoint key of that state: Lightning's plugin class name ("MixedPrecision" for the "-mixed"
  /// precisions, "Precision" otherwise), so that the scale moves between volt and Lightning.
  virtual std::string state_key() const;
  /// Lightning's checkpoint connector: a non-empty state_dict() under state_key(), and its restore (a
  /// checkpoint without that key leaves the plugin as it is).
  void on_save_checkpoint(Checkpoint& checkpoint) const;
  void on_load_checkpoint(const Checkpoint& checkpoint);

 private:
  Precision precision_;
  c10::DeviceType device_type_;
  std::unique_ptr<GradScaler> scaler_;
};

}  // namespace volt

#include "volt/core/module.h"

#include <torch/torch.h>

#include "volt/error.h"

namespace volt {

at::Tensor& Module::register_buffer(std::string name, at::Tensor tensor, bool persistent) {
  return volt::register_buffer(*this, std::move(name), std::move(tensor), persistent);
}

at::Tensor Module::predict_step(const Batch& /*batch*/, int64_t /*batch_idx*/) {
  VOLT_FAIL("Trainer::predict needs the module to override predict_step(batch, batch_idx)");
}

void Module::log(const std::string& name, double value, const LogOptions& options) {
  if (log_sink_ != nullptr) log_sink_->log(name, value, options);
}

void Module::log(const std::string& name, const at::Tensor& value, const LogOptions& options) {
  VOLT_CHECK(value.numel() == 1, "log('", name, "') takes a number or a one-element tensor, not a tensor of ",
             value.numel(), " elements: reduce it first (e.g. .mean())");
  if (log_sink_ != nullptr) log_sink_->log(name, value.detach().to(torch::kDouble).item<double>(), options);
}

}  // namespace volt

#include "volt/core/batch.h"

#include <torch/torch.h>

namespace volt {

Batch::Batch(const std::vector<torch::data::Example<>>& examples) {
  std::vector<at::Tensor> data_items, target_items;
  for (const auto& example : examples) {
    data_items.push_back(example.data);
    if (example.target.defined()) target_items.push_back(example.target);
  }
  if (!data_items.empty()) data = torch::stack(data_items);
  if (!target_items.empty()) target = torch::stack(target_items);
}

namespace {
at::Tensor moved(const at::Tensor& t, c10::Device device, c10::optional<c10::ScalarType> float_dtype) {
  if (!t.defined()) return t;
  const auto dtype = float_dtype && at::isFloatingType(t.scalar_type()) ? *float_dtype : t.scalar_type();
  if (t.device() == device && t.scalar_type() == dtype) return t;
  return t.to(device, dtype, /*non_blocking=*/device.is_cuda());
}
}  // namespace

Batch Batch::to(c10::Device device, c10::optional<c10::ScalarType> float_dtype) const {
  return Batch(moved(data, device, float_dtype), moved(target, device, float_dtype));
}

}  // namespace volt

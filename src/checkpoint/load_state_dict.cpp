#include "volt/checkpoint/load_state_dict.h"

#include <torch/torch.h>

#include <map>
#include <set>

#include "volt/checkpoint/state_dict.h"
#include "volt/error.h"
#include "volt/init/uninitialized.h"

namespace volt {

namespace {
std::string join(const std::vector<std::string>& names, size_t max_names) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < max_names; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > max_names) out += ", ... (" + std::to_string(names.size()) + " in all)";
  return out;
}

std::string shape(c10::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}
// Makes `target` hold `data` (storage, device, dtype) while keeping its TensorImpl — and so every handle the
// module and an optimizer hold, and its autograd flags — as LibTorch's Module::to does with set_data.
// set_data refuses a meta -> CPU swap (different backends); TensorImpl::shallow_copy_from, which set_data
// calls after its check, does it, and is safe here: under NoGrad, on a leaf with no history.
void adopt(torch::Tensor& target, const torch::Tensor& data) {
  if (at::_has_compatible_shallow_copy_type(target, data)) {
    target.set_data(data);
  } else {
    target.unsafeGetTensorImpl()->shallow_copy_from(data.getIntrusivePtr());
  }
}
}  // namespace

std::string LoadReport::summary(size_t max_names) const {
  if (complete()) return "complete (" + std::to_string(loaded.size()) + " tensors)";
  std::string out;
  const auto part = [&](const std::vector<std::string>& names, const char* what) {
    if (names.empty()) return;
    if (!out.empty()) out += "; ";
    out += std::to_string(names.size()) + " " + what + " (" + join(names, max_names) + ")";
  };
  part(missing, "missing");
  part(unexpected, "unexpected");
  part(mismatched, "with mismatched shapes");
  return out;
}

LoadReport load_state_dict(torch::nn::Module& module, const Value& source, const LoadOptions& options) {
  const Value& tensors =
      source.is_dict() && source.to_dict().contains("state_dict") ? source["state_dict"] : source;
  VOLT_CHECK(tensors.is_dict(),
             "load_state_dict takes a dict of name -> tensor (or a checkpoint with a "
             "'state_dict'), not a ",
             kind_name(tensors.kind()));
  std::map<std::string, torch::Tensor> targets;
  std::vector<std::string> order;
  // Non-persistent buffers are not part of the state (BufferPersistence), as in PyTorch.
  for (const auto& [name, tensor] : named_state_tensors(module)) {
    targets.emplace(name, tensor);
    order.push_back(name);
  }

  // Match everything first: a strict failure must leave the module exactly as it was.
  LoadReport report;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> pairs;
  std::set<std::string> seen;
  for (const auto& [key, value] : tensors.to_dict()) {
    const std::string name = key.is_string() ? key.to_string() : key.repr(0);
    auto it = targets.find(name);
    if (it == targets.end() || !value.is_tensor()) {
      report.unexpected.push_back(name);
      continue;
    }
    seen.insert(name);
    const torch::Tensor& src = value.to_tensor();
    if (src.sizes() != it->second.sizes()) {
      report.mismatched.push_back(name + ": checkpoint " + shape(src.sizes()) + ", module " +
                                  shape(it->second.sizes()));
      continue;
    }
    pairs.emplace_back(it->second, src);
    report.loaded.push_back(name);
  }
  for (const auto& name : order)
    if (!seen.count(name)) report.missing.push_back(name);
  VOLT_CHECK(!options.strict() || report.complete(),
             "load_state_dict (strict): the checkpoint does not match the "
             "module: ",
             report.summary(),
             ". Fix the names, or load with LoadOptions().strict(false) and check "
             "the report");

  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < pairs.size(); ++i) {
    torch::Tensor& target = pairs[i].first;
    const torch::Tensor& src = pairs[i].second;
    // Before adopting: the record of a skipped init is keyed by the memory the tensor holds now.
    mark_initialized(target);
    const bool adoptable =
        options.zero_copy() && src.device().is_cpu() && src.scalar_type() == target.scalar_type() &&
        src.is_contiguous() && (target.is_meta() || target.device().is_cpu()) &&
        // Only a parameter that owns its storage alone: adopting memory must not untie
        // weights that share it.
        (target.is_meta() ||
         (target.storage().use_count() == 1 && target.storage_offset() == 0 && target.is_contiguous()));
    // set_data swaps what the parameter's TensorImpl holds (storage, device, dtype), keeping its identity,
    // autograd flags and every handle the module and its optimizer have: LibTorch's Module::to does this.
    if (adoptable) {
      adopt(target, src);
      report.zero_copy.push_back(report.loaded[i]);
    } else if (target.is_meta()) {
      adopt(target, src.to(target.scalar_type(), /*non_blocking=*/false, /*copy=*/true));
    } else {
      target.copy_(src);
    }
  }
  // Whatever the checkpoint lacked and an empty init skipped gets the values a plain init would have
  // given, whatever `strict` says: no load returns with a tensor holding uninitialized memory.
  report.initialized = initialize_uninitialized(module);
  for (const auto& name : report.missing) {
    const auto it = targets.find(name);
    if (it != targets.end() && it->second.is_meta()) report.meta.push_back(name);
  }
  return report;
}

}  // namespace volt

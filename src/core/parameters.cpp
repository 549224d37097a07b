#include "volt/core/parameters.h"

#include <torch/torch.h>

#include <unordered_set>

#include "volt/error.h"

namespace volt {
namespace {

// The registered-parameter table of any module: it is protected in torch::nn::Module, and re-pointing an
// entry (what tying needs) has no public call. A member pointer formed through a derived class reaches it.
struct ParameterTable : torch::nn::Module {
  static torch::OrderedDict<std::string, at::Tensor>& of(torch::nn::Module& module) {
    return module.*(&ParameterTable::parameters_);
  }
};

std::string shape(c10::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}

template <typename Items>
std::vector<std::pair<std::string, at::Tensor>> first_occurrences(const Items& items) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::unordered_set<const c10::TensorImpl*> seen;
  for (const auto& item : items)
    if (seen.insert(item.value().unsafeGetTensorImpl()).second) out.emplace_back(item.key(), item.value());
  return out;
}

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> named_unique_parameters(const torch::nn::Module& module) {
  // LibTorch walks modules depth-first, each module's own parameters in registration order: PyTorch's
  // named_modules() order. Dropping repeats keeps each tensor's first name, as PyTorch's memo does.
  return first_occurrences(module.named_parameters(/*recurse=*/true));
}

std::vector<at::Tensor> unique_parameters(const torch::nn::Module& module) {
  std::vector<at::Tensor> out;
  for (auto& item : named_unique_parameters(module)) out.push_back(std::move(item.second));
  return out;
}

std::vector<at::Tensor> unique_buffers(const torch::nn::Module& module) {
  std::vector<at::Tensor> out;
  for (auto& item : first_occurrences(module.named_buffers(/*recurse=*/true)))
    out.push_back(std::move(item.second));
  return out;
}

void tie_parameter(torch::nn::Module& owner, at::Tensor& member, const at::Tensor& target) {
  VOLT_CHECK(member.defined() && target.defined(),
             "tie_parameter: both the layer's parameter and the target must be defined tensors");
  auto& table = ParameterTable::of(owner);
  at::Tensor* entry = nullptr;
  std::string name;
  for (auto& item : table) {
    if (item.value().unsafeGetTensorImpl() == member.unsafeGetTensorImpl()) {
      entry = &item.value();
      name = item.key();
      break;
    }
  }
  VOLT_CHECK(entry != nullptr, "tie_parameter: the tensor to replace is not a parameter registered on ",
             owner.name(),
             ": pass the layer that owns it and its field, e.g. tie_parameter(lm_head, lm_head->weight, "
             "wte->weight)");
  VOLT_CHECK(member.sizes() == target.sizes(), "tie_parameter: ", owner.name(), "'s '", name, "' is ",
             shape(member.sizes()), " but the target is ", shape(target.sizes()),
             ": tied tensors must have the same shape (a Linear(d, v) ties to an Embedding(v, d))");
  *entry = target;
  member = target;
}

}  // namespace volt

#include "volt/checkpoint/state_dict.h"

#include "volt/error.h"

namespace volt {
namespace {

void collect(const torch::nn::Module& module, const std::string& prefix,
             std::vector<std::pair<std::string, at::Tensor>>& out) {
  for (const auto& item : module.named_parameters(/*recurse=*/false))
    out.emplace_back(prefix + item.key(), item.value());
  const auto* persistence = dynamic_cast<const BufferPersistence*>(&module);
  for (const auto& item : module.named_buffers(/*recurse=*/false))
    if (persistence == nullptr || persistence->is_persistent_buffer(item.key()))
      out.emplace_back(prefix + item.key(), item.value());
  for (const auto& child : module.named_children()) collect(*child.value(), prefix + child.key() + ".", out);
}

}  // namespace

at::Tensor& register_buffer(torch::nn::Module& module, std::string name, at::Tensor tensor, bool persistent) {
  auto* persistence = dynamic_cast<BufferPersistence*>(&module);
  VOLT_CHECK(persistence != nullptr || persistent, "register_buffer('", name, "', persistent=false) on ",
             module.name(),
             ": only a module that derives from volt::BufferPersistence (volt::Module does) can keep a "
             "buffer out of its state dict; add it to the module's bases");
  const std::string own_name = name;
  at::Tensor& registered = module.register_buffer(std::move(name), std::move(tensor));
  if (persistence != nullptr) {
    if (persistent)
      persistence->non_persistent_.erase(own_name);
    else
      persistence->non_persistent_.insert(own_name);
  }
  return registered;
}

std::vector<std::pair<std::string, at::Tensor>> named_state_tensors(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  collect(module, "", out);
  return out;
}

Value state_dict(const torch::nn::Module& module) {
  Value out = Value::dict(/*ordered=*/true);
  Dict& dict = out.to_dict();
  for (const auto& [name, tensor] : named_state_tensors(module)) dict.set(name, tensor.detach());
  return out;
}

}  // namespace volt

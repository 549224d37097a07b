#include "volt/checkpoint/state_dict.h"

namespace volt {

Value state_dict(const torch::nn::Module& module) {
  Value out = Value::dict(/*ordered=*/true);
  for (const auto& item : module.named_parameters(/*recurse=*/true))
    out.to_dict().set(item.key(), item.value().detach());
  for (const auto& item : module.named_buffers(/*recurse=*/true))
    out.to_dict().set(item.key(), item.value().detach());
  return out;
}

}  // namespace volt

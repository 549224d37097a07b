// Whether a tensor is its storage's only tenant: contiguous from offset 0 over every byte. A fill of such a
// tensor rewrites the whole storage (the init engine drops what it recorded before); a torch.save record
// of it holds exactly its elements (a view of a bigger storage would save the whole storage). Internal.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>

namespace volt::detail {

inline bool covers_storage(const at::Tensor& t) {
  return t.is_contiguous() && t.storage_offset() == 0 &&
         static_cast<size_t>(t.numel()) * t.element_size() == t.storage().nbytes();
}

}  // namespace volt::detail

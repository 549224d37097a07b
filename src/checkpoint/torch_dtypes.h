// PyTorch's names for the dtypes volt's checkpoints carry: the torch.<name> attribute a pickle names
// (torch.float32, or an alias such as torch.float) and the torch.<Name>Storage class torch.save names in
// a storage's persistent id. One table for the .pt reader and writer and for DCP metadata. Internal.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/Optional.h>

#include <string>

namespace volt::detail {

struct TorchDtype {
  c10::ScalarType dtype;
  const char* name;     // what volt writes: torch.<name>
  const char* alias;    // another attribute naming it (nullptr: none)
  const char* storage;  // torch.<storage> of torch.save's persistent ids
};

/// The entry of `dtype`; nullptr when PyTorch's files cannot hold it.
const TorchDtype* torch_dtype(c10::ScalarType dtype);
/// The dtype the attribute torch.<attribute> names, by name or alias.
c10::optional<c10::ScalarType> dtype_of_attribute(const std::string& attribute);
/// The element dtype of storage class torch.<name> ("UntypedStorage": bytes).
c10::optional<c10::ScalarType> dtype_of_storage_class(const std::string& name);

}  // namespace volt::detail

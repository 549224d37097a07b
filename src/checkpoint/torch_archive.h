// The torch.save zip format over any byte range: a whole `.pt` file, or one item inside a DCP `.distcp`
// file (whose zip offsets count from the item's first byte).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mapped_file.h"
#include "volt/checkpoint/tensor_stream_hooks.h"
#include "volt/checkpoint/value.h"
#include "zip_archive.h"

namespace volt::detail {

/// Unpickles the archive at [data, data + size) inside `file`; tensors view `file`. Errors name `path`.
Value read_torch_archive(const std::shared_ptr<MappedFile>& file, const char* data, uint64_t size,
                         const std::string& path, bool strict, std::vector<std::string>* records = nullptr);

/// Writes `value` as torch.save does, through `sink`. `path` names the destination in errors.
void write_torch_archive(const ZipWriter::Sink& sink, const Value& value, const TensorStreamHooks& hooks,
                         const std::string& path);

}  // namespace volt::detail

// Hugging Face safetensors files (https://github.com/huggingface/safetensors): volt's format for weights and
// checkpoint shards. The reader maps the file, validates the whole header up front as the reference
// implementation does, and hands out tensors that view the mapping; the writer is byte-identical to
// `safetensors.torch.save_file`.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "volt/checkpoint/tensor_stream_hooks.h"

namespace volt {
namespace detail {
class MappedFile;
}

/// One tensor of a safetensors header. `begin` and `end` are byte offsets into the data that follows the
/// header, so `end - begin` is the tensor's size in bytes.
struct TensorInfo {
  std::string name;
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

/// Reads the dtypes BOOL, U8, I8, I16, I32, I64, F16, BF16, F32, F64 and C64. A file using another
/// safetensors dtype (F8_*, U16/U32/U64, F4, F6_*) is rejected with an error naming the dtype.
class SafetensorsReader {
 public:
  /// Maps `path` and validates everything before returning: header length, JSON, dtypes, shapes, and that
  /// the tensors tile the data exactly (no overlap, no hole, nothing past the end). Any defect throws
  /// volt::Error naming the file and the defect. Nothing is allocated on the strength of a number in the
  /// file, and nothing outside the mapping is ever read.
  explicit SafetensorsReader(const std::string& path);

  const std::string& path() const { return path_; }
  /// In file order (by data offset). Copies on a temporary reader, whose members die with it.
  const std::vector<TensorInfo>& tensors() const& { return tensors_; }
  std::vector<TensorInfo> tensors() && { return tensors_; }
  /// The `__metadata__` map; empty when the file has none.
  const std::map<std::string, std::string>& metadata() const& { return metadata_; }
  std::map<std::string, std::string> metadata() && { return metadata_; }
  bool contains(const std::string& name) const { return index_.count(name) > 0; }
  /// Throws volt::Error naming the file and `name` when the file has no such tensor.
  const TensorInfo& info(const std::string& name) const&;
  TensorInfo info(const std::string& name) && {
    return static_cast<const SafetensorsReader&>(*this).info(name);
  }

  /// A CPU tensor with the values of `name`. When its data is aligned to the element size (always, for
  /// files written by volt or the reference writer) the tensor views the mapping without a copy and keeps
  /// the mapping alive after the reader is gone. The mapping is private copy-on-write: such a tensor can
  /// be modified in place (a loaded parameter can be trained), the file never changes, and only the pages
  /// written cost memory. Unaligned data is copied into a fresh tensor.
  at::Tensor tensor(const std::string& name) const;
  /// True when `tensor`'s data lies inside this reader's mapping (it was handed out without a copy).
  bool is_mapped(const at::Tensor& tensor) const;
  /// Drops the resident pages behind a mapped tensor once it has been consumed, so that streaming a large
  /// file keeps memory near one tensor; the pages are re-read from the file if touched again. Returns false
  /// for a tensor that does not view this file.
  bool release_pages(const at::Tensor& tensor) const;

 private:
  std::string path_;
  std::shared_ptr<const detail::MappedFile> mapping_;
  const char* data_ = nullptr;  // the first byte after the header
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

/// Writes `tensors` atomically to `path` (any device, any strides; each is copied to contiguous CPU memory
/// one at a time, so peak memory is one tensor), byte-identical to
/// `safetensors.torch.save_file(tensors, path, metadata)`. An empty `metadata` writes no `__metadata__`
/// key, as `metadata=None` does in Python. Names must be unique, valid UTF-8 and not `__metadata__`.
/// `hooks` stream tensors through memory one at a time (see TensorStreamHooks).
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {},
                      const TensorStreamHooks& hooks = {});

}  // namespace volt

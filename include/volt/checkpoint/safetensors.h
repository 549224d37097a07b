// Hugging Face safetensors files (https://huggingface.co/docs/safetensors): read by mapping the file,
// validated up front as the reference implementation does, and written byte-identical to
// `safetensors.torch.save_file`.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace volt {

/// One entry of a safetensors header; `begin` and `end` are byte offsets into the data after the header.
struct SafetensorsEntry {
  std::string name;
  c10::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

class SafetensorsReader {
 public:
  /// Maps and validates the whole file; any defect throws volt::Error naming the file and the defect,
  /// before any tensor is handed out. Nothing is allocated beyond the mapping and the parsed header.
  explicit SafetensorsReader(const std::string& path);

  const std::string& path() const { return path_; }
  /// Entries in file (offset) order.
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return index_.count(name) > 0; }
  const SafetensorsEntry& entry(const std::string& name) const;

  /// A CPU tensor of the entry. Where the data is aligned to its element size, it views the mapping
  /// without a copy (and keeps the mapping alive); the mapping is private copy-on-write memory, so writing
  /// to the tensor never changes the file. Unaligned data is copied.
  at::Tensor tensor(const std::string& name) const;
  /// True when `tensor` lies inside this reader's mapping (it was handed out without a copy).
  bool is_mapped(const at::Tensor& tensor) const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  const char* data_ = nullptr;  // first byte after the header
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

/// Writes `tensors` (any device, strides or dtype volt supports) atomically to `path`, one tensor at a
/// time, byte-identical to `safetensors.torch.save_file(tensors, path, metadata)`.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

/// "F32", "BF16", ... for a dtype; throws volt::Error for dtypes safetensors cannot name.
const char* safetensors_dtype_name(c10::ScalarType dtype);

}  // namespace volt

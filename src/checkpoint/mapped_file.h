// A whole file mapped private copy-on-write, shared by the readers (torch files, safetensors, DCP items):
// tensors handed out view it without a copy and keep it alive; pages behind a consumed tensor can be
// dropped so that streaming a large file keeps memory near one tensor.
#pragma once

#include "../init/storage_coverage.h"

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace volt::detail {

class MappedFile {
 public:
  /// Maps `path` whole. Throws volt::Error naming the file ("<kind> '<path>': cannot open it: ...") when it
  /// cannot be opened, is not a regular file or cannot be mapped. An empty file maps to no bytes.
  static std::shared_ptr<MappedFile> open(const std::string& path, const std::string& kind = "file");
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  /// Writable (private): writing changes only this process's copy, never the file.
  char* data() const { return data_; }
  uint64_t size() const { return size_; }
  bool contains(const void* begin, uint64_t bytes) const;

  /// A CPU tensor of `sizes` at `bytes` (inside the mapping) that keeps the mapping alive; a copy when the
  /// address is not aligned to the element size (huge pages when large).
  at::Tensor tensor(const char* bytes, std::vector<int64_t> sizes, c10::ScalarType dtype) const;
  /// True when `tensor`'s data lies inside the mapping (it was handed out without a copy).
  bool is_mapped(const at::Tensor& tensor) const;
  /// MADV_DONTNEED on the whole pages inside [begin, begin + bytes); false when the range is not inside.
  bool release_pages(const void* begin, uint64_t bytes) const;
  /// release_pages over a tensor's whole storage.
  bool release_pages(const at::Tensor& tensor) const;

 private:
  MappedFile(std::string path, char* data, uint64_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  char* data_ = nullptr;
  uint64_t size_ = 0;
  std::weak_ptr<MappedFile> self_;
};

// covers_storage: one home, the init engine's (src/init/storage_coverage.h).

}  // namespace volt::detail

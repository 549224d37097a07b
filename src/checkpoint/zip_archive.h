// The subset of ZIP that PyTorch's `torch.save` files use: stored (uncompressed) entries, ZIP64 for large
// archives, records aligned to 64 bytes. The reader trusts no offset or length it has not checked against
// the file; the writer produces archives that PyTorch's reader (miniz) and Python's zipfile accept.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace volt {
class AtomicFileWriter;
}

namespace volt::detail {

struct ZipEntry {
  std::string name;
  uint64_t data_offset = 0;  // of the stored bytes, from the start of the file
  uint64_t size = 0;
  uint16_t method = 0;  // 0 = stored
};

class ZipReader {
 public:
  /// Parses the central directory of `data[0, size)`. Errors name `path` and the defect.
  ZipReader(const char* data, uint64_t size, std::string path);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  /// nullptr when there is no such entry.
  const ZipEntry* find(const std::string& name) const;
  /// The bytes of a stored entry; throws volt::Error when the entry is compressed.
  const char* data(const ZipEntry& entry) const;

 private:
  const char* data_;
  uint64_t size_;
  std::string path_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

/// Appends stored records to an AtomicFileWriter; `finish()` writes the central directory.
class ZipWriter {
 public:
  explicit ZipWriter(AtomicFileWriter& out) : out_(out) {}
  /// Writes one record whose data starts at a multiple of `alignment` bytes in the file.
  void add(const std::string& name, const void* data, uint64_t size, uint64_t alignment = 64);
  void finish();

 private:
  struct Written {
    std::string name;
    uint32_t crc;
    uint64_t size;
    uint64_t header_offset;
  };
  void put(const std::string& bytes);
  AtomicFileWriter& out_;
  uint64_t offset_ = 0;
  std::vector<Written> written_;
};

}  // namespace volt::detail

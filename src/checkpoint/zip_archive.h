// The subset of ZIP that PyTorch's `torch.save` files use: stored (uncompressed) entries, ZIP64 for large
// archives, records aligned to 64 bytes. The reader trusts no offset or length it has not checked against
// the file; the writer produces archives that PyTorch's reader (miniz) and Python's zipfile accept.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
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

/// Appends stored records to a byte sink (a file, or a DCP item inside a rank's file: offsets count from
/// the first byte this writer writes); `finish()` writes the central directory.
class ZipWriter {
 public:
  using Sink = std::function<void(const void* data, uint64_t size)>;
  explicit ZipWriter(AtomicFileWriter& out);
  explicit ZipWriter(Sink sink) : out_(std::move(sink)) {}
  /// Writes one record whose data starts at a multiple of `alignment` bytes in the file.
  void add(const std::string& name, const void* data, uint64_t size, uint64_t alignment = 64);
  void finish();
  uint64_t bytes_written() const { return offset_; }

 private:
  struct Written {
    std::string name;
    uint32_t crc;
    uint64_t size;
    uint64_t header_offset;
  };
  void put(const std::string& bytes);
  Sink out_;
  uint64_t offset_ = 0;
  std::vector<Written> written_;
};

}  // namespace volt::detail

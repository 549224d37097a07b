#include "zip_archive.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>

#include "volt/checkpoint/atomic_file.h"
#include "volt/error.h"

namespace volt::detail {
namespace {

constexpr uint32_t kLocalHeader = 0x04034b50;
constexpr uint32_t kCentralHeader = 0x02014b50;
constexpr uint32_t kEndOfCentralDirectory = 0x06054b50;
constexpr uint32_t kZip64End = 0x06064b50;
constexpr uint32_t kZip64Locator = 0x07064b50;
constexpr uint64_t k32 = 0xffffffffu;
constexpr uint64_t k16 = 0xffffu;

uint64_t le(const char* p, int bytes) {
  uint64_t value = 0;
  for (int i = bytes - 1; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(p[i]);
  return value;
}

void put_le(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
}

}  // namespace

ZipReader::ZipReader(const char* data, uint64_t size, std::string path)
    : data_(data), size_(size), path_(std::move(path)) {
  auto fail = [&](const std::string& what) {
    VOLT_FAIL("'", path_, "' is not a valid PyTorch zip archive: ", what);
  };
  auto need = [&](uint64_t offset, uint64_t bytes, const char* what) {
    if (offset > size_ || bytes > size_ - offset)
      fail(std::string(what) + " at byte " + std::to_string(offset) + " runs past the end of the " +
           std::to_string(size_) + "-byte file (truncated?)");
  };
  if (size_ < 22) fail("the file is " + std::to_string(size_) + " bytes, too short for a zip archive");

  // The end-of-central-directory record is the last 22 bytes, followed by a comment of at most 64 KiB.
  uint64_t eocd = UINT64_MAX;
  const uint64_t lowest = size_ >= 22 + 65535 ? size_ - 22 - 65535 : 0;
  for (uint64_t at = size_ - 22 + 1; at-- > lowest;) {
    if (le(data_ + at, 4) == kEndOfCentralDirectory && at + 22 + le(data_ + at + 20, 2) <= size_) {
      eocd = at;
      break;
    }
  }
  if (eocd == UINT64_MAX) fail("no end-of-central-directory record (truncated, or not a zip file)");
  uint64_t count = le(data_ + eocd + 10, 2);
  uint64_t directory_size = le(data_ + eocd + 12, 4);
  uint64_t directory_offset = le(data_ + eocd + 16, 4);
  if (le(data_ + eocd + 4, 2) != 0 || le(data_ + eocd + 6, 2) != 0)
    fail("multi-disk archives are not supported");
  uint64_t directory_end = eocd;
  if (count == k16 || directory_size == k32 || directory_offset == k32) {
    if (eocd < 20 || le(data_ + eocd - 20, 4) != kZip64Locator) fail("ZIP64 fields without a ZIP64 locator");
    const uint64_t record = le(data_ + eocd - 20 + 8, 8);
    if (record > eocd - 20 || eocd - 20 - record < 56 || le(data_ + record, 4) != kZip64End)
      fail("the ZIP64 end-of-central-directory record is missing or out of place");
    count = le(data_ + record + 32, 8);
    directory_size = le(data_ + record + 40, 8);
    directory_offset = le(data_ + record + 48, 8);
    directory_end = record;
  }
  if (directory_offset > directory_end || directory_size > directory_end - directory_offset)
    fail("the central directory (offset " + std::to_string(directory_offset) + ", " +
         std::to_string(directory_size) + " bytes) lies outside the file");
  if (count > directory_size / 46)
    fail("the entry count " + std::to_string(count) + " exceeds what the directory can hold");

  entries_.reserve(count);
  uint64_t at = directory_offset;
  const uint64_t end = directory_offset + directory_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (at + 46 > end || le(data_ + at, 4) != kCentralHeader)
      fail("central directory entry " + std::to_string(i) + " is malformed");
    const uint64_t flags = le(data_ + at + 8, 2);
    ZipEntry entry;
    entry.method = static_cast<uint16_t>(le(data_ + at + 10, 2));
    uint64_t compressed = le(data_ + at + 20, 4);
    uint64_t uncompressed = le(data_ + at + 24, 4);
    const uint64_t name_length = le(data_ + at + 28, 2);
    const uint64_t extra_length = le(data_ + at + 30, 2);
    const uint64_t comment_length = le(data_ + at + 32, 2);
    uint64_t local = le(data_ + at + 42, 4);
    if (at + 46 + name_length + extra_length + comment_length > end)
      fail("central directory entry " + std::to_string(i) + " runs past the directory");
    entry.name.assign(data_ + at + 46, name_length);
    // Names end up in messages, which a NUL byte would cut short (and no zip writer puts one in a name).
    if (entry.name.find('\0') != std::string::npos)
      fail("the name of central directory entry " + std::to_string(i) + " holds a NUL byte");
    // ZIP64 extended information: the 64-bit values of the fields that read 0xffffffff, in this order.
    const char* extra = data_ + at + 46 + name_length;
    for (uint64_t e = 0; e + 4 <= extra_length;) {
      const uint64_t id = le(extra + e, 2), length = le(extra + e + 2, 2);
      if (e + 4 + length > extra_length) fail("entry '" + entry.name + "' has a malformed extra field");
      if (id == 1) {
        uint64_t field = e + 4;
        auto take = [&](uint64_t& value) {
          if (value != k32) return;
          if (field + 8 > e + 4 + length) fail("entry '" + entry.name + "' has a short ZIP64 extra field");
          value = le(extra + field, 8);
          field += 8;
        };
        take(uncompressed);
        take(compressed);
        take(local);
      }
      e += 4 + length;
    }
    if (flags & 1) fail("entry '" + entry.name + "' is encrypted");
    if (entry.method == 0 && compressed != uncompressed)
      fail("stored entry '" + entry.name + "' has different compressed and uncompressed sizes");
    entry.size = compressed;
    need(local, 30, "the local header");
    if (le(data_ + local, 4) != kLocalHeader)
      fail("entry '" + entry.name + "' has no local header where the directory says");
    const uint64_t start = local + 30 + le(data_ + local + 26, 2) + le(data_ + local + 28, 2);
    if (start > directory_offset || entry.size > directory_offset - start)
      fail("the data of entry '" + entry.name + "' (" + std::to_string(entry.size) + " bytes at " +
           std::to_string(start) + ") overlaps the central directory or runs past the file");
    entry.data_offset = start;
    if (!index_.emplace(entry.name, entries_.size()).second) fail("entry '" + entry.name + "' appears twice");
    entries_.push_back(std::move(entry));
    at += 46 + name_length + extra_length + comment_length;
  }
}

const ZipEntry* ZipReader::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const char* ZipReader::data(const ZipEntry& entry) const {
  VOLT_CHECK(entry.method == 0, "'", path_, "': entry '", entry.name, "' is compressed (method ",
             entry.method, "); PyTorch stores records uncompressed, and so must a file volt reads");
  return data_ + entry.data_offset;
}

ZipWriter::ZipWriter(AtomicFileWriter& out)
    : out_([&out](const void* data, uint64_t size) { out.write(data, size); }) {}

void ZipWriter::put(const std::string& bytes) {
  out_(bytes.data(), bytes.size());
  offset_ += bytes.size();
}

void ZipWriter::add(const std::string& name, const void* data, uint64_t size, uint64_t alignment) {
  // zlib's crc32 takes a uInt length: feed it in pieces.
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* bytes = static_cast<const Bytef*>(data);
  for (uint64_t done = 0; done < size;) {
    const uint64_t piece = std::min<uint64_t>(size - done, 1u << 30);
    crc = crc32(crc, bytes + done, static_cast<uInt>(piece));
    done += piece;
  }
  const bool zip64 = size >= k32 || offset_ >= k32;
  std::string header;
  put_le(header, kLocalHeader, 4);
  put_le(header, zip64 ? 45 : 20, 2);  // version needed
  put_le(header, 0, 2);                // flags
  put_le(header, 0, 2);                // stored
  put_le(header, 0, 2);                // time
  put_le(header, 0x21, 2);             // date: 1980-01-01, as PyTorch writes
  put_le(header, crc, 4);
  put_le(header, zip64 ? k32 : size, 4);
  put_le(header, zip64 ? k32 : size, 4);
  put_le(header, name.size(), 2);
  std::string extra;
  if (zip64) {
    put_le(extra, 1, 2);
    put_le(extra, 16, 2);
    put_le(extra, size, 8);
    put_le(extra, size, 8);
  }
  // Pad with an unknown extra field ("FB", as PyTorch does) so the data starts aligned.
  const uint64_t unpadded = offset_ + 30 + name.size() + extra.size() + 4;
  const uint64_t padding = (alignment - unpadded % alignment) % alignment;
  put_le(extra, 0x4246, 2);
  put_le(extra, padding, 2);
  extra.append(padding, 'Z');
  put_le(header, extra.size(), 2);
  header += name;
  header += extra;
  written_.push_back({name, static_cast<uint32_t>(crc), size, offset_});
  put(header);
  out_(data, size);
  offset_ += size;
}

void ZipWriter::finish() {
  const uint64_t directory_offset = offset_;
  for (const Written& w : written_) {
    const bool zip64 = w.size >= k32 || w.header_offset >= k32;
    std::string entry;
    put_le(entry, kCentralHeader, 4);
    put_le(entry, zip64 ? 45 : 20, 2);  // made by
    put_le(entry, zip64 ? 45 : 20, 2);  // needed
    put_le(entry, 0, 2);
    put_le(entry, 0, 2);
    put_le(entry, 0, 2);
    put_le(entry, 0x21, 2);
    put_le(entry, w.crc, 4);
    put_le(entry, zip64 ? k32 : w.size, 4);
    put_le(entry, zip64 ? k32 : w.size, 4);
    put_le(entry, w.name.size(), 2);
    put_le(entry, zip64 ? 28 : 0, 2);  // extra length
    put_le(entry, 0, 2);               // comment
    put_le(entry, 0, 2);               // disk
    put_le(entry, 0, 2);               // internal attributes
    put_le(entry, 0, 4);               // external attributes
    put_le(entry, zip64 ? k32 : w.header_offset, 4);
    entry += w.name;
    if (zip64) {
      put_le(entry, 1, 2);
      put_le(entry, 24, 2);
      put_le(entry, w.size, 8);
      put_le(entry, w.size, 8);
      put_le(entry, w.header_offset, 8);
    }
    put(entry);
  }
  const uint64_t directory_size = offset_ - directory_offset;
  const uint64_t count = written_.size();
  const bool zip64 = count >= k16 || directory_offset >= k32 || directory_size >= k32;
  std::string end;
  if (zip64) {
    const uint64_t record = offset_;
    put_le(end, kZip64End, 4);
    put_le(end, 44, 8);  // size of the rest of this record
    put_le(end, 45, 2);
    put_le(end, 45, 2);
    put_le(end, 0, 4);
    put_le(end, 0, 4);
    put_le(end, count, 8);
    put_le(end, count, 8);
    put_le(end, directory_size, 8);
    put_le(end, directory_offset, 8);
    put_le(end, kZip64Locator, 4);
    put_le(end, 0, 4);
    put_le(end, record, 8);
    put_le(end, 1, 4);
  }
  put_le(end, kEndOfCentralDirectory, 4);
  put_le(end, 0, 2);
  put_le(end, 0, 2);
  put_le(end, zip64 ? k16 : count, 2);
  put_le(end, zip64 ? k16 : count, 2);
  put_le(end, zip64 ? k32 : directory_size, 4);
  put_le(end, zip64 ? k32 : directory_offset, 4);
  put_le(end, 0, 2);
  put(end);
}

}  // namespace volt::detail

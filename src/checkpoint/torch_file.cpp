#include "volt/checkpoint/torch_file.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "pickle.h"
#include "volt/checkpoint/atomic_file.h"
#include "volt/error.h"
#include "zip_archive.h"

namespace volt {

struct TorchFileReader::Mapping {
  char* bytes = nullptr;
  size_t size = 0;
  Mapping(char* bytes, size_t size) : bytes(bytes), size(size) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (size > 0) ::munmap(bytes, size);
  }
};

bool TorchFileReader::is_torch_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "PK\x03\x04", 4) == 0;
}

TorchFileReader::TorchFileReader(const std::string& path, const TorchReadOptions& options) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  VOLT_CHECK(fd >= 0, "cannot open '", path, "': ", std::strerror(errno));
  struct stat status {};
  if (::fstat(fd, &status) != 0 || !S_ISREG(status.st_mode)) {
    ::close(fd);
    VOLT_FAIL("'", path, "' is not a regular file");
  }
  const auto size = static_cast<size_t>(status.st_size);
  if (size == 0) {
    ::close(fd);
    VOLT_FAIL("'", path, "' is empty; a PyTorch file is a zip archive");
  }
  // Private and writable: tensors can be modified in place (copy-on-write), the file never is.
  void* address = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  const int map_error = errno;
  ::close(fd);
  VOLT_CHECK(address != MAP_FAILED, "cannot map '", path, "' (", size, " bytes): ", std::strerror(map_error));
  mapping_ = std::make_shared<Mapping>(static_cast<char*>(address), size);
  const char* data = mapping_->bytes;

  if (size >= 2 && static_cast<unsigned char>(data[0]) == 0x80 && static_cast<unsigned char>(data[1]) <= 5)
    VOLT_FAIL("'", path,
              "' is a bare pickle (PyTorch's legacy format before 1.6, or pickle.dump); volt reads "
              "zip files: re-save it with torch.save in PyTorch >= 1.6");
  detail::ZipReader zip(data, size, path);
  VOLT_CHECK(!zip.entries().empty(), "'", path, "' is an empty zip archive, not a PyTorch file");
  for (const auto& entry : zip.entries()) records_.push_back(entry.name);
  // Every record lives under one folder, named after the file when PyTorch wrote it.
  const std::string& first = zip.entries().front().name;
  const size_t slash = first.find('/');
  VOLT_CHECK(slash != std::string::npos, "'", path,
             "' is a zip archive but not a PyTorch file (its first record '", first.substr(0, 80),
             "' is not inside a folder)");
  const std::string prefix = first.substr(0, slash + 1);
  if (zip.find(prefix + "constants.pkl") != nullptr || zip.find(prefix + "code/") != nullptr)
    VOLT_FAIL("'", path, "' is a TorchScript archive (torch.jit.save); volt reads torch.save files");
  const detail::ZipEntry* pickle = zip.find(prefix + "data.pkl");
  VOLT_CHECK(pickle != nullptr, "'", path, "' is a zip archive without '", prefix,
             "data.pkl'; it is not a torch.save file");
  if (const detail::ZipEntry* order = zip.find(prefix + "byteorder")) {
    const std::string value(zip.data(*order), order->size);
    VOLT_CHECK(value == "little" || value == "big", "'", path,
               "' has a corrupt byteorder record (neither 'little' nor 'big')");
    VOLT_CHECK(value == "little", "'", path,
               "' was saved on a big-endian machine; volt reads little-endian files");
  }

  std::shared_ptr<Mapping> mapping = mapping_;
  const auto load = [&](const std::string& key, c10::ScalarType dtype, int64_t numel,
                        const std::string& /*location*/) -> c10::Storage {
    const std::string name = prefix + "data/" + key;
    const detail::ZipEntry* record = zip.find(name);
    VOLT_CHECK(record != nullptr, "'", path, "': the pickle refers to storage '", key.substr(0, 80),
               "' but the archive has no record '", name.substr(0, 120), "'");
    const uint64_t element = c10::elementSize(dtype);
    uint64_t bytes = 0;
    VOLT_CHECK(
        !__builtin_mul_overflow(static_cast<uint64_t>(numel), element, &bytes) && bytes <= record->size, "'",
        path, "': storage '", key, "' claims ", numel, " elements of ", c10::toString(dtype),
        " but its record holds only ", record->size, " bytes (truncated or corrupt)");
    char* source = const_cast<char*>(zip.data(*record));
    const auto options = at::TensorOptions().dtype(dtype);
    if (reinterpret_cast<uintptr_t>(source) % element == 0) {
      return at::from_blob(
                 source, {numel}, [mapping](void*) {}, options)
          .storage();
    }
    // Unaligned records (not written by PyTorch) are copied.
    at::Tensor copy = at::empty({numel}, options);
    if (bytes > 0) std::memcpy(copy.data_ptr(), source, bytes);
    return copy.storage();
  };
  detail::UnpickleOptions unpickle_options;
  unpickle_options.strict = options.strict_;
  contents_ = detail::unpickle(zip.data(*pickle), pickle->size, load, "'" + path + "' (" + pickle->name + ")",
                               unpickle_options);
}

std::vector<std::string> TorchFileReader::records() const { return records_; }

bool TorchFileReader::release_pages(const at::Tensor& tensor) const {
  if (!tensor.defined() || !tensor.has_storage()) return false;
  const char* begin = static_cast<const char*>(tensor.storage().data());
  const char* end = begin + tensor.storage().nbytes();
  if (begin < mapping_->bytes || end > mapping_->bytes + mapping_->size || begin == end) return false;
  // Whole pages inside the range only: the neighbours' pages may still be in use.
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t first = (reinterpret_cast<uintptr_t>(begin) + page - 1) / page * page;
  const uintptr_t last = reinterpret_cast<uintptr_t>(end) / page * page;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  return true;
}

void save_torch_file(const std::string& path, const Value& value, const TorchWriteOptions& options) {
  std::vector<detail::PickledStorage> storages;
  const std::string pickled =
      detail::pickle(value, &storages, /*allow_meta=*/static_cast<bool>(options.hooks_.materialize));
  write_file_atomically(path, [&](AtomicFileWriter& out) {
    detail::ZipWriter zip(out);
    const std::string prefix = "archive/";
    zip.add(prefix + "data.pkl", pickled.data(), pickled.size());
    zip.add(prefix + "byteorder", "little", 6);
    for (const auto& saved : storages) {
      // The whole storage, as bytes: views of it are rebuilt from their offsets and strides.
      const int64_t element = static_cast<int64_t>(c10::elementSize(saved.dtype));
      const int64_t numel = static_cast<int64_t>(saved.storage.nbytes()) / element;
      at::Tensor whole =
          at::empty({0}, at::TensorOptions().dtype(saved.dtype).device(saved.storage.device()));
      whole.set_(saved.storage, 0, {numel}, {1});
      at::Tensor host;
      if (whole.is_meta()) {
        host = options.hooks_.materialize(whole).contiguous();
        VOLT_CHECK(
            host.device().is_cpu() && host.scalar_type() == whole.scalar_type() && host.numel() == numel,
            "cannot save '", path, "': the data streamed for storage ", saved.key,
            " does not match its dtype and size");
      } else {
        host = whole.device().is_cpu() ? whole : whole.cpu();
      }
      zip.add(prefix + "data/" + saved.key, numel > 0 ? host.data_ptr() : "",
              static_cast<uint64_t>(numel * element));
      if (options.hooks_.written) options.hooks_.written(whole);
    }
    zip.add(prefix + "version", "3\n", 2);
    zip.finish();
  });
}

}  // namespace volt

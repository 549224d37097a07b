#include "mapped_file.h"

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "volt/error.h"
#include "volt/init/huge_page_allocator.h"

namespace volt::detail {

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path, const std::string& kind) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  VOLT_CHECK(fd >= 0, kind, " '", path, "': cannot open it: ", std::strerror(errno));
  struct stat status {};
  if (::fstat(fd, &status) != 0) {
    const int error = errno;
    ::close(fd);
    VOLT_FAIL(kind, " '", path, "': cannot stat it: ", std::strerror(error));
  }
  if (!S_ISREG(status.st_mode)) {
    ::close(fd);
    VOLT_FAIL(kind, " '", path, "': is not a regular file");
  }
  const auto size = static_cast<uint64_t>(status.st_size);
  char* data = nullptr;
  if (size > 0) {
    // Private and writable: tensors can be modified in place (copy-on-write), the file never is.
    void* address = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    const int map_error = errno;
    ::close(fd);  // the mapping keeps the file
    VOLT_CHECK(address != MAP_FAILED, kind, " '", path, "': cannot map its ", size,
               " bytes: ", std::strerror(map_error));
    data = static_cast<char*>(address);
  } else {
    ::close(fd);
  }
  std::shared_ptr<MappedFile> file(new MappedFile(path, data, size));
  file->self_ = file;
  return file;
}

MappedFile::~MappedFile() {
  if (size_ > 0) ::munmap(data_, size_);
}

bool MappedFile::contains(const void* begin, uint64_t bytes) const {
  const char* p = static_cast<const char*>(begin);
  return p >= data_ && p <= data_ + size_ && bytes <= static_cast<uint64_t>(data_ + size_ - p);
}

at::Tensor MappedFile::tensor(const char* bytes, std::vector<int64_t> sizes, c10::ScalarType dtype) const {
  const auto options = at::TensorOptions().dtype(dtype).device(at::kCPU);
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  const uint64_t nbytes = static_cast<uint64_t>(numel) * c10::elementSize(dtype);
  VOLT_CHECK(contains(bytes, nbytes), "'", path_, "': a tensor of ", nbytes, " bytes lies outside the file");
  if (numel == 0) return at::empty(sizes, options);
  if (reinterpret_cast<uintptr_t>(bytes) % c10::elementSize(dtype) == 0)
    return at::from_blob(
        const_cast<char*>(bytes), sizes, [keep = self_.lock()](void*) {}, options);
  // Unaligned data (neither PyTorch nor volt nor the safetensors reference writes it): a copy.
  at::Tensor copy = nbytes >= kHugePageThreshold
                        ? at::Tensor(at::detail::empty_generic(sizes, huge_page_allocator(),
                                                               c10::DispatchKeySet(c10::DispatchKey::CPU),
                                                               dtype, c10::nullopt))
                        : at::empty(sizes, options);
  std::memcpy(copy.data_ptr(), bytes, nbytes);
  return copy;
}

bool MappedFile::is_mapped(const at::Tensor& tensor) const {
  if (!tensor.defined() || !tensor.has_storage() || tensor.numel() == 0) return false;
  const auto* data = static_cast<const char*>(tensor.data_ptr());
  return data >= data_ && data < data_ + size_;
}

bool MappedFile::release_pages(const void* begin, uint64_t bytes) const {
  if (bytes == 0 || !contains(begin, bytes)) return false;
  // Whole pages inside the range only: the neighbours' pages may still be in use.
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t first = (reinterpret_cast<uintptr_t>(begin) + page - 1) / page * page;
  const uintptr_t last = (reinterpret_cast<uintptr_t>(begin) + bytes) / page * page;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  return true;
}

bool MappedFile::release_pages(const at::Tensor& tensor) const {
  if (!tensor.defined() || !tensor.has_storage() || tensor.storage().data() == nullptr) return false;
  return release_pages(tensor.storage().data(), tensor.storage().nbytes());
}

}  // namespace volt::detail

#include "volt/checkpoint/atomic_file.h"

#include "volt/error.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

namespace volt {
namespace {

std::string directory_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string base_name_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string random_hex() {
  std::random_device entropy;  // getrandom(): distinct in every process, forked children included
  const uint64_t value = (uint64_t{entropy()} << 32) | entropy();
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)) {
  const std::string name = base_name_of(path_);
  VOLT_CHECK(!name.empty() && name != "." && name != "..", "cannot write '", path_,
             "' atomically: the path must name a file, not a directory");
  const std::string prefix = directory_of(path_) + "/." + name + ".tmp." + std::to_string(::getpid()) + ".";
  // O_EXCL never reuses a name that exists; a clash of 64 random bits is only retried for form's sake.
  for (int attempt = 0; attempt < 8 && fd_ < 0; ++attempt) {
    temporary_path_ = prefix + random_hex();
    do {
      fd_ = ::open(temporary_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    } while (fd_ < 0 && errno == EINTR);
    if (fd_ < 0 && errno != EEXIST) break;
  }
  VOLT_CHECK(fd_ >= 0, "cannot create a temporary file '", temporary_path_, "' to write '", path_,
             "': ", std::strerror(errno), "; check that the directory exists and is writable");
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temporary_path_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t bytes) {
  VOLT_CHECK(!committed_, "cannot write to '", path_, "': it was already committed; open a new writer");
  const auto* cursor = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t written = ::write(fd_, cursor, bytes);
    if (written < 0 && errno == EINTR) continue;
    // write() returns 0 only when nothing can be written (no errno): report it as a full disk.
    VOLT_CHECK(written > 0, "writing '", path_, "' (through '", temporary_path_, "') failed after ",
               bytes_written_, " bytes: ", written < 0 ? std::strerror(errno) : std::strerror(ENOSPC));
    cursor += written;
    bytes -= static_cast<size_t>(written);
    bytes_written_ += static_cast<uint64_t>(written);
  }
}

void AtomicFileWriter::commit() {
  VOLT_CHECK(!committed_, "'", path_, "' was already committed; a writer commits once");
  VOLT_CHECK(::fsync(fd_) == 0, "cannot save '", path_, "': fsync of '", temporary_path_,
             "' failed: ", std::strerror(errno));
  const int fd = fd_;
  fd_ = -1;
  // close() is where some filesystems (NFS) report a failed write.
  VOLT_CHECK(::close(fd) == 0, "cannot save '", path_, "': closing '", temporary_path_,
             "' failed: ", std::strerror(errno));
  VOLT_CHECK(::rename(temporary_path_.c_str(), path_.c_str()) == 0, "cannot save '", path_, "': renaming '",
             temporary_path_, "' over it failed: ", std::strerror(errno));
  committed_ = true;
  // The new name is durable only once the directory is: without this a power loss can bring back the old
  // file (or none).
  const std::string directory = directory_of(path_);
  const int directory_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  VOLT_CHECK(directory_fd >= 0, "saved '", path_, "' but cannot open its directory '", directory,
             "' to make the rename durable: ", std::strerror(errno));
  const int synced = ::fsync(directory_fd);
  const int sync_errno = errno;
  ::close(directory_fd);
  // EINVAL: the filesystem cannot sync directories (some FUSE mounts); nothing more can be done there.
  VOLT_CHECK(synced == 0 || sync_errno == EINVAL, "saved '", path_, "' but fsync of its directory '",
             directory, "' failed: ", std::strerror(sync_errno));
}

void write_file_atomically(const std::string& path,
                           const std::function<void(AtomicFileWriter&)>& write_contents) {
  AtomicFileWriter writer(path);
  write_contents(writer);
  writer.commit();
}

}  // namespace volt

#include "volt/checkpoint/atomic_file.h"

#include "volt/error.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace volt {
namespace {

std::string directory_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string temporary_name(const std::string& path) {
  static std::atomic<unsigned> counter{0};
  const auto slash = path.rfind('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  return directory_of(path) + "/." + base + ".tmp." + std::to_string(getpid()) + "." +
         std::to_string(counter++);
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), temporary_path_(temporary_name(path_)) {
  fd_ = ::open(temporary_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  VOLT_CHECK(fd_ >= 0, "cannot create '", temporary_path_, "' to write '", path_, "': ", std::strerror(errno),
             " (check that the directory exists and is writable)");
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temporary_path_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t bytes) {
  VOLT_CHECK(!committed_ && fd_ >= 0, "'", path_, "' was already committed: open a new writer");
  const auto* cursor = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t written = ::write(fd_, cursor, bytes);
    if (written < 0 && errno == EINTR) continue;
    VOLT_CHECK(written > 0, "writing '", path_, "' failed: ", std::strerror(errno));
    cursor += written;
    bytes -= static_cast<size_t>(written);
  }
}

void AtomicFileWriter::commit() {
  VOLT_CHECK(!committed_, "'", path_, "' was already committed");
  VOLT_CHECK(::fsync(fd_) == 0, "fsync of '", temporary_path_, "' failed: ", std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  VOLT_CHECK(::rename(temporary_path_.c_str(), path_.c_str()) == 0, "cannot rename '", temporary_path_,
             "' to '", path_, "': ", std::strerror(errno));
  committed_ = true;
  // The rename is durable only once the directory entry is.
  const int dir = ::open(directory_of(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

void write_file_atomically(const std::string& path, const std::function<void(AtomicFileWriter&)>& write) {
  AtomicFileWriter writer(path);
  write(writer);
  writer.commit();
}

}  // namespace volt

// Writing a file so that a crash never leaves it half-written: data goes to a temporary file in the same
// directory, which is fsynced and renamed over the target, and the directory is fsynced.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace volt {

class AtomicFileWriter {
 public:
  /// Opens a temporary file beside `path`; throws volt::Error naming the path if it cannot.
  explicit AtomicFileWriter(std::string path);
  /// Without commit(), the temporary file is removed and `path` is untouched.
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t bytes);
  /// fsync, rename over the target, fsync the directory. After it, `path` holds exactly what was written.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temporary_path() const { return temporary_path_; }

 private:
  std::string path_;
  std::string temporary_path_;
  int fd_ = -1;
  bool committed_ = false;
};

/// `write_file_atomically("w.safetensors", [&](AtomicFileWriter& out) { out.write(bytes, n); });`
void write_file_atomically(const std::string& path, const std::function<void(AtomicFileWriter&)>& write);

}  // namespace volt

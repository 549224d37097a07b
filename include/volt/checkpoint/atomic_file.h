// Replacing a file so that a crash or a kill mid-save never leaves it half-written: the bytes go to a
// hidden temporary file beside the target, which is fsynced, renamed over the target, and the directory
// fsynced. Readers see the old file or the new one, never a mix; an old checkpoint survives a failed save.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace volt {

/// `AtomicFileWriter out("model.safetensors"); out.write(bytes, n); out.commit();`
/// Destroyed without commit() (an exception, an early return), it removes its temporary file and leaves
/// the target as it was. A process killed before commit() leaves the target intact too, plus a stray
/// `.<name>.tmp.<pid>.<random>` file.
class AtomicFileWriter {
 public:
  /// Creates the temporary file `.<name>.tmp.<pid>.<random>` in the target's directory; throws
  /// volt::Error naming the path and the reason if it cannot.
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  /// Appends all `bytes` (retrying interrupted and partial writes).
  void write(const void* data, size_t bytes);
  /// fsync, rename over the target, fsync the directory: afterwards the target holds exactly what was
  /// written, durably. A writer commits once.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temporary_path() const { return temporary_path_; }
  uint64_t bytes_written() const { return bytes_written_; }

 private:
  std::string path_;
  std::string temporary_path_;
  int fd_ = -1;
  bool committed_ = false;
  uint64_t bytes_written_ = 0;
};

/// Writes `path` atomically with what `write_contents` writes; if it throws, `path` is untouched.
/// `write_file_atomically("run.json", [&](AtomicFileWriter& out) { out.write(text.data(), text.size()); });`
void write_file_atomically(const std::string& path,
                           const std::function<void(AtomicFileWriter&)>& write_contents);

}  // namespace volt

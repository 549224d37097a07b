// A scratch directory for one test: created fresh under the system temp dir with a unique name, and
// removed with everything in it when the test ends, even when it fails. Set VOLT_KEEP_TMP to keep it
// for a post-mortem.
#pragma once

#include <stdlib.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

namespace volt::testing {

class TempDir {
 public:
  /// Creates <temp>/volt-<label>-XXXXXX; mkdtemp makes the name unique across threads and processes.
  explicit TempDir(const std::string& label = "test") {
    std::string pattern = (std::filesystem::temp_directory_path() / ("volt-" + label + "-XXXXXX")).string();
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::runtime_error("cannot create a temporary directory '" + pattern +
                               "': " + std::strerror(errno));
    path_ = pattern;
  }
  ~TempDir() {
    if (std::getenv("VOLT_KEEP_TMP") != nullptr) return;
    std::error_code ignored;  // a destructor must not throw; a leftover directory is harmless
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  /// path() + "/" + name.
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace volt::testing

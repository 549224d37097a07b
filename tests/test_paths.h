// Where the tests find their own sources (the *_oracle.py scripts) and the volt CLI. CMake records both in
// volt_test_paths.txt beside the test binary instead of compile definitions: an absolute path on the
// compiler's command line gives every fresh clone a cold compiler cache.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace volt::testing {

/// The environment variable `name`, else the `key=` line of volt_test_paths.txt beside this executable;
/// empty when neither has it.
inline std::string recorded_path(const char* name, const std::string& key) {
  if (const char* value = std::getenv(name)) return value;
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return {};
  std::string dir(exe, static_cast<size_t>(n));
  dir.resize(dir.rfind('/'));
  std::ifstream in(dir + "/volt_test_paths.txt");
  for (std::string line; std::getline(in, line);)
    if (line.compare(0, key.size() + 1, key + "=") == 0) return line.substr(key.size() + 1);
  return {};
}

/// The tests/ folder of the source tree (VOLT_TEST_SOURCE_DIR overrides).
inline std::string test_source_dir() { return recorded_path("VOLT_TEST_SOURCE_DIR", "source_dir"); }

/// The volt CLI built with the tests (VOLT_CLI overrides); empty when it was not built.
inline std::string volt_cli() { return recorded_path("VOLT_CLI", "cli"); }

}  // namespace volt::testing

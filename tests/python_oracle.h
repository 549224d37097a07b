// Running the test venv's Python (torch 2.x, Lightning, safetensors, tensorboard) as an oracle, and
// Debian's /usr/bin/python3 (torch 1.13). Tests skip, saying why, when an interpreter is absent.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace volt::testing {

/// VOLT_PYTHON, else $VOLT_CACHE/venv/bin/python, else ~/.cache/volt/venv/bin/python.
inline std::string venv_python() {
  if (const char* python = std::getenv("VOLT_PYTHON")) return python;
  const char* cache = std::getenv("VOLT_CACHE");
  const char* home = std::getenv("HOME");
  const std::string root = cache ? cache : std::string(home ? home : ".") + "/.cache/volt";
  return root + "/venv/bin/python";
}

inline bool executable(const std::string& path) { return access(path.c_str(), X_OK) == 0; }

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

/// Runs a shell command line, capturing its output.
inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof buffer, pipe)) > 0;) result.output.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

/// Single-quotes a word for the shell.
inline std::string shell_quote(const std::string& word) {
  std::string quoted = "'";
  for (char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

}  // namespace volt::testing

#define VOLT_SKIP_WITHOUT_VENV()                                                  \
  do {                                                                            \
    if (!::volt::testing::executable(::volt::testing::venv_python()))             \
      GTEST_SKIP() << "no test venv Python at " << ::volt::testing::venv_python() \
                   << " (set VOLT_PYTHON or run scripts/install-deps.sh)";        \
  } while (false)

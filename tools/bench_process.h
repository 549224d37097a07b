// Running each benchmark mode in its own process, so peak RSS is that mode's alone (DESIGN §6).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace volt::tools {

struct ProcessResult {
  int exit_code = -1;
  std::string output;  // the child's standard output; its standard error passes through
};

/// Runs `argv` (argv[0] is a path) and waits for it.
ProcessResult run_process(const std::vector<std::string>& argv);

/// This executable's own path, to start a child of the same build.
std::string self_executable();

/// Peak resident set size of this process so far, in bytes.
int64_t peak_rss_bytes();

/// Resident set size of this process now, in bytes.
int64_t current_rss_bytes();

/// The interpreter of the Python peer rows: VOLT_PYTHON, else the test venv under VOLT_CACHE (default
/// ~/.cache/volt).
std::string default_python();

/// The folder of the Python peer scripts (init_peer.py, load_peer.py): VOLT_PEERS_DIR, else
/// share/volt/peers beside this executable's bin/ folder, where both the build tree and an install put
/// them. Throws volt::Error naming both places when neither has `script`.
std::string peer_script(const std::string& script);

/// Monotonic wall-clock seconds.
double now_seconds();

}  // namespace volt::tools

// Lightning's subprocess script launcher: a program started plainly with devices(N) re-runs its own
// executable, with the same arguments, for local ranks 1..N-1 (torchrun's variables set), and becomes local
// rank 0 itself. A watcher thread waits for the children: when one fails, the others are stopped and this
// process exits non-zero with a message naming the rank; children die with their parent (no orphans).
#pragma once

#include <chrono>

#include "volt/distributed/cluster_environment.h"

namespace volt {

class SubprocessLauncher {
 public:
  /// Starts the other local ranks of `env` (a "single" environment from ClusterEnvironment::detect) and
  /// returns this process's environment as local rank 0 (source "torchrun", rank variables set in this
  /// process's environment too). Idempotent: a second call returns the first call's result.
  static ClusterEnvironment launch(const ClusterEnvironment& env);
  /// Waits up to `timeout` for the children to exit (called at process exit); those still running then are
  /// killed. Returns whether all exited with status 0.
  static bool wait_for_children(std::chrono::milliseconds timeout);
  /// Children started by this process (0 in a child or a single process).
  static int children();
  /// How long the exit of this process waits for its children before killing them (default 60 s); a child
  /// still running then, or one that failed, makes this process exit with status 1.
  static void set_exit_timeout(std::chrono::milliseconds timeout);
};

}  // namespace volt

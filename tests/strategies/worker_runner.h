// Runs the strategies' test program (ddp_worker.cpp) as real processes and reads what they wrote.
#pragma once

#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <random>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "python_oracle.h"
#include "test_paths.h"
#include "volt/checkpoint/checkpoint.h"

namespace volt::testing {

inline std::string worker() { return recorded_path("VOLT_DDP_WORKER", "ddp_worker"); }

#define VOLT_NEED_WORKER() \
  if (worker().empty()) GTEST_SKIP() << "no volt_ddp_worker recorded beside the tests (VOLT_DDP_WORKER)"

inline std::string unique_tag() {
  return "ddp-test-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}());
}

// Processes whose command line holds `tag` (the run's own processes: none may outlive it).
inline int processes_with(const std::string& tag) {
  int found = 0;
  DIR* proc = opendir("/proc");
  for (dirent* entry; proc != nullptr && (entry = readdir(proc)) != nullptr;) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    std::ifstream in(std::string("/proc/") + entry->d_name + "/cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), {});
    if (cmdline.find(tag) != std::string::npos && std::to_string(::getpid()) != entry->d_name) ++found;
  }
  if (proc != nullptr) closedir(proc);
  return found;
}

struct Run {
  CommandResult result;
  double seconds = 0;
};

// Runs the worker with `args`, bounded by `limit_s` (then killed: rank 0's children die with it).
inline Run run_worker(const std::string& args, int limit_s = 120, const std::string& prefix = "") {
  const auto start = std::chrono::steady_clock::now();
  Run run;
  run.result = run_command(prefix + "timeout -k 5 " + std::to_string(limit_s) + " " + shell_quote(worker()) +
                           " " + args);
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return run;
}

inline std::map<std::string, at::Tensor> weights(const std::string& path) {
  std::map<std::string, at::Tensor> out;
  const Checkpoint ckpt = Checkpoint::load(path);
  for (const auto& [k, v] : ckpt.state_dict.to_dict()) out[k.to_string()] = v.to_tensor().clone();
  return out;
}

inline void expect_close(const std::string& a, const std::string& b, double atol) {
  const auto wa = weights(a), wb = weights(b);
  ASSERT_EQ(wa.size(), wb.size());
  for (const auto& [name, t] : wa) {
    ASSERT_TRUE(wb.count(name)) << name;
    const double diff = (t.to(at::kDouble) - wb.at(name).to(at::kDouble)).abs().max().item<double>();
    EXPECT_LE(diff, atol) << name;
  }
}

}  // namespace volt::testing

// One rank of the multi-process DCP tests: joins a Gloo group from torchrun's variables (RANK, WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT), then saves its shard of a known state, or loads its shard of it and checks
// every value, whatever the world size the checkpoint was saved with.
//
//   volt_dcp_worker save DIR [--seed S] [--big-mb N] [--pid-file P]
//   volt_dcp_worker load DIR [--seed S]
// Exit status: 0 ok, 1 a value differs, 2 volt::Error (printed).
#include <ATen/ATen.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "volt/checkpoint/dcp.h"
#include "volt/checkpoint/torch_file.h"
#include "volt/distributed/cluster_environment.h"
#include "volt/distributed/process_group.h"
#include "volt/error.h"

namespace {

// The global tensors, a function of the seed only, so that every world size agrees on them.
at::Tensor w_full(int64_t seed) { return at::arange(77, at::kFloat).reshape({11, 7}) * 0.25 + seed; }
at::Tensor e_full(int64_t seed) {
  return (at::arange(30, at::kFloat).reshape({3, 10}) - seed).to(at::kBFloat16);
}
at::Tensor b_full(int64_t seed) { return at::tensor({1.5, -2.0, 3.25}, at::kDouble) * (seed + 1); }

// Rows [begin, end) of `n` for `rank` of `world`, as torch.chunk splits (the last ranks may get none).
std::pair<int64_t, int64_t> split(int64_t n, int64_t rank, int64_t world) {
  const int64_t per = (n + world - 1) / world;
  return {std::min(n, rank * per), std::min(n, (rank + 1) * per)};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return 3;
  const std::string mode = argv[1], dir = argv[2];
  int64_t seed = 0, big_mb = 0;
  std::string pid_file;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--seed") seed = std::atoll(argv[i + 1]);
    if (flag == "--big-mb") big_mb = std::atoll(argv[i + 1]);
    if (flag == "--pid-file") pid_file = argv[i + 1];
  }
  try {
    const char* world_text = std::getenv("WORLD_SIZE");
    const int64_t world_size = world_text ? std::atoll(world_text) : 1;
    std::shared_ptr<volt::ProcessGroup> group;
    if (world_size > 1) {
      const auto env = volt::ClusterEnvironment::detect(world_size, 1);
      group = volt::ProcessGroup::create(env, c10::kCPU, std::chrono::seconds(20));
    }
    const int64_t rank = group ? group->rank() : 0, world = group ? group->size() : 1;
    std::printf("volt_dcp_worker: rank %lld pid %d\n", static_cast<long long>(rank),
                static_cast<int>(getpid()));
    std::fflush(stdout);
    if (!pid_file.empty()) std::ofstream(pid_file + "." + std::to_string(rank)) << getpid() << "\n";
    const auto [w0, w1] = split(11, rank, world);
    const auto [e0, e1] = split(10, rank, world);
    if (mode == "save") {
      volt::DcpState state;
      state.tensors["model.w"].global_size = {11, 7};
      if (w1 > w0)
        state.tensors["model.w"].chunks.push_back({{w0, 0}, w_full(seed).slice(0, w0, w1).clone()});
      state.tensors["model.e"].global_size = {3, 10};  // sharded on dim 1: each chunk views a bigger storage
      if (e1 > e0) state.tensors["model.e"].chunks.push_back({{0, e0}, e_full(seed).slice(1, e0, e1)});
      state.tensors["model.b"] = {{3}, {{{0}, b_full(seed)}}};  // replicated: every rank passes it
      state.tensors["optimizer.step"] = {{}, {{{}, at::scalar_tensor(seed + 11, at::kLong)}}};
      if (rank == 0) state.bytes["step"] = volt::torch_save_bytes(volt::Value(int64_t{7}));
      if (rank == 0) state.files["meta.pt"] = volt::torch_save_bytes(volt::Value(int64_t{seed}));
      for (int64_t i = 0; i < big_mb; ++i)  // bulk that keeps a rank writing long enough to be killed
        state.tensors["big." + std::to_string(i)] = {
            {world, 1 << 18}, {{{rank, 0}, at::full({1, 1 << 18}, float(seed), at::kFloat)}}};
      volt::save_dcp(dir, state, group.get());
      return 0;
    }
    // load: this rank's rows of w, columns of e, all of b and the scalar, from whatever ranks saved them.
    int failures = 0;
    const auto expect = [&](bool ok, const std::string& what) {
      if (!ok)
        std::fprintf(stderr, "volt_dcp_worker: rank %lld: %s differs\n", static_cast<long long>(rank),
                     what.c_str());
      failures += !ok;
    };
    at::Tensor w = at::full({w1 - w0, 7}, -1.0f), e = at::full({3, e1 - e0}, -1.0, at::kBFloat16);
    at::Tensor b = at::zeros({3}, at::kDouble), step = at::scalar_tensor(0, at::kLong);
    volt::load_dcp(dir, {{"model.w", {{{w0, 0}, w}}},
                         {"model.e", {{{0, e0}, e}}},
                         {"model.b", {{{0}, b}}},
                         {"optimizer.step", {{{}, step}}}});
    expect(at::equal(w, w_full(seed).slice(0, w0, w1)), "model.w");
    expect(at::equal(e, e_full(seed).slice(1, e0, e1)), "model.e");
    expect(at::equal(b, b_full(seed)), "model.b");
    expect(step.item<int64_t>() == seed + 11, "optimizer.step");
    expect(volt::load_dcp_object(dir, "step").to_int() == 7, "step");
    expect(volt::TorchFileReader(dir + "/meta.pt").contents().to_int() == seed, "meta.pt");
    if (group) group->barrier();
    return failures ? 1 : 0;
  } catch (const volt::Error& e) {
    std::fprintf(stderr, "volt_dcp_worker: volt::Error: %s\n", e.what());
    return 2;
  }
}

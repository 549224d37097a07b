// The program the multi-process tests run: it finds its ranks as a volt program does (launching the other
// local ranks itself when started plainly, or under torchrun / SLURM variables), creates a Gloo group and
// checks every collective numerically. Options make a chosen rank die or never join, to test failures.
//
//   volt_dist_worker --devices 3 [--num-nodes 1] [--timeout-ms 10000] [--steps 3] [--step-ms 0]
//                    [--die-rank R --die-at-step S] [--never-join-rank R] [--exit-rank R --exit-status C]
//                    [--linger-rank R --linger-ms MS] [--exit-timeout-ms MS]
//                    [--mesh 1 [--mesh-die-rank R] [--mesh-skip-rank R]]
// --mesh 1 (4 ranks) then builds a 2 x 2 DeviceMesh (replicate x shard) and checks subgroups, a new_group
// with its ranks reordered, and a layout sharded along dimension 1; --mesh-die-rank R dies once the mesh
// is built, --mesh-skip-rank R never builds it.
// Exit status: 0 all checks passed, 1 a check failed, 2 volt::Error (printed), 3 bad arguments.
#include <ATen/ATen.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>

#include "strategies/sharding/shard_layout.h"
#include "volt/distributed/cluster_environment.h"
#include "volt/distributed/device_mesh.h"
#include "volt/distributed/launcher.h"
#include "volt/distributed/process_group.h"
#include "volt/error.h"

namespace {

struct Options {
  int64_t devices = 1;
  int64_t num_nodes = 1;
  int64_t timeout_ms = 10000;
  int64_t steps = 3;
  int64_t step_ms = 0;
  int64_t die_rank = -1;
  int64_t die_at_step = 0;
  int64_t never_join_rank = -1;
  int64_t exit_rank = -1;  // this rank ends with exit_status after passing every check
  int64_t exit_status = 0;
  int64_t linger_rank = -1;  // this rank waits linger_ms before it exits
  int64_t linger_ms = 0;
  int64_t exit_timeout_ms = -1;  // SubprocessLauncher::set_exit_timeout
  bool mesh = false;
  int64_t mesh_die_rank = -1;
  int64_t mesh_skip_rank = -1;
};

int failures = 0;
int64_t my_rank = -1;

// CLOCK_MONOTONIC in ms: the same clock in every process of the machine, so tests can time events.
long long now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void expect(bool ok, const std::string& what) {
  if (ok) return;
  ++failures;
  std::fprintf(stderr, "volt_dist_worker: rank %lld: CHECK FAILED: %s\n", static_cast<long long>(my_rank),
               what.c_str());
}

bool same(const at::Tensor& actual, const at::Tensor& expected) {
  return actual.sizes() == expected.sizes() && actual.scalar_type() == expected.scalar_type() &&
         at::equal(actual, expected);
}

void check_collectives(volt::ProcessGroup& group) {
  const int64_t r = group.rank();
  const int64_t w = group.size();
  const double triangle = w * (w + 1) / 2.0;  // sum over ranks of (rank + 1)

  auto sum = at::full({5}, static_cast<double>(r + 1), at::kFloat);
  group.all_reduce(sum, volt::ReduceOp::kSum);
  expect(same(sum, at::full({5}, triangle, at::kFloat)), "all_reduce sum float32");

  auto longs = at::full({3}, r + 1, at::kLong);
  group.all_reduce(longs, volt::ReduceOp::kSum);
  expect(same(longs, at::full({3}, static_cast<int64_t>(triangle), at::kLong)), "all_reduce sum int64");

  auto maximum = at::full({2}, static_cast<double>(r), at::kDouble);
  group.all_reduce(maximum, volt::ReduceOp::kMax);
  expect(same(maximum, at::full({2}, static_cast<double>(w - 1), at::kDouble)), "all_reduce max");
  auto minimum = at::full({2}, static_cast<double>(r), at::kDouble);
  group.all_reduce(minimum, volt::ReduceOp::kMin);
  expect(same(minimum, at::zeros({2}, at::kDouble)), "all_reduce min");

  // bf16: 1 + r/128 is exact in bf16, but a bf16 running sum of w of them is not for w >= 3 (9 bits).
  auto values = at::arange(8, at::kFloat) / 128.0 + 1.0 + r / 128.0;
  auto bf16 = values.to(at::kBFloat16);
  group.all_reduce(bf16, volt::ReduceOp::kSum);
  auto exact = (at::arange(8, at::kFloat) / 128.0 + 1.0) * w + (w * (w - 1) / 2.0) / 128.0;
  expect(same(bf16, exact.to(at::kBFloat16)), "all_reduce sum bfloat16 (float32 accumulation, then cast)");
  auto bf16_mean = at::full({4}, 0.5 * (r + 1), at::kBFloat16);
  group.all_reduce(bf16_mean, volt::ReduceOp::kMean);
  expect(same(bf16_mean, at::full({4}, (w + 1) / 4.0, at::kBFloat16)), "all_reduce mean bfloat16");
  auto half_mean = at::full({4}, 0.5 * (r + 1), at::kHalf);
  group.all_reduce(half_mean, volt::ReduceOp::kMean);
  expect(same(half_mean, at::full({4}, (w + 1) / 4.0, at::kHalf)), "all_reduce mean float16");

  // A non-contiguous tensor is reduced in place.
  auto matrix = at::arange(6, at::kFloat).reshape({2, 3}).add(r).t();
  group.all_reduce(matrix, volt::ReduceOp::kSum);
  expect(same(matrix, (at::arange(6, at::kFloat).reshape({2, 3}) * w + w * (w - 1) / 2.0).t().contiguous()),
         "all_reduce of a transposed tensor");

  auto gathered = group.all_gather(at::arange(4, at::kLong) + 10 * r);
  expect(static_cast<int64_t>(gathered.size()) == w, "all_gather returns one tensor per rank");
  for (int64_t i = 0; i < w && i < static_cast<int64_t>(gathered.size()); ++i)
    expect(same(gathered[i], at::arange(4, at::kLong) + 10 * i),
           "all_gather int64 from rank " + std::to_string(i));
  auto gathered_bf16 = group.all_gather(at::full({3}, 1.0 + r / 8.0, at::kBFloat16));
  for (int64_t i = 0; i < w && i < static_cast<int64_t>(gathered_bf16.size()); ++i)
    expect(same(gathered_bf16[i], at::full({3}, 1.0 + i / 8.0, at::kBFloat16)),
           "all_gather bfloat16 from rank " + std::to_string(i));

  const int64_t src = w - 1;  // a non-zero rank when w > 1
  auto broadcast = at::full({3}, static_cast<double>(r), at::kFloat);
  group.broadcast(broadcast, src);
  expect(same(broadcast, at::full({3}, static_cast<double>(src), at::kFloat)),
         "broadcast float32 from rank w-1");
  auto broadcast_bf16 = at::full({2}, 0.25 * (r + 1), at::kBFloat16);
  group.broadcast(broadcast_bf16, src);
  expect(same(broadcast_bf16, at::full({2}, 0.25 * (src + 1), at::kBFloat16)),
         "broadcast bfloat16 from rank w-1");

  auto scattered = group.reduce_scatter(at::arange(2 * w, at::kFloat) * (r + 1), volt::ReduceOp::kSum);
  expect(same(scattered, at::arange(2 * r, 2 * r + 2, at::kFloat) * triangle), "reduce_scatter sum");

  group.barrier();

  // An all-reduce in flight while this rank computes: the result is there after wait().
  auto big = at::full({1 << 20}, static_cast<double>(r + 1), at::kFloat);
  auto work = group.all_reduce_async(big, volt::ReduceOp::kMean);
  auto product = at::mm(at::ones({256, 256}), at::ones({256, 256}));
  work->wait();
  expect(product[0][0].item<float>() == 256.0f, "compute while the all-reduce runs");
  expect(same(big, at::full({1 << 20}, triangle / w, at::kFloat)), "all_reduce_async mean");
}

// Subgroups of a 2 x 2 mesh over 4 ranks: rank r sits at (r / 2, r % 2); its "shard" group is the ranks of
// its row, its "replicate" group those of its column.
void check_mesh(const std::shared_ptr<volt::ProcessGroup>& world, const Options& options) {
  const int64_t r = world->rank();
  if (r == options.mesh_skip_rank) {
    std::this_thread::sleep_for(std::chrono::milliseconds(options.timeout_ms + 3000));  // bounded
    return;
  }
  volt::DeviceMesh mesh(world, {2, 2}, {"replicate", "shard"});
  expect(mesh.coordinate() == std::vector<int64_t>{r / 2, r % 2}, "mesh coordinate");
  const auto& shard = mesh.group("shard");
  const auto& replicate = mesh.group("replicate");
  expect(shard->size() == 2 && shard->rank() == r % 2 && shard->global_rank(0) == r / 2 * 2,
         "shard group: this row, ranked by column");
  expect(replicate->size() == 2 && replicate->rank() == r / 2 && replicate->global_rank(1) == 2 + r % 2,
         "replicate group: this column, ranked by row");
  if (r == options.mesh_die_rank) {
    std::printf("volt_dist_worker: rank %lld dying at %lld\n", static_cast<long long>(r), now_ms());
    std::fflush(stdout);
    ::raise(SIGKILL);
  }
  auto row = at::full({3}, static_cast<double>(r + 1), at::kFloat);
  shard->all_reduce(row, volt::ReduceOp::kSum);
  const double row_sum = (r / 2 * 2 + 1) + (r / 2 * 2 + 2);
  expect(same(row, at::full({3}, row_sum, at::kFloat)), "all_reduce over the shard group (this row)");
  auto column = at::full({2}, static_cast<double>(r + 1), at::kFloat);
  replicate->all_reduce(column, volt::ReduceOp::kSum);
  const double column_sum = (r % 2 + 1) + (r % 2 + 3);
  expect(same(column, at::full({2}, column_sum, at::kFloat)),
         "all_reduce over the replicate group (this column)");
  // A layout sharded along dimension 1 (tensor parallelism's column shards), gathered over the row.
  const auto full = at::arange(15, at::kFloat).reshape({3, 5});
  const auto layout = volt::detail::ShardLayout::of(full.sizes(), shard->rank(), shard->size(), /*dim=*/1);
  const auto mine = layout.slice(full);
  expect(mine.sizes() == c10::IntArrayRef({3, shard->rank() == 0 ? 3 : 2}), "columns of this rank");
  expect(same(layout.gather(*shard, mine.contiguous()), full), "gather of a layout sharded along dim 1");
  // new_group with the ranks reordered: global rank 3 is rank 0 of it; ranks 0 and 2 are not in it.
  auto odd = world->new_group({3, 1});
  expect((odd != nullptr) == (r % 2 == 1), "new_group: members get the group, the others nullptr");
  if (odd) {
    expect(odd->rank() == (r == 3 ? 0 : 1) && odd->global_rank(0) == 3, "new_group numbers ranks in order");
    auto from_three = at::full({2}, static_cast<double>(r), at::kDouble);
    odd->broadcast(from_three, 0);
    expect(same(from_three, at::full({2}, 3.0, at::kDouble)), "broadcast from the new group's rank 0");
  }
  world->barrier();
}

bool parse(int argc, char** argv, Options& options) {
  for (int i = 1; i < argc; ++i) {
    const std::string name = argv[i];
    if (i + 1 >= argc) return false;
    const int64_t value = std::strtoll(argv[++i], nullptr, 10);
    if (name == "--devices")
      options.devices = value;
    else if (name == "--num-nodes")
      options.num_nodes = value;
    else if (name == "--timeout-ms")
      options.timeout_ms = value;
    else if (name == "--steps")
      options.steps = value;
    else if (name == "--step-ms")
      options.step_ms = value;
    else if (name == "--die-rank")
      options.die_rank = value;
    else if (name == "--die-at-step")
      options.die_at_step = value;
    else if (name == "--never-join-rank")
      options.never_join_rank = value;
    else if (name == "--exit-rank")
      options.exit_rank = value;
    else if (name == "--exit-status")
      options.exit_status = value;
    else if (name == "--linger-rank")
      options.linger_rank = value;
    else if (name == "--linger-ms")
      options.linger_ms = value;
    else if (name == "--exit-timeout-ms")
      options.exit_timeout_ms = value;
    else if (name == "--mesh")
      options.mesh = value == 1;
    else if (name == "--mesh-die-rank")
      options.mesh_die_rank = value;
    else if (name == "--mesh-skip-rank")
      options.mesh_skip_rank = value;
    else
      return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (!parse(argc, argv, options)) {
    std::fprintf(
        stderr,
        "usage: volt_dist_worker [--devices N] [--num-nodes M] [--timeout-ms T] [--steps S] "
        "[--step-ms MS] [--die-rank R --die-at-step S] [--never-join-rank R] [--exit-rank R --exit-status C] "
        "[--linger-rank R --linger-ms MS] [--exit-timeout-ms MS]\n");
    return 3;
  }
  try {
    auto env = volt::ClusterEnvironment::detect(options.devices, options.num_nodes);
    const std::string detected = env.source.name();
    env = volt::SubprocessLauncher::launch(env);
    if (options.exit_timeout_ms >= 0)
      volt::SubprocessLauncher::set_exit_timeout(std::chrono::milliseconds(options.exit_timeout_ms));
    my_rank = env.global_rank;
    std::printf(
        "volt_dist_worker: rank %lld pid %d detected %s: local %lld of %lld, node %lld of %lld, world %lld, "
        "master %s:%d\n",
        static_cast<long long>(env.global_rank), static_cast<int>(::getpid()), detected.c_str(),
        static_cast<long long>(env.local_rank), static_cast<long long>(env.local_world_size),
        static_cast<long long>(env.node_rank), static_cast<long long>(env.num_nodes),
        static_cast<long long>(env.world_size), env.master_addr.c_str(), env.master_port);
    std::fflush(stdout);
    const auto timeout = std::chrono::milliseconds(options.timeout_ms);
    if (env.global_rank == options.never_join_rank) {
      std::this_thread::sleep_for(3 * timeout);  // bounded even if nobody stops it
      return 0;
    }
    std::printf("volt_dist_worker: rank %lld joining at %lld\n", static_cast<long long>(env.global_rank),
                now_ms());
    std::fflush(stdout);
    auto group = volt::ProcessGroup::create(env, c10::kCPU, timeout);
    expect(group->rank() == env.global_rank && group->size() == env.world_size && group->backend() == "gloo",
           "group rank, size and backend");
    check_collectives(*group);
    if (options.mesh) check_mesh(group, options);
    for (int64_t step = 0; step < options.steps; ++step) {
      if (env.global_rank == options.die_rank && step == options.die_at_step) {
        std::printf("volt_dist_worker: rank %lld dying at %lld\n", static_cast<long long>(env.global_rank),
                    now_ms());
        std::fflush(stdout);
        ::raise(SIGKILL);
      }
      auto value = at::full({1}, static_cast<double>(step), at::kDouble);
      group->all_reduce(value, volt::ReduceOp::kSum);
      expect(value.item<double>() == static_cast<double>(step * env.world_size), "step all_reduce");
      if (options.step_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(options.step_ms));
    }
    group->barrier();
    std::printf("volt_dist_worker: rank %lld of %lld %s\n", static_cast<long long>(env.global_rank),
                static_cast<long long>(env.world_size), failures == 0 ? "ok" : "FAILED");
    std::fflush(stdout);
    if (env.global_rank == options.linger_rank)
      std::this_thread::sleep_for(std::chrono::milliseconds(options.linger_ms));
    if (failures > 0) return 1;
    return env.global_rank == options.exit_rank ? static_cast<int>(options.exit_status) : 0;
  } catch (const volt::Error& error) {
    std::fprintf(stderr, "volt_dist_worker: rank %lld: volt::Error at %lld: %s\n",
                 static_cast<long long>(my_rank), now_ms(), error.what());
    return 2;
  }
}

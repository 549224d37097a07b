// volt's init counters (volt/init/init_stats.h), which `volt bench init` splits a row's time with.
#include "volt/init/init_stats.h"

#include "volt/init/init_scope.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace {

// A Linear whose 8 MiB float weight goes to huge pages and whose 8 KiB bias does not, built on 2 threads.
torch::nn::Linear build_linear(volt::InitMode mode) {
  const int previous = at::get_num_threads();
  at::set_num_threads(2);
  torch::nn::Linear layer{nullptr};
  {
    auto scope = volt::init_module(volt::InitOptions().mode(mode).dtype(torch::kFloat));
    layer = torch::nn::Linear(1024, 2048);
  }
  at::set_num_threads(previous);
  return layer;
}

}  // namespace

TEST(InitStats, CountTheAllocationsPrefaultAndFillsOfAnInitScope) {
  volt::reset_init_stats();
  const auto layer = build_linear(volt::InitMode::kMaterialize);
  const volt::InitStats stats = volt::init_stats();
  EXPECT_EQ(stats.huge_page_tensors, 1);
  EXPECT_EQ(stats.huge_page_bytes, 1024 * 2048 * 4);
  EXPECT_EQ(stats.small_tensors, 1);
  EXPECT_EQ(stats.small_bytes, 2048 * 4);
  EXPECT_EQ(stats.prefault_bytes, 1024 * 2048 * 4);  // a whole number of 2 MiB pages already
  EXPECT_GT(stats.prefault_seconds, 0.0);
  // Each parameter filled once, by the counter generator: the weight on both threads.
  EXPECT_EQ(stats.cpu_fill_elements, layer->weight.numel() + layer->bias.numel());
  EXPECT_EQ(stats.cpu_fill_threads, 2);
  EXPECT_GT(stats.cpu_fill_seconds, 0.0);
}

TEST(InitStats, EmptyInitAllocatesWithoutFaultingOrFilling) {
  volt::reset_init_stats();
  build_linear(volt::InitMode::kEmpty);
  const volt::InitStats stats = volt::init_stats();
  EXPECT_EQ(stats.huge_page_bytes, 1024 * 2048 * 4);
  EXPECT_EQ(stats.prefault_bytes, 0);
  EXPECT_EQ(stats.cpu_fill_elements, 0);
  EXPECT_EQ(stats.cpu_fill_seconds, 0.0);
}

TEST(InitStats, ResetZeroesEveryCounter) {
  build_linear(volt::InitMode::kMaterialize);
  volt::reset_init_stats();
  const volt::InitStats stats = volt::init_stats();
  EXPECT_EQ(stats.huge_page_tensors + stats.huge_page_bytes + stats.small_tensors + stats.small_bytes +
                stats.prefault_bytes + stats.cpu_fill_elements + stats.cpu_fill_threads,
            0);
  EXPECT_EQ(stats.prefault_seconds + stats.cpu_fill_seconds, 0.0);
}

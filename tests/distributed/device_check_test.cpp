// Every tensor a strategy or a checkpoint hands to a collective is on the process group's device: checked
// without a GPU by running the strategies on a fake accelerator whose group refuses anything else, as NCCL
// refuses CPU tensors (device_checking_group.h), and compared with the same runs on the CPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "distributed/device_checking_group.h"
#include "distributed/environment_detail.h"
#include "strategies/worker_runner.h"
#include "temp_dir.h"
#include "volt/core/accelerator.h"
#include "volt/distributed/byte_collectives.h"
#include "volt/distributed/cluster_environment.h"

namespace volt::testing {
namespace {

std::shared_ptr<ProcessGroup> one_rank_gloo_group() {
  ClusterEnvironment env;
  env.master_addr = "127.0.0.1";
  env.master_port = detail::free_loopback_port();
  return ProcessGroup::create(env, c10::kCPU, std::chrono::seconds(20));
}

}  // namespace

TEST(DeviceCheck, TheCheckingGroupRefusesACpuTensorAsNcclWould) {
  auto group = std::make_shared<DeviceCheckingGroup>(one_rank_gloo_group());
  at::Tensor on_host = at::ones({4});
  try {
    group->all_reduce(on_host, ReduceOp::kSum);
    FAIL() << "a CPU tensor reached the collective";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("all_reduce was handed a cpu tensor"), std::string::npos)
        << e.what();
  }
  const int64_t before = DeviceCheckingGroup::checked_tensors();
  at::Tensor on_device = at::arange(4, at::kFloat).to(fake_device());
  group->all_reduce(on_device, ReduceOp::kSum);
  const auto gathered = group->all_gather(on_device);
  ASSERT_EQ(gathered.size(), 1u);
  EXPECT_EQ(gathered[0].device(), fake_device());
  EXPECT_TRUE(gathered[0].cpu().equal(at::arange(4, at::kFloat)));
  EXPECT_EQ(DeviceCheckingGroup::checked_tensors() - before, 2);
  // The object collectives put their bytes on the group's device.
  EXPECT_EQ(broadcast_bytes(*group, "a log dir"), "a log dir");
}

TEST(DeviceCheck, AGlooGroupRefusesATensorOnAnotherDeviceSayingWhereItMustLive) {
  enable_fake_device();
  auto group = one_rank_gloo_group();
  EXPECT_EQ(group->device(), c10::Device(c10::kCPU));
  at::Tensor elsewhere = at::ones({2}).to(fake_device());
  try {
    group->broadcast(elsewhere, 0);
    FAIL() << "a tensor off the group's device reached Gloo";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("broadcast of a tensor on privateuseone:0 in a gloo group whose "
                                         "tensors live on cpu"),
              std::string::npos)
        << e.what();
  }
}

class DeviceCheckedStrategy : public ::testing::TestWithParam<std::string> {};

// DDP (gradient buckets, buffer and RNG broadcasts, metric sync, clipping), ZeRO-1 (row gathers, sharded
// clipping, optimizer state) and FSDP (unit gathers, reduce-scatters, a sharded DCP save): two ranks on the
// fake accelerator train to the weights two CPU ranks reach.
TEST_P(DeviceCheckedStrategy, EveryCollectiveGetsTensorsOnTheGroupsDeviceAndTrainsAsOnTheCpu) {
  VOLT_NEED_WORKER();
  const std::string strategy = GetParam();
  TempDir dir("device-check");
  const bool sharded = strategy == "fsdp";
  const std::string common = "--devices 2 --strategy " + strategy +
                             " --build plain --samples 32 --batch 8 --steps 3 --clip 0.5 --timeout-ms 30000" +
                             (sharded ? " --state-dict sharded" : "");
  const std::string cpu = dir.path() + (sharded ? "/cpu" : "/cpu.ckpt");
  const std::string checked = dir.path() + (sharded ? "/checked" : "/checked.ckpt");
  const auto plain = run_worker(common + " --out " + cpu);
  ASSERT_EQ(plain.result.exit_code, 0) << plain.result.output;
  const auto run = run_worker(common + " --device-check 1 --out " + checked);
  ASSERT_EQ(run.result.exit_code, 0) << run.result.output;
  EXPECT_NE(run.result.output.find("\"device\": \"privateuseone:0\""), std::string::npos)
      << run.result.output;
  const auto count_at = run.result.output.find("\"checked_tensors\": ");
  ASSERT_NE(count_at, std::string::npos) << run.result.output;
  EXPECT_GT(std::stoll(run.result.output.substr(count_at + 19)), 10) << run.result.output;
  expect_close(cpu, checked, 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Strategies, DeviceCheckedStrategy,
                         ::testing::Values("ddp", "deepspeed_stage_1", "fsdp"));

// On a GPU machine (scripts/gpu-check.sh): the same over NCCL for real.
TEST(NcclProcessGroup, OneRankGroupTakesCudaTensorsAndRefusesCpuOnes) {
  if (!Accelerator::cuda_available()) GTEST_SKIP() << "no CUDA GPU is visible";
  ClusterEnvironment env;
  env.master_addr = "127.0.0.1";
  env.master_port = detail::free_loopback_port();
  std::shared_ptr<ProcessGroup> group;
  try {
    group = ProcessGroup::create(env, c10::kCUDA, std::chrono::seconds(60));
  } catch (const Error& e) {
    if (std::string(e.what()).find("has no NCCL process group") != std::string::npos)
      GTEST_SKIP() << e.what();
    throw;
  }
  EXPECT_EQ(group->backend(), "nccl");
  EXPECT_EQ(group->device(), c10::Device(c10::kCUDA, 0));
  at::Tensor on_gpu = at::arange(4, at::kFloat).to(group->device());
  group->all_reduce(on_gpu, ReduceOp::kMean);
  EXPECT_TRUE(on_gpu.cpu().equal(at::arange(4, at::kFloat)));
  at::Tensor on_host = at::ones({2});
  EXPECT_THROW(group->all_reduce(on_host, ReduceOp::kSum), Error);
  EXPECT_EQ(broadcast_bytes(*group, "over nccl"), "over nccl");
  EXPECT_EQ(all_gather_bytes(*group, "abc"), std::vector<std::string>{"abc"});
}

class NcclStrategy : public ::testing::TestWithParam<std::string> {};

TEST_P(NcclStrategy, TwoGpusTrainToTheWeightsOfOneGpuOnTheGlobalBatch) {
  if (Accelerator::cuda_device_count() < 2) GTEST_SKIP() << "fewer than two CUDA GPUs are visible";
  VOLT_NEED_WORKER();
  TempDir dir("nccl");
  const std::string strategy = GetParam();
  const std::string common = " --accelerator cuda --build plain --samples 32 --steps 3 --clip 0.5";
  const auto one = run_worker("--devices 1 --batch 16" + common + " --out " + dir.path() + "/one.ckpt");
  ASSERT_EQ(one.result.exit_code, 0) << one.result.output;
  const auto two = run_worker("--devices 2 --batch 8 --strategy " + strategy + common + " --out " +
                              dir.path() + "/two.ckpt");
  ASSERT_EQ(two.result.exit_code, 0) << two.result.output;
  expect_close(dir.path() + "/one.ckpt", dir.path() + "/two.ckpt", 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Strategies, NcclStrategy, ::testing::Values("ddp", "fsdp", "deepspeed_stage_2"));

}  // namespace volt::testing

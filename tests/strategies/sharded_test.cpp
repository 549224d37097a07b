// FSDP and the ZeRO stages with real processes over Gloo on loopback (the worker: ddp_worker.cpp): the
// model configure_model() builds is, gathered, bitwise what one process builds; training equals one
// process on the global batch; resume is exact; init_module under FSDP is refused.
#include <gtest/gtest.h>

#include <filesystem>

#include "strategies/worker_runner.h"
#include "trainer/trainer_fixtures.h"

namespace volt::testing {
namespace {

class ShardedInit : public ::testing::TestWithParam<int> {};

TEST_P(ShardedInit, ConfigureModelGathersToOneProcessInitBitwise) {
  VOLT_NEED_WORKER();
  const int n = GetParam();
  TempDir dir("fsdp-init");
  for (const std::string model : {"gpt", "mlp"}) {
    const std::string one = dir.path() + "/one-" + model + ".safetensors",
                      sharded = dir.path() + "/sharded-" + model + ".safetensors";
    const std::string common = " --model " + model + " --build configure --steps 0 --wrap Block";
    auto a = run_worker("--devices 1" + common + " --out " + one);
    ASSERT_EQ(a.result.exit_code, 0) << a.result.output;
    auto b = run_worker("--strategy fsdp --devices " + std::to_string(n) + common + " --out " + sharded);
    ASSERT_EQ(b.result.exit_code, 0) << b.result.output;
    expect_close(one, sharded, 0.0);
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, ShardedInit, ::testing::Values(1, 2, 3));

struct TrainCase {
  std::string strategy;
  int ranks;
};

class ShardedTraining : public ::testing::TestWithParam<TrainCase> {};

TEST_P(ShardedTraining, StepsEqualOneProcessOnTheGlobalBatch) {
  VOLT_NEED_WORKER();
  const auto [strategy, n] = GetParam();
  TempDir dir("sharded-train");
  const std::string single = dir.path() + "/single.safetensors", many = dir.path() + "/many.safetensors";
  const std::string common = " --model gpt --samples " + std::to_string(12 * n) + " --steps 5 --clip 0.5 --wrap Block";
  auto a = run_worker("--devices 1 --batch " + std::to_string(4 * n) + common + " --out " + single);
  ASSERT_EQ(a.result.exit_code, 0) << a.result.output;
  const std::string tag = unique_tag();
  auto b = run_worker("--strategy " + strategy + " --devices " + std::to_string(n) + " --batch 4" + common +
                      " --out " + many + " --tag " + tag);
  ASSERT_EQ(b.result.exit_code, 0) << b.result.output;
  EXPECT_NE(b.result.output.find("\"world_size\": " + std::to_string(n)), std::string::npos) << b.result.output;
  expect_close(single, many, 5e-5);
  EXPECT_EQ(processes_with(tag), 0);
}

INSTANTIATE_TEST_SUITE_P(Strategies, ShardedTraining,
                         ::testing::Values(TrainCase{"fsdp", 2}, TrainCase{"fsdp", 3},
                                           TrainCase{"deepspeed_stage_1", 2}, TrainCase{"deepspeed_stage_2", 3}),
                         [](const auto& info) {
                           return info.param.strategy + "_" + std::to_string(info.param.ranks);
                         });

TEST(FSDPResume, FromAMidEpochCheckpointIsExact) {
  VOLT_NEED_WORKER();
  TempDir dir("fsdp-resume");
  const std::string whole = dir.path() + "/whole.safetensors", resumed = dir.path() + "/resumed.safetensors";
  const std::string common = " --model gpt --strategy fsdp --devices 2 --batch 4 --samples 40 --steps 8 --wrap Block";
  auto a = run_worker(common + " --ckpt-every 3 --root " + dir.path() + " --out " + whole);
  ASSERT_EQ(a.result.exit_code, 0) << a.result.output;
  const std::string ckpt = dir.path() + "/checkpoints/step=3.ckpt";
  ASSERT_TRUE(std::filesystem::exists(ckpt)) << a.result.output;
  // The checkpoint is a full one, as one process writes it: it loads anywhere.
  EXPECT_TRUE(Checkpoint::load(ckpt).state_dict.to_dict().contains(std::string("gpt.wte.weight")));
  auto b = run_worker(common + " --resume " + ckpt + " --root " + dir.path() + "/b --out " + resumed);
  ASSERT_EQ(b.result.exit_code, 0) << b.result.output;
  EXPECT_NE(b.result.output.find("\"global_step\": 8"), std::string::npos) << b.result.output;
  expect_close(whole, resumed, 0.0);
}

TEST(FSDPRefuses, InitModuleBuildsTheWholeModel) {
  VOLT_NEED_WORKER();
  auto run = run_worker("--strategy fsdp --devices 2 --model mlp --steps 1");
  EXPECT_NE(run.result.exit_code, 0);
  EXPECT_NE(run.result.output.find("configure_model"), std::string::npos) << run.result.output;
}

}  // namespace
}  // namespace volt::testing

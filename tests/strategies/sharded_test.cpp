// FSDP and the ZeRO stages with real processes over Gloo on loopback (the worker: ddp_worker.cpp): the
// model configure_model() builds is, gathered, bitwise what one process builds; training equals one
// process on the global batch; resume is exact; init_module under FSDP is refused.
#include <gtest/gtest.h>

#include <filesystem>

#include "strategies/worker_runner.h"
#include "trainer/trainer_fixtures.h"
#include "volt/checkpoint/dcp.h"
#include "volt/checkpoint/safetensors.h"

namespace volt::testing {
namespace {

class ShardedInit : public ::testing::TestWithParam<int> {};

TEST_P(ShardedInit, ConfigureModelGathersToOneProcessInitBitwise) {
  VOLT_NEED_WORKER();
  const int n = GetParam();
  TempDir dir("fsdp-init");
  // "custom" has no LibTorch layer and no reset_parameters(): its init is recorded op by op.
  for (const std::string model : {"gpt", "mlp", "custom"}) {
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
  std::string model = "gpt";
};

class ShardedTraining : public ::testing::TestWithParam<TrainCase> {};

TEST_P(ShardedTraining, StepsEqualOneProcessOnTheGlobalBatch) {
  VOLT_NEED_WORKER();
  const auto [strategy, n, model] = GetParam();
  TempDir dir("sharded-train");
  const std::string single = dir.path() + "/single.safetensors", many = dir.path() + "/many.safetensors";
  const std::string common =
      " --model " + model + " --samples " + std::to_string(12 * n) + " --steps 5 --clip 0.5 --wrap Block";
  auto a = run_worker("--devices 1 --batch " + std::to_string(4 * n) + common + " --out " + single);
  ASSERT_EQ(a.result.exit_code, 0) << a.result.output;
  const std::string tag = unique_tag();
  auto b = run_worker("--strategy " + strategy + " --devices " + std::to_string(n) + " --batch 4" + common +
                      " --out " + many + " --tag " + tag);
  ASSERT_EQ(b.result.exit_code, 0) << b.result.output;
  EXPECT_NE(b.result.output.find("\"world_size\": " + std::to_string(n)), std::string::npos)
      << b.result.output;
  expect_close(single, many, 5e-5);
  EXPECT_EQ(processes_with(tag), 0);
}

INSTANTIATE_TEST_SUITE_P(Strategies, ShardedTraining,
                         ::testing::Values(TrainCase{"fsdp", 2}, TrainCase{"fsdp", 3},
                                           TrainCase{"deepspeed_stage_1", 2},
                                           TrainCase{"deepspeed_stage_2", 3}, TrainCase{"fsdp", 3, "custom"}),
                         [](const auto& info) {
                           return info.param.strategy + "_" + std::to_string(info.param.ranks) +
                                  (info.param.model == "gpt" ? "" : "_" + info.param.model);
                         });

TEST(FSDPResume, FromAMidEpochCheckpointIsExact) {
  VOLT_NEED_WORKER();
  TempDir dir("fsdp-resume");
  const std::string whole = dir.path() + "/whole.safetensors", resumed = dir.path() + "/resumed.safetensors";
  const std::string common =
      " --model gpt --strategy fsdp --devices 2 --batch 4 --samples 40 --steps 8 --wrap Block";
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

// Consolidates a DCP directory with `volt convert` and compares its model with a full checkpoint's.
void expect_consolidates_to(const std::string& sharded, const std::string& full, const std::string& out) {
  ASSERT_TRUE(std::filesystem::is_directory(sharded)) << sharded;
  auto convert = run_command(shell_quote(volt_cli()) + " convert " + sharded + " " + out);
  ASSERT_EQ(convert.exit_code, 0) << convert.output;
  const auto rows = weights(out), reference = weights(full);
  for (const auto& [name, t] : reference) {
    ASSERT_TRUE(rows.count("model." + name)) << name;
    EXPECT_TRUE(torch::equal(rows.at("model." + name), t)) << name;
  }
}

TEST(FSDPResume, FromAShardedDcpCheckpointIsExactAndItConsolidatesToTheFullOne) {
  VOLT_NEED_WORKER();
  TempDir dir("fsdp-dcp");
  const std::string common =
      " --model gpt --strategy fsdp --devices 2 --batch 4 --samples 40 --steps 8 --wrap Block --ckpt-every 3";
  auto full = run_worker(common + " --root " + dir.path() + "/full");
  ASSERT_EQ(full.result.exit_code, 0) << full.result.output;
  auto a = run_worker(common + " --state-dict sharded --root " + dir.path() + "/a");
  ASSERT_EQ(a.result.exit_code, 0) << a.result.output;
  const std::string step3 = dir.path() + "/a/checkpoints/step=3.ckpt";
  for (const char* file : {".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"})
    EXPECT_TRUE(std::filesystem::exists(step3 + "/" + file)) << file;
  // Each rank wrote its rows; consolidated, they are the full checkpoint of the same step.
  expect_consolidates_to(step3, dir.path() + "/full/checkpoints/step=3.ckpt", dir.path() + "/3.safetensors");
  // Resumed from the directory (each rank reads only its rows), step 6 is the uninterrupted run's step 6.
  auto b = run_worker(common + " --state-dict sharded --resume " + step3 + " --root " + dir.path() + "/b");
  ASSERT_EQ(b.result.exit_code, 0) << b.result.output;
  EXPECT_NE(b.result.output.find("\"global_step\": 8"), std::string::npos) << b.result.output;
  expect_consolidates_to(dir.path() + "/b/checkpoints/step=6.ckpt",
                         dir.path() + "/full/checkpoints/step=6.ckpt", dir.path() + "/6.safetensors");
}

// Lightning's FSDPStrategy refuses the CPU, so the oracle runs the code it runs for sharded checkpoints on
// torch's FSDP over Gloo (lightning_fsdp_oracle.py); the MLP is ddp_worker.cpp's, parameter for parameter.
TEST(FSDPLightning, VoltResumesFromLightningsShardedSaveAndLightningLoadsVolts) {
  VOLT_NEED_WORKER();
  VOLT_SKIP_WITHOUT_VENV();
  TempDir dir("fsdp-lightning");
  const std::string oracle = shell_quote(venv_python()) + " " +
                             shell_quote(test_source_dir() + "/strategies/lightning_fsdp_oracle.py");
  // Lightning's layout from 2 ranks, read by 3 volt ranks: the model and AdamW's state exactly.
  auto written = run_command("timeout -k 5 240 " + oracle + " write " + dir.path() + " 2");
  ASSERT_EQ(written.exit_code, 0) << written.output;
  auto resumed = run_worker("--strategy fsdp --devices 3 --model mlp --build configure --steps 2 --resume " +
                            dir.path() + "/ckpt --out " + dir.path() + "/volt.ckpt");
  ASSERT_EQ(resumed.result.exit_code, 0) << resumed.result.output;
  EXPECT_NE(resumed.result.output.find("\"global_step\": 2"), std::string::npos) << resumed.result.output;
  const Checkpoint ckpt = Checkpoint::load(dir.path() + "/volt.ckpt");
  const Value& optimizer = ckpt.optimizer_states.items().at(0);
  const std::map<std::string, int64_t> index{
      {"fc1.weight", 0}, {"fc1.bias", 1}, {"fc2.weight", 2}, {"fc2.bias", 3}};
  SafetensorsReader expected(dir.path() + "/expected.safetensors");
  ASSERT_EQ(expected.tensors().size(), 16u);  // 4 parameters, and exp_avg, exp_avg_sq, step of each
  for (const auto& info : expected.tensors()) {
    at::Tensor got;
    if (info.name.rfind("model.", 0) == 0) {
      got = ckpt.state_dict[info.name.substr(6)].to_tensor();
    } else {
      const std::string rest = info.name.substr(std::string("optimizer_0.state.").size());
      const size_t dot = rest.rfind('.');
      const Value* entry = optimizer["state"].to_dict().find(index.at(rest.substr(0, dot)));
      ASSERT_NE(entry, nullptr) << info.name;
      got = (*entry)[rest.substr(dot + 1)].to_tensor();
    }
    EXPECT_TRUE(
        torch::equal(got.to(at::kDouble).reshape(-1), expected.tensor(info.name).to(at::kDouble).reshape(-1)))
        << info.name;
  }
  // In one process, Checkpoint::load consolidates Lightning's directory into a Lightning .ckpt's layout.
  const Checkpoint whole = Checkpoint::load(dir.path() + "/ckpt");
  EXPECT_EQ(whole.global_step, 2);
  for (const auto& [name, t] : ckpt.state_dict.to_dict())
    EXPECT_TRUE(torch::equal(whole.state_dict[name.to_string()].to_tensor(), t.to_tensor()))
        << name.to_string();
  EXPECT_TRUE(torch::equal(whole.optimizer_states.items().at(0)["state"]["fc2.weight"]["exp_avg"].to_tensor(),
                           expected.tensor("optimizer_0.state.fc2.weight.exp_avg")));
  // volt's layout from 3 ranks, loaded by 2 ranks through Lightning's load path (param groups, meta.pt).
  const std::string sharded = dir.path() + "/volt-sharded";
  auto saved = run_worker(
      "--strategy fsdp --devices 3 --model mlp --build configure --steps 3 --state-dict sharded "
      "--out " +
      sharded);
  ASSERT_EQ(saved.result.exit_code, 0) << saved.result.output;
  auto convert =
      run_command(shell_quote(volt_cli()) + " convert " + sharded + " " + dir.path() + "/volt.safetensors");
  ASSERT_EQ(convert.exit_code, 0) << convert.output;
  auto loaded = run_command("timeout -k 5 240 " + oracle + " load " + sharded + " 2 " + dir.path() +
                            "/volt.safetensors 3");
  EXPECT_EQ(loaded.exit_code, 0) << loaded.output;
  const Checkpoint volts = Checkpoint::load(sharded);
  EXPECT_EQ(volts.global_step, 3);
  SafetensorsReader consolidated(dir.path() + "/volt.safetensors");
  for (const auto& [name, t] : volts.state_dict.to_dict())
    EXPECT_TRUE(torch::equal(t.to_tensor(), consolidated.tensor("model." + name.to_string())))
        << name.to_string();
}

TEST(FSDPSetup, ASetUpModelSavesShardedWithoutFitAndConsolidatesToItsWeights) {
  // Fabric's setup then save: given weights (a GPT built in configure_model) sharded over 2 ranks and
  // written as a DCP directory by each rank's rows, with no training loop.
  VOLT_NEED_WORKER();
  TempDir dir("fsdp-setup");
  const std::string common = " --model gpt --build configure --no-fit 1";
  auto one = run_worker("--devices 1" + common + " --out " + dir.path() + "/one.safetensors");
  ASSERT_EQ(one.result.exit_code, 0) << one.result.output;
  auto sharded = run_worker("--strategy fsdp --devices 2 --wrap Block --state-dict sharded" + common +
                            " --out " + dir.path() + "/sharded");
  ASSERT_EQ(sharded.result.exit_code, 0) << sharded.result.output;
  ASSERT_TRUE(is_dcp_directory(dir.path() + "/sharded"));
  expect_close(dir.path() + "/one.safetensors", dir.path() + "/sharded", 0.0);
}

TEST(FSDPRefuses, InitModuleBuildsTheWholeModel) {
  VOLT_NEED_WORKER();
  auto run = run_worker("--strategy fsdp --devices 2 --model mlp --steps 1");
  EXPECT_NE(run.result.exit_code, 0);
  EXPECT_NE(run.result.output.find("configure_model"), std::string::npos) << run.result.output;
}

}  // namespace
}  // namespace volt::testing

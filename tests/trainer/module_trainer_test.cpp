// A module sees its Trainer as Lightning's does (self.trainer, current_epoch, global_step, device,
// estimated_stepping_batches), and the Trainer holds the model it trains safely.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "trainer/trainer_fixtures.h"
#include "volt/core/cpu_features.h"
#include "volt/trainer/trainer.h"

namespace volt::testing {
namespace {

struct Observer : Net {
  torch::Tensor training_step(const Batch& b, int64_t i) override {
    seen.push_back({current_epoch(), global_step()});
    EXPECT_EQ(device(), c10::Device(c10::kCPU));
    return Net::training_step(b, i);
  }
  OptimizerConfig configure_optimizers() override {
    estimated = trainer().estimated_stepping_batches();
    return Net::configure_optimizers();
  }
  std::vector<std::pair<int64_t, int64_t>> seen;
  int64_t estimated = -1;
};

TrainerOptions quiet(const std::string& root) {
  return TrainerOptions()
      .accelerator("cpu")
      .enable_progress_bar(false)
      .enable_logger(false)
      .enable_checkpointing(false)
      .num_sanity_val_steps(0)
      .default_root_dir(root);
}

TEST(ModuleTrainer, StepsSeeTheEpochAndStepOfTheirTrainer) {
  TempDir dir("module-trainer");
  auto model = std::make_shared<Observer>();
  EXPECT_FALSE(model->has_trainer());
  EXPECT_THROW(model->current_epoch(), Error);
  const auto batches = to_batches(make_data(40, 1), 8);  // 5 batches an epoch
  {
    Trainer trainer(quiet(dir.path()).max_epochs(2).accumulate_grad_batches(2));
    trainer.fit(*model, batches);
    // Lightning: ceil(5 / 2) steps an epoch, times 2 epochs.
    EXPECT_EQ(model->estimated, 6);
    ASSERT_EQ(model->seen.size(), 10u);
    EXPECT_EQ(model->seen[0], (std::pair<int64_t, int64_t>{0, 0}));
    EXPECT_EQ(model->seen[2], (std::pair<int64_t, int64_t>{0, 1}));
    EXPECT_EQ(model->seen[5], (std::pair<int64_t, int64_t>{1, 3}));
    EXPECT_EQ(model->global_step(), 6);  // after fit, as Lightning's self.global_step
    EXPECT_EQ(&model->trainer(), &trainer);
  }
  // The Trainer is gone: a clear error, not a dangling reference.
  EXPECT_FALSE(model->has_trainer());
  EXPECT_THROW(model->trainer(), Error);
}

TEST(ModuleTrainer, EstimatedSteppingBatchesHonoursMaxSteps) {
  TempDir dir("module-trainer-steps");
  auto model = std::make_shared<Observer>();
  Trainer trainer(quiet(dir.path()).max_epochs(10).max_steps(7));
  trainer.fit(*model, to_batches(make_data(40, 1), 8));
  EXPECT_EQ(model->estimated, 7);
  EXPECT_THROW(trainer.estimated_stepping_batches(), Error);  // outside fit
}

TEST(ModuleTrainer, TheTrainerKeepsASharedModelAliveForSaveCheckpoint) {
  TempDir dir("module-trainer-hold");
  Trainer trainer(quiet(dir.path()).max_epochs(1));
  std::weak_ptr<Observer> weak;
  {
    auto model = std::make_shared<Observer>();
    weak = model;
    trainer.fit(*model, to_batches(make_data(16, 1), 8));
  }
  ASSERT_FALSE(weak.expired()) << "the Trainer let go of the model it trained";
  trainer.save_checkpoint(dir.path() + "/after.ckpt");
  const auto ckpt = Checkpoint::load(dir.path() + "/after.ckpt");
  EXPECT_EQ(ckpt.global_step, 2);
  EXPECT_TRUE(ckpt.state_dict.to_dict().contains(Value("fc1.weight")));
}

TEST(ModuleTrainer, AStackModuleIsForgottenWhenItsRunEnds) {
  TempDir dir("module-trainer-stack");
  Trainer trainer(quiet(dir.path()).max_epochs(1));
  {
    Observer model;  // owned by no shared_ptr: the Trainer cannot keep it alive
    trainer.fit(model, to_batches(make_data(16, 1), 8));
    EXPECT_FALSE(model.has_trainer());
  }
  EXPECT_EQ(trainer.model(), nullptr);
  try {
    trainer.save_checkpoint(dir.path() + "/gone.ckpt");
    FAIL() << "save_checkpoint after the model was gone did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("shared_ptr"), std::string::npos) << e.what();
  }
}

TEST(PrecisionChoice, DefaultsToWhatTheCpuComputesNatively) {
  const auto& cpu = CpuFeatures::host();
  const auto choice = fastest_precision(c10::kCPU);
  EXPECT_EQ(choice.precision.name(), cpu.native_bf16() ? "bf16-mixed" : "32-true") << choice.reason;
  EXPECT_FALSE(choice.reason.empty());
  // A warning only where the dtype is emulated, and never for float32.
  EXPECT_FALSE(emulated_precision_warning(Precision("32-true"), c10::kCPU).has_value());
  EXPECT_EQ(emulated_precision_warning(Precision("bf16-mixed"), c10::kCPU).has_value(), !cpu.native_bf16());
}

TEST(PrecisionChoice, CpuFlagsAreParsedFromCpuinfo) {
  const auto avx2_only =
      CpuFeatures::parse("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 fma\n");
  EXPECT_TRUE(avx2_only.avx2);
  EXPECT_FALSE(avx2_only.native_bf16());
  EXPECT_EQ(avx2_only.model, "Some CPU");
  const auto zen4 =
      CpuFeatures::parse("flags\t: avx2 fma avx512f avx512bw avx512_bf16\nmodel name\t: EPYC\n");
  EXPECT_TRUE(zen4.native_bf16());
  EXPECT_FALSE(zen4.native_fp16());
  EXPECT_EQ(zen4.summary(), "avx2 fma avx512f avx512bw avx512_bf16 (EPYC)");
  const auto sapphire = CpuFeatures::parse("flags\t: avx512f amx_bf16 avx512_fp16\n");
  EXPECT_TRUE(sapphire.native_bf16());
  EXPECT_TRUE(sapphire.native_fp16());
}

}  // namespace
}  // namespace volt::testing

#include "volt/trainer/trainer.h"
#include "volt/error.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

using volt::Trainer;
using volt::TrainerOptions;

TEST(Trainer, InitModuleBuildsInThePrecisionOnTheRootDevice) {
  Trainer trainer(TrainerOptions().accelerator("cpu").precision("bf16-true"));
  EXPECT_TRUE(trainer.root_device().is_cpu());
  auto scope = trainer.init_module();
  torch::nn::Linear linear(64, 32);
  EXPECT_EQ(linear->weight.dtype(), torch::kBFloat16);
  EXPECT_TRUE(linear->weight.device().is_cpu());
  EXPECT_NE(linear->weight.abs().sum().item<float>(), 0.0f);
}

TEST(Trainer, MixedPrecisionBuildsFloat32Parameters) {
  Trainer trainer(TrainerOptions().accelerator("cpu").precision("bf16-mixed"));
  auto scope = trainer.init_module();
  torch::nn::Linear linear(4, 2);
  EXPECT_EQ(linear->weight.dtype(), torch::kFloat);
}

TEST(Trainer, EmptyInitSkipsParameterInit) {
  Trainer trainer(TrainerOptions().accelerator("cpu").precision("16-true"));
  auto scope = trainer.init_module(/*empty_init=*/true);
  EXPECT_EQ(scope.options().mode(), volt::InitMode::kEmpty);
  torch::nn::Linear linear(2048, 1024);
  EXPECT_EQ(linear->weight.dtype(), torch::kHalf);
  EXPECT_EQ(linear->weight.count_nonzero().item<int64_t>(), 0);  // a fresh mapping, never written
}

TEST(Trainer, OptionsRejectUnknownValuesWithTheValidOnes) {
  EXPECT_THROW(TrainerOptions().precision("fp17"), volt::Error);
  EXPECT_THROW(Trainer(TrainerOptions().accelerator("tpu")), volt::Error);
  try {
    Trainer trainer(TrainerOptions().accelerator("cpu").strategy("ddp"));
    FAIL();
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'ddp'"), std::string::npos);
  }
  EXPECT_THROW(Trainer(TrainerOptions().accelerator("cpu").strategy("magic")), volt::Error);
  EXPECT_THROW(Trainer(TrainerOptions().accelerator("cpu").devices(2)), volt::Error);
}

TEST(Trainer, CudaPrecisionBuildsOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU";
  Trainer trainer(TrainerOptions().accelerator("cuda").precision("bf16-true"));
  auto scope = trainer.init_module();
  torch::nn::Linear linear(64, 32);
  EXPECT_TRUE(linear->weight.is_cuda());
  EXPECT_EQ(linear->weight.dtype(), torch::kBFloat16);
}

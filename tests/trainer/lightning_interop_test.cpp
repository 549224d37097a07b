// Real Lightning checkpoints both ways: a .ckpt trained by Lightning loads into volt's FashionCNN and
// resumes in volt's Trainer; a .ckpt written by volt's Trainer loads in Lightning's load_from_checkpoint
// and resumes in Lightning's Trainer.fit(ckpt_path=...).
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <cmath>

#include "python_oracle.h"
#include "test_paths.h"
#include "trainer/trainer_fixtures.h"
#include "volt/checkpoint/load_from_checkpoint.h"
#include "volt/checkpoint/torch_file.h"
#include "volt/models/fashion_cnn.h"
#include "volt/optim/optimizer_state.h"
#include "volt/trainer/model_checkpoint.h"

using namespace volt;
using namespace volt::testing;

namespace {

std::string oracle() {
  return shell_quote(volt::testing::test_source_dir() + "/trainer/lightning_oracle.py");
}

std::vector<Batch> random_images(int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto x = at::randn({n, 1, 28, 28}, gen);
  auto y = at::randint(0, 10, {n}, gen);
  return {{x.slice(0, 0, 32), y.slice(0, 0, 32)}, {x.slice(0, 32, 64), y.slice(0, 32, 64)}};
}

double cosine_lr(double base, int64_t epoch, int64_t t_max) {
  return base * (1 + std::cos(std::acos(-1.0) * static_cast<double>(epoch) / static_cast<double>(t_max))) / 2;
}

}  // namespace

TEST(LightningInterop, CheckpointsMoveBothWaysAndResume) {
  VOLT_SKIP_WITHOUT_VENV();
  TempDir dir("lightning");
  const auto py = shell_quote(venv_python());
  auto result = run_command(py + " " + oracle() + " train " + shell_quote(dir.path()));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const std::string lightning_ckpt = dir.path() + "/lightning.ckpt";

  // Lightning -> volt: constructed from its hyper-parameters, the same outputs.
  auto model = load_from_checkpoint<models::FashionCNN>(lightning_ckpt);
  EXPECT_EQ(model->hparams().get<int64_t>("channels1"), 4);
  TorchFileReader io(dir.path() + "/io.pt");
  model->eval();
  {
    torch::NoGradGuard no_grad;
    const auto ours = model->forward(io.contents()["input"].to_tensor());
    EXPECT_TRUE(torch::allclose(ours, io.contents()["output"].to_tensor(), 1e-5, 1e-5))
        << (ours - io.contents()["output"].to_tensor()).abs().max().item<double>();
  }
  // ...and resumes: epoch 2 of 3, with Lightning's AdamW moments and cosine schedule.
  auto checkpoint = std::make_shared<ModelCheckpoint>(
      ModelCheckpointOptions().dirpath(dir.path() + "/volt").filename("volt").save_last(true));
  Trainer trainer(quiet_options(dir.path()).max_epochs(3).callbacks({checkpoint}));
  trainer.fit(*model, random_images(64, 1), {}, lightning_ckpt);
  EXPECT_EQ(trainer.global_step(), 6);  // Lightning took 4 steps (2 epochs of 2 batches)
  EXPECT_EQ(trainer.current_epoch(), 3);
  const Value state = optimizer_state_dict(*trainer.optimizer());
  EXPECT_EQ(state["state"].to_dict().find(Value(int64_t{0}))->operator[]("step").to_tensor().item<double>(),
            6);
  EXPECT_NEAR(learning_rates(*trainer.optimizer())[0], cosine_lr(2e-3, 3, 4), 1e-12);

  // volt -> Lightning: volt's last.ckpt (after epoch 2) loads and resumes to epoch 4 in Lightning.
  Value volt_io = Value::dict();
  {
    torch::NoGradGuard no_grad;
    model->eval();
    volt_io.to_dict().set("input", io.contents()["input"].to_tensor());
    volt_io.to_dict().set("output", model->forward(io.contents()["input"].to_tensor()));
  }
  save_torch_file(dir.path() + "/volt_io.pt", volt_io);
  result = run_command(py + " " + oracle() + " resume " + shell_quote(checkpoint->last_model_path()) + " " +
                       shell_quote(dir.path() + "/volt_io.pt") + " " + shell_quote(dir.path() + "/py"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const size_t line = result.output.rfind("\n{");  // the oracle's report is its last line
  const auto report = nlohmann::json::parse(result.output.substr(line == std::string::npos ? 0 : line + 1));
  EXPECT_LT(report["max_abs_diff"].get<double>(), 1e-5);
  EXPECT_EQ(report["global_step"].get<int64_t>(), 8);
  EXPECT_EQ(report["current_epoch"].get<int64_t>(), 4);
  EXPECT_EQ(report["adam_step"].get<double>(), 8);
  EXPECT_NEAR(report["lr"].get<double>(), cosine_lr(2e-3, 4, 4), 1e-12);
  EXPECT_EQ(report["hparams"]["channels1"].get<int64_t>(), 4);
}

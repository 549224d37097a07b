#include "volt/optim/optimizer_state.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "python_oracle.h"
#include "test_paths.h"
#include "volt/checkpoint/torch_file.h"
#include "volt/error.h"
#include "volt/optim/lr_scheduler.h"

using namespace volt;
namespace fs = std::filesystem;

namespace {

std::vector<torch::Tensor> params_like(const std::vector<torch::Tensor>& from) {
  std::vector<torch::Tensor> out;
  for (const auto& p : from) out.push_back(p.detach().clone().requires_grad_(true));
  return out;
}

void step_with(torch::optim::Optimizer& opt, double grad) {
  for (auto& group : opt.param_groups())
    for (auto& p : group.params()) p.mutable_grad() = torch::full_like(p, grad);
  opt.step();
}

std::string oracle() { return volt::testing::test_source_dir() + "/optim/optimizer_state_oracle.py"; }

}  // namespace

TEST(OptimizerState, AdamResumedFromItsStateDictStepsBitwiseAsTheOriginal) {
  torch::manual_seed(0);
  std::vector<torch::Tensor> a{torch::randn({4, 3}, torch::requires_grad()),
                               torch::randn({3}, torch::requires_grad())};
  torch::optim::Adam original(
      a, torch::optim::AdamOptions(0.01).betas({0.8, 0.95}).weight_decay(0.1).amsgrad(true));
  for (int i = 0; i < 3; ++i) step_with(original, 0.3 * (i + 1));
  auto b = params_like(a);
  torch::optim::Adam resumed(b, torch::optim::AdamOptions(1.0));
  load_optimizer_state_dict(resumed, optimizer_state_dict(original));
  const auto& o = static_cast<const torch::optim::AdamOptions&>(resumed.param_groups()[0].options());
  EXPECT_EQ(o.lr(), 0.01);
  EXPECT_EQ(std::get<1>(o.betas()), 0.95);
  EXPECT_TRUE(o.amsgrad());
  step_with(original, -0.7);
  step_with(resumed, -0.7);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i]));
}

TEST(OptimizerState, SgdMomentumAndGroupsRoundTrip) {
  torch::manual_seed(1);
  std::vector<torch::Tensor> a{torch::randn({5}, torch::requires_grad())};
  torch::optim::SGD original(a, torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(true));
  step_with(original, 1.0);
  step_with(original, 2.0);
  const Value state = optimizer_state_dict(original);
  EXPECT_EQ(state["param_groups"].items().at(0)["momentum"].to_double(), 0.9);
  EXPECT_TRUE(state["state"].to_dict().find(Value(int64_t{0}))->to_dict().contains("momentum_buffer"));
  auto b = params_like(a);
  torch::optim::SGD resumed(b, torch::optim::SGDOptions(0.5));
  load_optimizer_state_dict(resumed, state);
  step_with(original, 3.0);
  step_with(resumed, 3.0);
  EXPECT_TRUE(torch::equal(a[0], b[0]));
  // A state of another shape is refused, naming the difference.
  std::vector<torch::Tensor> two{torch::zeros({1}, torch::requires_grad()),
                                 torch::zeros({1}, torch::requires_grad())};
  torch::optim::SGD other(two, torch::optim::SGDOptions(0.1));
  EXPECT_THROW(load_optimizer_state_dict(other, state), Error);
}

TEST(LRScheduler, StepAndCosineFollowPyTorchsClosedFormAndResume) {
  std::vector<torch::Tensor> p{torch::zeros({1}, torch::requires_grad())};
  torch::optim::SGD sgd(p, torch::optim::SGDOptions(0.1));
  StepLR step(sgd, 2, 0.5);
  std::vector<double> seen;
  for (int i = 0; i < 5; ++i) {
    seen.push_back(learning_rates(sgd)[0]);
    step.step();
  }
  EXPECT_EQ(seen, (std::vector<double>{0.1, 0.1, 0.05, 0.05, 0.025}));
  const Value state = step.state_dict();
  EXPECT_EQ(state["last_epoch"].to_int(), 5);
  EXPECT_EQ(state["step_size"].to_int(), 2);
  torch::optim::SGD sgd2(p, torch::optim::SGDOptions(0.1));
  StepLR resumed(sgd2, 7, 0.9);
  resumed.load_state_dict(state);
  EXPECT_DOUBLE_EQ(learning_rates(sgd2)[0], 0.025);
  resumed.step();
  step.step();
  EXPECT_DOUBLE_EQ(learning_rates(sgd2)[0], learning_rates(sgd)[0]);

  torch::optim::SGD sgd3(p, torch::optim::SGDOptions(1.0));
  CosineAnnealingLR cosine(sgd3, 4, 0.0);
  cosine.step();
  cosine.step();
  EXPECT_NEAR(learning_rates(sgd3)[0], 0.5, 1e-12);
}

TEST(OptimizerState, PyTorchResumesAdamFromVoltsStateAndViceVersa) {
  VOLT_SKIP_WITHOUT_VENV();
  const fs::path dir = fs::temp_directory_path() / ("volt-optim-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto py = volt::testing::shell_quote(volt::testing::venv_python());

  // volt -> PyTorch: three steps here, the fourth in PyTorch from volt's state, the same fourth here.
  torch::manual_seed(2);
  std::vector<torch::Tensor> params{torch::randn({2, 3}, torch::requires_grad()),
                                    torch::randn({2}, torch::requires_grad())};
  torch::optim::Adam adam(params, torch::optim::AdamOptions(1e-3));
  for (int i = 0; i < 3; ++i) step_with(adam, 0.25 * (i + 1));
  Value file = Value::dict();
  file.to_dict().set("weight", params[0].detach().clone());
  file.to_dict().set("bias", params[1].detach().clone());
  file.to_dict().set("optimizer", optimizer_state_dict(adam));
  const std::string in = (dir / "volt.pt").string(), out = (dir / "torch.pt").string();
  save_torch_file(in, file);
  auto result =
      volt::testing::run_command(py + " " + volt::testing::shell_quote(oracle()) + " step " + in + " " + out);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  step_with(adam, 1.0);
  TorchFileReader python_step(out);
  EXPECT_TRUE(torch::allclose(python_step.contents()["weight"].to_tensor(), params[0].detach(), 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(python_step.contents()["bias"].to_tensor(), params[1].detach(), 1e-6, 1e-7));

  // PyTorch -> volt.
  const std::string trained = (dir / "trained.pt").string();
  result = volt::testing::run_command(py + " " + volt::testing::shell_quote(oracle()) + " train " + trained);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  TorchFileReader reader(trained);
  const Value& saved = reader.contents();
  std::vector<torch::Tensor> ours{saved["weight"].to_tensor().clone().requires_grad_(true),
                                  saved["bias"].to_tensor().clone().requires_grad_(true)};
  torch::optim::Adam resumed(ours, torch::optim::AdamOptions(1.0));
  load_optimizer_state_dict(resumed, saved["optimizer"]);
  step_with(resumed, 1.0);
  EXPECT_TRUE(torch::allclose(ours[0].detach(), saved["weight_after"].to_tensor(), 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(ours[1].detach(), saved["bias_after"].to_tensor(), 1e-6, 1e-7));
  fs::remove_all(dir);
}

TEST(OptimizerState, AnOptimizerHoldingATensorTwiceIsRefusedWithTheFix) {
  auto w = torch::zeros({2}, torch::requires_grad());
  auto b = torch::zeros({1}, torch::requires_grad());
  torch::optim::AdamW once(std::vector<torch::Tensor>{w, b});
  EXPECT_NO_THROW(check_distinct_parameters(once));
  // What an optimizer built from LibTorch's parameters() of a tied model holds: one tensor twice.
  torch::optim::AdamW twice(std::vector<torch::Tensor>{w, b, w});
  try {
    optimizer_state_dict(twice);
    FAIL() << "saved the state of an optimizer that steps a tensor twice";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("volt::unique_parameters"), std::string::npos) << e.what();
  }
  // Across groups too (PyTorch refuses that outright).
  torch::optim::SGD groups(
      {torch::optim::OptimizerParamGroup({w}), torch::optim::OptimizerParamGroup({b, w})},
      torch::optim::SGDOptions(0.1));
  EXPECT_THROW(check_distinct_parameters(groups), Error);
}

// Tied weights as PyTorch ties them: one tensor under two names is one parameter for optimizers, clipping
// and optimizer state, and a tied model trains exactly as the same model does in PyTorch.
#include "volt/core/parameters.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/tiny_lm.h"
#include "python_oracle.h"
#include "test_paths.h"
#include "trainer/trainer_fixtures.h"
#include "volt/checkpoint/state_dict.h"
#include "volt/checkpoint/torch_file.h"
#include "volt/error.h"
#include "volt/optim/optimizer_state.h"

using namespace volt;
using namespace volt::testing;

namespace {

std::vector<std::string> names(const std::vector<std::pair<std::string, at::Tensor>>& items) {
  std::vector<std::string> out;
  for (const auto& item : items) out.push_back(item.first);
  return out;
}

struct TwoNames : torch::nn::Module {
  TwoNames() {
    auto w = torch::randn({3, 2});
    a = register_parameter("a", w);
    b = register_parameter("b", w);
    c = register_parameter("c", torch::randn({2}));
  }
  torch::Tensor a, b, c;
};

}  // namespace

TEST(Parameters, OneTensorRegisteredUnderTwoNamesIsOneParameter) {
  TwoNames m;
  EXPECT_EQ(m.a.unsafeGetTensorImpl(), m.b.unsafeGetTensorImpl());
  EXPECT_EQ(m.parameters().size(), 3u);  // LibTorch: once per name
  const auto unique = unique_parameters(m);
  ASSERT_EQ(unique.size(), 2u);  // PyTorch: once per tensor, at its first name
  EXPECT_EQ(unique[0].unsafeGetTensorImpl(), m.a.unsafeGetTensorImpl());
  EXPECT_EQ(unique[1].unsafeGetTensorImpl(), m.c.unsafeGetTensorImpl());
  EXPECT_EQ(names(named_unique_parameters(m)), (std::vector<std::string>{"a", "c"}));
  // The state dict lists both names, sharing memory, as PyTorch's does.
  const Value sd = state_dict(m);
  ASSERT_EQ(sd.to_dict().size(), 3u);
  EXPECT_EQ(sd["a"].to_tensor().data_ptr(), sd["b"].to_tensor().data_ptr());
}

TEST(Parameters, TieParameterMakesAStockLayersFieldAndEntryTheTargetTensor) {
  torch::nn::Embedding wte(7, 4);
  torch::nn::Linear head(torch::nn::LinearOptions(4, 7).bias(false));
  const auto old_head = head->weight;
  tie_parameter(head, head->weight, wte->weight);
  EXPECT_EQ(head->weight.unsafeGetTensorImpl(), wte->weight.unsafeGetTensorImpl());
  EXPECT_EQ(head->named_parameters()["weight"].unsafeGetTensorImpl(), wte->weight.unsafeGetTensorImpl());
  EXPECT_NE(head->weight.unsafeGetTensorImpl(), old_head.unsafeGetTensorImpl());

  // One gradient: the embedding's and the head's contributions meet in one tensor.
  const auto idx = torch::tensor({1, 3, 3, 6});
  auto loss = head(wte(idx)).pow(2).sum();
  loss.backward();
  const auto w = wte->weight.detach().clone();
  auto as_embedding = w.clone().requires_grad_(true), as_head = w.clone().requires_grad_(true);
  torch::nn::functional::linear(torch::nn::functional::embedding(idx, as_embedding), as_head)
      .pow(2)
      .sum()
      .backward();
  EXPECT_TRUE(torch::allclose(wte->weight.grad(), as_embedding.grad() + as_head.grad(), 1e-6, 1e-6));
  EXPECT_TRUE(head->weight.grad().defined());
  EXPECT_EQ(head->weight.grad().data_ptr(), wte->weight.grad().data_ptr());
}

TEST(Parameters, TiedModelListsBothNamesAndHandsOnEachTensorOnce) {
  TinyLM model;
  EXPECT_EQ(model.lm_head->weight.unsafeGetTensorImpl(), model.wte->weight.unsafeGetTensorImpl());
  EXPECT_EQ(model.parameters().size(), 6u);
  EXPECT_EQ(
      names(named_unique_parameters(model)),
      (std::vector<std::string>{"wte.weight", "mix.proj.weight", "mix.proj.bias", "ln.weight", "ln.bias"}));
  const Value sd = state_dict(model);
  EXPECT_EQ(sd["lm_head.weight"].to_tensor().data_ptr(), sd["wte.weight"].to_tensor().data_ptr());
  // Casting the module keeps the tie (both layers cast the same TensorImpl).
  model.to(torch::kDouble);
  EXPECT_EQ(model.lm_head->weight.unsafeGetTensorImpl(), model.wte->weight.unsafeGetTensorImpl());
  EXPECT_EQ(model.lm_head->weight.scalar_type(), torch::kDouble);
  EXPECT_EQ(unique_buffers(model).size(), 3u);
}

TEST(Parameters, TieParameterRefusesAForeignTensorAndAnotherShape) {
  torch::nn::Embedding wte(7, 4);
  torch::nn::Linear head(torch::nn::LinearOptions(4, 7).bias(false));
  torch::nn::Linear wide(torch::nn::LinearOptions(5, 7).bias(false));
  auto stray = torch::randn({7, 4});
  try {
    tie_parameter(head, stray, wte->weight);
    FAIL() << "tied a tensor that is not the layer's parameter";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a parameter registered"), std::string::npos) << e.what();
  }
  try {
    tie_parameter(wide, wide->weight, wte->weight);
    FAIL() << "tied tensors of different shapes";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[7, 5]"), std::string::npos) << e.what();
  }
}

// The PyTorch peer: the same tied model, data and initial weights, AdamW with weight decay and norm
// clipping over model.parameters(), in the venv's torch. Clipping is active on every step, so a gradient
// counted twice or a tensor stepped twice changes the numbers.
TEST(Parameters, TiedModelStepsAndClipsAsPyTorch) {
  VOLT_SKIP_WITHOUT_VENV();
  TempDir dir("tied");
  const int64_t steps = 4;
  const double lr = 0.05, max_norm = 0.5;
  torch::manual_seed(3);
  TinyLM model;
  const auto idx = torch::randint(kVocab, {3, kBlock});
  const auto targets = torch::randint(kVocab, {3, kBlock});
  Value given = Value::dict();
  given.to_dict().set("state_dict", state_dict(model));
  given.to_dict().set("idx", idx);
  given.to_dict().set("targets", targets);
  given.to_dict().set("steps", steps);
  given.to_dict().set("lr", lr);
  given.to_dict().set("max_norm", max_norm);
  save_torch_file(dir.path() + "/in.pt", given);
  const auto result = run_command(
      shell_quote(venv_python()) + " " + shell_quote(test_source_dir() + "/core/tied_lm_oracle.py") +
      " train " + shell_quote(dir.path() + "/in.pt") + " " + shell_quote(dir.path() + "/out.pt"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const Value python = TorchFileReader(dir.path() + "/out.pt").contents();
  const auto python_norms = python["norms"].to_tensor();

  // LibTorch's parameters() counts the tied gradient twice: the clipping norm differs from PyTorch's.
  {
    model.zero_grad();
    model.loss(idx, targets).backward();
    const double doubled = torch::nn::utils::clip_grad_norm_(model.parameters(), 1e9);
    EXPECT_GT(std::abs(doubled - python_norms[0].item<double>()), 1e-3);
    model.zero_grad();
  }
  torch::optim::AdamW adamw(unique_parameters(model), torch::optim::AdamWOptions(lr).weight_decay(0.1));
  for (int64_t i = 0; i < steps; ++i) {
    adamw.zero_grad();
    model.loss(idx, targets).backward();
    const double norm = torch::nn::utils::clip_grad_norm_(unique_parameters(model), max_norm);
    EXPECT_GT(norm, max_norm) << "step " << i << ": clipping must be active for this test to mean anything";
    EXPECT_NEAR(norm, python_norms[i].item<double>(), 1e-5 * norm) << "step " << i;
    adamw.step();
  }
  const Value ours = state_dict(model);
  for (const auto& [key, value] : python["state_dict"].to_dict()) {
    const auto& theirs = value.to_tensor();
    EXPECT_TRUE(torch::allclose(ours[key.to_string()].to_tensor(), theirs, 1e-5, 1e-6))
        << key.to_string() << ": " << (ours[key.to_string()].to_tensor() - theirs).abs().max().item<double>();
  }
  // The optimizer's state is PyTorch's, parameter for parameter: same count, same order, same moments.
  const Value our_state = optimizer_state_dict(adamw);
  const Value& their_state = python["optimizer"];
  ASSERT_EQ(our_state["param_groups"].items().at(0)["params"].items().size(),
            their_state["param_groups"].items().at(0)["params"].items().size());
  ASSERT_EQ(our_state["state"].to_dict().size(), 5u);
  ASSERT_EQ(their_state["state"].to_dict().size(), 5u);
  for (int64_t i = 0; i < 5; ++i) {
    const Value& a = *our_state["state"].to_dict().find(Value(i));
    const Value& b = *their_state["state"].to_dict().find(Value(i));
    EXPECT_EQ(a["step"].to_tensor().item<double>(), b["step"].to_tensor().item<double>());
    EXPECT_TRUE(torch::allclose(a["exp_avg"].to_tensor(), b["exp_avg"].to_tensor(), 1e-5, 1e-7)) << i;
    EXPECT_TRUE(torch::allclose(a["exp_avg_sq"].to_tensor(), b["exp_avg_sq"].to_tensor(), 1e-5, 1e-9)) << i;
  }
  // PyTorch's optimizer state restores into an optimizer built from unique_parameters...
  torch::optim::AdamW resumed(unique_parameters(model), torch::optim::AdamWOptions(1.0));
  EXPECT_NO_THROW(load_optimizer_state_dict(resumed, their_state));
  // ...and not into one built from LibTorch's parameters(), which would step the tied tensor twice.
  torch::optim::AdamW doubled(model.parameters(), torch::optim::AdamWOptions(lr));
  EXPECT_THROW(load_optimizer_state_dict(doubled, their_state), Error);
  EXPECT_THROW(optimizer_state_dict(doubled), Error);
}

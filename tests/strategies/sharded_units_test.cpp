// The sharded strategies' mechanism in one process (world size 1, no process group): units are gathered
// when model code first uses them and freed when the next starts, forward and backward give what the
// unsharded model gives, and the optimizer steps the shards.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "strategies/sharding/sharded_units.h"
#include "strategies/sharding/storage_use_scope.h"
#include "volt/core/parameters.h"
#include "volt/models/gpt.h"

namespace volt::testing {
namespace {

using volt::models::GPT;
using volt::models::GPTConfig;

GPTConfig small() { return GPTConfig().vocab_size(64).block_size(16).n_layer(4).n_head(2).n_embd(24); }

GPT copy_of(const GPT& model) {
  torch::NoGradGuard no_grad;
  GPT twin(small());
  auto mine = twin->named_parameters();
  for (const auto& item : model->named_parameters()) mine[item.key()].copy_(item.value());
  return twin;
}

TEST(ShardedUnits, GathersEachUnitOnUseAndMatchesTheWholeModel) {
  torch::manual_seed(3);
  GPT model(small());
  GPT reference = copy_of(model);
  detail::ShardingPlan plan;
  plan.wrap_modules = {"Block"};
  detail::ShardedUnits units(*model, nullptr, plan);
  ASSERT_EQ(units.units().size(), 5u);  // the root (embeddings, ln_f) and one per block
  for (const auto& unit : units.units()) EXPECT_FALSE(unit.gathered);

  const auto idx = torch::randint(64, {2, 16});
  at::Tensor out;
  {
    detail::StorageUseScope scope(&units);
    out = model(idx);
  }
  EXPECT_TRUE(torch::equal(out, reference(idx)));
  // Root, four blocks, root again for the tied head: gathered one after another, never all at once.
  EXPECT_GE(units.gathers(), 6);
  EXPECT_LE(units.max_gathered(), 2);

  units.prepare_for_backward();
  {
    detail::StorageUseScope scope(&units);
    out.pow(2).mean().backward();
  }
  units.finalize_backward();
  reference(idx).pow(2).mean().backward();
  EXPECT_LE(units.max_gathered(), 2);
  for (const auto& p : units.params()) {
    ASSERT_TRUE(p.shard.grad().defined()) << p.name;
    const auto expected = reference->named_parameters()[p.name].grad();
    EXPECT_TRUE(torch::allclose(p.shard.grad(), expected, 1e-6, 1e-7)) << p.name;
    EXPECT_FALSE(p.param.grad().defined()) << p.name << ": the full gradient was freed";
  }
  for (const auto& unit : units.units()) EXPECT_FALSE(unit.gathered) << unit.name;
}

TEST(ShardedUnits, TheOptimizerStepsTheShardsAndTheNextForwardSeesIt) {
  torch::manual_seed(4);
  GPT model(small());
  detail::ShardingPlan plan;
  plan.wrap_min_params = 2000;  // size-based: the blocks (and their MLPs) become units
  detail::ShardedUnits units(*model, nullptr, plan);
  EXPECT_GT(units.units().size(), 2u);
  std::vector<at::Tensor> shards;
  for (const auto& p : units.params()) shards.push_back(p.shard);
  torch::optim::SGD sgd(shards, torch::optim::SGDOptions(0.1));
  const auto idx = torch::randint(64, {2, 16});
  auto loss_now = [&] {
    detail::StorageUseScope scope(&units);
    return model(idx).pow(2).mean();
  };
  const at::Tensor before = loss_now();
  units.prepare_for_backward();
  {
    detail::StorageUseScope scope(&units);
    before.backward();
  }
  units.finalize_backward();
  sgd.step();
  const at::Tensor after = loss_now();
  EXPECT_LT(after.item<double>(), before.item<double>());
}

TEST(ShardedUnits, MixedPrecisionComputesInTheParamDtypeAndKeepsFloat32Shards) {
  torch::manual_seed(5);
  GPT model(small());
  GPT reference = copy_of(model);
  reference->to(torch::kBFloat16);
  detail::ShardingPlan plan;
  plan.wrap_modules = {"Block"};
  plan.param_dtype = torch::kBFloat16;
  plan.reduce_dtype = torch::kFloat;
  detail::ShardedUnits units(*model, nullptr, plan);
  const auto idx = torch::randint(64, {2, 16});
  at::Tensor out;
  {
    detail::StorageUseScope scope(&units);
    out = model(idx);
  }
  ASSERT_EQ(out.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(out, reference(idx)));  // the same bf16 weights, the same ops
  units.prepare_for_backward();
  {
    detail::StorageUseScope scope(&units);
    out.to(torch::kFloat).pow(2).mean().backward();
  }
  units.finalize_backward();
  reference(idx).to(torch::kFloat).pow(2).mean().backward();
  for (const auto& p : units.params()) {
    EXPECT_EQ(p.shard.scalar_type(), torch::kFloat) << p.name;
    ASSERT_TRUE(p.shard.grad().defined()) << p.name;
    EXPECT_EQ(p.shard.grad().scalar_type(), torch::kFloat) << p.name;
    const auto expected = reference->named_parameters()[p.name].grad().to(torch::kFloat);
    EXPECT_TRUE(torch::equal(p.shard.grad(), expected)) << p.name;
  }
}

TEST(ShardedUnits, ModelCodeOutsideAStepCannotReachFreedParameters) {
  GPT model(small());
  detail::ShardedUnits units(*model, nullptr, detail::ShardingPlan());
  ASSERT_EQ(units.units().size(), 1u);  // no policy: one unit
  // Freed: the tensors keep their shapes, their storage holds no memory.
  for (const auto& p : units.params()) {
    EXPECT_EQ(p.param.sizes().vec(), p.layout.shape);
    EXPECT_EQ(p.param.storage().nbytes(), 0u);
  }
}

}  // namespace
namespace {
template <typename Inner>
struct BoxImpl : torch::nn::Module {
  BoxImpl() { inner = register_module("inner", std::make_shared<Inner>()); }
  std::shared_ptr<Inner> inner;
};
struct PlainLinear : torch::nn::Module {
  PlainLinear() { weight = register_parameter("weight", torch::ones({4, 3})); }
  at::Tensor weight;
};
struct TwoBoxes : torch::nn::Module {
  TwoBoxes() {
    first = register_module("first", std::make_shared<BoxImpl<PlainLinear>>());
    second = register_module("second", std::make_shared<BoxImpl<PlainLinear>>());
    head = register_parameter("head", torch::zeros({2}));
  }
  std::shared_ptr<BoxImpl<PlainLinear>> first, second;
  at::Tensor head;
};
}  // namespace

TEST(ShardedUnits, ATemplatedModuleClassWrapsByItsName) {
  // BoxImpl<PlainLinear>'s demangled name ends inside its template argument; it still wraps as "Box".
  TwoBoxes model;
  ASSERT_NE(model.first->name().find('<'), std::string::npos) << model.first->name();
  detail::ShardingPlan plan;
  plan.wrap_modules = {"Box"};
  detail::ShardedUnits units(model, nullptr, plan);
  std::vector<std::string> names;
  for (const auto& unit : units.units()) names.push_back(unit.name);
  EXPECT_EQ(names, (std::vector<std::string>{"", "first", "second"}));
}

TEST(ShardedUnits, AnAutoWrapNameThatMatchesNothingIsReportedWithTheModelsClasses) {
  TwoBoxes model;
  detail::ShardingPlan plan;
  plan.wrap_modules = {"Bx"};
  ::testing::internal::CaptureStderr();
  detail::ShardedUnits units(model, nullptr, plan);
  const std::string warning = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(units.units().size(), 1u);
  EXPECT_NE(warning.find("auto_wrap_modules names 'Bx', which matches no module of the model"),
            std::string::npos)
      << warning;
  EXPECT_NE(warning.find("Box, PlainLinear"), std::string::npos) << warning;
}

}  // namespace volt::testing

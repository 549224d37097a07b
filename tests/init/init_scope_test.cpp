#include "volt/init/init_scope.h"
#include "volt/error.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <future>
#include <stdexcept>
#include <thread>

using volt::InitMode;
using volt::InitOptions;
using volt::InitRng;

namespace {

InitOptions bf16() { return InitOptions().dtype(torch::kBFloat16); }

// Sine/cosine position table, computed from factory ops and arithmetic as transformer code does.
torch::Tensor position_table(int64_t length, int64_t dim) {
  auto position = torch::arange(0, length).unsqueeze(1).to(torch::get_default_dtype());
  auto div_term = torch::exp(torch::arange(0, dim, 2).to(position.dtype()) * (-std::log(10000.0) / dim));
  auto table = torch::zeros({length, dim});
  table.index_put_({torch::indexing::Slice(), torch::indexing::Slice(0, torch::indexing::None, 2)},
                   torch::sin(position * div_term));
  table.index_put_({torch::indexing::Slice(), torch::indexing::Slice(1, torch::indexing::None, 2)},
                   torch::cos(position * div_term));
  return table;
}

struct PositionalEncodingImpl : torch::nn::Module {
  PositionalEncodingImpl(int64_t length, int64_t dim) {
    table = register_buffer("table", torch::zeros({length, dim}));
    table.copy_(torch::sin(torch::arange(0.0, static_cast<double>(length * dim)).view({length, dim}) * 0.01));
    scale = register_parameter("scale", torch::ones({dim}));
  }
  torch::Tensor table, scale;
};
TORCH_MODULE(PositionalEncoding);

}  // namespace

TEST(InitScope, FloatingFactoriesTakeTheScopeDtype) {
  auto scope = volt::init_module(bf16());
  EXPECT_EQ(torch::empty({2, 3}).dtype(), torch::kBFloat16);
  EXPECT_EQ(torch::zeros({2}).dtype(), torch::kBFloat16);
  EXPECT_EQ(torch::ones({2}).dtype(), torch::kBFloat16);
  EXPECT_EQ(torch::rand({2}).dtype(), torch::kBFloat16);
  EXPECT_EQ(torch::randn({2}).dtype(), torch::kBFloat16);
  EXPECT_EQ(torch::linspace(0, 1, 5).dtype(), torch::kBFloat16);
  EXPECT_EQ(torch::full({2}, 1.5).dtype(), torch::kBFloat16);
  EXPECT_EQ(torch::arange(0.5).dtype(), torch::kBFloat16);
  EXPECT_EQ(torch::arange(0, 4, 0.5).dtype(), torch::kBFloat16);
  auto float64 = volt::init_module(InitOptions().dtype(torch::kFloat64));  // LibTorch 1.13 has no bf16 eye
  EXPECT_EQ(torch::eye(3).dtype(), torch::kFloat64);
  EXPECT_EQ(torch::full({2}, 7).dtype(), torch::kLong);
}

TEST(InitScope, IntegerAndBoolTensorsKeepTheirDtypes) {
  auto scope = volt::init_module(bf16());
  EXPECT_EQ(torch::arange(5).dtype(), torch::kLong);
  EXPECT_EQ(torch::arange(1, 9, 2).dtype(), torch::kLong);
  EXPECT_EQ(torch::full({2}, 7).dtype(), torch::kLong);
  EXPECT_EQ(torch::full({2}, true).dtype(), torch::kBool);
  EXPECT_EQ(torch::randint(10, {4}).dtype(), torch::kLong);
  EXPECT_EQ(torch::randperm(6).dtype(), torch::kLong);
  EXPECT_EQ(torch::zeros({2}, torch::kInt).dtype(), torch::kInt);
  EXPECT_EQ(torch::ones({2}, torch::kBool).dtype(), torch::kBool);
  EXPECT_EQ(torch::arange(5).sum().item<int64_t>(), 10);
}

TEST(InitScope, ExplicitDeviceAndDtypeWin) {
  auto scope = volt::init_module(InitOptions().dtype(torch::kBFloat16).mode(InitMode::kMeta));
  EXPECT_EQ(torch::zeros({2}, torch::kFloat64).dtype(), torch::kFloat64);
  EXPECT_TRUE(torch::zeros({2}, torch::kFloat64).is_meta());
  auto on_cpu = torch::ones({2}, torch::TensorOptions().device(torch::kCPU));
  EXPECT_TRUE(on_cpu.device().is_cpu());
  EXPECT_EQ(on_cpu.dtype(), torch::kBFloat16);
  EXPECT_EQ(on_cpu.sum().item<float>(), 2.0f);
  // Ops that follow an input keep following it: like-factories and conversions are not factories.
  auto x = torch::ones({3}, torch::TensorOptions().dtype(torch::kFloat64).device(torch::kCPU));
  EXPECT_TRUE(torch::zeros_like(x).device().is_cpu());
  EXPECT_EQ(torch::zeros_like(x).dtype(), torch::kFloat64);
  EXPECT_EQ(x.new_zeros({2}).dtype(), torch::kFloat64);
}

TEST(InitScope, NothingChangesOutsideAScope) {
  { auto scope = volt::init_module(InitOptions().dtype(torch::kHalf).mode(InitMode::kMeta)); }
  auto t = torch::empty({2});
  EXPECT_EQ(t.dtype(), torch::kFloat);
  EXPECT_TRUE(t.device().is_cpu());
  torch::nn::Linear linear(4, 3);
  EXPECT_EQ(linear->weight.dtype(), torch::kFloat);
  EXPECT_FALSE(volt::current_init_options().has_value());
}

TEST(InitScope, MaterializeBuildsInitializedParametersInTheDtype) {
  auto scope = volt::init_module(bf16());
  torch::nn::Linear linear(256, 128);
  EXPECT_EQ(linear->weight.dtype(), torch::kBFloat16);
  EXPECT_TRUE(linear->weight.requires_grad());
  EXPECT_TRUE(linear->weight.is_leaf());
  const double bound = 1.0 / std::sqrt(256.0);  // kaiming_uniform(a=sqrt(5)) on fan_in 256
  auto w = linear->weight.to(torch::kFloat);
  EXPECT_LE(w.abs().max().item<double>(), bound * 1.01);
  EXPECT_NEAR(w.std().item<double>(), bound / std::sqrt(3.0), 0.01 * bound);
}

TEST(InitScope, MetaModeAllocatesNoMemory) {
  auto scope = volt::init_module(bf16().mode(InitMode::kMeta));
  torch::nn::Linear big(8192, 8192);
  EXPECT_TRUE(big->weight.is_meta());
  EXPECT_EQ(big->weight.dtype(), torch::kBFloat16);
  EXPECT_EQ(big->weight.sizes(), (std::vector<int64_t>{8192, 8192}));
}

TEST(InitScope, EmptyModeSkipsParameterRandomInit) {
  // A fresh huge-page mapping reads as zeros: if the random init had run, the weight would not be zero.
  auto scope = volt::init_module(InitOptions().empty(true));
  torch::nn::Linear linear(2048, 1024);
  EXPECT_EQ(linear->weight.count_nonzero().item<int64_t>(), 0);
  EXPECT_TRUE(linear->weight.requires_grad());
}

TEST(InitScope, EmptyModeKeepsBufferValues) {
  auto scope = volt::init_module(bf16().empty(true));
  torch::nn::BatchNorm1d bn(5);
  EXPECT_TRUE(torch::equal(bn->running_var, torch::ones({5}, torch::kBFloat16)));
  EXPECT_TRUE(torch::equal(bn->running_mean, torch::zeros({5}, torch::kBFloat16)));
  EXPECT_EQ(bn->num_batches_tracked.dtype(), torch::kLong);
  EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 0);
  EXPECT_TRUE(torch::equal(bn->weight, torch::ones({5}, torch::kBFloat16)));  // constant fills still run
  torch::nn::Embedding emb(torch::nn::EmbeddingOptions(6, 4).padding_idx(2));
  EXPECT_EQ(emb->weight[2].abs().sum().item<float>(), 0.0f);
}

TEST(InitScope, ComputedBuffersAreExactUnderEmptyMode) {
  const auto expected_table = position_table(64, 32);  // float32, outside any scope
  PositionalEncoding expected(16, 8);
  auto scope = volt::init_module(InitOptions().empty(true));
  EXPECT_TRUE(torch::equal(position_table(64, 32), expected_table));
  PositionalEncoding built(16, 8);
  EXPECT_TRUE(torch::equal(built->table, expected->table));
  EXPECT_TRUE(torch::equal(built->scale, expected->scale));
}

TEST(InitScope, ComputedBuffersInBf16MatchAPlainBf16Computation) {
  auto plain = torch::sin(torch::arange(0.0, 1024.0, torch::kBFloat16) * 0.01);
  for (bool empty : {false, true}) {
    auto scope = volt::init_module(bf16().empty(empty));
    auto computed = torch::sin(torch::arange(0.0, 1024.0) * 0.01);
    EXPECT_EQ(computed.dtype(), torch::kBFloat16);
    EXPECT_TRUE(torch::equal(computed, plain)) << "empty=" << empty;
  }
}

TEST(InitScope, NestedScopesInnerWinsAndOuterReturns) {
  auto outer = volt::init_module(bf16());
  EXPECT_EQ(torch::empty({1}).dtype(), torch::kBFloat16);
  {
    auto inner = volt::init_module(InitOptions().dtype(torch::kHalf).mode(InitMode::kMeta));
    auto t = torch::empty({1});
    EXPECT_EQ(t.dtype(), torch::kHalf);
    EXPECT_TRUE(t.is_meta());
    EXPECT_EQ(volt::current_init_options()->dtype(), torch::kHalf);
  }
  auto t = torch::empty({1});
  EXPECT_EQ(t.dtype(), torch::kBFloat16);
  EXPECT_FALSE(t.is_meta());
  EXPECT_EQ(volt::current_init_options()->dtype(), torch::kBFloat16);
}

TEST(InitScope, ExceptionInsideAScopeRestoresState) {
  try {
    auto scope = volt::init_module(bf16().mode(InitMode::kMeta));
    torch::nn::Linear linear(4, 4);
    throw std::runtime_error("model code failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_FALSE(volt::current_init_options().has_value());
  auto t = torch::empty({2});
  EXPECT_EQ(t.dtype(), torch::kFloat);
  EXPECT_FALSE(t.is_meta());
}

TEST(InitScope, ErrorsFromLibTorchInsideAScopePropagate) {
  auto scope = volt::init_module(bf16());
  EXPECT_THROW(torch::empty({-1}), c10::Error);
  EXPECT_EQ(torch::empty({2}).dtype(), torch::kBFloat16);  // the scope still works afterwards
}

TEST(InitScope, ThreadsBuildingAtOnceEachGetWhatTheyAskedFor) {
  std::promise<void> scope_open, plain_built;
  auto scoped = std::async(std::launch::async, [&] {
    auto scope = volt::init_module(bf16().mode(InitMode::kMeta));
    scope_open.set_value();
    plain_built.get_future().wait();  // the other thread built while this scope was open
    torch::nn::Linear linear(64, 32);
    return std::make_pair(linear->weight.dtype(), linear->weight.is_meta());
  });
  scope_open.get_future().wait();
  torch::nn::Linear plain(64, 32);
  plain_built.set_value();
  EXPECT_EQ(plain->weight.dtype(), torch::kFloat);
  EXPECT_FALSE(plain->weight.is_meta());
  EXPECT_NE(plain->weight.abs().sum().item<float>(), 0.0f);
  const auto [dtype, is_meta] = scoped.get();
  EXPECT_EQ(dtype, torch::kBFloat16);
  EXPECT_TRUE(is_meta);
}

TEST(InitScope, ManualSeedMakesCounterInitReproducible) {
  auto build = [](uint64_t seed) {
    torch::manual_seed(seed);
    auto scope = volt::init_module(bf16());
    torch::nn::Linear linear(300, 200);
    return linear->weight.clone();
  };
  auto a = build(5), b = build(5), c = build(6);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, c));
}

TEST(InitScope, LibTorchRngOptionGivesLibTorchsExactValues) {
  torch::manual_seed(3);
  torch::nn::Linear expected(300, 200);
  torch::manual_seed(3);
  auto scope = volt::init_module(InitOptions().rng(InitRng::kLibTorch));
  torch::nn::Linear built(300, 200);
  EXPECT_TRUE(torch::equal(built->weight, expected->weight));
  EXPECT_TRUE(torch::equal(built->bias, expected->bias));
}

TEST(InitScope, CounterInitOfATensorIgnoresTensorsCreatedAfterIt) {
  auto build = [](bool extra) {
    auto scope = volt::init_module(InitOptions().seed(11));
    torch::nn::Linear first(128, 64);
    if (extra) torch::nn::Linear other(512, 512);
    torch::nn::Linear second(128, 64);
    return std::make_pair(first->weight.clone(), second->weight.clone());
  };
  auto [first_a, second_a] = build(false);
  auto [first_b, second_b] = build(true);
  EXPECT_TRUE(torch::equal(first_a, first_b));
  EXPECT_FALSE(torch::equal(second_a, second_b));  // a later tensor has a later creation index
  EXPECT_FALSE(torch::equal(first_a, second_a));
}

TEST(InitScope, OverwrittenInitIsSkippedWithoutChangingValues) {
  // Linear's kaiming init followed by GPT-2's normal_: the first fill is dead and may be dropped, but only
  // if no one read it; a read in between must see it, and the final values must be the same either way.
  auto build = [](bool read_in_between) {
    auto scope = volt::init_module(InitOptions().seed(4));
    torch::nn::Linear linear(64, 32);
    double kaiming_max = 0;
    if (read_in_between) kaiming_max = linear->weight.abs().max().item<double>();
    torch::nn::init::normal_(linear->weight, 0.0, 0.02);
    torch::nn::init::zeros_(linear->bias);
    return std::make_tuple(linear->weight.clone(), linear->bias.clone(), kaiming_max);
  };
  auto [w_skipped, b_skipped, unused] = build(false);
  auto [w_read, b_read, kaiming_max] = build(true);
  EXPECT_TRUE(torch::equal(w_skipped, w_read));
  EXPECT_EQ(b_skipped.abs().sum().item<float>(), 0.0f);
  EXPECT_GT(kaiming_max, 0.05);  // the read saw the kaiming values (bound 1/8), not the later normal
  EXPECT_LE(kaiming_max, 0.125 * 1.01);
}

TEST(InitScope, DeferredFillsHaveRunWhenTheScopeCloses) {
  torch::nn::Linear linear{nullptr};
  {
    auto scope = volt::init_module(InitOptions().seed(4));
    linear = torch::nn::Linear(64, 32);
  }
  // Raw memory access dispatches nothing: the values must already be there.
  const float* w = linear->weight.data_ptr<float>();
  double max_abs = 0;
  for (int i = 0; i < 64 * 32; ++i) max_abs = std::max(max_abs, std::abs(static_cast<double>(w[i])));
  EXPECT_GT(max_abs, 0.1);
  EXPECT_LE(max_abs, 0.125);
}

TEST(InitScope, CountsTheTensorsItKeys) {
  auto scope = volt::init_module(InitOptions().seed(1));
  EXPECT_EQ(scope.tensors_created(), 0u);
  torch::nn::Linear linear(4, 3);  // weight and bias
  EXPECT_GE(scope.tensors_created(), 2u);
  EXPECT_EQ(scope.seed(), 1u);
}

TEST(InitScope, RejectsDevicesItCannotPlaceTensorsOn) {
  EXPECT_THROW(volt::InitScope(InitOptions().device(c10::Device("xla:0"))), volt::Error);
}

TEST(InitScopeCuda, BuildsDirectlyOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU";
  for (auto mode : {InitMode::kMaterialize, InitMode::kEmpty}) {
    auto scope = volt::init_module(bf16().device(torch::kCUDA).mode(mode));
    torch::nn::Linear linear(1024, 512);
    torch::nn::BatchNorm1d bn(8);
    EXPECT_TRUE(linear->weight.is_cuda());
    EXPECT_EQ(linear->weight.dtype(), torch::kBFloat16);
    EXPECT_TRUE(bn->running_var.is_cuda());
    EXPECT_TRUE(torch::equal(bn->running_var.cpu(), torch::ones({8}, torch::kBFloat16)));
    EXPECT_EQ(torch::arange(4).dtype(), torch::kLong);
    EXPECT_TRUE(torch::arange(4).is_cuda());
  }
}

TEST(InitScopeCuda, CounterInitIsTheSameOnCpuAndGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU";
  auto build = [](c10::Device device) {
    auto scope = volt::init_module(InitOptions().device(device).seed(9));
    torch::nn::Linear linear(512, 256);
    return linear->weight.cpu();
  };
  EXPECT_TRUE(torch::equal(build(torch::kCPU), build(torch::kCUDA)));
}

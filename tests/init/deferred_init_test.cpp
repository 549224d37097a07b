// Deferred init: a module built under InitMode::kDeferred holds no memory, and any slice of any of its
// tensors materializes bit for bit as a materializing scope with the same seed builds it
// (volt/init/deferred_init.h).
#include "volt/init/deferred_init.h"

#include "volt/error.h"
#include "volt/init/init_scope.h"
#include "volt/models/gpt.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace nn = torch::nn;
using volt::InitMode;
using volt::InitOptions;

namespace {

constexpr uint64_t kSeed = 20261202;

struct HolderImpl : nn::Module {
  explicit HolderImpl(torch::Tensor w) { weight = register_parameter("weight", std::move(w)); }
  torch::Tensor weight;
};
TORCH_MODULE(Holder);

// A custom module with no reset_parameters(): every value comes from the layers' own init and from the
// code below — user init calls, a fill, writes through views, buffers computed from factories.
struct CustomImpl : nn::Module {
  explicit CustomImpl(int64_t n = 6) {
    lin = register_module("lin", nn::Linear(8, 12));
    emb = register_module("emb", nn::Embedding(nn::EmbeddingOptions(10, 8).padding_idx(3)));
    ln = register_module("ln", nn::LayerNorm(nn::LayerNormOptions({12})));
    head = register_module("head", Holder(emb->weight));  // tied to the embedding
    scale = register_parameter("scale", torch::empty({5, 7}));
    nn::init::uniform_(scale, -0.5, 0.25);
    bias = register_parameter("bias", torch::empty({9}));
    mixed = register_parameter("mixed", torch::empty({4, 6}));
    {
      torch::NoGradGuard no_grad;
      bias.fill_(0.125);
      mixed.fill_(1.5);
      mixed.narrow(1, 1, 3).normal_(0.0, 2.0);  // a keyed fill of a strided view
      mixed.select(0, 2).zero_();               // a constant row over it
    }
    freqs = register_buffer("freqs", torch::arange(0, n).pow(2) / 7);
    mask = register_buffer("mask", torch::ones({n, n}).tril());
    noise = register_buffer("noise", torch::randn({3, 5}));
    table = register_buffer("table", torch::zeros({n, 4}));
    using torch::indexing::None;
    using torch::indexing::Slice;
    auto position = torch::arange(0, n).unsqueeze(1).to(torch::kFloat);
    table.index_put_({Slice(), Slice(0, None, 2)}, torch::sin(position * 0.5));
    table.index_put_({Slice(), Slice(1, None, 2)}, torch::cos(position * 0.25));
  }
  nn::Linear lin{nullptr};
  nn::Embedding emb{nullptr};
  nn::LayerNorm ln{nullptr};
  Holder head{nullptr};
  torch::Tensor scale, bias, mixed, freqs, mask, noise, table;
};
TORCH_MODULE(Custom);

volt::models::GPTConfig tiny_gpt() {
  return volt::models::GPTConfig().n_layer(2).n_head(2).n_embd(16).vocab_size(37).block_size(8);
}

template <typename M, typename... Args>
M build(InitMode mode, c10::ScalarType dtype, Args&&... args) {
  auto scope = volt::init_module(InitOptions().mode(mode).dtype(dtype).seed(kSeed));
  return M(std::forward<Args>(args)...);
}

std::vector<std::pair<std::string, torch::Tensor>> named_tensors(const nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : module.named_parameters()) out.emplace_back(item.key(), item.value());
  for (const auto& item : module.named_buffers()) out.emplace_back(item.key(), item.value());
  return out;
}

// Bit for bit, so that +0.0 and -0.0 (or two NaNs) are told apart.
bool bitwise_equal(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  if (!a.is_floating_point()) return torch::equal(a, b);
  const auto bits = a.element_size() == 8   ? torch::kLong
                    : a.element_size() == 4 ? torch::kInt
                                            : torch::kShort;
  return torch::equal(a.contiguous().view(bits), b.contiguous().view(bits));
}

// [begin, end) ranges: uneven splits into 1, 2, 3 and 7 parts (some empty), ranges crossing rows, empty ones.
std::vector<std::pair<int64_t, int64_t>> ranges_of(const torch::Tensor& t) {
  const int64_t n = t.numel();
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (int64_t parts : {1, 2, 3, 7}) {
    int64_t begin = 0;
    for (int64_t k = 1; k <= parts; ++k) {
      const int64_t end = k == parts ? n : n * k * k / (parts * parts);  // uneven, growing parts
      ranges.emplace_back(begin, end);
      begin = end;
    }
  }
  const int64_t row = t.dim() >= 2 ? t.size(-1) : 1;
  ranges.emplace_back(std::min(n, row - 1), std::min(n, 2 * row + 1));
  ranges.emplace_back(std::min(n, row / 2), std::min(n, row / 2 + 3 * row));
  ranges.emplace_back(n / 2, n / 2);
  ranges.emplace_back(n, n);
  return ranges;
}

// Every deferred tensor's slices equal the same positions of the materialized build.
void expect_slices_match(const nn::Module& deferred, const nn::Module& real) {
  const auto expected = named_tensors(real);
  const auto actual = named_tensors(deferred);
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    const auto& [name, tensor] = actual[i];
    ASSERT_EQ(name, expected[i].first);
    ASSERT_TRUE(volt::is_deferred(tensor)) << name;
    ASSERT_EQ(tensor.sizes(), expected[i].second.sizes()) << name;
    const auto flat = expected[i].second.contiguous().reshape({-1});
    for (const auto& [begin, end] : ranges_of(tensor)) {
      auto out = torch::full({end - begin}, 42, flat.options());
      volt::materialize_slice(tensor, begin, end, out);
      EXPECT_TRUE(bitwise_equal(out, flat.slice(0, begin, end)))
          << name << " [" << begin << ", " << end << ")\n"
          << out.slice(0, 0, 8) << "\nexpected\n"
          << flat.slice(0, begin, std::min(end, begin + 8));
    }
  }
}

void expect_module_matches(nn::Module& deferred, const nn::Module& real) {
  std::map<std::string, torch::Tensor> expected;
  for (const auto& [name, t] : named_tensors(real)) expected[name] = t;
  const auto names = volt::materialize_module(deferred, torch::kCPU);
  EXPECT_EQ(names.size(), expected.size());
  for (const auto& [name, t] : named_tensors(deferred)) {
    EXPECT_FALSE(volt::is_deferred(t)) << name;
    ASSERT_TRUE(t.is_cpu()) << name;
    EXPECT_TRUE(bitwise_equal(t, expected.at(name))) << name;
    EXPECT_EQ(t.requires_grad(), expected.at(name).requires_grad()) << name;
  }
}

int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

class DeferredInitByDtype : public ::testing::TestWithParam<c10::ScalarType> {};

TEST_P(DeferredInitByDtype, GptSlicesMatchAMaterializingBuildBitForBit) {
  auto real = build<volt::models::GPT>(InitMode::kMaterialize, GetParam(), tiny_gpt());
  auto deferred = build<volt::models::GPT>(InitMode::kDeferred, GetParam(), tiny_gpt());
  EXPECT_TRUE(deferred->wte->weight.is_meta());
  EXPECT_EQ(deferred->wte->weight.scalar_type(), GetParam());
  expect_slices_match(*deferred, *real);
}

TEST_P(DeferredInitByDtype, CustomModuleSlicesMatchWithoutResetParameters) {
  auto real = build<Custom>(InitMode::kMaterialize, GetParam());
  auto deferred = build<Custom>(InitMode::kDeferred, GetParam());
  expect_slices_match(*deferred, *real);
  // The padding row is zero, the rest of the embedding is not: the view write was replayed over the fill.
  EXPECT_TRUE(real->emb->weight[3].eq(0).all().item<bool>());
  EXPECT_FALSE(real->emb->weight[2].eq(0).all().item<bool>());
}

TEST_P(DeferredInitByDtype, MaterializeAndMaterializeModuleMatch) {
  auto real = build<Custom>(InitMode::kMaterialize, GetParam());
  auto deferred = build<Custom>(InitMode::kDeferred, GetParam());
  for (const auto& [name, t] : named_tensors(*deferred)) {
    const auto whole = volt::materialize(t, torch::kCPU);
    EXPECT_TRUE(whole.is_cpu()) << name;
    EXPECT_TRUE(volt::is_deferred(t)) << name;  // materialize() leaves the module alone
  }
  EXPECT_TRUE(bitwise_equal(volt::materialize(deferred->freqs, torch::kCPU), real->freqs));
  EXPECT_TRUE(bitwise_equal(volt::materialize(deferred->table, torch::kCPU), real->table));
  EXPECT_TRUE(bitwise_equal(volt::materialize(deferred->mixed.narrow(1, 2, 3), torch::kCPU),
                            real->mixed.narrow(1, 2, 3).contiguous()));
  expect_module_matches(*deferred, *real);

  auto gpt_real = build<volt::models::GPT>(InitMode::kMaterialize, GetParam(), tiny_gpt());
  auto gpt = build<volt::models::GPT>(InitMode::kDeferred, GetParam(), tiny_gpt());
  expect_module_matches(*gpt, *gpt_real);
  // The materialized model runs.
  auto logits = gpt->forward(torch::randint(0, 37, {2, 5}));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 5, 37}));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, DeferredInitByDtype, ::testing::Values(torch::kFloat32, torch::kBFloat16),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

TEST(DeferredInit, DrawsTheSameCreationIndicesAsAMaterializingScope) {
  uint64_t created[2] = {0, 0};
  for (int deferred = 0; deferred < 2; ++deferred) {
    auto scope = volt::init_module(
        InitOptions().mode(deferred ? InitMode::kDeferred : InitMode::kMaterialize).seed(kSeed));
    Custom custom;
    volt::models::GPT gpt(tiny_gpt());
    created[deferred] = scope.tensors_created();
  }
  EXPECT_EQ(created[1], created[0]);
  EXPECT_GT(created[0], 20u);
}

TEST(DeferredInit, TiedWeightsStayOneTensor) {
  auto model = build<Custom>(InitMode::kDeferred, torch::kFloat32);
  const auto names = volt::materialize_module(*model, torch::kCPU);
  EXPECT_NE(std::find(names.begin(), names.end(), "emb.weight"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "head.weight"), names.end());
  EXPECT_EQ(model->emb->weight.unsafeGetTensorImpl(), model->head->weight.unsafeGetTensorImpl());
  EXPECT_EQ(model->emb->weight.data_ptr(), model->head->weight.data_ptr());
  EXPECT_TRUE(model->emb->weight.requires_grad());
  EXPECT_TRUE(model->emb->weight.is_leaf());
}

TEST(DeferredInit, SliceIntoAnotherDtypeConvertsTheTensorsValues) {
  auto real = build<Custom>(InitMode::kMaterialize, torch::kBFloat16);
  auto deferred = build<Custom>(InitMode::kDeferred, torch::kBFloat16);
  auto out = torch::empty({2, 10});
  volt::materialize_slice(deferred->lin->weight, 5, 25, out);
  EXPECT_TRUE(
      torch::equal(out.reshape({-1}), real->lin->weight.reshape({-1}).slice(0, 5, 25).to(torch::kFloat)));
}

TEST(DeferredInit, OnlyDeferredScopesRecord) {
  auto meta = build<Custom>(InitMode::kMeta, torch::kFloat32);
  EXPECT_TRUE(meta->lin->weight.is_meta());
  EXPECT_FALSE(volt::is_deferred(meta->lin->weight));
  auto real = build<Custom>(InitMode::kMaterialize, torch::kFloat32);
  EXPECT_FALSE(volt::is_deferred(real->lin->weight));
  auto out = torch::empty({4});
  EXPECT_THROW(volt::materialize_slice(meta->lin->weight, 0, 4, out), volt::Error);
  auto deferred = build<Custom>(InitMode::kDeferred, torch::kFloat32);
  EXPECT_THROW(volt::materialize_slice(deferred->lin->weight, 0, 5, out), volt::Error);    // out too small
  EXPECT_THROW(volt::materialize_slice(deferred->lin->weight, 94, 98, out), volt::Error);  // past the end
}

struct ReadsWeightImpl : nn::Module {
  explicit ReadsWeightImpl(int how) {
    lin = register_module("lin", nn::Linear(4, 4));
    if (how == 0) threshold = lin->weight.sum().item<double>();
    if (how == 1) copy = lin->weight.to(torch::kCPU);
    if (how == 2) copy = torch::zeros({4, 4}, torch::kCPU).copy_(lin->weight);
  }
  nn::Linear lin{nullptr};
  double threshold = 0;
  torch::Tensor copy;
};
TORCH_MODULE(ReadsWeight);

TEST(DeferredInit, ReadingValuesDuringConstructionIsAClearError) {
  for (int how = 0; how < 3; ++how) {
    auto scope = volt::init_module(InitOptions().mode(InitMode::kDeferred));
    try {
      ReadsWeight model(how);
      ADD_FAILURE() << "reading a deferred tensor (way " << how << ") did not throw";
    } catch (const volt::Error& e) {
      EXPECT_NE(std::string(e.what()).find("deferred"), std::string::npos) << e.what();
    }
  }
}

TEST(DeferredInit, BuildingGpt2AllocatesNothing) {
  const auto config = volt::models::GPTConfig::preset("gpt2");
  const int64_t bytes = config.parameter_count() * 4;
  const int64_t before = resident_bytes();
  auto model = build<volt::models::GPT>(InitMode::kDeferred, torch::kFloat32, config);
  const int64_t growth = resident_bytes() - before;
  EXPECT_LT(growth, 32 << 20) << "a deferred gpt2 (" << bytes << " bytes of parameters) grew RSS by "
                              << growth;
  for (const auto& p : model->parameters()) ASSERT_TRUE(volt::is_deferred(p));
}

TEST(DeferredInit, SlicesOfAHugeLayerCostOnlyTheSlice) {
  // 2^32 float32 elements (16 GiB): only slicing without a full-size temporary can serve this.
  const int64_t n = int64_t{1} << 16;
  auto layer = build<nn::Linear>(InitMode::kDeferred, torch::kFloat32, nn::LinearOptions(n, n));
  const int64_t before = resident_bytes();
  auto tail = torch::empty({1000});
  auto overlap = torch::empty({1000});
  volt::materialize_slice(layer->weight, n * n - 1000, n * n, tail);
  volt::materialize_slice(layer->weight, n * n - 1500, n * n - 500, overlap);
  EXPECT_LT(resident_bytes() - before, 32 << 20);
  const double bound = 1.0 / std::sqrt(static_cast<double>(n));
  EXPECT_LE(tail.abs().max().item<double>(), bound);
  EXPECT_GT(tail.std().item<double>(), 0.4 * bound);
  EXPECT_TRUE(torch::equal(tail.slice(0, 0, 500), overlap.slice(0, 500, 1000)));
}

// Keyed and constant fills compute the same bits on CUDA (counter_rng.h); replayed buffers (sin, cos) may
// differ in the last bit between devices, so only parameters are compared bitwise here.
TEST(DeferredInitCuda, SlicesAndModulesOnTheGpuMatchTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto model = build<Custom>(InitMode::kDeferred, torch::kBFloat16);
  for (const auto& item : model->named_parameters()) {
    const auto& t = item.value();
    const auto cpu = volt::materialize(t, torch::kCPU).reshape({-1});
    auto gpu = torch::empty({t.numel() - 3}, cpu.options().device(torch::kCUDA));
    volt::materialize_slice(t, 3, t.numel(), gpu);
    EXPECT_TRUE(bitwise_equal(gpu.cpu(), cpu.slice(0, 3))) << item.key();
  }
  volt::materialize_module(*model, torch::kCUDA);
  for (const auto& [name, t] : named_tensors(*model)) EXPECT_TRUE(t.is_cuda()) << name;
}

}  // namespace

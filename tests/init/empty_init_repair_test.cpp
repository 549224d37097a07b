// Safe empty init: what an empty init scope skipped and no checkpoint filled is repaired to exactly what a
// materializing scope with the same seed gives (volt/init/uninitialized.h), and never left as garbage.
#include "volt/checkpoint/load_state_dict.h"
#include "volt/checkpoint/value.h"
#include "volt/init/init_scope.h"
#include "volt/init/uninitialized.h"
#include "volt/models/gpt.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace nn = torch::nn;
using volt::InitOptions;
using volt::Value;
using Names = std::vector<std::string>;

namespace {

torch::Tensor position_table(int64_t length, int64_t dim) {
  auto position = torch::arange(0, length).unsqueeze(1).to(torch::kFloat);
  auto div_term = torch::exp(torch::arange(0, dim, 2).to(torch::kFloat) * (-std::log(10000.0) / dim));
  auto table = torch::zeros({length, dim});
  using torch::indexing::None;
  using torch::indexing::Slice;
  table.index_put_({Slice(), Slice(0, None, 2)}, torch::sin(position * div_term));
  table.index_put_({Slice(), Slice(1, None, 2)}, torch::cos(position * div_term));
  return table;
}

// Every layer kind whose init an empty scope touches: random inits (skipped), constant fills (run), a
// padding row written after the random init, running statistics and a computed table (buffers).
struct StackImpl : nn::Module {
  StackImpl() {
    emb = register_module("emb", nn::Embedding(nn::EmbeddingOptions(20, 8).padding_idx(3)));
    lin = register_module("lin", nn::Linear(8, 12));
    ln = register_module("ln", nn::LayerNorm(nn::LayerNormOptions({12})));
    conv = register_module("conv", nn::Conv2d(nn::Conv2dOptions(2, 4, 3).padding(1)));
    bn = register_module("bn", nn::BatchNorm2d(4));
    table = register_buffer("table", position_table(6, 8));
    noise = register_buffer("noise", torch::randn({7}));
    jitter = register_buffer("jitter", torch::empty({5}));
    jitter.normal_(0.0, 0.1);
    // Not registered: the C++ analog of a non-persistent buffer, computed by model code.
    scratch = torch::sin(torch::arange(0, 16).to(torch::kFloat) * 0.3);
  }
  nn::Embedding emb{nullptr};
  nn::Linear lin{nullptr};
  nn::LayerNorm ln{nullptr};
  nn::Conv2d conv{nullptr};
  nn::BatchNorm2d bn{nullptr};
  torch::Tensor table, noise, jitter, scratch;
};
TORCH_MODULE(Stack);

struct HolderImpl : nn::Module {
  explicit HolderImpl(torch::Tensor w) { weight = register_parameter("weight", std::move(w)); }
  torch::Tensor weight;
};
TORCH_MODULE(Holder);

// An embedding whose weight a second submodule registers too (a tied output head).
struct TiedImpl : nn::Module {
  TiedImpl() {
    emb = register_module("emb", nn::Embedding(12, 5));
    head = register_module("head", Holder(emb->weight));
  }
  nn::Embedding emb{nullptr};
  Holder head{nullptr};
};
TORCH_MODULE(Tied);

volt::models::GPTConfig tiny() {
  return volt::models::GPTConfig().n_layer(2).n_head(2).n_embd(16).vocab_size(37).block_size(8);
}

std::shared_ptr<nn::Module> build(const std::string& kind, const InitOptions& options) {
  auto scope = volt::init_module(options);
  if (kind == "gpt") return volt::models::GPT(tiny()).ptr();
  return Stack().ptr();
}

std::map<std::string, torch::Tensor> tensors_of(const nn::Module& module) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : module.named_parameters()) out.emplace(item.key(), item.value());
  for (const auto& item : module.named_buffers()) out.emplace(item.key(), item.value());
  return out;
}

std::map<std::string, torch::Tensor> snapshot(const nn::Module& module) {
  auto out = tensors_of(module);
  for (auto& [name, tensor] : out) tensor = tensor.clone();
  return out;
}

// The parameters whose last whole-tensor init is random (so an empty scope skips it).
Names randomly_initialized(const std::string& kind, const nn::Module& module) {
  if (kind == "stack") return {"emb.weight", "lin.weight", "lin.bias", "conv.weight", "conv.bias"};
  Names names;  // GPT: Linear and Embedding weights; biases are zeroed after their random init
  for (const auto& item : module.named_parameters()) {
    const auto& name = item.key();
    if (name.size() > 6 && name.compare(name.size() - 6, 6, "weight") == 0 &&
        name.find("ln_") == std::string::npos)
      names.push_back(name);
  }
  return names;
}

void expect_equal_to(const nn::Module& module, const std::map<std::string, torch::Tensor>& want) {
  for (const auto& [name, tensor] : tensors_of(module))
    EXPECT_TRUE(torch::equal(tensor, want.at(name))) << name;
}

}  // namespace

TEST(EmptyInitRepair, PartialCheckpointLeavesMissingTensorsBitwiseAsAFullInit) {
  for (const std::string kind : {"stack", "gpt"}) {
    SCOPED_TRACE(kind);
    const auto full = snapshot(*build(kind, InitOptions().seed(21)));
    // The checkpoint comes from another seed, so loaded and initialized values cannot be confused.
    Value checkpoint = Value::dict(true);
    std::set<std::string> dropped;
    std::mt19937 rng(5);
    for (const auto& [name, tensor] : snapshot(*build(kind, InitOptions().seed(99)))) {
      if (rng() % 2)
        dropped.insert(name);
      else
        checkpoint.to_dict().set(name, tensor);
    }
    ASSERT_GT(dropped.size(), 2u);

    auto empty = build(kind, InitOptions().seed(21).empty(true));
    const Names skipped = randomly_initialized(kind, *empty);
    EXPECT_EQ(volt::uninitialized(*empty), skipped);
    const auto report = volt::load_state_dict(*empty, checkpoint, volt::LoadOptions().strict(false));
    EXPECT_TRUE(volt::uninitialized(*empty).empty());

    Names expected_initialized;
    for (const auto& name : skipped)
      if (dropped.count(name)) expected_initialized.push_back(name);
    EXPECT_EQ(report.initialized, expected_initialized);
    EXPECT_EQ(report.missing.size(), dropped.size());
    for (const auto& [name, tensor] : tensors_of(*empty)) {
      const Value* loaded = checkpoint.to_dict().find(name);
      EXPECT_TRUE(torch::equal(tensor, loaded ? loaded->to_tensor() : full.at(name))) << name;
    }
  }
}

TEST(EmptyInitRepair, ALoadInsideTheOpenEmptyScopeRepairsToo) {
  const auto full = snapshot(*build("stack", InitOptions().seed(4)));
  auto scope = volt::init_module(InitOptions().seed(4).empty(true));
  Stack model;
  Value checkpoint = Value::dict(true);
  checkpoint.to_dict().set("lin.weight", full.at("lin.weight"));
  const auto report = volt::load_state_dict(*model, checkpoint, volt::LoadOptions().strict(false));
  EXPECT_EQ(report.initialized, (Names{"emb.weight", "lin.bias", "conv.weight", "conv.bias"}));
  EXPECT_TRUE(volt::uninitialized(*model).empty());
  expect_equal_to(*model, full);
}

TEST(EmptyInitRepair, RepairKeepsTheEmbeddingPaddingRowZero) {
  auto make = [](bool empty) {
    auto scope = volt::init_module(InitOptions().seed(3).empty(empty));
    return nn::Embedding(nn::EmbeddingOptions(10, 6).padding_idx(4));
  };
  auto full = make(false);
  auto repaired = make(true);
  EXPECT_EQ(volt::uninitialized(*repaired), Names{"weight"});
  EXPECT_EQ(volt::initialize_uninitialized(*repaired), Names{"weight"});
  EXPECT_EQ(repaired->weight[4].abs().sum().item<float>(), 0.0f);
  EXPECT_GT(repaired->weight.abs().sum().item<float>(), 0.0f);
  EXPECT_TRUE(torch::equal(repaired->weight, full->weight));
  EXPECT_TRUE(volt::initialize_uninitialized(*repaired).empty());  // a second repair has nothing to do
}

TEST(EmptyInitRepair, BuffersAreExactUnderEmptyInitAndNeverReportedUninitialized) {
  Stack full{nullptr}, empty{nullptr};
  {
    auto scope = volt::init_module(InitOptions().seed(17));
    full = Stack();
  }
  {
    auto scope = volt::init_module(InitOptions().seed(17).empty(true));
    empty = Stack();
  }
  for (const auto& item : empty->named_buffers()) {
    EXPECT_TRUE(torch::equal(item.value(), full->named_buffers()[item.key()])) << item.key();
    for (const auto& name : volt::uninitialized(*empty)) EXPECT_NE(name, item.key());
  }
  EXPECT_TRUE(torch::equal(empty->bn->running_var, torch::ones({4})));
  EXPECT_EQ(empty->bn->num_batches_tracked.item<int64_t>(), 0);
  EXPECT_TRUE(torch::equal(empty->table, position_table(6, 8)));
  EXPECT_TRUE(torch::equal(empty->scratch, full->scratch));
  EXPECT_TRUE(torch::equal(empty->scratch, torch::sin(torch::arange(0, 16).to(torch::kFloat) * 0.3)));
}

TEST(EmptyInitRepair, EmptyAndMaterializeScopesKeyTensorsAlike) {
  // A parameter made outside the scope and initialized inside takes a new key; the tensors after it must
  // get the same keys whether its init ran or was skipped.
  auto build_keyed = [](bool empty) {
    auto outside = torch::empty({16}).requires_grad_();
    auto scope = volt::init_module(InitOptions().seed(6).empty(empty));
    {
      torch::NoGradGuard no_grad;
      outside.normal_(0.0, 1.0);
    }
    auto model = std::make_shared<nn::Module>();
    model->register_parameter("outside", outside);
    model->register_module("linear", nn::Linear(8, 8));
    model->register_parameter("drawn", torch::randn({3, 3}));  // a factory: drawn under every mode
    return std::make_pair(model, scope.tensors_created());
  };
  auto [full, full_count] = build_keyed(false);
  auto [empty, empty_count] = build_keyed(true);
  EXPECT_EQ(full_count, empty_count);
  EXPECT_EQ(volt::uninitialized(*empty), (Names{"outside", "linear.weight", "linear.bias"}));
  volt::initialize_uninitialized(*empty);
  expect_equal_to(*empty, snapshot(*full));
}

TEST(EmptyInitRepair, WholeTensorWritesInsideTheScopeCountAsInitialized) {
  auto scope = volt::init_module(InitOptions().seed(2).empty(true));
  nn::Linear linear(4, 3);
  torch::NoGradGuard no_grad;
  nn::init::constant_(linear->weight, 0.5);
  EXPECT_EQ(volt::uninitialized(*linear), Names{"bias"});
  linear->bias.copy_(torch::ones({3}));
  EXPECT_TRUE(volt::uninitialized(*linear).empty());
  EXPECT_TRUE(torch::equal(linear->weight, torch::full({3, 4}, 0.5)));
}

TEST(EmptyInitRepair, TiedWeightsStayOneTensorAfterRepairAndAfterAPartialLoad) {
  Tied full{nullptr}, repaired{nullptr}, loaded{nullptr};
  {
    auto scope = volt::init_module(InitOptions().seed(8));
    full = Tied();
  }
  {
    auto scope = volt::init_module(InitOptions().seed(8).empty(true));
    repaired = Tied();
    loaded = Tied();
  }
  EXPECT_EQ(volt::uninitialized(*repaired), (Names{"emb.weight", "head.weight"}));
  EXPECT_EQ(volt::initialize_uninitialized(*repaired), (Names{"emb.weight", "head.weight"}));
  EXPECT_EQ(repaired->emb->weight.unsafeGetTensorImpl(), repaired->head->weight.unsafeGetTensorImpl());
  EXPECT_TRUE(torch::equal(repaired->emb->weight, full->emb->weight));

  Value checkpoint = Value::dict(true);
  const auto head = torch::rand({12, 5});
  checkpoint.to_dict().set("head.weight", head);
  const auto report = volt::load_state_dict(*loaded, checkpoint, volt::LoadOptions().strict(false));
  EXPECT_EQ(report.missing, Names{"emb.weight"});
  EXPECT_TRUE(report.initialized.empty());  // the same tensor as head.weight: the checkpoint filled it
  EXPECT_EQ(loaded->emb->weight.unsafeGetTensorImpl(), loaded->head->weight.unsafeGetTensorImpl());
  EXPECT_TRUE(torch::equal(loaded->emb->weight, head));
  EXPECT_TRUE(volt::uninitialized(*loaded).empty());
}

TEST(EmptyInitRepair, ReplayAfterTheScopeClosedAndFromAnotherThreadGivesTheSameBits) {
  const auto full = snapshot(*build("gpt", InitOptions().seed(13)));
  auto here = build("gpt", InitOptions().seed(13).empty(true));
  auto there = build("gpt", InitOptions().seed(13).empty(true));
  Names there_names;
  std::thread worker([&] { there_names = volt::initialize_uninitialized(*there); });
  const Names here_names = volt::initialize_uninitialized(*here);
  worker.join();
  EXPECT_EQ(here_names, there_names);
  EXPECT_FALSE(here_names.empty());
  expect_equal_to(*here, full);
  expect_equal_to(*there, full);
}

TEST(EmptyInitRepair, AMaterializeScopeBuildNeverReportsAnythingUninitialized) {
  for (auto rng : {volt::InitRng::kCounter, volt::InitRng::kLibTorch}) {
    for (const std::string kind : {"stack", "gpt"}) {
      auto model = build(kind, InitOptions().rng(rng));
      EXPECT_TRUE(volt::uninitialized(*model).empty()) << kind;
      EXPECT_TRUE(volt::initialize_uninitialized(*model).empty()) << kind;
    }
  }
}

TEST(EmptyInitRepair, LibTorchRngInitsAreReplayedWithLibTorchsOps) {
  nn::Linear linear{nullptr};
  {
    auto scope = volt::init_module(InitOptions().rng(volt::InitRng::kLibTorch).empty(true));
    linear = nn::Linear(256, 128);
  }
  EXPECT_EQ(volt::uninitialized(*linear), (Names{"weight", "bias"}));
  EXPECT_EQ(volt::initialize_uninitialized(*linear), (Names{"weight", "bias"}));
  const double bound = 1.0 / std::sqrt(256.0);  // kaiming_uniform(a=sqrt(5)) on fan_in 256
  EXPECT_LE(linear->weight.abs().max().item<double>(), bound);
  EXPECT_NEAR(linear->weight.std().item<double>(), bound / std::sqrt(3.0), 0.05 * bound);
  EXPECT_TRUE(volt::uninitialized(*linear).empty());
}

TEST(EmptyInitRepair, MetaModulesKeepMissingTensorsOnMetaAndListThem) {
  volt::models::GPT meta{nullptr};
  {
    auto scope = volt::init_module(InitOptions().mode(volt::InitMode::kMeta));
    meta = volt::models::GPT(tiny());
  }
  Value checkpoint = Value::dict(true);
  checkpoint.to_dict().set("wte.weight", torch::zeros({37, 16}));
  const auto report = volt::load_state_dict(*meta, checkpoint, volt::LoadOptions().strict(false));
  EXPECT_TRUE(report.initialized.empty());
  EXPECT_EQ(report.meta, report.missing);
  EXPECT_TRUE(meta->named_parameters()["wpe.weight"].is_meta());
  EXPECT_FALSE(meta->named_parameters()["wte.weight"].is_meta());
  EXPECT_TRUE(volt::uninitialized(*meta).empty());  // no memory: nothing holds garbage
}

// Every torch::nn layer a GPT, ResNet or LSTM uses, built unmodified inside each init mode: every parameter
// and buffer must be on the target device, floating ones in the target dtype, integer ones unchanged.
#include "volt/init/init_scope.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

using volt::InitMode;
using volt::InitOptions;

namespace {

struct CustomImpl : torch::nn::Module {
  CustomImpl() {
    weight = register_parameter("weight", torch::randn({16, 8}));
    gate = register_parameter("gate", torch::zeros({8}));
    steps = register_buffer("steps", torch::zeros({1}, torch::kLong));
    mask = register_buffer("mask", torch::ones({4, 4}, torch::kBool).tril());
    scale = register_buffer("scale", torch::full({2}, 0.5));
  }
  torch::Tensor weight, gate, steps, mask, scale;
};
TORCH_MODULE(Custom);

struct LayerCase {
  std::string name;
  std::function<std::shared_ptr<torch::nn::Module>()> build;
};

std::vector<LayerCase> layer_cases() {
  namespace nn = torch::nn;
  return {
      {"Linear", [] { return nn::Linear(32, 16).ptr(); }},
      {"Conv1d", [] { return nn::Conv1d(nn::Conv1dOptions(4, 8, 3)).ptr(); }},
      {"Conv2d", [] { return nn::Conv2d(nn::Conv2dOptions(3, 8, 3).padding(1)).ptr(); }},
      {"Embedding", [] { return nn::Embedding(nn::EmbeddingOptions(50, 16).padding_idx(0)).ptr(); }},
      {"LayerNorm", [] { return nn::LayerNorm(nn::LayerNormOptions({16})).ptr(); }},
      {"BatchNorm1d", [] { return nn::BatchNorm1d(16).ptr(); }},
      {"BatchNorm2d", [] { return nn::BatchNorm2d(8).ptr(); }},
      {"MultiheadAttention",
       [] { return nn::MultiheadAttention(nn::MultiheadAttentionOptions(16, 4)).ptr(); }},
      {"LSTM", [] { return nn::LSTM(nn::LSTMOptions(8, 16).num_layers(2)).ptr(); }},
      {"GRU", [] { return nn::GRU(nn::GRUOptions(8, 16)).ptr(); }},
      {"Sequential",
       [] { return nn::Sequential(nn::Linear(8, 8), nn::ReLU(), nn::Dropout(0.1), nn::Linear(8, 2)).ptr(); }},
      {"ModuleList",
       [] { return nn::ModuleList(nn::Linear(8, 8), nn::LayerNorm(nn::LayerNormOptions({8}))).ptr(); }},
      {"ModuleDict",
       [] {
         torch::OrderedDict<std::string, std::shared_ptr<nn::Module>> modules;
         modules.insert("proj", nn::Linear(8, 4).ptr());
         modules.insert("norm", nn::BatchNorm1d(4).ptr());
         return nn::ModuleDict(modules).ptr();
       }},
      {"Custom", [] { return Custom().ptr(); }},
  };
}

void expect_placed(const torch::nn::Module& module, const std::string& name, c10::Device device,
                   c10::ScalarType dtype) {
  for (const auto& p : module.named_parameters()) {
    EXPECT_EQ(p.value().device(), device) << name << "." << p.key();
    EXPECT_EQ(p.value().scalar_type(), dtype) << name << "." << p.key();
    EXPECT_TRUE(p.value().requires_grad()) << name << "." << p.key();
  }
  for (const auto& b : module.named_buffers()) {
    EXPECT_EQ(b.value().device(), device) << name << "." << b.key();
    if (b.key().find("num_batches_tracked") != std::string::npos || b.key() == "steps")
      EXPECT_EQ(b.value().scalar_type(), torch::kLong) << name << "." << b.key();
    else if (b.key() == "mask")
      EXPECT_EQ(b.value().scalar_type(), torch::kBool) << name << "." << b.key();
    else
      EXPECT_EQ(b.value().scalar_type(), dtype) << name << "." << b.key();
  }
}

}  // namespace

class LayersInEveryMode : public ::testing::TestWithParam<InitMode> {};

TEST_P(LayersInEveryMode, EveryParameterAndBufferIsPlacedAndTyped) {
  const auto mode = GetParam();
  const c10::Device device = mode == InitMode::kMeta ? c10::Device(c10::kMeta) : c10::Device(c10::kCPU);
  for (const auto dtype : {torch::kBFloat16, torch::kHalf, torch::kFloat64}) {
    for (const auto& layer : layer_cases()) {
      auto scope = volt::init_module(InitOptions().dtype(dtype).mode(mode));
      auto module = layer.build();
      expect_placed(*module, layer.name, device, dtype);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, LayersInEveryMode,
                         ::testing::Values(InitMode::kMaterialize, InitMode::kEmpty, InitMode::kMeta),
                         [](const auto& info) {
                           return std::string(info.param == InitMode::kMaterialize ? "Materialize"
                                              : info.param == InitMode::kEmpty     ? "Empty"
                                                                                   : "Meta");
                         });

TEST(Layers, MaterializedValuesFollowEachLayersInit) {
  torch::manual_seed(0);
  auto scope = volt::init_module(InitOptions().dtype(torch::kBFloat16));
  torch::nn::Embedding emb(torch::nn::EmbeddingOptions(4000, 64).padding_idx(3));
  EXPECT_EQ(emb->weight[3].abs().sum().item<float>(), 0.0f);
  EXPECT_NEAR(emb->weight.to(torch::kFloat).std().item<double>(), 1.0, 0.02);  // N(0, 1)
  torch::nn::LayerNorm ln(torch::nn::LayerNormOptions({64}));
  EXPECT_TRUE(torch::equal(ln->weight, torch::ones({64}, torch::kBFloat16)));
  EXPECT_TRUE(torch::equal(ln->bias, torch::zeros({64}, torch::kBFloat16)));
  torch::nn::MultiheadAttention mha(torch::nn::MultiheadAttentionOptions(64, 4));
  const double xavier = std::sqrt(6.0 / (64 + 3 * 64));
  EXPECT_LE(mha->in_proj_weight.to(torch::kFloat).abs().max().item<double>(), xavier * 1.01);
  EXPECT_EQ(mha->in_proj_bias.abs().sum().item<float>(), 0.0f);
  torch::nn::LSTM lstm(torch::nn::LSTMOptions(8, 32));
  for (const auto& p : lstm->parameters()) {
    EXPECT_LE(p.to(torch::kFloat).abs().max().item<double>(), 1.0 / std::sqrt(32.0) * 1.01);
    EXPECT_GT(p.to(torch::kFloat).abs().max().item<double>(), 0.5 / std::sqrt(32.0));
  }
}

TEST(Layers, BuiltModulesRunForwardAndBackward) {
  auto scope = volt::init_module(InitOptions().dtype(torch::kFloat64));
  torch::nn::Sequential net(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 4, 3).padding(1)),
                            torch::nn::BatchNorm2d(4), torch::nn::ReLU(), torch::nn::Flatten(),
                            torch::nn::Linear(4 * 8 * 8, 10));
  auto x = torch::randn({2, 1, 8, 8});
  EXPECT_EQ(x.dtype(), torch::kFloat64);
  auto loss = net->forward(x).logsumexp(1).mean();
  loss.backward();
  for (const auto& p : net->parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_TRUE(torch::isfinite(p.grad()).all().item<bool>());
  }
  torch::nn::LSTM lstm(torch::nn::LSTMOptions(3, 5));
  auto out = std::get<0>(lstm->forward(torch::randn({4, 2, 3})));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{4, 2, 5}));
  EXPECT_EQ(out.dtype(), torch::kFloat64);
}

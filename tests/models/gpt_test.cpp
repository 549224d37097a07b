#include "volt/models/gpt.h"
#include "volt/init/init_scope.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

using volt::models::GPT;
using volt::models::GPTConfig;

namespace {
int64_t count_parameters(torch::nn::Module& module) {
  int64_t count = 0;
  for (const auto& p : module.parameters()) count += p.numel();
  return count;
}
}  // namespace

TEST(GPT, PresetsHaveGpt2sParameterCounts) {
  // Built on the meta device: shapes only, so even gpt2-xl costs nothing.
  auto scope = volt::init_module(volt::InitOptions().mode(volt::InitMode::kMeta));
  for (const auto& name : GPTConfig::preset_names()) {
    GPT model(GPTConfig::preset(name));
    EXPECT_EQ(count_parameters(*model), GPTConfig::preset(name).parameter_count()) << name;
  }
  EXPECT_EQ(GPTConfig::preset("gpt2-xl").parameter_count(), 1557611200);
  EXPECT_EQ(GPTConfig::preset("gpt2").parameter_count(), 124439808);
}

TEST(GPT, ForwardGivesLogitsInTheScopeDtype) {
  auto cfg = GPTConfig().vocab_size(97).block_size(16).n_layer(2).n_head(2).n_embd(32);
  auto scope = volt::init_module(volt::InitOptions().dtype(torch::kBFloat16));
  GPT model(cfg);
  auto idx = torch::randint(97, {2, 16});
  auto logits = model->forward(idx);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 16, 97}));
  EXPECT_EQ(logits.dtype(), torch::kBFloat16);
  EXPECT_TRUE(torch::isfinite(logits).all().item<bool>());
}

TEST(GPT, InitFollowsGpt2) {
  auto cfg = GPTConfig().vocab_size(1000).block_size(64).n_layer(4).n_head(4).n_embd(256);
  auto scope = volt::init_module(volt::InitOptions().seed(3));
  GPT model(cfg);
  auto block = model->h[0]->as<volt::models::BlockImpl>();
  EXPECT_NEAR(block->attn->c_attn->weight.std().item<double>(), 0.02, 0.0005);
  EXPECT_NEAR(block->mlp->c_proj->weight.std().item<double>(), 0.02 / std::sqrt(8.0), 0.0005);
  EXPECT_EQ(block->mlp->c_fc->bias.abs().sum().item<float>(), 0.0f);
  EXPECT_NEAR(model->wte->weight.std().item<double>(), 0.02, 0.0005);
}

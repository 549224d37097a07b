#include "volt/models/gpt.h"

#include "volt/error.h"

#include <torch/torch.h>

#include <cmath>

namespace volt::models {

namespace F = torch::nn::functional;

GPTConfig GPTConfig::preset(const std::string& name) {
  if (name == "gpt2") return GPTConfig().n_layer(12).n_head(12).n_embd(768);
  if (name == "gpt2-medium") return GPTConfig().n_layer(24).n_head(16).n_embd(1024);
  if (name == "gpt2-large") return GPTConfig().n_layer(36).n_head(20).n_embd(1280);
  if (name == "gpt2-xl") return GPTConfig().n_layer(48).n_head(25).n_embd(1600);
  VOLT_FAIL("unknown GPT model '", name, "': use one of gpt2, gpt2-medium, gpt2-large, gpt2-xl");
}

const std::vector<std::string>& GPTConfig::preset_names() {
  static const std::vector<std::string> names{"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"};
  return names;
}

int64_t GPTConfig::parameter_count() const {
  const int64_t n = n_embd_;
  const int64_t per_block = 2 * n                // ln_1
                            + n * 3 * n + 3 * n  // c_attn
                            + n * n + n          // attn c_proj
                            + 2 * n              // ln_2
                            + n * 4 * n + 4 * n  // c_fc
                            + 4 * n * n + n;     // mlp c_proj
  return vocab_size_ * n + block_size_ * n + n_layer_ * per_block + 2 * n;
}

CausalSelfAttentionImpl::CausalSelfAttentionImpl(const GPTConfig& config) : n_head(config.n_head()) {
  VOLT_CHECK(config.n_embd() % config.n_head() == 0, "n_embd (", config.n_embd(),
             ") must be a multiple of n_head (", config.n_head(), ")");
  c_attn = register_module("c_attn", torch::nn::Linear(config.n_embd(), 3 * config.n_embd()));
  c_proj = register_module("c_proj", torch::nn::Linear(config.n_embd(), config.n_embd()));
}

torch::Tensor CausalSelfAttentionImpl::forward(const torch::Tensor& x) {
  const auto B = x.size(0), T = x.size(1), C = x.size(2);
  auto qkv = c_attn(x).split(C, /*dim=*/2);
  auto heads = [&](const torch::Tensor& t) { return t.view({B, T, n_head, C / n_head}).transpose(1, 2); };
  auto q = heads(qkv[0]), k = heads(qkv[1]), v = heads(qkv[2]);
  auto att = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(C / n_head)));
  auto causal = torch::ones({T, T}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).tril();
  att = att.masked_fill(causal.logical_not(), -std::numeric_limits<float>::infinity()).softmax(-1);
  auto y = torch::matmul(att, v).transpose(1, 2).contiguous().view({B, T, C});
  return c_proj(y);
}

MLPImpl::MLPImpl(const GPTConfig& config) {
  c_fc = register_module("c_fc", torch::nn::Linear(config.n_embd(), 4 * config.n_embd()));
  c_proj = register_module("c_proj", torch::nn::Linear(4 * config.n_embd(), config.n_embd()));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x) { return c_proj(F::gelu(c_fc(x))); }

BlockImpl::BlockImpl(const GPTConfig& config) {
  ln_1 = register_module("ln_1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.n_embd()})));
  attn = register_module("attn", CausalSelfAttention(config));
  ln_2 = register_module("ln_2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.n_embd()})));
  mlp = register_module("mlp", MLP(config));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x) {
  auto y = x + attn(ln_1(x));
  return y + mlp(ln_2(y));
}

GPTImpl::GPTImpl(const GPTConfig& cfg) : config(cfg) {
  wte = register_module("wte", torch::nn::Embedding(config.vocab_size(), config.n_embd()));
  wpe = register_module("wpe", torch::nn::Embedding(config.block_size(), config.n_embd()));
  h = register_module("h", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.n_layer(); ++i) h->push_back(Block(config));
  ln_f = register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.n_embd()})));
  reset_parameters();
}

void GPTImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  const double residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(config.n_layer()));
  for (const auto& item : named_modules("", /*include_self=*/false)) {
    if (auto* linear = item.value()->as<torch::nn::Linear>()) {
      const bool residual =
          item.key().size() >= 7 && item.key().compare(item.key().size() - 7, 7, ".c_proj") == 0;
      torch::nn::init::normal_(linear->weight, 0.0, residual ? residual_std : 0.02);
      if (linear->bias.defined()) torch::nn::init::zeros_(linear->bias);
    } else if (auto* embedding = item.value()->as<torch::nn::Embedding>()) {
      torch::nn::init::normal_(embedding->weight, 0.0, 0.02);
    }
  }
}

torch::Tensor GPTImpl::forward(const torch::Tensor& idx) {
  const auto T = idx.size(1);
  VOLT_CHECK(T <= config.block_size(), "sequence of length ", T, " is longer than block_size ",
             config.block_size());
  auto pos = torch::arange(T, torch::TensorOptions().dtype(torch::kLong).device(idx.device()));
  auto x = wte(idx) + wpe(pos);
  for (const auto& block : *h) x = block->as<BlockImpl>()->forward(x);
  return F::linear(ln_f(x), wte->weight);  // the output head is tied to the token embedding
}

GPTConfig GPTConfig::from_hparams(const HParams& hp) {
  GPTConfig config = hp.contains("model") ? preset(hp.get<std::string>("model")) : GPTConfig();
  config.vocab_size(hp.get<int64_t>("vocab_size", config.vocab_size()))
      .block_size(hp.get<int64_t>("block_size", config.block_size()))
      .n_layer(hp.get<int64_t>("n_layer", config.n_layer()))
      .n_head(hp.get<int64_t>("n_head", config.n_head()))
      .n_embd(hp.get<int64_t>("n_embd", config.n_embd()));
  return config;
}

HParams GPTConfig::to_hparams() const {
  HParams hp;
  hp.set("vocab_size", vocab_size()).set("block_size", block_size()).set("n_layer", n_layer());
  hp.set("n_head", n_head()).set("n_embd", n_embd());
  return hp;
}

}  // namespace volt::models

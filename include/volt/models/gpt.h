// GPT-2 (the OpenAI shapes, as in nanoGPT): a real decoder-only transformer written with plain torch::nn
// layers, used by volt's benchmarks and tests as the model that users build. Nothing in it knows of volt.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <string>

#include <vector>
#include "volt/checkpoint/hparams.h"

namespace volt::models {

struct GPTConfig {
  TORCH_ARG(int64_t, vocab_size) = 50257;
  TORCH_ARG(int64_t, block_size) = 1024;
  TORCH_ARG(int64_t, n_layer) = 12;
  TORCH_ARG(int64_t, n_head) = 12;
  TORCH_ARG(int64_t, n_embd) = 768;

 public:
  /// "gpt2" (124 M), "gpt2-medium" (350 M), "gpt2-large" (774 M), "gpt2-xl" (1.56 B parameters).
  static GPTConfig preset(const std::string& name);
  /// The hyper-parameters `save-model` writes and load_from_checkpoint reads back.
  static GPTConfig from_hparams(const HParams& hparams);
  HParams to_hparams() const;
  static const std::vector<std::string>& preset_names();
  /// Parameters of a model with this config (the output head is tied to the token embedding).
  int64_t parameter_count() const;
};

struct CausalSelfAttentionImpl : torch::nn::Module {
  explicit CausalSelfAttentionImpl(const GPTConfig& config);
  torch::Tensor forward(const torch::Tensor& x);

  int64_t n_head;
  torch::nn::Linear c_attn{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(CausalSelfAttention);

struct MLPImpl : torch::nn::Module {
  explicit MLPImpl(const GPTConfig& config);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Linear c_fc{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(MLP);

struct BlockImpl : torch::nn::Module {
  explicit BlockImpl(const GPTConfig& config);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  CausalSelfAttention attn{nullptr};
  MLP mlp{nullptr};
};
TORCH_MODULE(Block);

struct GPTImpl : torch::nn::Module {
  explicit GPTImpl(const GPTConfig& config);
  /// For volt::load_from_checkpoint<GPT>.
  explicit GPTImpl(const HParams& hparams) : GPTImpl(GPTConfig::from_hparams(hparams)) {}
  /// idx: [batch, time] token ids; returns logits [batch, time, vocab_size].
  torch::Tensor forward(const torch::Tensor& idx);
  /// GPT-2's initialization: N(0, 0.02) weights, zero biases, residual projections scaled by
  /// 1/sqrt(2 n_layer). Called by the constructor, after the layers' own reset().
  void reset_parameters();

  GPTConfig config;
  torch::nn::Embedding wte{nullptr}, wpe{nullptr};
  torch::nn::ModuleList h{nullptr};
  torch::nn::LayerNorm ln_f{nullptr};
};
TORCH_MODULE(GPT);

}  // namespace volt::models

// The C++ twin of tests/core/tied_lm_oracle.py's TinyLM: an output head tied to the token embedding the
// PyTorch way (one tensor under two names), a causal mask and a position table in non-persistent buffers,
// one of them in a plain torch::nn::Module part.
#pragma once

#include <torch/torch.h>

#include "volt/checkpoint/state_dict.h"
#include "volt/core/module.h"
#include "volt/core/parameters.h"

namespace volt::testing {

constexpr int64_t kVocab = 11, kDim = 6, kBlock = 5;

struct CausalMixImpl : torch::nn::Module, BufferPersistence {
  CausalMixImpl() {
    mask = volt::register_buffer(*this, "mask", torch::ones({kBlock, kBlock}).tril(), /*persistent=*/false);
    scale = register_buffer("scale", torch::tensor(0.5f));
    proj = register_module("proj", torch::nn::Linear(kDim, kDim));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t t = x.size(1);
    auto att = x.matmul(x.transpose(1, 2)) * scale;
    att = att.masked_fill(mask.slice(0, 0, t).slice(1, 0, t) == 0, -INFINITY).softmax(-1);
    return att.matmul(proj(x));
  }
  torch::Tensor mask, scale;
  torch::nn::Linear proj{nullptr};
};
TORCH_MODULE(CausalMix);

struct TinyLM : Module {
  TinyLM() {
    wte = register_module("wte", torch::nn::Embedding(kVocab, kDim));
    mix = register_module("mix", CausalMix());
    ln = register_module("ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({kDim})));
    lm_head =
        register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(kDim, kVocab).bias(false)));
    tie_parameter(lm_head, lm_head->weight, wte->weight);
    positions = register_buffer("positions", torch::arange(kBlock), /*persistent=*/false);
  }
  torch::Tensor forward(const torch::Tensor& idx) {
    auto x = wte(idx) + positions.slice(0, 0, idx.size(1)).unsqueeze(-1).to(torch::kFloat) * 0.01;
    return lm_head(ln(x + mix(x)));
  }
  torch::Tensor loss(const torch::Tensor& idx, const torch::Tensor& targets) {
    return torch::cross_entropy_loss(forward(idx).reshape({-1, kVocab}), targets.reshape({-1}));
  }
  torch::Tensor training_step(const Batch& b, int64_t) override { return loss(b.data, b.target); }
  OptimizerConfig configure_optimizers() override {
    return OptimizerConfig(std::make_shared<torch::optim::AdamW>(unique_parameters(*this)));
  }

  torch::nn::Embedding wte{nullptr};
  CausalMix mix{nullptr};
  torch::nn::LayerNorm ln{nullptr};
  torch::nn::Linear lm_head{nullptr};
  torch::Tensor positions;
};

}  // namespace volt::testing

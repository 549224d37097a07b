// The demo's model: a small CNN for 28x28 grey images (two conv-BN-ReLU-pool blocks, dropout, two
// linear layers) as a volt::Module with Lightning-style steps, constructed from hyper-parameters so that
// `volt::load_from_checkpoint<FashionCNN>` can rebuild it.
#pragma once

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "volt/core/module.h"

namespace volt::models {

class FashionCNNImpl : public Module {
 public:
  /// hparams: channels1 (32), channels2 (64), hidden (128), dropout (0.25), lr (2e-3), epochs (the
  /// cosine schedule's length, 4), weight_decay (1e-4).
  explicit FashionCNNImpl(const HParams& hparams = {});

  /// Logits [n, 10] of images [n, 1, 28, 28].
  at::Tensor forward(const at::Tensor& images);
  at::Tensor training_step(const Batch& batch, int64_t batch_idx) override;
  void validation_step(const Batch& batch, int64_t batch_idx) override;
  void test_step(const Batch& batch, int64_t batch_idx) override;
  at::Tensor predict_step(const Batch& batch, int64_t batch_idx) override;
  OptimizerConfig configure_optimizers() override;

 private:
  void evaluate(const Batch& batch, const std::string& prefix);
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  double dropout_;
};
TORCH_MODULE(FashionCNN);

}  // namespace volt::models

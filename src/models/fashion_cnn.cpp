#include "volt/models/fashion_cnn.h"

#include <torch/torch.h>

#include "volt/core/parameters.h"

namespace volt::models {

FashionCNNImpl::FashionCNNImpl(const HParams& given) {
  HParams hp;
  hp.set("channels1", int64_t{32}).set("channels2", int64_t{64}).set("hidden", int64_t{128});
  hp.set("dropout", 0.25).set("lr", 2e-3).set("epochs", int64_t{4}).set("weight_decay", 1e-4);
  hp.update(given);
  save_hyperparameters(hp);
  const auto c1 = hp.get<int64_t>("channels1"), c2 = hp.get<int64_t>("channels2");
  conv1 =
      register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, c1, 3).padding(1).bias(false)));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(c1));
  conv2 =
      register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(c1, c2, 3).padding(1).bias(false)));
  bn2 = register_module("bn2", torch::nn::BatchNorm2d(c2));
  fc1 = register_module("fc1", torch::nn::Linear(c2 * 7 * 7, hp.get<int64_t>("hidden")));
  fc2 = register_module("fc2", torch::nn::Linear(hp.get<int64_t>("hidden"), 10));
  dropout_ = hp.get<double>("dropout");
}

at::Tensor FashionCNNImpl::forward(const at::Tensor& images) {
  auto x = torch::max_pool2d(torch::relu(bn1(conv1(images))), 2);
  x = torch::max_pool2d(torch::relu(bn2(conv2(x))), 2);
  x = torch::dropout(torch::relu(fc1(x.flatten(1))), dropout_, is_training());
  return fc2(x);
}

at::Tensor FashionCNNImpl::training_step(const Batch& batch, int64_t) {
  const auto logits = forward(batch.data);
  auto loss = torch::cross_entropy_loss(logits.to(torch::kFloat), batch.target);
  log("train_loss", loss, LogOptions().prog_bar(true));
  return loss;
}

void FashionCNNImpl::evaluate(const Batch& batch, const std::string& prefix) {
  const auto logits = forward(batch.data).to(torch::kFloat);
  log(prefix + "_loss", torch::cross_entropy_loss(logits, batch.target),
      LogOptions().prog_bar(prefix == "val"));
  log(prefix + "_acc", logits.argmax(1).eq(batch.target).to(torch::kFloat).mean(),
      LogOptions().prog_bar(true));
}

void FashionCNNImpl::validation_step(const Batch& batch, int64_t) { evaluate(batch, "val"); }
void FashionCNNImpl::test_step(const Batch& batch, int64_t) { evaluate(batch, "test"); }
at::Tensor FashionCNNImpl::predict_step(const Batch& batch, int64_t) { return forward(batch.data).argmax(1); }

OptimizerConfig FashionCNNImpl::configure_optimizers() {
  const auto& hp = hparams();
  auto adam = std::make_shared<torch::optim::AdamW>(
      unique_parameters(*this),
      torch::optim::AdamWOptions(hp.get<double>("lr")).weight_decay(hp.get<double>("weight_decay")));
  return OptimizerConfig(
      adam, std::make_shared<CosineAnnealingLR>(*adam, std::max<int64_t>(1, hp.get<int64_t>("epochs"))));
}

}  // namespace volt::models

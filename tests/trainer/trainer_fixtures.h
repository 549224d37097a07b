// A small classifier, synthetic data and helpers shared by the Trainer and callback tests.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "temp_dir.h"
#include "volt/checkpoint/state_dict.h"
#include "volt/core/module.h"
#include "volt/trainer/callback.h"
#include "volt/trainer/trainer.h"

namespace volt::testing {

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct Data {
  torch::Tensor x, y;
};

/// 8 features, 4 classes given by a fixed linear rule: learnable in a few epochs.
inline Data make_data(int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto x = at::randn({n, 8}, gen);
  auto w = at::randn({8, 4}, gen);
  return {x, x.matmul(w).argmax(1)};
}

inline std::vector<Batch> to_batches(const Data& data, int64_t batch_size) {
  std::vector<Batch> out;
  for (int64_t i = 0; i < data.x.size(0); i += batch_size)
    out.emplace_back(data.x.slice(0, i, i + batch_size), data.y.slice(0, i, i + batch_size));
  return out;
}

struct SyntheticDataset : torch::data::datasets::Dataset<SyntheticDataset> {
  explicit SyntheticDataset(Data data) : data_(std::move(data)) {}
  torch::data::Example<> get(size_t i) override {
    return {data_.x[static_cast<int64_t>(i)], data_.y[static_cast<int64_t>(i)]};
  }
  c10::optional<size_t> size() const override { return static_cast<size_t>(data_.x.size(0)); }
  Data data_;
};

struct Net : Module {
  explicit Net(double dropout = 0.0, bool scheduler = false, bool sgd = false, double lr = 1e-2)
      : dropout_p(dropout), use_scheduler(scheduler), use_sgd(sgd), lr(lr) {
    fc1 = register_module("fc1", torch::nn::Linear(8, 16));
    fc2 = register_module("fc2", torch::nn::Linear(16, 4));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = torch::relu(fc1(x));
    if (dropout_p > 0) h = torch::dropout(h, dropout_p, is_training());
    auto out = fc2(h);
    forward_dtypes.push_back(out.scalar_type());
    return out;
  }
  void record(const std::string& hook) {
    if (hook_log) hook_log->push_back("model." + hook);
  }
  torch::Tensor training_step(const Batch& b, int64_t) override {
    record("training_step");
    ++train_batches_seen;
    auto loss = torch::cross_entropy_loss(forward(b.data), b.target);
    log("train_loss", loss, LogOptions().prog_bar(true));
    return loss;
  }
  void validation_step(const Batch& b, int64_t) override {
    record("validation_step");
    ++val_batches_seen;
    if (b.target.is_floating_point()) {
      log("val_first_target", b.target[0].item<double>());
      return;
    }
    log("val_loss", torch::cross_entropy_loss(forward(b.data).to(torch::kFloat), b.target),
        LogOptions().prog_bar(true));
  }
  void test_step(const Batch& b, int64_t) override {
    log("test_loss", torch::cross_entropy_loss(forward(b.data).to(torch::kFloat), b.target));
  }
  torch::Tensor predict_step(const Batch& b, int64_t) override { return forward(b.data); }
  OptimizerConfig configure_optimizers() override {
    std::shared_ptr<torch::optim::Optimizer> optimizer;
    if (use_sgd)
      optimizer = std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(lr));
    else
      optimizer = std::make_shared<torch::optim::Adam>(parameters(), torch::optim::AdamOptions(lr));
    OptimizerConfig config(optimizer);
    if (use_scheduler) config.scheduler = std::make_shared<StepLR>(*optimizer, 1, 0.5);
    return config;
  }
  void configure_model() override { record("configure_model"); }
  void on_fit_start() override { record("on_fit_start"); }
  void on_fit_end() override { record("on_fit_end"); }
  void on_train_epoch_start() override { record("on_train_epoch_start"); }
  void on_train_epoch_end() override { record("on_train_epoch_end"); }
  void on_validation_epoch_end() override { record("on_validation_epoch_end"); }

  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  double dropout_p;
  bool use_scheduler, use_sgd;
  double lr;
  std::vector<std::string>* hook_log = nullptr;
  std::vector<c10::ScalarType> forward_dtypes;
  int64_t train_batches_seen = 0, val_batches_seen = 0;
};

inline double full_loss(Net& model, const Data& data) {
  torch::NoGradGuard no_grad;
  const bool training = model.is_training();
  model.eval();
  const auto x = data.x.to(model.parameters()[0].scalar_type());
  const double loss = torch::cross_entropy_loss(model.forward(x).to(torch::kFloat), data.y).item<double>();
  model.train(training);
  return loss;
}

inline void copy_weights(Module& from, Module& to) {
  torch::NoGradGuard no_grad;
  auto a = from.parameters(), b = to.parameters();
  for (size_t i = 0; i < a.size(); ++i) b[i].copy_(a[i]);
}

inline void expect_bitwise_equal(const Value& a, const Value& b) {
  ASSERT_EQ(a.to_dict().size(), b.to_dict().size());
  for (const auto& [name, t] : a.to_dict())
    EXPECT_TRUE(torch::equal(t.to_tensor(), b[name.to_string()].to_tensor())) << name.to_string();
}

/// Quiet defaults for tests: CPU, no progress bar, no default checkpoint, files under `root`.
inline TrainerOptions quiet_options(const std::string& root) {
  return TrainerOptions()
      .accelerator("cpu")
      .default_root_dir(root)
      .enable_progress_bar(false)
      .enable_checkpointing(false);
}

struct HookRecorder : Callback {
  void on_fit_start(Trainer&, Module&) override { calls.push_back("callback.on_fit_start"); }
  void on_fit_end(Trainer&, Module&) override { calls.push_back("callback.on_fit_end"); }
  void on_sanity_check_start(Trainer&, Module&) override {
    calls.push_back("callback.on_sanity_check_start");
  }
  void on_sanity_check_end(Trainer&, Module&) override { calls.push_back("callback.on_sanity_check_end"); }
  void on_train_epoch_start(Trainer&, Module&) override { calls.push_back("callback.on_train_epoch_start"); }
  void on_train_batch_end(Trainer&, Module&, int64_t) override {
    calls.push_back("callback.on_train_batch_end");
  }
  void on_train_epoch_end(Trainer&, Module&) override { calls.push_back("callback.on_train_epoch_end"); }
  void on_validation_start(Trainer&, Module&) override { calls.push_back("callback.on_validation_start"); }
  void on_validation_end(Trainer&, Module&) override { calls.push_back("callback.on_validation_end"); }
  std::vector<std::string> calls;
};

}  // namespace volt::testing

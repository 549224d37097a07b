// Lightning's evaluation and prediction loops (its `loops/evaluation_loop.py`, `prediction_loop.py`): one
// pass of validation_step, test_step or predict_step over a loader, without gradients.
#include <torch/torch.h>

#include <algorithm>

#include "metric_store.h"
#include "volt/error.h"
#include "volt/trainer/trainer.h"

namespace volt {

Metrics Trainer::run_evaluation(const BatchSource& data, Stage stage, int64_t limit) {
  Module& model = *model_;
  const bool testing = stage == Stage::kTest;
  const bool saved_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  metrics_->set_stage(stage.name());
  metrics_->set_discard(sanity_checking_);
  num_eval_batches_ = data.num_batches()
                          ? c10::optional<int64_t>(std::min(limit, *data.num_batches()))
                          : (limit == INT64_MAX ? c10::nullopt : c10::optional<int64_t>(limit));
  each_callback(
      [&](Callback& c) { testing ? c.on_test_start(*this, model) : c.on_validation_start(*this, model); });
  int64_t batch_idx = 0;
  data.for_each([&](Batch&& raw) {
    if (batch_idx >= limit) return false;
    Batch batch = strategy_->batch_to_device(raw);
    metrics_->set_batch_size(batch.size());
    {
      auto forward_context = strategy_->forward_context();
      testing ? model.test_step(batch, batch_idx) : model.validation_step(batch, batch_idx);
    }
    each_callback([&](Callback& c) {
      testing ? c.on_test_batch_end(*this, model, batch_idx)
              : c.on_validation_batch_end(*this, model, batch_idx);
    });
    ++batch_idx;
    return true;
  });
  Metrics epoch_metrics;
  // Metrics logged in the epoch-end hook belong to this epoch too (and are discarded while sanity checking).
  testing ? model.on_test_epoch_end() : model.on_validation_epoch_end();
  if (!sanity_checking_) {
    epoch_metrics = metrics_->end_epoch();
    if (!epoch_metrics.empty()) {
      Metrics to_log = epoch_metrics;
      to_log["epoch"] = static_cast<double>(current_epoch_);
      log_to_loggers(to_log);
    }
  }
  metrics_->set_discard(false);
  each_callback(
      [&](Callback& c) { testing ? c.on_test_end(*this, model) : c.on_validation_end(*this, model); });
  if (saved_training) model.train();
  return epoch_metrics;
}

Metrics Trainer::evaluate(Module& model, const BatchSource& data, Stage stage) {
  setup(model, stage);
  const bool testing = stage == Stage::kTest;
  const auto& limit = testing ? options_.limit_test_batches() : options_.limit_val_batches();
  Metrics out;
  try {
    const BatchSource shard = distributed(data);
    out = run_evaluation(
        shard, stage,
        limit.resolve(shard.num_batches(), testing ? "limit_test_batches" : "limit_val_batches"));
  } catch (...) {
    teardown("failed");
    throw;
  }
  teardown("success");
  return out;
}

Metrics Trainer::validate(Module& model, const BatchSource& data) {
  return evaluate(model, data, Stage::kValidate);
}

Metrics Trainer::test(Module& model, const BatchSource& data) { return evaluate(model, data, Stage::kTest); }

std::vector<at::Tensor> Trainer::predict(Module& model, const BatchSource& source) {
  setup(model, Stage::kPredict);
  std::vector<at::Tensor> outputs;
  try {
    const BatchSource data = distributed(source);
    const int64_t limit =
        options_.limit_predict_batches().resolve(data.num_batches(), "limit_predict_batches");
    model.eval();
    torch::NoGradGuard no_grad;
    int64_t batch_idx = 0;
    data.for_each([&](Batch&& raw) {
      if (batch_idx >= limit) return false;
      auto forward_context = strategy_->forward_context();
      outputs.push_back(model.predict_step(strategy_->batch_to_device(raw), batch_idx++));
      return true;
    });
  } catch (...) {
    teardown("failed");
    throw;
  }
  teardown("success");
  return outputs;
}

}  // namespace volt

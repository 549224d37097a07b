// Lightning's fit loop (its `loops/fit_loop.py` and `training_epoch_loop.py`): epochs of training batches
// with gradient accumulation, optimizer steps through the strategy, mid-epoch validation and the schedule,
// resumable mid-epoch from a checkpoint.
#include <torch/torch.h>

#include <algorithm>

#include "../core/rng_state.h"
#include "checkpoint_connector.h"
#include "metric_store.h"
#include "volt/error.h"
#include "volt/optim/optimizer_state.h"
#include "volt/trainer/trainer.h"

namespace volt {

using detail::cpu_rng_state;
using detail::set_cpu_rng_state;

void Trainer::fit(Module& model, const BatchSource& train_source, const BatchSource& val_source,
                  const std::string& ckpt_path) {
  VOLT_CHECK(static_cast<bool>(train_source), "Trainer::fit needs a training loader");
  setup(model, Stage::kFit);
  const BatchSource train = distributed(train_source, /*training=*/true), val = distributed(val_source);
  if (train.num_batches()) {
    const int64_t limit = options_.limit_train_batches().resolve(train.num_batches(), "limit_train_batches");
    num_training_batches_ = std::min(limit, *train.num_batches());
  }
  optim_ = model.configure_optimizers();
  VOLT_CHECK(optim_.optimizer != nullptr, "configure_optimizers() returned no optimizer");
  check_distinct_parameters(
      *optim_.optimizer);  // a tied weight listed twice: say so now, not at a checkpoint
  strategy_->setup_optimizers(*optim_.optimizer);
  current_epoch_ = 0;
  global_step_ = 0;
  total_batches_ = 0;
  should_stop_ = false;
  detail::LoopPosition position;
  const bool resuming = !ckpt_path.empty();
  const int64_t max_epochs =
      options_.max_epochs() >= 0 ? options_.max_epochs() : (options_.max_steps() >= 0 ? INT64_MAX : 1000);
  try {
    if (resuming) position = detail::CheckpointConnector::restore(*this, ckpt_path);
    each_callback([&](Callback& c) { c.on_fit_start(*this, model); });
    model.on_fit_start();
    if (val && options_.num_sanity_val_steps() != 0 && !resuming) {
      sanity_checking_ = true;
      each_callback([&](Callback& c) { c.on_sanity_check_start(*this, model); });
      const int64_t limit = options_.num_sanity_val_steps() < 0
                                ? options_.limit_val_batches().resolve(val.num_batches(), "limit_val_batches")
                                : options_.num_sanity_val_steps();
      run_evaluation(val, Stage::kValidate, limit);
      sanity_checking_ = false;
      each_callback([&](Callback& c) { c.on_sanity_check_end(*this, model); });
    }
    bool first = true;
    for (; current_epoch_ < max_epochs && !should_stop_; ++current_epoch_) {
      if (options_.max_steps() >= 0 && global_step_ >= options_.max_steps()) break;
      const bool resume_here =
          first && resuming && position.batches_done > 0 && !position.epoch_batches_complete;
      if (first && resuming && position.epoch_batches_complete) {
        first = false;
        catch_up_epoch_schedule(current_epoch_);
        continue;  // the checkpoint was taken after this epoch's batches: go on with the next
      }
      first = false;
      run_training_epoch(train, val, resume_here ? &position : nullptr);
      // Ranks stop together: one rank's EarlyStopping stops them all (Lightning's reduce_boolean_decision).
      should_stop_ = strategy_->reduce_boolean_decision(should_stop_, /*all=*/false);
    }
    each_callback([&](Callback& c) { c.on_fit_end(*this, model); });
    model.on_fit_end();
  } catch (...) {
    sanity_checking_ = false;
    teardown("failed");
    throw;
  }
  // After the last epoch, current_epoch_ counts the epochs run (Lightning's value after fit).
  teardown("success");
}

void Trainer::run_training_epoch(const BatchSource& train, const BatchSource& val,
                                 const detail::LoopPosition* resume) {
  Module& model = *model_;
  const int64_t limit = options_.limit_train_batches().resolve(train.num_batches(), "limit_train_batches");
  num_training_batches_ = train.num_batches()
                              ? c10::optional<int64_t>(std::min(limit, *train.num_batches()))
                              : (limit == INT64_MAX ? c10::nullopt : c10::optional<int64_t>(limit));
  int64_t val_every = INT64_MAX;  // mid-epoch validation, in training batches
  if (val) {
    const auto& interval = options_.val_check_interval();
    if (interval.is_count())
      val_every = interval.resolve(c10::nullopt, "val_check_interval");
    else if (num_training_batches_)
      val_every = std::max<int64_t>(1, interval.resolve(num_training_batches_, "val_check_interval"));
  }
  const bool val_this_epoch = val && (current_epoch_ + 1) % options_.check_val_every_n_epoch() == 0;

  model.train();
  metrics_->set_stage("train");
  each_callback([&](Callback& c) { c.on_train_epoch_start(*this, model); });
  model.on_train_epoch_start();
  // Resuming mid-epoch from volt's own checkpoint: the loader shuffles as it did then (a checkpoint
  // without RNG state, such as Lightning's, resumes at the right batch of a new shuffle).
  const bool replay_rng = resume && resume->epoch_start_rng.defined();
  epoch_start_rng_ = replay_rng ? resume->epoch_start_rng : cpu_rng_state();
  if (replay_rng) set_cpu_rng_state(resume->epoch_start_rng);
  batches_done_ = 0;
  epoch_batches_complete_ = false;
  in_epoch_ = true;
  const int64_t skip = resume ? resume->batches_done : 0;
  int64_t batch_idx = 0;
  bool last_batch_stepped = true;
  optim_.optimizer->zero_grad();

  train.for_each([&](Batch&& raw) {
    if (batch_idx >= limit || should_stop_) return false;
    if (batch_idx < skip) {
      ++batch_idx;
      batches_done_ = batch_idx;
      if (batch_idx == skip && replay_rng) set_cpu_rng_state(resume->rng);  // and draws on as after the save
      return true;
    }
    const bool last = num_training_batches_ && batch_idx + 1 == *num_training_batches_;
    last_batch_stepped = run_training_batch(raw, batch_idx, last);
    batches_done_ = ++batch_idx;
    if (last) epoch_batches_complete_ = true;
    each_callback([&](Callback& c) { c.on_train_batch_end(*this, model, batch_idx - 1); });
    if (options_.max_steps() >= 0 && global_step_ >= options_.max_steps()) should_stop_ = true;
    if (val_this_epoch && !last && batch_idx % val_every == 0 && !should_stop_) validate_within_fit(val);
    return true;
  });
  if (!last_batch_stepped) {  // a loader of unknown length ended mid-accumulation: sync, then step
    strategy_->backward(at::zeros({}, at::TensorOptions().device(root_device())).requires_grad_(), true);
    optimizer_step(model);
  }
  // Stopped before the epoch's end (max_steps, EarlyStopping mid-epoch): no end-of-epoch validation.
  const bool stopped_early = should_stop_ && !(num_training_batches_ && batch_idx >= *num_training_batches_);
  epoch_batches_complete_ = true;

  auto epoch_metrics = metrics_->end_epoch();
  if (!epoch_metrics.empty()) {
    epoch_metrics["epoch"] = static_cast<double>(current_epoch_);
    log_to_loggers(epoch_metrics);
  }
  if (val_this_epoch && !stopped_early) validate_within_fit(val);
  // As Lightning: a per-epoch schedule steps after the epoch's validation, before on_train_epoch_end.
  catch_up_epoch_schedule(current_epoch_);
  each_callback([&](Callback& c) { c.on_train_epoch_end(*this, model); });
  model.on_train_epoch_end();
  if (is_global_zero())
    for (auto& logger : loggers_) logger->flush();
  in_epoch_ = false;
}

bool Trainer::run_training_batch(const Batch& raw, int64_t batch_idx, bool last) {
  Module& model = *model_;
  Batch batch = strategy_->batch_to_device(raw);
  metrics_->set_batch_size(batch.size());
  at::Tensor loss;
  strategy_->pre_training_step(model);
  {
    auto forward_context = strategy_->forward_context();
    loss = model.training_step(batch, batch_idx);
  }
  VOLT_CHECK(loss.defined() && loss.numel() == 1, "training_step must return the scalar loss to minimize");
  const int64_t k = options_.accumulate_grad_batches();
  const bool steps = (batch_idx + 1) % k == 0 || last;
  // Gradients meet only on the micro-batch that ends in an optimizer step (DDP's no_sync before it).
  strategy_->backward(k > 1 ? loss / static_cast<double>(k) : loss, /*sync_gradients=*/steps);
  ++total_batches_;
  if (steps) optimizer_step(model);
  // Step metrics go to the loggers on optimizer steps only (an accumulating batch has no step of its own).
  auto step_metrics = metrics_->take_step_metrics();
  if (steps && (global_step_ % options_.log_every_n_steps() == 0 || last) && !step_metrics.empty()) {
    step_metrics["epoch"] = static_cast<double>(current_epoch_);
    log_to_loggers(step_metrics);
  }
  return steps;
}

void Trainer::validate_within_fit(const BatchSource& val) {
  run_evaluation(val, Stage::kValidate,
                 options_.limit_val_batches().resolve(val.num_batches(), "limit_val_batches"));
  model_->train();
  metrics_->set_stage("train");
}

void Trainer::catch_up_epoch_schedule(int64_t finished_epoch) {
  if (!optim_.scheduler || optim_.interval != Interval::kEpoch) return;
  // After epoch e the schedule has stepped (e + 1) / frequency times; a checkpoint taken at validation's end
  // (before the step) and one taken at on_train_epoch_end (after it) both resume to that.
  while (optim_.scheduler->last_epoch() < (finished_epoch + 1) / optim_.frequency) optim_.scheduler->step();
}

void Trainer::optimizer_step(Module& model) {
  auto& optimizer = *optim_.optimizer;
  std::function<void()> clip;
  if (options_.gradient_clip_val())
    clip = [&] {
      strategy_->clip_gradients(model, *options_.gradient_clip_val(), options_.gradient_clip_algorithm());
    };
  strategy_->optimizer_step(optimizer, clip);
  optimizer.zero_grad();
  ++global_step_;
  if (optim_.scheduler && optim_.interval == Interval::kStep && global_step_ % optim_.frequency == 0)
    optim_.scheduler->step();
}

}  // namespace volt

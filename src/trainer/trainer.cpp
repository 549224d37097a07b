#include "volt/trainer/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <mutex>

#include <iostream>

#include "../core/rng_state.h"
#include "checkpoint_connector.h"
#include "metric_store.h"
#include "volt/data/distributed_sampler.h"
#include "volt/error.h"
#include "volt/optim/optimizer_state.h"
#include "volt/trainer/csv_logger.h"
#include "volt/trainer/model_checkpoint.h"
#include "volt/trainer/progress_bar.h"

namespace volt {

namespace {

const TrainerOptions& checked(const TrainerOptions& options) {
  VOLT_CHECK(options.accumulate_grad_batches() >= 1, "accumulate_grad_batches must be at least 1, not ",
             options.accumulate_grad_batches());
  VOLT_CHECK(options.gradient_clip_algorithm() == "norm" || options.gradient_clip_algorithm() == "value",
             "gradient_clip_algorithm '", options.gradient_clip_algorithm(), "': use \"norm\" or \"value\"");
  VOLT_CHECK(options.check_val_every_n_epoch() >= 1, "check_val_every_n_epoch must be at least 1");
  VOLT_CHECK(options.log_every_n_steps() >= 1, "log_every_n_steps must be at least 1");
  return options;
}

using detail::cpu_rng_state;
using detail::set_cpu_rng_state;

// Hyper-parameters as "key" -> printable text for the loggers.
void flatten(const std::string& prefix, const Value& v,
             std::vector<std::pair<std::string, std::string>>& out) {
  if (v.is_dict()) {
    for (const auto& [k, item] : v.to_dict())
      flatten(prefix.empty() ? (k.is_string() ? k.to_string() : k.repr()) : prefix + "/" + k.repr(), item,
              out);
    return;
  }
  out.emplace_back(prefix, v.is_string() ? v.to_string() : v.repr());
}

}  // namespace

int64_t BatchLimit::resolve(c10::optional<int64_t> total, const char* option_name) const {
  if (count_) {
    VOLT_CHECK(*count_ >= 0, option_name, "=", *count_, ": a batch count cannot be negative");
    return total ? std::min(*count_, *total) : *count_;
  }
  VOLT_CHECK(fraction_ >= 0.0 && fraction_ <= 1.0, option_name, "=", fraction_,
             ": a fraction of the loader must lie in [0, 1]");
  if (!total) {
    VOLT_CHECK(fraction_ == 1.0, option_name, "=", fraction_,
               " needs the loader's length: pass it as volt::BatchSource(loader, num_batches)");
    return INT64_MAX;
  }
  return static_cast<int64_t>(std::floor(fraction_ * static_cast<double>(*total)));
}

Trainer::Trainer(TrainerOptions options)
    : options_(checked(options)),
      strategy_(make_strategy(StrategyOptions()
                                  .name(options_.strategy())
                                  .accelerator(options_.accelerator())
                                  .devices(options_.devices())
                                  .num_nodes(options_.num_nodes())
                                  .precision(options_.precision())
                                  .init_rng(options_.init_rng())
                                  .timeout(options_.timeout())
                                  .sharding(options_.sharding()))),
      metrics_(std::make_unique<detail::MetricStore>()) {
  // Warned once per process: what an emulated 16-bit dtype costs here, never a silent change of precision.
  static std::once_flag warned;
  if (auto warning = emulated_precision_warning(options_.precision(), root_device().type()))
    std::call_once(warned, [&] {
      if (is_global_zero()) std::cerr << "volt: warning: " << *warning << std::endl;
    });
  callbacks_ = options_.callbacks();
  const bool has_checkpoint = std::any_of(callbacks_.begin(), callbacks_.end(), [](const auto& c) {
    return dynamic_cast<ModelCheckpoint*>(c.get()) != nullptr;
  });
  loggers_ = options_.logger();
  if (loggers_.empty() && options_.enable_logger())
    loggers_.push_back(std::make_shared<CSVLogger>(CSVLoggerOptions().save_dir(options_.default_root_dir())));
  if (!has_checkpoint && options_.enable_checkpointing())
    callbacks_.push_back(std::make_shared<ModelCheckpoint>());
  if (options_.enable_progress_bar()) callbacks_.push_back(std::make_shared<ProgressBar>());
}

Trainer::~Trainer() {
  if (model_ != nullptr && model_owner_) model_->set_trainer(nullptr);
}

InitScope Trainer::init_module(bool empty_init) const { return strategy_->module_init_context(empty_init); }

const Metrics& Trainer::callback_metrics() const { return metrics_->callback_metrics(); }
const Metrics& Trainer::logged_metrics() const { return metrics_->logged_metrics(); }
const Metrics& Trainer::progress_bar_metrics() const { return metrics_->progress_bar_metrics(); }

std::string Trainer::log_dir() const {
  if (!log_dir_.empty()) return log_dir_;
  return loggers_.empty() ? options_.default_root_dir() : loggers_.front()->log_dir();
}

int64_t Trainer::estimated_stepping_batches() const {
  VOLT_CHECK(stage_ == "fit",
             "estimated_stepping_batches is known inside fit (configure_optimizers and later)");
  const int64_t max_epochs = options_.max_epochs();
  if (max_epochs < 0 && options_.max_steps() >= 0) return options_.max_steps();
  VOLT_CHECK(num_training_batches_.has_value(),
             "estimated_stepping_batches needs the training loader's length: "
             "pass it as volt::BatchSource(loader, num_batches), or set max_steps");
  const int64_t k = options_.accumulate_grad_batches();
  const int64_t per_epoch = (*num_training_batches_ + k - 1) / k;
  const int64_t estimate = per_epoch * std::max<int64_t>(max_epochs < 0 ? 1000 : max_epochs, 1);
  return options_.max_steps() >= 0 ? std::min(estimate, options_.max_steps()) : estimate;
}

template <typename F>
void Trainer::each_callback(F&& f) {
  for (auto& callback : callbacks_) f(*callback);
}

void Trainer::log_to_loggers(const Metrics& metrics) {
  if (!is_global_zero() || metrics.empty()) return;  // Lightning's loggers are rank-zero-only
  for (auto& logger : loggers_) logger->log_metrics(metrics, global_step_);
}

BatchSource Trainer::distributed(const BatchSource& source) const {
  if (!source || world_size() == 1 || !options_.use_distributed_sampler()) return source;
  const Trainer* self = this;
  return distributed_batches(
      source, DistributedSamplerOptions().num_replicas(world_size()).rank(global_rank()).shuffle(false),
      [self] { return self->current_epoch_; });
}

void Trainer::setup(Module& model, const std::string& stage) {
  strategy_->setup_environment();
  if (options_.seed()) torch::manual_seed(*options_.seed());
  if (options_.deterministic()) at::globalContext().setDeterministicAlgorithms(true, false);
  stage_ = stage;
  if (model_ != nullptr && model_ != &model) model_->set_trainer(nullptr);
  model_ = &model;
  try {
    model_owner_ = std::dynamic_pointer_cast<Module>(model.shared_from_this());
  } catch (const std::bad_weak_ptr&) {
    model_owner_.reset();  // not owned by a shared_ptr: let go when this run ends
  }
  model.set_trainer(this);
  model.set_log_sink(metrics_.get());
  metrics_->set_sync([this](double value) { return strategy_->reduce(value, ReduceOp::kMean); });
  {
    // Layers made here are born on the device, in the dtype (and, sharded, one shard per rank).
    auto scope = strategy_->configure_model_context();
    model.configure_model();
  }
  // Placement and precision once (a model built in init_module is already there); ranks agree on weights.
  strategy_->setup(model);
  if (world_size() > 1 && log_dir_.empty())
    log_dir_ = strategy_->broadcast(is_global_zero() ? log_dir() : std::string(), 0);
  if (!hparams_logged_ && !model.hparams().empty() && is_global_zero()) {
    std::vector<std::pair<std::string, std::string>> flat;
    flatten("", model.hparams().value(), flat);
    for (auto& logger : loggers_) logger->log_hyperparams(flat);
    hparams_logged_ = true;
  }
}

void Trainer::teardown(const std::string& status) {
  if (is_global_zero())
    for (auto& logger : loggers_) logger->finalize(status);
  strategy_->teardown();
  if (model_ != nullptr) {
    model_->set_log_sink(nullptr);
    if (!model_owner_) {  // nothing keeps it alive past this call: forget it rather than dangle
      model_->set_trainer(nullptr);
      model_ = nullptr;
    }
  }
  stage_.clear();
}

void Trainer::fit(Module& model, const BatchSource& train_source, const BatchSource& val_source,
                  const std::string& ckpt_path) {
  VOLT_CHECK(static_cast<bool>(train_source), "Trainer::fit needs a training loader");
  setup(model, "fit");
  const BatchSource train = distributed(train_source), val = distributed(val_source);
  if (train.num_batches()) {
    const int64_t limit = options_.limit_train_batches().resolve(train.num_batches(), "limit_train_batches");
    num_training_batches_ = std::min(limit, *train.num_batches());
  }
  optim_ = model.configure_optimizers();
  VOLT_CHECK(optim_.optimizer != nullptr, "configure_optimizers() returned no optimizer");
  check_distinct_parameters(
      *optim_.optimizer);  // a tied weight listed twice: say so now, not at a checkpoint
  VOLT_CHECK(optim_.interval == "epoch" || optim_.interval == "step", "OptimizerConfig::interval '",
             optim_.interval, "': use \"epoch\" or \"step\"");
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
      run_evaluation(val, "validate", limit);
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
  const int64_t k = options_.accumulate_grad_batches();
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
    Batch batch = strategy_->batch_to_device(raw);
    metrics_->set_batch_size(batch.size());
    at::Tensor loss;
    strategy_->pre_training_step(model);
    {
      auto forward_context = strategy_->forward_context();
      loss = model.training_step(batch, batch_idx);
    }
    VOLT_CHECK(loss.defined() && loss.numel() == 1, "training_step must return the scalar loss to minimize");
    const bool last = num_training_batches_ && batch_idx + 1 == *num_training_batches_;
    const bool steps = (batch_idx + 1) % k == 0 || last;
    // Gradients meet only on the micro-batch that ends in an optimizer step (DDP's no_sync before it).
    strategy_->backward(k > 1 ? loss / static_cast<double>(k) : loss, /*sync_gradients=*/steps);
    ++batch_idx;
    batches_done_ = batch_idx;
    ++total_batches_;
    last_batch_stepped = false;
    if (steps) {
      optimizer_step(model);
      last_batch_stepped = true;
    }
    if (last) epoch_batches_complete_ = true;
    // Step metrics go to the loggers on optimizer steps only (an accumulating batch has no step of its own).
    if (last_batch_stepped && (global_step_ % options_.log_every_n_steps() == 0 || last)) {
      auto step_metrics = metrics_->take_step_metrics();
      if (!step_metrics.empty()) {
        step_metrics["epoch"] = static_cast<double>(current_epoch_);
        log_to_loggers(step_metrics);
      }
    } else {
      metrics_->take_step_metrics();
    }
    each_callback([&](Callback& c) { c.on_train_batch_end(*this, model, batch_idx - 1); });
    if (options_.max_steps() >= 0 && global_step_ >= options_.max_steps()) should_stop_ = true;
    if (val_this_epoch && !last && batch_idx % val_every == 0 && !should_stop_) {
      run_evaluation(val, "validate",
                     options_.limit_val_batches().resolve(val.num_batches(), "limit_val_batches"));
      model.train();
      metrics_->set_stage("train");
    }
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
  if (val_this_epoch && !stopped_early) {
    run_evaluation(val, "validate",
                   options_.limit_val_batches().resolve(val.num_batches(), "limit_val_batches"));
    model.train();
    metrics_->set_stage("train");
  }
  // As Lightning: a per-epoch schedule steps after the epoch's validation, before on_train_epoch_end.
  catch_up_epoch_schedule(current_epoch_);
  each_callback([&](Callback& c) { c.on_train_epoch_end(*this, model); });
  model.on_train_epoch_end();
  if (is_global_zero())
    for (auto& logger : loggers_) logger->flush();
  in_epoch_ = false;
}

void Trainer::catch_up_epoch_schedule(int64_t finished_epoch) {
  if (!optim_.scheduler || optim_.interval != "epoch") return;
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
  if (optim_.scheduler && optim_.interval == "step" && global_step_ % optim_.frequency == 0)
    optim_.scheduler->step();
}

Metrics Trainer::run_evaluation(const BatchSource& data, const std::string& stage, int64_t limit) {
  Module& model = *model_;
  const bool testing = stage == "test";
  const bool saved_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  metrics_->set_stage(stage);
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

Metrics Trainer::evaluate(Module& model, const BatchSource& data, const std::string& stage) {
  setup(model, stage);
  const bool testing = stage == "test";
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
  return evaluate(model, data, "validate");
}

Metrics Trainer::test(Module& model, const BatchSource& data) { return evaluate(model, data, "test"); }

std::vector<at::Tensor> Trainer::predict(Module& model, const BatchSource& source) {
  setup(model, "predict");
  const BatchSource data = distributed(source);
  std::vector<at::Tensor> outputs;
  const int64_t limit = options_.limit_predict_batches().resolve(data.num_batches(), "limit_predict_batches");
  model.eval();
  torch::NoGradGuard no_grad;
  int64_t batch_idx = 0;
  data.for_each([&](Batch&& raw) {
    if (batch_idx >= limit) return false;
    auto forward_context = strategy_->forward_context();
    outputs.push_back(model.predict_step(strategy_->batch_to_device(raw), batch_idx++));
    return true;
  });
  teardown("success");
  return outputs;
}

Checkpoint Trainer::dump_checkpoint() { return detail::CheckpointConnector::dump(*this); }

void Trainer::save_checkpoint(const std::string& path) {
  strategy_->save_checkpoint(dump_checkpoint(), path);
}

}  // namespace volt

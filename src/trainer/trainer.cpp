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
#include "volt/strategies/strategy_registry.h"
#include "volt/trainer/csv_logger.h"
#include "volt/trainer/model_checkpoint.h"
#include "volt/trainer/progress_bar.h"

namespace volt {

namespace {

const TrainerOptions& checked(const TrainerOptions& options) {
  VOLT_CHECK(options.accumulate_grad_batches() >= 1, "accumulate_grad_batches must be at least 1, not ",
             options.accumulate_grad_batches());
  VOLT_CHECK(options.check_val_every_n_epoch() >= 1, "check_val_every_n_epoch must be at least 1");
  VOLT_CHECK(options.log_every_n_steps() >= 1, "log_every_n_steps must be at least 1");
  return options;
}

// The strategy the options choose: the user's object as it is (Lightning lets a strategy object bring its
// own accelerator and precision; volt refuses options that would contradict them), else the registered one.
std::shared_ptr<Strategy> connect_strategy(const TrainerOptions& options) {
  if (const auto& strategy = options.strategy().object()) {
    const TrainerOptions defaults;
    VOLT_CHECK(options.precision() == defaults.precision() ||
                   options.precision() == strategy->precision_plugin().precision(),
               "TrainerOptions::precision '", options.precision().name(),
               "' contradicts the strategy object's '", strategy->precision_plugin().precision().name(),
               "': give the precision in the StrategyOptions the strategy was built with");
    VOLT_CHECK(options.precision_plugin() == nullptr, "a precision plugin and a strategy object: give the ",
               "plugin in the StrategyOptions the strategy was built with");
    const auto& accelerator = strategy->accelerator();
    const std::string asked = options.accelerator() == "gpu" ? "cuda" : options.accelerator();
    const bool same_accelerator = asked == defaults.accelerator() || asked == accelerator.type();
    const bool same_devices = options.devices() == defaults.devices() ||
                              options.devices() == static_cast<int64_t>(accelerator.devices().size());
    VOLT_CHECK(same_accelerator && same_devices && options.num_nodes() == strategy->options().num_nodes(),
               "TrainerOptions accelerator '", options.accelerator(), "', devices ", options.devices(),
               " and num_nodes ", options.num_nodes(), " contradict the strategy object's (",
               accelerator.type(), ", ", accelerator.devices().size(), ", ", strategy->options().num_nodes(),
               "): give them in the StrategyOptions the strategy was built with");
    return strategy;
  }
  return make_strategy(StrategyOptions()
                           .name(options.strategy().name())
                           .accelerator(options.accelerator())
                           .devices(options.devices())
                           .num_nodes(options.num_nodes())
                           .precision(options.precision())
                           .precision_plugin(options.precision_plugin())
                           .init_rng(options.init_rng())
                           .timeout(options.timeout())
                           .sharding(options.sharding()));
}

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
      strategy_(connect_strategy(options_)),
      metrics_(std::make_unique<detail::MetricStore>()) {
  // Warned once per process: what an emulated 16-bit dtype costs here, never a silent change of precision.
  static std::once_flag warned;
  if (auto warning = emulated_precision_warning(precision(), root_device().type()))
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
  VOLT_CHECK(stage_ == Stage::kFit,
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

void Trainer::log_to_loggers(const Metrics& metrics) {
  if (!is_global_zero() || metrics.empty()) return;  // Lightning's loggers are rank-zero-only
  for (auto& logger : loggers_) logger->log_metrics(metrics, global_step_);
}

BatchSource Trainer::distributed(const BatchSource& source, bool training) const {
  if (!source || world_size() == 1 || !options_.use_distributed_sampler()) return source;
  const Trainer* self = this;
  return shard_for_rank(source, world_size(), global_rank(), training,
                        [self] { return self->current_epoch_; });
}

void Trainer::setup(Module& model, Stage stage) {
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
  stage_ = Stage::kNone;
}

void Trainer::setup_model(Module& model) { setup(model, Stage::kNone); }

Checkpoint Trainer::load_checkpoint(const std::string& path) {
  VOLT_CHECK(model_ != nullptr, "Trainer::load_checkpoint needs a model: call setup_model(model) first");
  Checkpoint ckpt = strategy_->load_checkpoint(path);
  try {
    strategy_->load_model_state_dict(*model_, ckpt.state_dict);
  } catch (const Error& e) {
    VOLT_FAIL("loading '", path, "': ", e.what());
  }
  return ckpt;
}

Checkpoint Trainer::dump_checkpoint() { return detail::CheckpointConnector::dump(*this); }

void Trainer::save_checkpoint(const std::string& path) {
  strategy_->save_checkpoint(dump_checkpoint(), path);
}

}  // namespace volt

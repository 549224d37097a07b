#include "volt/trainer/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <mutex>

#include "metric_store.h"
#include "volt/checkpoint/load_state_dict.h"
#include "volt/checkpoint/state_dict.h"
#include "volt/core/autocast_guard.h"
#include "volt/error.h"
#include "volt/optim/optimizer_state.h"
#include "volt/trainer/csv_logger.h"
#include "volt/trainer/grad_scaler.h"
#include "volt/trainer/model_checkpoint.h"
#include "volt/trainer/progress_bar.h"

namespace volt {

namespace detail {
// Where a checkpoint was taken in the fit loop, so that a resume continues exactly there.
struct LoopPosition {
  int64_t epoch = 0;
  int64_t batches_done = 0;
  bool epoch_batches_complete = false;
  at::Tensor epoch_start_rng, rng;
};
}  // namespace detail

namespace {

const TrainerOptions& checked(const TrainerOptions& options) {
  const auto& s = options.strategy();
  if (s == "ddp" || s == "fsdp" || s == "zero1" || s == "zero2" || s == "zero3" || s == "deepspeed")
    VOLT_FAIL("strategy '", s, "' is not available in this version of volt yet: use \"auto\" or \"single\"");
  VOLT_CHECK(s == "auto" || s == "single", "unknown strategy '", s, "': use one of auto, single");
  VOLT_CHECK(options.accumulate_grad_batches() >= 1, "accumulate_grad_batches must be at least 1, not ",
             options.accumulate_grad_batches());
  VOLT_CHECK(options.gradient_clip_algorithm() == "norm" || options.gradient_clip_algorithm() == "value",
             "gradient_clip_algorithm '", options.gradient_clip_algorithm(), "': use \"norm\" or \"value\"");
  VOLT_CHECK(options.check_val_every_n_epoch() >= 1, "check_val_every_n_epoch must be at least 1");
  VOLT_CHECK(options.log_every_n_steps() >= 1, "log_every_n_steps must be at least 1");
  return options;
}

at::Tensor cpu_rng_state() { return at::detail::getDefaultCPUGenerator().get_state(); }
void set_cpu_rng_state(const at::Tensor& state) {
  at::Generator generator = at::detail::getDefaultCPUGenerator();  // shares the default generator
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
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

// Module::to(device, dtype) would cast integer buffers too (BatchNorm's num_batches_tracked into bfloat16):
// only floating tensors take the precision's dtype, as PyTorch's Module.to does.
void place(torch::nn::Module& module, c10::Device device, c10::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  auto move = [&](at::Tensor& t) {
    at::Tensor moved = at::isFloatingType(t.scalar_type()) ? t.to(device, dtype) : t.to(device);
    if (!moved.is_same(t)) t.set_data(moved);
  };
  for (auto& p : module.parameters()) move(p);
  for (auto& b : module.buffers()) move(b);
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
      accelerator_(options_.accelerator(), options_.devices()),
      metrics_(std::make_unique<detail::MetricStore>()) {
  VOLT_CHECK(accelerator_.devices().size() == 1, "devices=", options_.devices(), " resolves to ",
             accelerator_.devices().size(),
             " devices, which needs a distributed strategy that this version of ",
             "volt does not have yet: use devices=1");
  const auto& p = options_.precision();
  VOLT_CHECK(!(p.name() == "16-mixed" && accelerator_.type() == "cpu"),
             "precision '16-mixed' needs CUDA (LibTorch's CPU autocast computes in bfloat16 only): use "
             "'bf16-mixed' on the CPU");
  if (p.name() == "16-mixed") scaler_ = std::make_unique<GradScaler>();
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

Trainer::~Trainer() = default;

InitScope Trainer::init_module(bool empty_init) const {
  return InitScope(InitOptions()
                       .device(root_device())
                       .dtype(options_.precision().param_dtype())
                       .empty(empty_init)
                       .rng(options_.init_rng()));
}

const Metrics& Trainer::callback_metrics() const { return metrics_->callback_metrics(); }
const Metrics& Trainer::logged_metrics() const { return metrics_->logged_metrics(); }
const Metrics& Trainer::progress_bar_metrics() const { return metrics_->progress_bar_metrics(); }

std::string Trainer::log_dir() const {
  return loggers_.empty() ? options_.default_root_dir() : loggers_.front()->log_dir();
}

template <typename F>
void Trainer::each_callback(F&& f) {
  for (auto& callback : callbacks_) f(*callback);
}

void Trainer::setup(Module& model, const std::string& stage) {
  if (options_.seed()) torch::manual_seed(*options_.seed());
  if (options_.deterministic()) at::globalContext().setDeterministicAlgorithms(true, false);
  stage_ = stage;
  model_ = &model;
  model.set_log_sink(metrics_.get());
  {
    // The single-device strategy's init context: layers made here are born on the device, in the dtype.
    auto scope = init_module();
    model.configure_model();
  }
  // A model built outside init_module is converted once; one built inside is already there.
  const auto dtype = options_.precision().param_dtype();
  place(model, root_device(), dtype);
  if (!hparams_logged_ && !model.hparams().empty()) {
    std::vector<std::pair<std::string, std::string>> flat;
    flatten("", model.hparams().value(), flat);
    for (auto& logger : loggers_) logger->log_hyperparams(flat);
    hparams_logged_ = true;
  }
}

void Trainer::teardown(const std::string& status) {
  for (auto& logger : loggers_) logger->finalize(status);
  if (model_ != nullptr) model_->set_log_sink(nullptr);
  stage_.clear();
}

void Trainer::fit(Module& model, const BatchSource& train, const BatchSource& val,
                  const std::string& ckpt_path) {
  VOLT_CHECK(static_cast<bool>(train), "Trainer::fit needs a training loader");
  setup(model, "fit");
  optim_ = model.configure_optimizers();
  VOLT_CHECK(optim_.optimizer != nullptr, "configure_optimizers() returned no optimizer");
  VOLT_CHECK(optim_.interval == "epoch" || optim_.interval == "step", "OptimizerConfig::interval '",
             optim_.interval, "': use \"epoch\" or \"step\"");
  current_epoch_ = 0;
  global_step_ = 0;
  total_batches_ = 0;
  should_stop_ = false;
  detail::LoopPosition position;
  const bool resuming = !ckpt_path.empty();
  const int64_t max_epochs =
      options_.max_epochs() >= 0 ? options_.max_epochs() : (options_.max_steps() >= 0 ? INT64_MAX : 1000);
  try {
    if (resuming) restore(ckpt_path, position);
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
  const auto train_dtype = options_.precision().is_mixed()
                               ? c10::nullopt
                               : c10::optional<c10::ScalarType>(options_.precision().param_dtype());

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
    Batch batch = raw.to(root_device(), train_dtype);
    metrics_->set_batch_size(batch.size());
    at::Tensor loss;
    {
      c10::optional<AutocastGuard> autocast;
      if (options_.precision().is_mixed())
        autocast.emplace(root_device().type(), *options_.precision().autocast_dtype());
      loss = model.training_step(batch, batch_idx);
    }
    VOLT_CHECK(loss.defined() && loss.numel() == 1, "training_step must return the scalar loss to minimize");
    at::Tensor to_backward = k > 1 ? loss / static_cast<double>(k) : loss;
    if (scaler_) to_backward = scaler_->scale(to_backward);
    to_backward.backward();
    ++batch_idx;
    batches_done_ = batch_idx;
    ++total_batches_;
    const bool last = num_training_batches_ && batch_idx == *num_training_batches_;
    last_batch_stepped = false;
    if (batch_idx % k == 0 || last) {
      optimizer_step(model);
      last_batch_stepped = true;
    }
    if (last) epoch_batches_complete_ = true;
    // Step metrics go to the loggers on optimizer steps only (an accumulating batch has no step of its own).
    if (last_batch_stepped && (global_step_ % options_.log_every_n_steps() == 0 || last)) {
      auto step_metrics = metrics_->take_step_metrics();
      if (!step_metrics.empty()) {
        step_metrics["epoch"] = static_cast<double>(current_epoch_);
        for (auto& logger : loggers_) logger->log_metrics(step_metrics, global_step_);
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
  if (!last_batch_stepped) optimizer_step(model);  // a loader of unknown length ended mid-accumulation
  // Stopped before the epoch's end (max_steps, EarlyStopping mid-epoch): no end-of-epoch validation.
  const bool stopped_early = should_stop_ && !(num_training_batches_ && batch_idx >= *num_training_batches_);
  epoch_batches_complete_ = true;

  auto epoch_metrics = metrics_->end_epoch();
  if (!epoch_metrics.empty()) {
    epoch_metrics["epoch"] = static_cast<double>(current_epoch_);
    for (auto& logger : loggers_) logger->log_metrics(epoch_metrics, global_step_);
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
  bool finite = true;
  if (scaler_) finite = scaler_->unscale(optimizer);
  if (finite && options_.gradient_clip_val()) {
    const double clip = *options_.gradient_clip_val();
    if (options_.gradient_clip_algorithm() == "norm")
      torch::nn::utils::clip_grad_norm_(model.parameters(), clip);
    else
      torch::nn::utils::clip_grad_value_(model.parameters(), clip);
  }
  if (scaler_)
    scaler_->step(optimizer);
  else
    optimizer.step();
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
  const auto eval_dtype = options_.precision().is_mixed()
                              ? c10::nullopt
                              : c10::optional<c10::ScalarType>(options_.precision().param_dtype());
  int64_t batch_idx = 0;
  data.for_each([&](Batch&& raw) {
    if (batch_idx >= limit) return false;
    Batch batch = raw.to(root_device(), eval_dtype);
    metrics_->set_batch_size(batch.size());
    {
      c10::optional<AutocastGuard> autocast;
      if (options_.precision().is_mixed())
        autocast.emplace(root_device().type(), *options_.precision().autocast_dtype());
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
      for (auto& logger : loggers_) logger->log_metrics(to_log, global_step_);
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
    out = run_evaluation(
        data, stage, limit.resolve(data.num_batches(), testing ? "limit_test_batches" : "limit_val_batches"));
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

std::vector<at::Tensor> Trainer::predict(Module& model, const BatchSource& data) {
  setup(model, "predict");
  std::vector<at::Tensor> outputs;
  const int64_t limit = options_.limit_predict_batches().resolve(data.num_batches(), "limit_predict_batches");
  model.eval();
  torch::NoGradGuard no_grad;
  const auto dtype = options_.precision().is_mixed()
                         ? c10::nullopt
                         : c10::optional<c10::ScalarType>(options_.precision().param_dtype());
  int64_t batch_idx = 0;
  data.for_each([&](Batch&& raw) {
    if (batch_idx >= limit) return false;
    c10::optional<AutocastGuard> autocast;
    if (options_.precision().is_mixed())
      autocast.emplace(root_device().type(), *options_.precision().autocast_dtype());
    outputs.push_back(model.predict_step(raw.to(root_device(), dtype), batch_idx++));
    return true;
  });
  teardown("success");
  return outputs;
}

Checkpoint Trainer::dump_checkpoint() {
  VOLT_CHECK(model_ != nullptr, "dump_checkpoint needs a model: call it from a callback or after fit");
  Checkpoint ckpt;
  ckpt.state_dict = state_dict(*model_);
  ckpt.hyper_parameters = model_->hparams().value();
  ckpt.epoch = current_epoch_;
  ckpt.global_step = global_step_;
  if (optim_.optimizer) ckpt.optimizer_states.items().push_back(optimizer_state_dict(*optim_.optimizer));
  if (optim_.scheduler) ckpt.lr_schedulers.items().push_back(optim_.scheduler->state_dict());
  for (const auto& callback : callbacks_) {
    const auto key = callback->state_key();
    if (!key.empty()) ckpt.callbacks.to_dict().set(key, callback->state_dict());
  }
  // Lightning's progress counters (what its fit loop restores), plus what volt needs to resume mid-epoch.
  auto tracker = [](std::initializer_list<const char*> keys, int64_t n) {
    Value d = Value::dict();
    for (const char* k : keys) d.to_dict().set(k, n);
    return d;
  };
  auto progress = [&](std::initializer_list<const char*> keys, int64_t total, int64_t current) {
    Value d = Value::dict();
    d.to_dict().set("total", tracker(keys, total));
    d.to_dict().set("current", tracker(keys, current));
    return d;
  };
  // Between epochs (after fit, or before the first), current_epoch_ epochs are complete and none is open.
  const int64_t started = in_epoch_ ? current_epoch_ + 1 : current_epoch_;
  const int64_t done = in_epoch_ && epoch_batches_complete_ ? 1 : 0;
  const int64_t batches_in_epoch = in_epoch_ ? batches_done_ : 0;
  Value epoch_progress =
      progress({"ready", "started", "processed", "completed"}, current_epoch_, current_epoch_);
  for (const char* which : {"total", "current"}) {
    // Lightning saves at epoch end with the epoch processed but not yet completed.
    Dict& t = epoch_progress.to_dict().find(Value(which))->to_dict();
    t.set("ready", started);
    t.set("started", started);
    t.set("processed", current_epoch_ + done);
  }
  Value fit_loop = Value::dict();
  Dict& fl = fit_loop.to_dict();
  Value optimizer_progress = Value::dict();
  optimizer_progress.to_dict().set("step", progress({"ready", "completed"}, global_step_, global_step_));
  optimizer_progress.to_dict().set("zero_grad",
                                   progress({"ready", "started", "completed"}, global_step_, global_step_));
  Value optim_progress = Value::dict();
  optim_progress.to_dict().set("optimizer", optimizer_progress);
  fl.set("state_dict", Value::dict());
  fl.set("epoch_loop.state_dict", Value::dict());
  fl.find(Value("epoch_loop.state_dict"))->to_dict().set("_batches_that_stepped", global_step_);
  Value batch_progress =
      progress({"ready", "started", "processed", "completed"}, total_batches_, batches_in_epoch);
  batch_progress.to_dict().set("is_last_batch", in_epoch_ && epoch_batches_complete_);
  fl.set("epoch_loop.batch_progress", batch_progress);
  const int64_t scheduler_steps = optim_.scheduler ? optim_.scheduler->last_epoch() : 0;
  fl.set("epoch_loop.scheduler_progress", progress({"ready", "completed"}, scheduler_steps, scheduler_steps));
  fl.set("epoch_loop.automatic_optimization.optim_progress", optim_progress);
  fl.set("epoch_loop.automatic_optimization.state_dict", Value::dict());
  fl.set("epoch_progress", epoch_progress);
  Value volt_state = Value::dict();
  volt_state.to_dict().set("batches_done", batches_in_epoch);
  volt_state.to_dict().set("epoch_batches_complete", in_epoch_ && epoch_batches_complete_);
  volt_state.to_dict().set("epoch_start_rng_state",
                           epoch_start_rng_.defined() ? epoch_start_rng_ : cpu_rng_state());
  volt_state.to_dict().set("rng_state", cpu_rng_state());
  if (scaler_) {
    volt_state.to_dict().set("grad_scaler_scale", scaler_->current_scale());
    volt_state.to_dict().set("grad_scaler_growth_tracker", static_cast<int64_t>(scaler_->growth_tracker()));
  }
  fl.set("volt", volt_state);
  ckpt.loops.to_dict().set("fit_loop", fit_loop);
  each_callback([&](Callback& c) { c.on_save_checkpoint(*this, *model_, ckpt); });
  model_->on_save_checkpoint(ckpt);
  return ckpt;
}

void Trainer::save_checkpoint(const std::string& path) {
  const Checkpoint ckpt = dump_checkpoint();
  ckpt.save(path, /*lossy=*/path.size() >= 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0);
}

void Trainer::restore(const std::string& ckpt_path, detail::LoopPosition& position) {
  const Checkpoint ckpt = Checkpoint::load(ckpt_path);
  Module& model = *model_;
  try {
    load_state_dict(model, ckpt.state_dict, LoadOptions().zero_copy(false));
  } catch (const Error& e) {
    VOLT_FAIL("resuming from '", ckpt_path, "': ", e.what());
  }
  const auto& optimizers = ckpt.optimizer_states.items();
  VOLT_CHECK(!optimizers.empty(), "'", ckpt_path,
             "' holds no optimizer state, so training cannot resume from it: load its weights with "
             "volt::load_from_checkpoint and call fit without ckpt_path");
  load_optimizer_state_dict(*optim_.optimizer, optimizers.front());
  if (optim_.scheduler) {
    const auto& schedulers = ckpt.lr_schedulers.items();
    VOLT_CHECK(!schedulers.empty(), "'", ckpt_path,
               "' holds no lr_schedulers state but configure_optimizers() ", "returned a scheduler");
    optim_.scheduler->load_state_dict(schedulers.front());
  }
  for (auto& callback : callbacks_) {
    const auto key = callback->state_key();
    if (key.empty()) continue;
    if (const Value* state = ckpt.callbacks.to_dict().find(key)) callback->load_state_dict(*state);
  }
  current_epoch_ = ckpt.epoch;
  global_step_ = ckpt.global_step;
  position.epoch = ckpt.epoch;
  position.epoch_batches_complete = true;  // a checkpoint without loop state: taken at an epoch's end
  if (const Value* fit_loop = ckpt.loops.to_dict().find("fit_loop")) {
    const Dict& fl = fit_loop->to_dict();
    auto count = [&](const char* key, const char* which, const char* field) -> c10::optional<int64_t> {
      const Value* v = fl.find(Value(key));
      if (!v || !v->is_dict() || !v->to_dict().contains(Value(which))) return c10::nullopt;
      const Value* f = (*v)[which].to_dict().find(Value(field));
      return f && f->is_int() ? c10::optional<int64_t>(f->to_int()) : c10::nullopt;
    };
    // Lightning's counters: an epoch processed but not completed was saved at its end.
    if (auto processed = count("epoch_progress", "current", "processed"))
      position.epoch_batches_complete = *processed > ckpt.epoch;
    if (auto batches = count("epoch_loop.batch_progress", "current", "completed"))
      position.batches_done = *batches;
    if (auto total = count("epoch_loop.batch_progress", "total", "completed")) total_batches_ = *total;
    if (const Value* v = fl.find(Value("volt"))) {
      position.batches_done = (*v)["batches_done"].to_int();
      position.epoch_batches_complete = (*v)["epoch_batches_complete"].to_bool();
      position.epoch_start_rng = (*v)["epoch_start_rng_state"].to_tensor().clone();
      position.rng = (*v)["rng_state"].to_tensor().clone();
      set_cpu_rng_state(position.rng);
      if (scaler_ && v->to_dict().contains("grad_scaler_scale"))
        scaler_->restore((*v)["grad_scaler_scale"].to_double(), (*v)["grad_scaler_growth_tracker"].to_int());
    }
  }
  model.on_load_checkpoint(ckpt);
}

}  // namespace volt

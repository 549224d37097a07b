#include "checkpoint_connector.h"
#include "../core/rng_state.h"

#include <ATen/CPUGeneratorImpl.h>

#include <mutex>

#include "volt/checkpoint/load_state_dict.h"
#include "volt/checkpoint/state_dict.h"
#include "volt/error.h"
#include "volt/optim/optimizer_state.h"
#include "volt/trainer/trainer.h"

namespace volt::detail {

Checkpoint CheckpointConnector::dump(Trainer& t) {
  VOLT_CHECK(t.model_ != nullptr,
             "dump_checkpoint needs a model: call it from a callback, or after fit with a model owned by a "
             "std::shared_ptr (a TORCH_MODULE holder or std::make_shared), which the Trainer keeps");
  Checkpoint ckpt;
  ckpt.state_dict = t.strategy_->model_state_dict(*t.model_);
  ckpt.hyper_parameters = t.model_->hparams().value();
  ckpt.epoch = t.current_epoch_;
  ckpt.global_step = t.global_step_;
  const auto& optim = t.optim_;
  if (optim.optimizer)
    ckpt.optimizer_states.items().push_back(t.strategy_->optimizer_state_dict(*optim.optimizer));
  if (optim.scheduler) ckpt.lr_schedulers.items().push_back(optim.scheduler->state_dict());
  for (const auto& callback : t.callbacks_) {
    const auto key = callback->state_key();
    if (!key.empty()) ckpt.callbacks.to_dict().set(key, callback->state_dict());
  }
  LoopPosition position;
  position.epoch = t.current_epoch_;
  position.global_step = t.global_step_;
  position.batches_done = t.batches_done_;
  position.total_batches = t.total_batches_;
  position.epoch_batches_complete = t.epoch_batches_complete_;
  position.in_epoch = t.in_epoch_;
  position.scheduler_steps = optim.scheduler ? optim.scheduler->last_epoch() : 0;
  position.epoch_start_rng = t.epoch_start_rng_;
  position.rng = cpu_rng_state();
  ckpt.loops.to_dict().set("fit_loop", fit_loop_state(position));
  t.strategy_->precision_plugin().on_save_checkpoint(ckpt);
  for (auto& callback : t.callbacks_) callback->on_save_checkpoint(t, *t.model_, ckpt);
  t.model_->on_save_checkpoint(ckpt);
  return ckpt;
}

LoopPosition CheckpointConnector::restore(Trainer& t, const std::string& path) {
  const Checkpoint ckpt = t.strategy_->load_checkpoint(path);
  Module& model = *t.model_;
  try {
    t.strategy_->load_model_state_dict(model, ckpt.state_dict);
  } catch (const Error& e) {
    VOLT_FAIL("resuming from '", path, "': ", e.what());
  }
  const auto& optimizers = ckpt.optimizer_states.items();
  VOLT_CHECK(!optimizers.empty(), "'", path,
             "' holds no optimizer state, so training cannot resume from it: load its weights with "
             "volt::load_from_checkpoint and call fit without ckpt_path");
  t.strategy_->load_optimizer_state_dict(*t.optim_.optimizer, optimizers.front());
  if (t.optim_.scheduler) {
    const auto& schedulers = ckpt.lr_schedulers.items();
    VOLT_CHECK(!schedulers.empty(), "'", path, "' holds no lr_schedulers state but configure_optimizers() ",
               "returned a scheduler");
    t.optim_.scheduler->load_state_dict(schedulers.front());
  }
  for (auto& callback : t.callbacks_) {
    const auto key = callback->state_key();
    if (key.empty()) continue;
    if (const Value* state = ckpt.callbacks.to_dict().find(key)) callback->load_state_dict(*state);
  }
  t.current_epoch_ = ckpt.epoch;
  t.global_step_ = ckpt.global_step;
  LoopPosition position = read_fit_loop_state(ckpt);
  t.total_batches_ = position.total_batches;
  if (position.rng.defined()) set_cpu_rng_state(position.rng);
  t.strategy_->precision_plugin().on_load_checkpoint(ckpt);
  model.on_load_checkpoint(ckpt);
  return position;
}

}  // namespace volt::detail

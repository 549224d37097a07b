#include "loop_progress.h"

namespace volt::detail {
namespace {

Value tracker(std::initializer_list<const char*> keys, int64_t n) {
  Value d = Value::dict();
  for (const char* k : keys) d.to_dict().set(k, n);
  return d;
}

Value progress(std::initializer_list<const char*> keys, int64_t total, int64_t current) {
  Value d = Value::dict();
  d.to_dict().set("total", tracker(keys, total));
  d.to_dict().set("current", tracker(keys, current));
  return d;
}

}  // namespace

Value fit_loop_state(const LoopPosition& p) {
  // Between epochs (after fit, or before the first), `epoch` epochs are complete and none is open.
  const int64_t started = p.in_epoch ? p.epoch + 1 : p.epoch;
  const int64_t done = p.in_epoch && p.epoch_batches_complete ? 1 : 0;
  const int64_t batches_in_epoch = p.in_epoch ? p.batches_done : 0;
  Value epoch_progress = progress({"ready", "started", "processed", "completed"}, p.epoch, p.epoch);
  for (const char* which : {"total", "current"}) {
    // Lightning saves at epoch end with the epoch processed but not yet completed.
    Dict& t = epoch_progress.to_dict().find(Value(which))->to_dict();
    t.set("ready", started);
    t.set("started", started);
    t.set("processed", p.epoch + done);
  }
  Value fit_loop = Value::dict();
  Dict& fl = fit_loop.to_dict();
  Value optimizer_progress = Value::dict();
  optimizer_progress.to_dict().set("step", progress({"ready", "completed"}, p.global_step, p.global_step));
  optimizer_progress.to_dict().set("zero_grad",
                                   progress({"ready", "started", "completed"}, p.global_step, p.global_step));
  Value optim_progress = Value::dict();
  optim_progress.to_dict().set("optimizer", optimizer_progress);
  fl.set("state_dict", Value::dict());
  fl.set("epoch_loop.state_dict", Value::dict());
  fl.find(Value("epoch_loop.state_dict"))->to_dict().set("_batches_that_stepped", p.global_step);
  Value batch_progress =
      progress({"ready", "started", "processed", "completed"}, p.total_batches, batches_in_epoch);
  batch_progress.to_dict().set("is_last_batch", p.in_epoch && p.epoch_batches_complete);
  fl.set("epoch_loop.batch_progress", batch_progress);
  fl.set("epoch_loop.scheduler_progress",
         progress({"ready", "completed"}, p.scheduler_steps, p.scheduler_steps));
  fl.set("epoch_loop.automatic_optimization.optim_progress", optim_progress);
  fl.set("epoch_loop.automatic_optimization.state_dict", Value::dict());
  fl.set("epoch_progress", epoch_progress);
  Value volt_state = Value::dict();
  Dict& v = volt_state.to_dict();
  v.set("batches_done", batches_in_epoch);
  v.set("epoch_batches_complete", p.in_epoch && p.epoch_batches_complete);
  v.set("epoch_start_rng_state", p.epoch_start_rng.defined() ? p.epoch_start_rng : p.rng);
  v.set("rng_state", p.rng);
  for (const auto& [key, value] : p.extra) v.set(key, value);
  fl.set("volt", volt_state);
  return fit_loop;
}

LoopPosition read_fit_loop_state(const Checkpoint& ckpt) {
  LoopPosition position;
  position.epoch = ckpt.epoch;
  position.global_step = ckpt.global_step;
  position.epoch_batches_complete = true;  // a checkpoint without loop state: taken at an epoch's end
  const Value* fit_loop = ckpt.loops.to_dict().find(Value("fit_loop"));
  if (!fit_loop) return position;
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
  if (auto total = count("epoch_loop.batch_progress", "total", "completed")) position.total_batches = *total;
  if (const Value* v = fl.find(Value("volt"))) {
    position.batches_done = (*v)["batches_done"].to_int();
    position.epoch_batches_complete = (*v)["epoch_batches_complete"].to_bool();
    position.epoch_start_rng = (*v)["epoch_start_rng_state"].to_tensor().clone();
    position.rng = (*v)["rng_state"].to_tensor().clone();
    for (const auto& [key, value] : v->to_dict()) position.extra.set(key, value);
  }
  return position;
}

}  // namespace volt::detail

#include "volt/optim/lr_scheduler.h"

#include <cmath>

#include "volt/error.h"

namespace volt {

std::vector<double> learning_rates(const torch::optim::Optimizer& optimizer) {
  std::vector<double> lrs;
  for (const auto& group : optimizer.param_groups()) lrs.push_back(group.options().get_lr());
  return lrs;
}

LRScheduler::LRScheduler(torch::optim::Optimizer& optimizer) : optimizer_(optimizer) {
  base_lrs_ = learning_rates(optimizer);
}

void LRScheduler::initial_step() { step(); }

void LRScheduler::apply(const std::vector<double>& lrs) {
  auto& groups = optimizer_.param_groups();
  VOLT_CHECK(lrs.size() == groups.size(), "the optimizer has ", groups.size(), " param groups, the schedule ",
             lrs.size(), ": build the scheduler after every param group was added");
  for (size_t i = 0; i < groups.size(); ++i) groups[i].options().set_lr(lrs[i]);
  last_lr_ = lrs;
}

void LRScheduler::step() {
  ++step_count_;
  ++last_epoch_;
  apply(lr_at(last_epoch_));
}

Value LRScheduler::state_dict() const {
  Value state = Value::dict();
  Dict& d = state.to_dict();
  save_arguments(d);
  auto doubles = [](const std::vector<double>& xs) {
    std::vector<Value> items(xs.begin(), xs.end());
    return Value::list(std::move(items));
  };
  d.set("base_lrs", doubles(base_lrs_));
  d.set("last_epoch", last_epoch_);
  d.set("_step_count", step_count_);
  d.set("_get_lr_called_within_step", false);
  d.set("_last_lr", doubles(last_lr_));
  return state;
}

void LRScheduler::load_state_dict(const Value& state) {
  VOLT_CHECK(state.is_dict(), "a ", name(), " state is a dict, not a ", kind_name(state.kind()));
  base_lrs_.clear();
  for (const auto& lr : state["base_lrs"].items()) base_lrs_.push_back(lr.to_double());
  last_epoch_ = state["last_epoch"].to_int();
  step_count_ = state.to_dict().contains("_step_count") ? state["_step_count"].to_int() : last_epoch_ + 1;
  load_arguments(state);
  apply(lr_at(last_epoch_));
}

StepLR::StepLR(torch::optim::Optimizer& optimizer, int64_t step_size, double gamma)
    : LRScheduler(optimizer), step_size_(step_size), gamma_(gamma) {
  VOLT_CHECK(step_size > 0, "StepLR: step_size must be positive, not ", step_size);
  initial_step();
}

std::vector<double> StepLR::lr_at(int64_t epoch) const {
  std::vector<double> lrs;
  for (double base : base_lrs_)
    lrs.push_back(base * std::pow(gamma_, static_cast<double>(epoch / step_size_)));
  return lrs;
}

void StepLR::save_arguments(Dict& out) const {
  out.set("step_size", step_size_);
  out.set("gamma", gamma_);
}

void StepLR::load_arguments(const Value& state) {
  step_size_ = state["step_size"].to_int();
  gamma_ = state["gamma"].to_double();
}

CosineAnnealingLR::CosineAnnealingLR(torch::optim::Optimizer& optimizer, int64_t t_max, double eta_min)
    : LRScheduler(optimizer), t_max_(t_max), eta_min_(eta_min) {
  VOLT_CHECK(t_max > 0, "CosineAnnealingLR: T_max must be positive, not ", t_max);
  initial_step();
}

std::vector<double> CosineAnnealingLR::lr_at(int64_t epoch) const {
  std::vector<double> lrs;
  const double pi = std::acos(-1.0);
  for (double base : base_lrs_)
    lrs.push_back(eta_min_ +
                  (base - eta_min_) * (1 + std::cos(pi * static_cast<double>(epoch) / t_max_)) / 2);
  return lrs;
}

void CosineAnnealingLR::save_arguments(Dict& out) const {
  out.set("T_max", t_max_);
  out.set("eta_min", eta_min_);
}

void CosineAnnealingLR::load_arguments(const Value& state) {
  t_max_ = state["T_max"].to_int();
  eta_min_ = state["eta_min"].to_double();
}

}  // namespace volt

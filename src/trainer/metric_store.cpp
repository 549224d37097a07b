#include "metric_store.h"

#include <cmath>

namespace volt::detail {

void MetricStore::log(const std::string& name, double value, const LogOptions& options) {
  if (discard_) return;
  if (options.sync_dist() && sync_) value = sync_(value);  // every rank logs it: all reach this collective
  const bool training = stage_ == "train";
  const bool on_step = options.on_step().value_or(training);
  const bool on_epoch = options.on_epoch().value_or(!training);
  const bool both = on_step && on_epoch;
  if (on_step) {
    const std::string key = both ? name + "_step" : name;
    callback_[key] = value;
    if (both) callback_[name] = value;
    if (options.logger()) {
      step_for_logger_[key] = value;
      logged_[key] = value;
    }
    if (options.prog_bar()) progress_bar_[key] = value;
  }
  if (on_epoch) {
    auto& acc = epoch_[name];
    const double weight = static_cast<double>(options.batch_size().value_or(batch_size_));
    acc.weighted_sum += value * weight;
    acc.weight += weight;
    acc.to_logger = options.logger();
    acc.prog_bar = options.prog_bar();
    acc.both = both;
  }
}

Metrics MetricStore::take_step_metrics() {
  Metrics out;
  out.swap(step_for_logger_);
  return out;
}

Metrics MetricStore::end_epoch() {
  Metrics for_logger;
  for (const auto& [name, acc] : epoch_) {
    if (acc.weight <= 0) continue;
    const double mean = acc.weighted_sum / acc.weight;
    const std::string key = acc.both ? name + "_epoch" : name;
    callback_[key] = mean;
    callback_[name] = mean;
    if (acc.to_logger) {
      logged_[key] = mean;
      for_logger[key] = mean;
    }
    if (acc.prog_bar) {
      progress_bar_[key] = mean;
      if (acc.both) progress_bar_.erase(name + "_step");
    }
  }
  epoch_.clear();
  return for_logger;
}

}  // namespace volt::detail

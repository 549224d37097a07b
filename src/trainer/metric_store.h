// What Module::log() records while a loop runs (Lightning's logger connector): step values, epoch means
// weighted by batch size, and the three views the Trainer exposes — callback, logged and progress-bar
// metrics. Internal to the Trainer.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "volt/core/module.h"

namespace volt::detail {

class MetricStore : public LogSink {
 public:
  /// "train", "validate", "test" or "predict": decides the on_step / on_epoch defaults.
  void set_stage(const std::string& stage) { stage_ = stage; }
  void set_batch_size(int64_t batch_size) { batch_size_ = batch_size; }
  /// Sanity-check validation: values are computed but never kept.
  void set_discard(bool discard) { discard_ = discard; }

  void log(const std::string& name, double value, const LogOptions& options) override;
  /// How `sync_dist` values are averaged across ranks (the strategy's reduce); unset: one process.
  void set_sync(std::function<double(double)> mean_across_ranks) { sync_ = std::move(mean_across_ranks); }

  /// The loggers' share of what was logged per step since the last call.
  Metrics take_step_metrics();
  /// Ends the epoch of the current stage: means become callback/logged metrics; returns the loggers' share.
  Metrics end_epoch();

  const Metrics& callback_metrics() const { return callback_; }
  const Metrics& logged_metrics() const { return logged_; }
  const Metrics& progress_bar_metrics() const { return progress_bar_; }

 private:
  struct Accumulator {
    double weighted_sum = 0;
    double weight = 0;
    bool to_logger = true;
    bool prog_bar = false;
    bool both = false;  // on_step too: the epoch key gets an "_epoch" suffix
  };
  std::string stage_ = "train";
  int64_t batch_size_ = 1;
  bool discard_ = false;
  std::function<double(double)> sync_;
  Metrics step_for_logger_;
  std::map<std::string, Accumulator> epoch_;
  Metrics callback_, logged_, progress_bar_;
};

}  // namespace volt::detail

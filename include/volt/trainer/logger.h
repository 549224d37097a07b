// Where a run's logged metrics and hyper-parameters go, as Lightning's loggers: volt::CSVLogger writes
// metrics.csv, volt::TensorBoardLogger writes tfevents files. The Trainer calls these; users pick one or
// several with TrainerOptions().logger(...).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace volt {

class Logger {
 public:
  virtual ~Logger() = default;
  /// The folder under the save dir that holds the version_N runs (Lightning's `name`, "lightning_logs" by
  /// default).
  virtual std::string name() const = 0;
  /// This run's folder (Lightning's `log_dir`: root_dir/name/version_N), created on first use.
  virtual std::string log_dir() const = 0;
  /// Hyper-parameters flattened to "key" -> printable value (nested keys joined with '/').
  virtual void log_hyperparams(const std::vector<std::pair<std::string, std::string>>& hparams) = 0;
  /// One row of metrics at a global step (Lightning adds "epoch" as a metric; the Trainer does too).
  virtual void log_metrics(const std::map<std::string, double>& metrics, int64_t step) = 0;
  /// Write what is buffered to disk (Lightning's `save()`).
  virtual void flush() = 0;
  /// The run ended ("success", "failed", "interrupted"): flush and close files.
  virtual void finalize(const std::string& status) = 0;
};

}  // namespace volt

// Metrics as a CSV table, as Lightning's CSVLogger: <save_dir>/<name>/version_<N>/metrics.csv with one row
// per log_metrics call (a "step" column and one per metric key, sorted), and hparams.yaml beside it.
// `volt::CSVLogger logger(volt::CSVLoggerOptions().save_dir("runs").flush_logs_every_n_steps(50));`
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "volt/trainer/logger.h"

namespace volt {

namespace detail {
class LoggerFiles;
}

struct CSVLoggerOptions {
  CSVLoggerOptions() = default;
  explicit CSVLoggerOptions(std::string save_dir) : save_dir_(std::move(save_dir)) {}

  /// The folder that holds `name`.
  TORCH_ARG(std::string, save_dir) = ".";
  /// The folder of the versions under save_dir; empty puts version_N straight in save_dir.
  TORCH_ARG(std::string, name) = "lightning_logs";
  /// version_N to write into; -1 for one past the largest existing N.
  TORCH_ARG(int64_t, version) = -1;
  /// Rows stay in memory until a step N with (N + 1) % this == 0, a flush() or finalize().
  TORCH_ARG(int64_t, flush_logs_every_n_steps) = 100;
};

class CSVLogger : public Logger {
 public:
  explicit CSVLogger(CSVLoggerOptions options);
  /// Writes what is still buffered; errors are dropped here (call finalize() to see them).
  ~CSVLogger() override;
  CSVLogger(const CSVLogger&) = delete;
  CSVLogger& operator=(const CSVLogger&) = delete;

  /// The options' name (the folder under save_dir).
  std::string name() const override;
  std::string log_dir() const override;
  /// The version in use: the given one, or the next free one once log_dir() chose it.
  int64_t version() const;
  const CSVLoggerOptions& options() const { return options_; }

  void log_hyperparams(const std::vector<std::pair<std::string, std::string>>& hparams) override;
  void log_metrics(const std::map<std::string, double>& metrics, int64_t step) override;
  void flush() override;
  void finalize(const std::string& status) override;

 private:
  // Lightning's _ExperimentWriter: on first use it removes a metrics.csv left in the folder.
  void start();

  CSVLoggerOptions options_;
  std::unique_ptr<detail::LoggerFiles> files_;
  bool started_ = false;
  std::vector<std::string> keys_;                                        // the header, sorted
  std::vector<std::pair<int64_t, std::map<std::string, double>>> rows_;  // (step, metrics) not yet written
};

}  // namespace volt

// Metrics as TensorBoard scalars, as Lightning's TensorBoardLogger: a tfevents file in
// <save_dir>/<name>/version_<N>/ that `tensorboard --logdir <save_dir>` shows, and hparams.yaml beside it.
// `volt::TensorBoardLogger logger(volt::TensorBoardLoggerOptions().save_dir("runs"));`
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <fstream>
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

struct TensorBoardLoggerOptions {
  TensorBoardLoggerOptions() = default;
  explicit TensorBoardLoggerOptions(std::string save_dir) : save_dir_(std::move(save_dir)) {}

  /// The folder that holds `name` (TensorBoard's --logdir).
  TORCH_ARG(std::string, save_dir) = ".";
  /// The folder of the versions under save_dir; empty puts version_N straight in save_dir.
  TORCH_ARG(std::string, name) = "lightning_logs";
  /// version_N to write into; -1 for one past the largest existing N.
  TORCH_ARG(int64_t, version) = -1;
};

class TensorBoardLogger : public Logger {
 public:
  explicit TensorBoardLogger(TensorBoardLoggerOptions options);
  /// Writes what is still buffered; errors are dropped here (call finalize() to see them).
  ~TensorBoardLogger() override;
  TensorBoardLogger(const TensorBoardLogger&) = delete;
  TensorBoardLogger& operator=(const TensorBoardLogger&) = delete;

  /// The options' name (the folder under save_dir).
  std::string name() const override;
  std::string log_dir() const override;
  /// The version in use: the given one, or the next free one once log_dir() chose it.
  int64_t version() const;
  /// The events file being written; empty before the first log and after finalize().
  const std::string& event_file() const { return event_file_; }
  const TensorBoardLoggerOptions& options() const { return options_; }

  /// Written to hparams.yaml (TensorBoard's HParams plugin records are not written).
  void log_hyperparams(const std::vector<std::pair<std::string, std::string>>& hparams) override;
  /// One scalar event per metric, tagged with its key, at `step`.
  void log_metrics(const std::map<std::string, double>& metrics, int64_t step) override;
  void flush() override;
  void finalize(const std::string& status) override;

 private:
  // Opens events.out.tfevents.<unix seconds>.<host>.<pid>.<n> with its file_version record.
  void open();
  void write_pending();

  TensorBoardLoggerOptions options_;
  std::unique_ptr<detail::LoggerFiles> files_;
  std::string event_file_;
  std::ofstream out_;
  std::string pending_;  // framed records not yet written
};

}  // namespace volt

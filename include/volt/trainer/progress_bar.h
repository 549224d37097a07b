// The Trainer's progress display: on a terminal, a live bar per epoch with it/s, ETA and the prog_bar
// metrics (Lightning's TQDMProgressBar); when output is not a terminal (CI logs, files), plain lines every
// `refresh_rate` batches and at each epoch's end, so logs stay readable.
#pragma once

#include <c10/util/Optional.h>
#include <torch/arg.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "volt/trainer/callback.h"

namespace volt {

struct ProgressBarOptions {
  using Stream = std::FILE*;
  /// Batches between updates; 0: every batch on a terminal, about 10 lines per epoch otherwise.
  TORCH_ARG(int64_t, refresh_rate) = 0;
  /// Where to draw; nullptr: stdout.
  TORCH_ARG(Stream, stream) = nullptr;
  /// Draw a live bar even when the stream is not a terminal (tests).
  TORCH_ARG(c10::optional<bool>, live) = c10::nullopt;
};

class ProgressBar : public Callback {
 public:
  explicit ProgressBar(ProgressBarOptions options = {});

  void on_train_epoch_start(Trainer& trainer, Module& model) override;
  void on_train_batch_end(Trainer& trainer, Module& model, int64_t batch_idx) override;
  void on_train_epoch_end(Trainer& trainer, Module& model) override;
  void on_validation_start(Trainer& trainer, Module& model) override;
  void on_validation_batch_end(Trainer& trainer, Module& model, int64_t batch_idx) override;
  void on_validation_end(Trainer& trainer, Module& model) override;
  void on_test_start(Trainer& trainer, Module& model) override;
  void on_test_batch_end(Trainer& trainer, Module& model, int64_t batch_idx) override;
  void on_test_end(Trainer& trainer, Module& model) override;

  /// One line of the display: "Epoch 2: 45%|████▌     | 211/469 [00:04<00:05, 48.61it/s, loss=0.412]".
  static std::string render(const std::string& label, int64_t done, c10::optional<int64_t> total,
                            double elapsed_seconds, const std::string& metrics, int width = 10);

 private:
  void draw(Trainer& trainer, const std::string& label, int64_t done, c10::optional<int64_t> total,
            bool final);
  std::FILE* stream() const { return options_.stream() ? options_.stream() : stdout; }
  ProgressBarOptions options_;
  bool live_;
  std::chrono::steady_clock::time_point start_;
  std::string label_;
};

}  // namespace volt

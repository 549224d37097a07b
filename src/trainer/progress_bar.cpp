#include "volt/trainer/progress_bar.h"

#include <unistd.h>

#include <cmath>

#include "volt/trainer/trainer.h"

namespace volt {
namespace {

std::string clock(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long s = std::lround(seconds);
  char text[32];
  if (s >= 3600)
    std::snprintf(text, sizeof text, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(text, sizeof text, "%02ld:%02ld", s / 60, s % 60);
  return text;
}

std::string metrics_text(const Trainer& trainer) {
  std::string out;
  char text[96];
  for (const auto& [name, value] : trainer.progress_bar_metrics()) {
    std::snprintf(text, sizeof text, "%s=%.3g", name.c_str(), value);
    out += std::string(out.empty() ? "" : ", ") + text;
  }
  return out;
}

}  // namespace

ProgressBar::ProgressBar(ProgressBarOptions options) : options_(options) {
  live_ = options_.live().value_or(isatty(fileno(stream())) != 0);
}

std::string ProgressBar::render(const std::string& label, int64_t done, c10::optional<int64_t> total,
                                double elapsed, const std::string& metrics, int width) {
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
  char rate_text[32];
  std::snprintf(rate_text, sizeof rate_text, rate >= 1 || rate == 0 ? "%.2fit/s" : "%.2fs/it",
                rate >= 1 || rate == 0 ? rate : 1.0 / rate);
  std::string line = label + ": ";
  if (total && *total > 0) {
    const double fraction = std::min(1.0, static_cast<double>(done) / static_cast<double>(*total));
    char pct[8];
    std::snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(fraction * 100));
    // Eighths of a block, as tqdm draws.
    static const char* kParts[] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"};
    const int eighths = static_cast<int>(fraction * width * 8);
    std::string bar;
    for (int i = 0; i < eighths / 8; ++i) bar += "█";
    int cells = eighths / 8;
    if (cells < width && eighths % 8) {
      bar += kParts[eighths % 8];
      ++cells;
    }
    bar += std::string(static_cast<size_t>(width - cells), ' ');
    const double eta = rate > 0 ? static_cast<double>(*total - done) / rate : NAN;
    line += std::string(pct) + "|" + bar + "| " + std::to_string(done) + "/" + std::to_string(*total) + " [" +
            clock(elapsed) + "<" + clock(eta) + ", " + rate_text;
  } else {
    line += std::to_string(done) + " [" + clock(elapsed) + ", " + rate_text;
  }
  if (!metrics.empty()) line += ", " + metrics;
  return line + "]";
}

void ProgressBar::draw(Trainer& trainer, const std::string& label, int64_t done, c10::optional<int64_t> total,
                       bool final) {
  if (!trainer.is_global_zero()) return;  // one bar per run, as Lightning's rank-zero-only progress bar
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const std::string line = render(label, done, total, elapsed, metrics_text(trainer));
  if (live_) {
    std::fprintf(stream(), "\r%s\033[K%s", line.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(stream(), "%s\n", line.c_str());
  }
  std::fflush(stream());
}

void ProgressBar::on_train_epoch_start(Trainer& trainer, Module&) {
  start_ = std::chrono::steady_clock::now();
  label_ = "Epoch " + std::to_string(trainer.current_epoch());
}

void ProgressBar::on_train_batch_end(Trainer& trainer, Module&, int64_t batch_idx) {
  const int64_t done = batch_idx + 1;
  const auto total = trainer.num_training_batches();
  int64_t every = options_.refresh_rate();
  if (every <= 0) every = live_ ? 1 : (total ? std::max<int64_t>(1, *total / 10) : 50);
  if (done % every == 0 && !(total && done == *total)) draw(trainer, label_, done, total, false);
}

void ProgressBar::on_train_epoch_end(Trainer& trainer, Module&) {
  const auto total = trainer.num_training_batches();
  draw(trainer, label_, total.value_or(0), total, true);
}

void ProgressBar::on_validation_start(Trainer& trainer, Module&) {
  if (!live_) return;
  draw(trainer, trainer.sanity_checking() ? "Sanity Checking" : "Validation", 0, trainer.num_eval_batches(),
       false);
}

void ProgressBar::on_validation_batch_end(Trainer& trainer, Module&, int64_t batch_idx) {
  if (live_)
    draw(trainer, trainer.sanity_checking() ? "Sanity Checking" : "Validation", batch_idx + 1,
         trainer.num_eval_batches(), false);
}

void ProgressBar::on_validation_end(Trainer&, Module&) {
  // The training bar is drawn again by the next batch; clear the validation line.
  if (live_) std::fprintf(stream(), "\r\033[K");
}

void ProgressBar::on_test_start(Trainer& trainer, Module&) {
  start_ = std::chrono::steady_clock::now();
  if (live_) draw(trainer, "Testing", 0, trainer.num_eval_batches(), false);
}

void ProgressBar::on_test_batch_end(Trainer& trainer, Module&, int64_t batch_idx) {
  if (live_) draw(trainer, "Testing", batch_idx + 1, trainer.num_eval_batches(), false);
}

void ProgressBar::on_test_end(Trainer& trainer, Module&) {
  const auto total = trainer.num_eval_batches();
  draw(trainer, "Testing", total.value_or(0), total, true);
}

}  // namespace volt

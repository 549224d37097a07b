// Lightning's ModelCheckpoint: saves checkpoints every N epochs or N optimizer steps, keeps the best
// `save_top_k` by a monitored metric (deleting the others), and optionally `last.ckpt`.
//
//   auto ckpt = std::make_shared<volt::ModelCheckpoint>(volt::ModelCheckpointOptions()
//       .monitor("val_acc").mode("max").save_top_k(2).save_last(true)
//       .filename("{epoch}-{val_acc:.3f}"));      // epoch=3-val_acc=0.912.ckpt
#pragma once

#include <c10/util/Optional.h>
#include <torch/arg.h>

#include <map>
#include <string>

#include "volt/trainer/callback.h"

namespace volt {

struct ModelCheckpointOptions {
  /// Folder; empty: `<trainer.log_dir()>/checkpoints`.
  TORCH_ARG(std::string, dirpath) = "";
  /// Name template without extension: `{epoch}`, `{step}` and any metric, with an optional printf-style
  /// format (`{val_loss:.2f}`); names are inserted (`epoch=3`). Empty: "{epoch}-{step}".
  TORCH_ARG(std::string, filename) = "";
  /// Metric to rank checkpoints by; empty: the latest checkpoints are kept.
  TORCH_ARG(std::string, monitor) = "";
  /// "min" or "max".
  TORCH_ARG(std::string, mode) = "min";
  /// How many to keep: -1 all, 0 none (with save_last, only last.ckpt).
  TORCH_ARG(int64_t, save_top_k) = 1;
  TORCH_ARG(bool, save_last) = false;
  /// Save every N optimizer steps (0: off; then every_n_epochs applies).
  TORCH_ARG(int64_t, every_n_train_steps) = 0;
  TORCH_ARG(int64_t, every_n_epochs) = 1;
  /// ".ckpt" (everything, resumable) or ".safetensors" (weights only).
  TORCH_ARG(std::string, extension) = ".ckpt";
};

class ModelCheckpoint : public Callback {
 public:
  explicit ModelCheckpoint(ModelCheckpointOptions options = {});

  void on_fit_start(Trainer& trainer, Module& model) override;
  void on_train_batch_end(Trainer& trainer, Module& model, int64_t batch_idx) override;
  void on_validation_end(Trainer& trainer, Module& model) override;
  void on_train_epoch_end(Trainer& trainer, Module& model) override;

  std::string state_key() const override;
  Value state_dict() const override;
  void load_state_dict(const Value& state) override;

  const std::string& best_model_path() const { return best_model_path_; }
  c10::optional<double> best_model_score() const { return best_model_score_; }
  const std::string& last_model_path() const { return last_model_path_; }
  /// path -> score of the checkpoints kept.
  const std::map<std::string, double>& best_k_models() const { return best_k_models_; }
  const std::string& dirpath() const { return dirpath_; }
  /// The file name (with extension) the template gives for these values.
  std::string format_filename(int64_t epoch, int64_t step,
                              const std::map<std::string, double>& metrics) const;

 private:
  void save(Trainer& trainer);
  bool better(double a, double b) const;
  ModelCheckpointOptions options_;
  std::string dirpath_;
  std::map<std::string, double> best_k_models_;
  std::string best_model_path_, last_model_path_, kth_best_model_path_;
  c10::optional<double> best_model_score_;
  int64_t last_saved_step_ = -1;
  int64_t last_validated_epoch_ = -1;
  int64_t last_saved_epoch_ = -1;
};

}  // namespace volt

#include "volt/trainer/model_checkpoint.h"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "volt/error.h"
#include "volt/trainer/trainer.h"

namespace volt {
namespace fs = std::filesystem;

ModelCheckpoint::ModelCheckpoint(ModelCheckpointOptions options) : options_(std::move(options)) {
  VOLT_CHECK(options_.mode() == "min" || options_.mode() == "max", "ModelCheckpoint mode '", options_.mode(),
             "': use \"min\" or \"max\"");
  VOLT_CHECK(options_.save_top_k() >= -1, "ModelCheckpoint save_top_k must be -1, 0 or more, not ",
             options_.save_top_k());
  VOLT_CHECK(options_.every_n_train_steps() >= 0 && options_.every_n_epochs() >= 0,
             "ModelCheckpoint every_n_train_steps and every_n_epochs cannot be negative");
  VOLT_CHECK(options_.extension() == ".ckpt" || options_.extension() == ".pt" ||
                 options_.extension() == ".safetensors",
             "ModelCheckpoint extension '", options_.extension(), "': use .ckpt, .pt or .safetensors");
}

void ModelCheckpoint::on_fit_start(Trainer& trainer, Module&) {
  if (dirpath_.empty())
    dirpath_ = options_.dirpath().empty() ? trainer.log_dir() + "/checkpoints" : options_.dirpath();
}

bool ModelCheckpoint::better(double a, double b) const { return options_.mode() == "min" ? a < b : a > b; }

std::string ModelCheckpoint::format_filename(int64_t epoch, int64_t step,
                                             const std::map<std::string, double>& metrics) const {
  const std::string pattern = options_.filename().empty() ? "{epoch}-{step}" : options_.filename();
  std::string out;
  for (size_t i = 0; i < pattern.size();) {
    if (pattern[i] != '{') {
      out += pattern[i++];
      continue;
    }
    const size_t close = pattern.find('}', i);
    VOLT_CHECK(close != std::string::npos, "ModelCheckpoint filename '", pattern, "' has an unclosed '{'");
    std::string field = pattern.substr(i + 1, close - i - 1), format;
    if (const size_t colon = field.find(':'); colon != std::string::npos) {
      format = field.substr(colon + 1);
      field = field.substr(0, colon);
    }
    char text[64];
    if (field == "epoch" || field == "step") {
      // "{epoch:03d}" -> "%03lld"
      if (!format.empty() && format.back() == 'd') format.pop_back();
      const long long v = field == "epoch" ? epoch : step;
      std::snprintf(text, sizeof text, ("%" + format + "lld").c_str(), v);
    } else {
      auto it = metrics.find(field);
      VOLT_CHECK(it != metrics.end(), "ModelCheckpoint filename names '", field,
                 "', which was not logged: log it with Module::log or fix the template");
      std::snprintf(text, sizeof text, ("%" + (format.empty() ? std::string(".4f") : format)).c_str(),
                    it->second);
    }
    out += field + "=" + text;
    i = close + 1;
  }
  return out + options_.extension();
}

void ModelCheckpoint::save(Trainer& trainer) {
  if (trainer.sanity_checking() || trainer.stage() != Stage::kFit) return;
  if (last_saved_step_ == trainer.global_step() && last_saved_epoch_ == trainer.current_epoch()) return;
  last_saved_step_ = trainer.global_step();
  last_saved_epoch_ = trainer.current_epoch();
  fs::create_directories(dirpath_);
  const auto& metrics = trainer.callback_metrics();
  c10::optional<double> score;
  if (!options_.monitor().empty()) {
    auto it = metrics.find(options_.monitor());
    if (it == metrics.end()) {
      std::string names;
      for (const auto& [k, v] : metrics) names += (names.empty() ? "" : ", ") + k;
      VOLT_FAIL("ModelCheckpoint(monitor='", options_.monitor(),
                "') found no such metric; logged: ", names.empty() ? "none" : names,
                ". Log it with Module::log or fix monitor");
    }
    score = it->second;
  }
  const std::string path =
      dirpath_ + "/" + format_filename(trainer.current_epoch(), trainer.global_step(), metrics);
  const int64_t k = options_.save_top_k();
  if (k != 0) {
    bool keep = true;
    if (score && k > 0 && static_cast<int64_t>(best_k_models_.size()) >= k) {
      // Full: the new one must beat the worst kept.
      keep = std::isfinite(*score) && better(*score, best_k_models_.at(kth_best_model_path_));
    }
    if (keep) {
      // The bookkeeping is updated first, so that the checkpoint carries the state that includes itself
      // (as Lightning's _update_best_and_save); the evicted file goes only once the new one is on disk.
      // Without a monitor the newest wins; NaN never ranks (as Lightning, which maps it to +/-inf).
      const double ranked =
          score ? (std::isnan(*score) ? (options_.mode() == "min" ? INFINITY : -INFINITY) : *score)
                : static_cast<double>(trainer.global_step()) * (options_.mode() == "min" ? -1 : 1);
      best_k_models_[path] = ranked;
      std::string evicted;
      if (k > 0 && static_cast<int64_t>(best_k_models_.size()) > k) {
        auto worst = best_k_models_.begin();
        for (auto it = best_k_models_.begin(); it != best_k_models_.end(); ++it)
          if (better(worst->second, it->second)) worst = it;
        if (worst->first != path) evicted = worst->first;
        best_k_models_.erase(worst);
      }
      auto best = best_k_models_.begin(), kth = best_k_models_.begin();
      for (auto it = best_k_models_.begin(); it != best_k_models_.end(); ++it) {
        if (better(it->second, best->second)) best = it;
        if (better(kth->second, it->second)) kth = it;
      }
      best_model_path_ = best->first;
      kth_best_model_path_ = kth->first;
      if (score) best_model_score_ = best->second;
      trainer.save_checkpoint(path);
      if (!evicted.empty() && trainer.is_global_zero()) fs::remove_all(evicted);  // sharded: a directory
    }
  }
  if (options_.save_last()) {
    last_model_path_ = dirpath_ + "/last" + options_.extension();
    trainer.save_checkpoint(last_model_path_);
  }
}

void ModelCheckpoint::on_train_batch_end(Trainer& trainer, Module&, int64_t) {
  const int64_t n = options_.every_n_train_steps();
  if (n > 0 && trainer.global_step() > 0 && trainer.global_step() % n == 0) save(trainer);
}

void ModelCheckpoint::on_validation_end(Trainer& trainer, Module&) {
  if (trainer.sanity_checking() || trainer.stage() != Stage::kFit) return;
  last_validated_epoch_ = trainer.current_epoch();
  const int64_t n = options_.every_n_epochs();
  if (options_.every_n_train_steps() == 0 && n > 0 && (trainer.current_epoch() + 1) % n == 0) save(trainer);
}

void ModelCheckpoint::on_train_epoch_end(Trainer& trainer, Module&) {
  const int64_t n = options_.every_n_epochs();
  if (options_.every_n_train_steps() == 0 && n > 0 && last_validated_epoch_ != trainer.current_epoch() &&
      (trainer.current_epoch() + 1) % n == 0)
    save(trainer);
}

std::string ModelCheckpoint::state_key() const {
  // Lightning's key, so that its checkpoints and volt's restore each other's callback state.
  const std::string monitor = options_.monitor().empty() ? "None" : "'" + options_.monitor() + "'";
  return "ModelCheckpoint{'monitor': " + monitor + ", 'mode': '" + options_.mode() +
         "', 'every_n_train_steps': " + std::to_string(options_.every_n_train_steps()) +
         ", 'every_n_epochs': " + std::to_string(options_.every_n_epochs()) +
         ", 'train_time_interval': None}";
}

Value ModelCheckpoint::state_dict() const {
  Value state = Value::dict();
  Dict& d = state.to_dict();
  d.set("monitor", options_.monitor().empty() ? Value() : Value(options_.monitor()));
  d.set("best_model_score", best_model_score_ ? Value(*best_model_score_) : Value());
  d.set("best_model_path", best_model_path_);
  d.set("current_score", Value());
  d.set("dirpath", dirpath_);
  Value best = Value::dict();
  for (const auto& [path, score] : best_k_models_) best.to_dict().set(path, score);
  d.set("best_k_models", best);
  d.set("kth_best_model_path", kth_best_model_path_);
  d.set("kth_value", kth_best_model_path_.empty() ? Value() : Value(best_k_models_.at(kth_best_model_path_)));
  d.set("last_model_path", last_model_path_);
  return state;
}

void ModelCheckpoint::load_state_dict(const Value& state) {
  const Dict& d = state.to_dict();
  if (const Value* v = d.find("dirpath"); v && v->is_string() && options_.dirpath().empty())
    dirpath_ = v->to_string();
  best_k_models_.clear();
  if (const Value* v = d.find("best_k_models"); v && v->is_dict())
    for (const auto& [path, score] : v->to_dict())
      best_k_models_[path.to_string()] =
          score.is_tensor() ? score.to_tensor().item<double>() : score.to_double();
  auto text = [&](const char* key) {
    const Value* v = d.find(key);
    return v && v->is_string() ? v->to_string() : std::string();
  };
  best_model_path_ = text("best_model_path");
  kth_best_model_path_ = text("kth_best_model_path");
  last_model_path_ = text("last_model_path");
  if (const Value* v = d.find("best_model_score"); v && !v->is_none())
    best_model_score_ = v->is_tensor() ? v->to_tensor().item<double>() : v->to_double();
}

}  // namespace volt

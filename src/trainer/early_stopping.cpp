#include "volt/trainer/early_stopping.h"

#include "volt/error.h"
#include "volt/trainer/trainer.h"

namespace volt {

EarlyStopping::EarlyStopping(EarlyStoppingOptions options) : options_(std::move(options)) {
  VOLT_CHECK(options_.mode() == "min" || options_.mode() == "max", "EarlyStopping mode '", options_.mode(),
             "': use \"min\" or \"max\"");
  VOLT_CHECK(options_.patience() >= 0, "EarlyStopping patience cannot be negative");
  best_score_ = options_.mode() == "min" ? INFINITY : -INFINITY;
}

void EarlyStopping::on_validation_end(Trainer& trainer, Module&) {
  if (trainer.sanity_checking() || trainer.stage() != Stage::kFit) return;
  const auto& metrics = trainer.callback_metrics();
  auto it = metrics.find(options_.monitor());
  if (it == metrics.end()) {
    VOLT_CHECK(!options_.strict(), "EarlyStopping(monitor='", options_.monitor(),
               "') found no such metric: log it in validation_step, or pass strict(false)");
    return;
  }
  const double score = it->second;
  // Lightning's rule: improvement is beating the best by more than min_delta (sign per mode).
  const double delta =
      options_.mode() == "min" ? -std::abs(options_.min_delta()) : std::abs(options_.min_delta());
  const bool improved = std::isfinite(score) && (options_.mode() == "min" ? score - delta < best_score_
                                                                          : score - delta > best_score_);
  bool stop = false;
  if (improved) {
    best_score_ = score;
    wait_count_ = 0;
  } else if (++wait_count_ >= options_.patience() || !std::isfinite(score)) {
    stop = true;
  }
  // Ranks stop together (each may see its own shard's metric): one rank's decision stops all, as Lightning.
  if (trainer.strategy().reduce_boolean_decision(stop, /*all=*/false)) {
    stopped_epoch_ = trainer.current_epoch();
    trainer.request_stop();
  }
}

std::string EarlyStopping::state_key() const {
  return "EarlyStopping{'monitor': '" + options_.monitor() + "', 'mode': '" + options_.mode() + "'}";
}

Value EarlyStopping::state_dict() const {
  Value state = Value::dict();
  state.to_dict().set("wait_count", wait_count_);
  state.to_dict().set("stopped_epoch", stopped_epoch_);
  state.to_dict().set("best_score", best_score_);
  state.to_dict().set("patience", options_.patience());
  return state;
}

void EarlyStopping::load_state_dict(const Value& state) {
  wait_count_ = state["wait_count"].to_int();
  stopped_epoch_ = state["stopped_epoch"].to_int();
  const Value& best = state["best_score"];
  best_score_ = best.is_tensor() ? best.to_tensor().item<double>() : best.to_double();
}

}  // namespace volt

#include "volt/checkpoint/checkpoint.h"

#include "volt/checkpoint/checkpoint_file.h"
#include "volt/error.h"

namespace volt {

namespace {
// Lightning's keys, in the order Lightning writes them.
const char* const kEpoch = "epoch";
const char* const kGlobalStep = "global_step";
const char* const kStateDict = "state_dict";

bool is_bare_state_dict(const Value& value) {
  if (!value.is_dict() || value.to_dict().contains(kStateDict)) return false;
  for (const auto& [key, v] : value.to_dict())
    if (!key.is_string() || !v.is_tensor()) return false;
  return true;
}
}  // namespace

Checkpoint Checkpoint::from_value(const Value& value) {
  Checkpoint ckpt;
  if (is_bare_state_dict(value)) {
    ckpt.state_dict = value;
    return ckpt;
  }
  VOLT_CHECK(
      value.is_dict() && value.to_dict().contains(kStateDict),
      "a checkpoint is a dict with a 'state_dict' key (Lightning's layout) or a dict of tensors; this is ",
      value.repr(4));
  for (const auto& [key, v] : value.to_dict()) {
    const std::string name = key.is_string() ? key.to_string() : "";
    const auto need = [&](bool ok, const char* what) {
      VOLT_CHECK(ok, "checkpoint key '", name, "' must be ", what, " but is ", kind_name(v.kind()));
    };
    if (name == kStateDict) {
      need(v.is_dict(), "a dict");
      ckpt.state_dict = v;
    } else if (name == kEpoch) {
      need(v.is_int(), "an int");
      ckpt.epoch = v.to_int();
    } else if (name == kGlobalStep) {
      need(v.is_int(), "an int");
      ckpt.global_step = v.to_int();
    } else if (name == "hyper_parameters") {
      ckpt.hyper_parameters = v;
    } else if (name == "optimizer_states") {
      need(v.is_list(), "a list");
      ckpt.optimizer_states = v;
    } else if (name == "lr_schedulers") {
      need(v.is_list(), "a list");
      ckpt.lr_schedulers = v;
    } else if (name == "callbacks") {
      need(v.is_dict(), "a dict");
      ckpt.callbacks = v;
    } else if (name == "loops") {
      need(v.is_dict(), "a dict");
      ckpt.loops = v;
    } else {
      ckpt.extra.to_dict().set(key, v);
    }
  }
  return ckpt;
}

Value Checkpoint::to_value() const {
  Value out = Value::dict();
  auto& d = out.to_dict();
  d.set(kEpoch, epoch);
  d.set(kGlobalStep, global_step);
  // Lightning migrates checkpoints by this key; volt writes the layout of the Lightning release it pins.
  const Value* version = extra.to_dict().find("pytorch-lightning_version");
  d.set("pytorch-lightning_version", version ? *version : Value("2.6.6"));
  d.set(kStateDict, state_dict);
  d.set("loops", loops);
  d.set("callbacks", callbacks);
  d.set("optimizer_states", optimizer_states);
  d.set("lr_schedulers", lr_schedulers);
  for (const auto& [key, v] : extra.to_dict())
    if (!d.contains(key)) d.set(key, v);
  d.set("hyper_parameters", hyper_parameters);
  return out;
}

Checkpoint Checkpoint::load(const std::string& path) {
  auto reader = CheckpointReader::open(path);
  Checkpoint ckpt = from_value(reader->contents());
  const auto metadata = reader->metadata();
  const auto number = [&](const char* key, int64_t* out) {
    auto it = metadata.find(key);
    if (it == metadata.end()) return;
    try {
      *out = std::stoll(it->second);
    } catch (const std::exception&) {
      VOLT_FAIL("'", path, "': metadata '", key, "' is '", it->second, "', not an integer");
    }
  };
  number(kEpoch, &ckpt.epoch);
  number(kGlobalStep, &ckpt.global_step);
  return ckpt;
}

void Checkpoint::save(const std::string& path, bool lossy) const {
  const CheckpointFormat format = format_for_path(path);
  if (format == CheckpointFormat::kTorch) {
    write_checkpoint(path, to_value(), format);
    return;
  }
  const bool only_weights = optimizer_states.items().empty() && lr_schedulers.items().empty() &&
                            callbacks.to_dict().empty() && loops.to_dict().empty() &&
                            (!hyper_parameters.is_dict() || hyper_parameters.to_dict().empty());
  VOLT_CHECK(lossy || only_weights, "cannot save '", path,
             "' as safetensors without losing the optimizer, scheduler, callback, loop and hyper-parameter "
             "state it cannot hold; save a .ckpt, or pass lossy=true to keep the weights only");
  std::vector<std::string> dropped;
  const Value flat = flatten_tensors(state_dict, &dropped);
  VOLT_CHECK(dropped.empty(), "cannot save '", path, "': state_dict entry '",
             dropped.empty() ? "" : dropped[0], "' is not a tensor");
  write_checkpoint(
      path, flat, format,
      CheckpointWriteOptions().metadata(
          {{"format", "pt"}, {kEpoch, std::to_string(epoch)}, {kGlobalStep, std::to_string(global_step)}}));
}

}  // namespace volt

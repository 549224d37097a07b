#include "lightning_dcp.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <map>

#include "volt/checkpoint/torch_file.h"
#include "volt/error.h"

namespace volt::detail {
namespace {

std::string optimizer_key(size_t o) { return "optimizer_" + std::to_string(o); }

// A tensor every rank holds whole: rank 0 writes it.
DcpTensor replicated(const at::Tensor& t, bool writer) {
  DcpTensor out{t.sizes().vec(), {}};
  if (writer) out.chunks.push_back({std::vector<int64_t>(t.dim(), 0), t.detach().cpu()});
  return out;
}

bool holds_chunk(const DcpPlacement& p) {
  for (int64_t extent : p.chunk_shape)
    if (extent == 0) return false;
  return true;
}

// This rank's chunk of a sharded tensor (nothing when it holds none).
DcpTensor chunked(const DcpPlacement& p, const at::Tensor& chunk) {
  DcpTensor out{p.global_shape, {}};
  if (holds_chunk(p)) out.chunks.push_back({p.offsets, chunk.detach().cpu()});
  return out;
}

// Optimizer 0's param groups, "params" as optimizer indices: field by field as Lightning (and volt) write
// them, or one byte item as volt wrote them before; None when the checkpoint has no optimizer.
Value param_groups(const std::string& dir, const DcpMetadata& metadata,
                   const std::vector<std::string>& optimizer_params) {
  const std::string whole = optimizer_key(0) + ".param_groups";
  if (metadata.bytes.count(whole)) return load_dcp_object(dir, whole);
  const std::string prefix = whole + ".";
  std::map<int64_t, Value> groups;
  for (const auto& [fqn, storage] : metadata.bytes) {
    if (fqn.compare(0, prefix.size(), prefix) != 0) continue;
    const size_t dot = fqn.find('.', prefix.size());
    const std::string index = fqn.substr(prefix.size(), dot - prefix.size());
    VOLT_CHECK(dot != std::string::npos && !index.empty() && index.size() <= 6 &&
                   index.find_first_not_of("0123456789") == std::string::npos,
               "'", dir, "': item '", fqn, "' is not ", prefix, "<group index>.<field>");
    const int64_t g = std::stoll(index);
    auto& group = groups.try_emplace(g, Value::dict()).first->second;
    group.to_dict().set(fqn.substr(dot + 1), load_dcp_object(dir, fqn));
  }
  if (groups.empty()) return Value();
  std::map<std::string, int64_t> index_of;
  for (size_t i = 0; i < optimizer_params.size(); ++i)
    index_of[optimizer_params[i]] = static_cast<int64_t>(i);
  Value out = Value::list();
  for (auto& [g, group] : groups) {
    VOLT_CHECK(g == static_cast<int64_t>(out.items().size()), "'", dir, "': param group ", out.items().size(),
               " is missing");
    const Value* names = group.to_dict().find("params");
    VOLT_CHECK(names != nullptr, "'", dir, "': param group ", g, " has no 'params'");
    Value params = Value::list();
    for (const Value& p : names->items()) {
      if (p.is_int()) {
        params.items().push_back(p);
        continue;
      }
      auto it = index_of.find(p.to_string());
      VOLT_CHECK(it != index_of.end(), "'", dir, "': param group ", g, " names parameter '", p.to_string(),
                 "', which the optimizer does not hold");
      params.items().push_back(it->second);
    }
    group.to_dict().set("params", params);
    out.items().push_back(group);
  }
  return out;
}

}  // namespace

DcpState lightning_dcp_state(const Checkpoint& checkpoint, const DcpPlacementOf& placement,
                             const std::vector<std::string>& optimizer_params, bool writer) {
  DcpState state;
  for (const auto& [key, value] : checkpoint.state_dict.to_dict()) {
    const std::string name = key.to_string(), fqn = "model." + name;
    state.paths[fqn] = Value::tuple({"model", name});
    const auto p = placement(name);
    state.tensors[fqn] = p ? chunked(*p, value.to_tensor()) : replicated(value.to_tensor(), writer);
  }
  const auto& optimizers = checkpoint.optimizer_states.items();
  for (size_t o = 0; o < optimizers.size(); ++o) {
    const std::string prefix = optimizer_key(o);
    for (const auto& [index, entry] : optimizers[o]["state"].to_dict()) {
      const std::string& param = optimizer_params.at(static_cast<size_t>(index.to_int()));
      const auto p = placement(param);
      for (const auto& [key, value] : entry.to_dict()) {
        const std::string fqn = prefix + ".state." + param + "." + key.to_string();
        state.paths[fqn] = Value::tuple({prefix, "state", param, key.to_string()});
        VOLT_CHECK(value.is_tensor(), "optimizer state '", key.to_string(), "' is not a tensor: the sharded ",
                   "checkpoint stores tensors only");
        const bool whole = key.to_string() == "step" || !p;
        state.tensors[fqn] = whole ? replicated(value.to_tensor(), writer) : chunked(*p, value.to_tensor());
      }
    }
    // Field by field, "params" as parameter names: what DCP makes of FSDP.optim_state_dict's groups.
    const auto& groups = optimizers[o]["param_groups"].items();
    for (size_t g = 0; g < groups.size() && writer; ++g) {
      for (const auto& [field, value] : groups[g].to_dict()) {
        const std::string fqn = prefix + ".param_groups." + std::to_string(g) + "." + field.to_string();
        Value stored = value;
        if (field.to_string() == "params") {
          stored = Value::list();
          for (const Value& index : value.items())
            stored.items().push_back(optimizer_params.at(static_cast<size_t>(index.to_int())));
        }
        state.bytes[fqn] = torch_save_bytes(stored);
        state.paths[fqn] = Value::tuple({prefix, "param_groups", static_cast<int64_t>(g), field.to_string()});
      }
    }
  }
  if (writer) {
    // Lightning's meta.pt: the checkpoint with "state_dict" and "optimizer_states" popped.
    Value rest = checkpoint.to_value();
    rest.to_dict().erase("state_dict");
    rest.to_dict().erase("optimizer_states");
    state.files[kLightningMetaFile] = torch_save_bytes(rest);
  }
  return state;
}

Value read_lightning_meta(const std::string& dir) {
  const std::string meta = dir + "/" + kLightningMetaFile;
  if (::access(meta.c_str(), F_OK) != 0) return Value::dict(/*ordered=*/true);
  Value contents = TorchFileReader(meta).contents();
  VOLT_CHECK(contents.is_dict(), "'", meta, "' holds a ", kind_name(contents.kind()),
             ", not the dict of a Lightning checkpoint");
  return contents;
}

Checkpoint load_lightning_dcp(const std::string& dir, const std::vector<std::string>& model_names,
                              const DcpPlacementOf& placement,
                              const std::vector<std::string>& optimizer_params,
                              const at::TensorOptions& options) {
  const DcpMetadata metadata = read_dcp_metadata(dir);
  Value meta = read_lightning_meta(dir);
  if (!meta.to_dict().contains("state_dict")) meta.to_dict().set("state_dict", Value::dict(/*ordered=*/true));
  Checkpoint ckpt = Checkpoint::from_value(meta);
  std::map<std::string, std::vector<DcpChunk>> requests;
  const auto read = [&](const std::string& fqn, const c10::optional<DcpPlacement>& p) -> at::Tensor {
    VOLT_CHECK(metadata.tensors.count(fqn), "'", dir, "' holds no '", fqn, "'");
    if (!p) return load_dcp_tensor(dir, metadata, fqn);
    at::Tensor chunk = at::zeros(p->chunk_shape, options);
    if (holds_chunk(*p)) requests[fqn].push_back({p->offsets, chunk});
    return chunk;  // filled by load_dcp below
  };
  for (const auto& name : model_names)
    ckpt.state_dict.to_dict().set(name, read("model." + name, placement(name)));
  Value groups = optimizer_params.empty() ? Value() : param_groups(dir, metadata, optimizer_params);
  if (!groups.is_none()) {
    Value per_index = Value::dict();
    for (size_t i = 0; i < optimizer_params.size(); ++i) {
      const std::string prefix = optimizer_key(0) + ".state." + optimizer_params[i] + ".";
      const auto p = placement(optimizer_params[i]);
      Value entry = Value::dict();
      for (const auto& [fqn, info] : metadata.tensors) {
        if (fqn.compare(0, prefix.size(), prefix) != 0 || fqn.find('.', prefix.size()) != std::string::npos)
          continue;
        const std::string key = fqn.substr(prefix.size());
        entry.to_dict().set(key, read(fqn, key == "step" ? c10::nullopt : p));
      }
      if (!entry.to_dict().empty()) per_index.to_dict().set(static_cast<int64_t>(i), entry);
    }
    Value optimizer = Value::dict();
    optimizer.to_dict().set("state", per_index);
    optimizer.to_dict().set("param_groups", groups);
    ckpt.optimizer_states.items().push_back(optimizer);
  }
  load_dcp(dir, metadata, requests);
  return ckpt;
}

void to_checkpoint_layout(Dict& d) {
  if (const Value* model = d.find(Value("model")); model != nullptr && !d.contains(Value("state_dict"))) {
    const Value state_dict = *model;
    d.erase(Value("model"));
    d.set("state_dict", state_dict);
  }
  Value optimizers = Value::list();
  for (size_t i = 0;; ++i) {
    const Value key(optimizer_key(i));
    const Value* optimizer = d.find(key);
    if (optimizer == nullptr) break;
    optimizers.items().push_back(*optimizer);
    d.erase(key);
  }
  if (!optimizers.items().empty()) d.set("optimizer_states", optimizers);
}

}  // namespace volt::detail

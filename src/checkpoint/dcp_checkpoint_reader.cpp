#include "dcp_checkpoint_reader.h"

#include <unistd.h>

#include "lightning_dcp.h"
#include "volt/checkpoint/dcp.h"
#include "volt/checkpoint/torch_file.h"
#include "volt/error.h"

namespace volt::detail {
namespace {

// Puts `value` at `path` under `root`, making a dict for each str key and a list for each int index on
// the way (as torch.distributed.checkpoint's unflatten_state_dict does).
void set_at(Value& root, const std::vector<Value>& path, Value value, const std::string& dir,
            const std::string& name) {
  Value* node = &root;
  for (size_t i = 0; i < path.size(); ++i) {
    const Value& key = path[i];
    const bool last = i + 1 == path.size();
    const auto fresh = [&] {
      if (last) return value;
      return path[i + 1].is_int() ? Value::list() : Value::dict(/*ordered=*/true);
    };
    if (key.is_int()) {
      VOLT_CHECK(node->is_list() && key.to_int() >= 0 && key.to_int() < (1 << 20), "'", dir, "': item '",
                 name, "' has a planner path whose index ", key.to_int(), " does not fit where it points");
      auto& items = node->items();
      while (static_cast<int64_t>(items.size()) <= key.to_int()) items.emplace_back();
      if (last || items[key.to_int()].is_none()) items[key.to_int()] = fresh();
      node = &items[key.to_int()];
    } else {
      VOLT_CHECK(node->is_dict() && key.is_string(), "'", dir, "': item '", name,
                 "' has a planner path that is not a chain of dict keys and list indices");
      Value* child = node->to_dict().find(key);
      if (child == nullptr || last) {
        node->to_dict().set(key, fresh());
        child = node->to_dict().find(key);
      }
      node = child;
    }
  }
}

// A DCP directory read whole, as Lightning's consolidate_checkpoint makes one file of one: every item
// put back where `.metadata`'s planner_data says (top level under its flat name where it says nothing),
// each tensor assembled from its chunks. With Lightning's meta.pt beside the items, meta.pt's contents
// are the checkpoint's other keys, "model" becomes "state_dict" and "optimizer_0", "optimizer_1", ...
// become "optimizer_states" (keyed by parameter name, as FSDP.optim_state_dict keys them). Tensors are
// copies, not views of the files: a chunked tensor has no one place in them.
class DcpCheckpointReader final : public CheckpointReader {
 public:
  explicit DcpCheckpointReader(const std::string& dir)
      : path_(dir), contents_(Value::dict(/*ordered=*/true)) {
    const DcpMetadata metadata = read_dcp_metadata(dir);
    const std::string meta = dir + "/" + kLightningMetaFile;
    const bool lightning = ::access(meta.c_str(), F_OK) == 0;
    if (lightning) contents_ = read_lightning_meta(dir);
    const auto path_of = [&](const std::string& name) {
      auto it = metadata.paths.find(name);
      return it == metadata.paths.end() ? std::vector<Value>{Value(name)} : it->second.items();
    };
    for (const auto& [name, info] : metadata.tensors)
      set_at(contents_, path_of(name), load_dcp_tensor(dir, metadata, name), dir, name);
    for (const auto& [name, storage] : metadata.bytes)
      set_at(contents_, path_of(name), load_dcp_object(dir, name), dir, name);
    if (lightning) to_checkpoint_layout(contents_.to_dict());
  }
  CheckpointFormat format() const override { return CheckpointFormat::kDcp; }
  const std::string& path() const override { return path_; }
  const Value& contents() const override { return contents_; }
  bool release_pages(const at::Tensor&) const override { return false; }

 private:
  std::string path_;
  Value contents_;
};

}  // namespace

std::unique_ptr<CheckpointReader> open_dcp_reader(const std::string& dir) {
  return std::make_unique<DcpCheckpointReader>(dir);
}

}  // namespace volt::detail

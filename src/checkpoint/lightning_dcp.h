// Lightning's sharded checkpoint (FSDPStrategy with state_dict_type="sharded") as a DCP directory — the one
// home of its layout: "model.<name>" tensors, "optimizer_<o>.state.<param name>.<key>" tensors (keyed by
// parameter name, as FSDP.optim_state_dict), "optimizer_<o>.param_groups.<g>.<field>" byte items whose
// "params" are parameter names, planner paths as torch.distributed.checkpoint flattens them, and meta.pt
// with the rest of the checkpoint. Used by FSDP's save and load (each rank its chunks) and by the reader
// that opens such a directory whole. Internal.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <functional>
#include <string>
#include <vector>

#include "volt/checkpoint/checkpoint.h"
#include "volt/checkpoint/dcp.h"

namespace volt::detail {

/// This rank's chunk of a sharded parameter's tensors (the parameter, and its optimizer states).
struct DcpPlacement {
  std::vector<int64_t> global_shape;
  std::vector<int64_t> offsets;      // where the chunk starts
  std::vector<int64_t> chunk_shape;  // a zero extent: this rank holds none of it
};
/// The placement of the parameter named `name`; nullopt for a tensor every rank holds whole (a buffer).
using DcpPlacementOf = std::function<c10::optional<DcpPlacement>(const std::string& name)>;

constexpr const char* kLightningMetaFile = "meta.pt";

/// The directory's items for `checkpoint`, whose state_dict and optimizer states hold this rank's chunks
/// of the sharded parameters; optimizer parameter i is named `optimizer_params[i]`. `writer` (global rank
/// 0) writes what every rank holds whole, the param groups and meta.pt.
DcpState lightning_dcp_state(const Checkpoint& checkpoint, const DcpPlacementOf& placement,
                             const std::vector<std::string>& optimizer_params, bool writer);

/// This rank's part of the checkpoint in `dir`: meta.pt's keys; state_dict with `model_names`' tensors (a
/// chunk where `placement` says so, made with `options`, else whole); and, when `optimizer_params` is not
/// empty, optimizer 0's state (chunks) and param groups with "params" as optimizer indices.
Checkpoint load_lightning_dcp(const std::string& dir, const std::vector<std::string>& model_names,
                              const DcpPlacementOf& placement,
                              const std::vector<std::string>& optimizer_params,
                              const at::TensorOptions& options);

/// meta.pt's contents (an empty ordered dict when `dir` has none: not a Lightning checkpoint).
Value read_lightning_meta(const std::string& dir);
/// A whole directory's items, nested by their planner paths on top of meta.pt's keys, in a .ckpt's layout:
/// "model" as "state_dict", "optimizer_<i>" as "optimizer_states"[i].
void to_checkpoint_layout(Dict& contents);

}  // namespace volt::detail

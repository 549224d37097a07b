// Sharded checkpoints in PyTorch's Distributed Checkpoint (DCP) format: a directory with `.metadata` (a
// pickle of torch.distributed.checkpoint.metadata.Metadata) and one `__{rank}_0.distcp` file per rank whose
// items are torch.save streams (tensor chunks) or raw bytes at the offsets `.metadata` records. What
// Lightning's FSDP strategy saves with state_dict_type="sharded", and what
// `torch.distributed.checkpoint.load` reads; a checkpoint saved by N ranks loads with M ranks (any
// resharding) or into one process.
//
//   volt::DcpState state;                                   // on each rank: its own chunks
//   state.tensors["model.w"] = {{8, 4}, {{{rank * 4, 0}, local_rows}}};
//   volt::save_dcp("run/step-100", state, group.get());
//   at::Tensor rows = at::empty({2, 4});                    // later, on any number of ranks
//   volt::load_dcp("run/step-100", {{"model.w", {{{2, 0}, rows}}}});
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "volt/checkpoint/value.h"

namespace volt {

class ProcessGroup;

/// One rank's piece of a tensor of global shape `global_size`: `local` holds the elements at `offsets`.
struct DcpChunk {
  std::vector<int64_t> offsets;
  at::Tensor local;
};
struct DcpTensor {
  std::vector<int64_t> global_size;
  std::vector<DcpChunk> chunks;
};
/// What one rank saves: sharded/replicated tensors by fully qualified name, plus opaque byte items (e.g. a
/// pickled or JSON blob of non-tensor state) by name (BytesStorageMetadata). PyTorch's `dcp.load` unpickles
/// a byte item with torch.load: make it with `volt::torch_save_bytes(value)` when Python must read it.
struct DcpState {
  std::map<std::string, DcpTensor> tensors;
  std::map<std::string, std::string> bytes;
  /// Whole files that rank 0 writes into the directory beside the DCP files, inside the same atomic swap:
  /// Lightning's `meta.pt` (`volt::torch_save_bytes(rest_of_checkpoint)`), which marks a sharded checkpoint.
  std::map<std::string, std::string> files;
  /// Where PyTorch puts an item when it unflattens the checkpoint (`.metadata`'s planner_data, which
  /// dcp_to_torch_save and the state_dict-less loads use): the nested keys as a tuple of strings and list
  /// indices, e.g. "optimizer_0.param_groups.0.lr" -> ("optimizer_0", "param_groups", 0, "lr"), since a
  /// dotted name alone is ambiguous ("model.fc1.weight" is ("model", "fc1.weight")). Rank 0's entries
  /// are written; an item without one is top level.
  std::map<std::string, Value> paths;
};

/// Where one item lives: `length` bytes at `offset` of `file` (relative to the checkpoint directory).
struct DcpStorage {
  std::string file;
  uint64_t offset = 0;
  uint64_t length = 0;
};
struct DcpChunkInfo {
  std::vector<int64_t> offsets;
  std::vector<int64_t> sizes;
  DcpStorage storage;
};
struct DcpTensorInfo {
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  std::vector<int64_t> size;
  std::vector<DcpChunkInfo> chunks;  // non-overlapping, together exactly the whole tensor
};
/// Metadata of a DCP directory: each tensor's global size, dtype and chunks; byte items. Validated when read:
/// every chunk inside its tensor, no two overlapping, together covering it; every item inside its file.
struct DcpMetadata {
  std::map<std::string, DcpTensorInfo> tensors;
  std::map<std::string, DcpStorage> bytes;
  std::string version;                 // DCP's format version ("1.0.0"); empty for files before PyTorch 2.4
  std::vector<std::string> files;      // the data files the items live in, sorted
  std::map<std::string, Value> paths;  // planner_data: DcpState::paths when saving; as read when loading
};

/// Every rank calls it with its own chunks (replicated tensors: only rank 0 need pass them, or all ranks —
/// each (name, offsets) is written once, by the lowest rank that has it); `group` null = one process. Each
/// rank writes __{rank}_0.distcp, rank 0 gathers the chunk lists, checks that they tile every tensor, and
/// writes .metadata; atomic as a whole: written into a temporary sibling directory and swapped into place
/// only when every rank's file is durable, so a crash mid-save never leaves a directory that loads as
/// complete and the previous checkpoint at `dir` stays loadable. Throws volt::Error on every rank when any
/// rank fails.
void save_dcp(const std::string& dir, const DcpState& state, ProcessGroup* group);

/// Throws volt::Error naming the file and the defect for a directory that is not a complete DCP checkpoint.
DcpMetadata read_dcp_metadata(const std::string& dir);
/// True when `path` is a directory holding a `.metadata` file.
bool is_dcp_directory(const std::string& path);

/// Fills each requested region (fqn -> {offsets, destination tensor with the region's sizes}) from whatever
/// chunks overlap it (any resharding: written by 2 ranks, read by 3). The items are mapped and copied
/// region by region (converting dtype when the destination's differs), and their pages dropped afterwards:
/// no full tensor is materialized unless requested.
void load_dcp(const std::string& dir, const std::map<std::string, std::vector<DcpChunk>>& requests);
/// The same with metadata already read (to load many regions without re-reading `.metadata`).
void load_dcp(const std::string& dir, const DcpMetadata& metadata,
              const std::map<std::string, std::vector<DcpChunk>>& requests);
/// A whole tensor, in its saved dtype.
at::Tensor load_dcp_tensor(const std::string& dir, const DcpMetadata& metadata, const std::string& name);

/// The raw bytes of a byte item.
std::string load_dcp_bytes(const std::string& dir, const std::string& name);
/// A byte item that PyTorch wrote with torch.save (non-tensor state such as `step` or `lr_schedulers`),
/// read as data (see TorchFileReader).
Value load_dcp_object(const std::string& dir, const std::string& name);

}  // namespace volt

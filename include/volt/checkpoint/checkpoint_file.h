// One reader/writer interface over volt's checkpoint formats, so that loading, `volt inspect` and
// `volt convert` never care which format a file is in.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "volt/checkpoint/tensor_stream_hooks.h"
#include "volt/checkpoint/value.h"

namespace volt {

enum class CheckpointFormat {
  kTorch,        // torch.save zip-pickle: .pt, .pth, .ckpt, .bin
  kSafetensors,  // Hugging Face safetensors: .safetensors
  kDcp,          // PyTorch Distributed Checkpoint directory (.metadata + __{rank}_0.distcp), read only
};

const char* format_name(CheckpointFormat format);
/// By extension; throws volt::Error listing the known extensions for any other.
CheckpointFormat format_for_path(const std::string& path);

/// An open checkpoint file. Tensors in `contents()` view the file's mapping (no copy, no resident memory
/// until touched) and keep it alive after the reader is gone.
class CheckpointReader {
 public:
  virtual ~CheckpointReader() = default;
  /// By content, not extension: a zip archive is a torch.save file, anything else is read as safetensors.
  /// Hugging Face's sharded safetensors open by their `*.safetensors.index.json` or by the model directory
  /// holding `model.safetensors.index.json` (or `model.safetensors`): contents() then holds every shard's
  /// tensors, each viewing its shard, and metadata() the index's "metadata". A DCP directory (a sharded
  /// FSDP checkpoint, PyTorch's or Lightning's) opens consolidated: its items nested as planner_data says,
  /// tensors assembled (copies), and with Lightning's meta.pt the layout of a Lightning .ckpt.
  static std::unique_ptr<CheckpointReader> open(const std::string& path);

  virtual CheckpointFormat format() const = 0;
  virtual const std::string& path() const = 0;
  /// torch: the unpickled object. safetensors: an ordered dict of name -> tensor, in file order.
  virtual const Value& contents() const = 0;
  /// safetensors' `__metadata__`; empty for torch files.
  virtual std::map<std::string, std::string> metadata() const { return {}; }
  /// See TorchFileReader::release_pages: for streaming a file through memory once.
  virtual bool release_pages(const at::Tensor& tensor) const = 0;
};

struct CheckpointWriteOptions {
  CheckpointWriteOptions() {}
  /// safetensors `__metadata__` (ignored for torch files, which carry anything in the value itself).
  CheckpointWriteOptions& metadata(std::map<std::string, std::string> value) {
    metadata_ = std::move(value);
    return *this;
  }
  /// Stream tensors through memory one at a time (per tensor for safetensors, per storage for torch files).
  CheckpointWriteOptions& hooks(TensorStreamHooks value) {
    hooks_ = std::move(value);
    return *this;
  }
  std::map<std::string, std::string> metadata_;
  TensorStreamHooks hooks_;
};

/// Writes atomically. safetensors holds only a flat dict of str -> tensor; anything else throws
/// volt::Error saying so (`flatten_tensors` makes such a dict from nested values).
void write_checkpoint(const std::string& path, const Value& contents, CheckpointFormat format,
                      const CheckpointWriteOptions& options = {});

/// The tensors of a nested value as an ordered dict keyed by dotted paths ("state_dict.layer.weight",
/// "optimizer_states.0.state.3.exp_avg"), in traversal order. Non-tensor leaves go to `dropped` when given.
Value flatten_tensors(const Value& value, std::vector<std::string>* dropped = nullptr);

}  // namespace volt

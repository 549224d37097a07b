// PyTorch's `torch.save` format (a zip archive holding a pickle and one record per storage; Lightning's
// `.ckpt` is one), read as data and written so that Python's `torch.load` reads it back.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "volt/checkpoint/tensor_stream_hooks.h"
#include "volt/checkpoint/value.h"

namespace volt {
namespace detail {
class MappedFile;
}

struct TorchReadOptions {
  TorchReadOptions() {}
  /// Globals outside volt's allow-list (tensor rebuild functions, typed storages, OrderedDict, bytes) throw
  /// volt::Error instead of becoming opaque volt::Objects. Nothing is ever executed either way.
  TorchReadOptions& strict(bool value) {
    strict_ = value;
    return *this;
  }
  bool strict_ = false;
};

/// Reads a `torch.save` file. Tensors view the file's records through a private copy-on-write mapping:
/// nothing is copied until written, and writing changes only this process's copy. Views and tensors that
/// shared a storage in Python share one here. Every offset, length and view is checked against the file;
/// any defect throws volt::Error naming the file and the defect.
///
///   volt::TorchFileReader ckpt("epoch=3.ckpt");
///   const volt::Value& sd = ckpt.contents()["state_dict"];
class TorchFileReader {
 public:
  explicit TorchFileReader(const std::string& path, const TorchReadOptions& options = {});

  const std::string& path() const { return path_; }
  /// The unpickled object; its tensors keep the mapping alive after the reader is gone (so a temporary
  /// reader hands out the Value itself: `auto sd = volt::TorchFileReader(p).contents()["state_dict"];`).
  const Value& contents() const& { return contents_; }
  Value contents() && { return contents_; }
  /// Names of the archive's records ("archive/data.pkl", "archive/data/0", ...).
  std::vector<std::string> records() const;

  /// Drops the resident pages of the mapping that back `tensor` (after it has been consumed, so that
  /// streaming a large file keeps memory near one tensor). Unwritten pages are re-read from the file on the
  /// next access; pages written through this mapping would be lost, so call it only for read-only use.
  /// Returns false when `tensor` does not view this file.
  bool release_pages(const at::Tensor& tensor) const;

  /// True when the file starts like a zip archive ("PK\3\4").
  static bool is_torch_file(const std::string& path);

 private:
  std::string path_;
  std::shared_ptr<detail::MappedFile> mapping_;
  std::vector<std::string> records_;
  Value contents_;
};

struct TorchWriteOptions {
  TorchWriteOptions() {}
  /// Stream storages through memory one at a time (see TensorStreamHooks); both hooks receive a tensor
  /// over a whole storage.
  TorchWriteOptions& hooks(TensorStreamHooks value) {
    hooks_ = std::move(value);
    return *this;
  }
  TensorStreamHooks hooks_;
};

/// Writes `value` atomically as `torch.save(value, path)` would (pickle protocol 2, zip records aligned to
/// 64 bytes, ZIP64 past 4 GiB), readable by `torch.load` in PyTorch 1.13 and 2.x, with `weights_only=True`
/// unless `value` holds opaque objects. Tensors on any device are written as views of their storages
/// (each storage once, copied to the CPU one at a time, so peak memory is one storage). Dicts marked
/// ordered become `collections.OrderedDict`.
void save_torch_file(const std::string& path, const Value& value, const TorchWriteOptions& options = {});

/// The bytes `torch.save(value, io.BytesIO())` would write (what a DCP byte item of non-tensor state holds,
/// so that PyTorch's `dcp.load` gets the object back).
std::string torch_save_bytes(const Value& value);

}  // namespace volt

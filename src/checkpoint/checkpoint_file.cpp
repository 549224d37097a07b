#include "volt/checkpoint/checkpoint_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <ATen/ATen.h>

#include "volt/checkpoint/safetensors.h"
#include "volt/checkpoint/torch_file.h"
#include "volt/error.h"

namespace volt {

const char* format_name(CheckpointFormat format) {
  return format == CheckpointFormat::kTorch ? "torch" : "safetensors";
}

namespace {
bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

class TorchReader final : public CheckpointReader {
 public:
  explicit TorchReader(const std::string& path) : reader_(path) {}
  CheckpointFormat format() const override { return CheckpointFormat::kTorch; }
  const std::string& path() const override { return reader_.path(); }
  const Value& contents() const override { return reader_.contents(); }
  bool release_pages(const at::Tensor& tensor) const override { return reader_.release_pages(tensor); }

 private:
  TorchFileReader reader_;
};

class SafetensorsFileReader final : public CheckpointReader {
 public:
  explicit SafetensorsFileReader(const std::string& path) : reader_(path), contents_(Value::dict(true)) {
    for (const TensorInfo& info : reader_.tensors())
      contents_.to_dict().set(info.name, reader_.tensor(info.name));
  }
  CheckpointFormat format() const override { return CheckpointFormat::kSafetensors; }
  const std::string& path() const override { return reader_.path(); }
  const Value& contents() const override { return contents_; }
  std::map<std::string, std::string> metadata() const override { return reader_.metadata(); }
  bool release_pages(const at::Tensor& tensor) const override { return reader_.release_pages(tensor); }

 private:
  SafetensorsReader reader_;
  Value contents_;
};

void flatten(const Value& value, const std::string& prefix, Value& out, std::vector<std::string>* dropped) {
  const auto key = [&](const std::string& part) { return prefix.empty() ? part : prefix + "." + part; };
  if (value.is_tensor()) {
    out.to_dict().set(prefix, value);
  } else if (value.is_dict()) {
    for (const auto& [k, v] : value.to_dict())
      flatten(v, key(k.is_string() ? k.to_string() : k.repr(0)), out, dropped);
  } else if (value.is_list() || value.is_tuple()) {
    for (size_t i = 0; i < value.items().size(); ++i)
      flatten(value.items()[i], key(std::to_string(i)), out, dropped);
  } else if (dropped != nullptr) {
    dropped->push_back(prefix);
  }
}
}  // namespace

CheckpointFormat format_for_path(const std::string& path) {
  if (ends_with(path, ".safetensors")) return CheckpointFormat::kSafetensors;
  for (const char* extension : {".ckpt", ".pt", ".pth", ".bin"})
    if (ends_with(path, extension)) return CheckpointFormat::kTorch;
  VOLT_FAIL("cannot tell the checkpoint format of '", path,
            "' from its name; use .safetensors, or .ckpt / .pt / .pth / .bin for PyTorch files");
}

std::unique_ptr<CheckpointReader> CheckpointReader::open(const std::string& path) {
  // Sniffing the format of a file that is not there would blame the wrong format.
  VOLT_CHECK(::access(path.c_str(), F_OK) == 0, "checkpoint '", path,
             "' does not exist: ", std::strerror(errno));
  if (TorchFileReader::is_torch_file(path)) return std::make_unique<TorchReader>(path);
  return std::make_unique<SafetensorsFileReader>(path);
}

Value flatten_tensors(const Value& value, std::vector<std::string>* dropped) {
  Value out = Value::dict(true);
  flatten(value, "", out, dropped);
  return out;
}

void write_checkpoint(const std::string& path, const Value& contents, CheckpointFormat format,
                      const CheckpointWriteOptions& options) {
  if (format == CheckpointFormat::kTorch) {
    save_torch_file(path, contents, TorchWriteOptions().hooks(options.hooks_));
    return;
  }
  VOLT_CHECK(contents.is_dict(), "cannot save '", path,
             "' as safetensors: it holds a flat dict of tensors, not a ", kind_name(contents.kind()),
             " (volt::flatten_tensors makes one)");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [key, value] : contents.to_dict()) {
    VOLT_CHECK(key.is_string() && value.is_tensor(), "cannot save '", path,
               "' as safetensors: it holds only str -> tensor, but has ", key.repr(0), " -> ",
               kind_name(value.kind()), " (volt::flatten_tensors makes such a dict)");
    tensors.emplace_back(key.to_string(), value.to_tensor());
  }
  save_safetensors(path, tensors, options.metadata_, options.hooks_);
}

}  // namespace volt

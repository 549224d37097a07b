#include "volt/checkpoint/checkpoint_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <ATen/ATen.h>
#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "dcp_checkpoint_reader.h"
#include "volt/checkpoint/dcp.h"
#include "volt/checkpoint/safetensors.h"
#include "volt/checkpoint/torch_file.h"
#include "volt/error.h"

namespace volt {

const char* format_name(CheckpointFormat format) {
  switch (format) {
    case CheckpointFormat::kTorch:
      return "torch";
    case CheckpointFormat::kSafetensors:
      return "safetensors";
    case CheckpointFormat::kDcp:
      return "dcp";
  }
  return "unknown";
}

namespace {
bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

class TorchCheckpointReader final : public CheckpointReader {
 public:
  explicit TorchCheckpointReader(const std::string& path) : reader_(path) {}
  CheckpointFormat format() const override { return CheckpointFormat::kTorch; }
  const std::string& path() const override { return reader_.path(); }
  const Value& contents() const override { return reader_.contents(); }
  bool release_pages(const at::Tensor& tensor) const override { return reader_.release_pages(tensor); }

 private:
  TorchFileReader reader_;
};

class SafetensorsCheckpointReader final : public CheckpointReader {
 public:
  explicit SafetensorsCheckpointReader(const std::string& path)
      : reader_(path), contents_(Value::dict(true)) {
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

// Hugging Face's sharded safetensors: `model.safetensors.index.json` ({"metadata": {...}, "weight_map":
// {tensor: shard file}}) beside the shards. Every shard is mapped; tensors view their shard, in shard order.
class SafetensorsIndexCheckpointReader final : public CheckpointReader {
 public:
  explicit SafetensorsIndexCheckpointReader(const std::string& path)
      : path_(path), contents_(Value::dict(true)) {
    std::ifstream in(path);
    VOLT_CHECK(in.good(), "cannot open '", path, "': ", std::strerror(errno));
    nlohmann::json index;
    try {
      index = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      VOLT_FAIL("'", path, "' is not valid JSON (", e.what(), "); a safetensors index is a JSON object");
    }
    VOLT_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(), "'",
               path, "' has no \"weight_map\" object; it is not a Hugging Face safetensors index");
    if (index.contains("metadata") && index["metadata"].is_object())
      for (const auto& [key, value] : index["metadata"].items())
        metadata_[key] = value.is_string() ? value.get<std::string>() : value.dump();
    const std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
    std::map<std::string, std::string> shard_of;
    std::set<std::string> opened;
    for (const auto& [name, file] : index["weight_map"].items()) {
      VOLT_CHECK(file.is_string(), "'", path, "': the shard of tensor '", name, "' is not a file name");
      const std::string shard = file.get<std::string>();
      VOLT_CHECK(!shard.empty() && shard.find('/') == std::string::npos && shard != "..", "'", path,
                 "': tensor '", name, "' lives in '", shard, "', which is not a file beside the index");
      shard_of[name] = shard;
      if (opened.insert(shard).second) {
        shards_.push_back(std::make_unique<SafetensorsReader>(dir + "/" + shard));
      }
    }
    for (const auto& shard : shards_) {
      for (const TensorInfo& info : shard->tensors()) {
        auto it = shard_of.find(info.name);
        VOLT_CHECK(it != shard_of.end() && dir + "/" + it->second == shard->path(), "'", shard->path(),
                   "' holds tensor '", info.name, "', which '", path, "' ",
                   it == shard_of.end() ? "does not list" : "places in '" + it->second + "'");
        contents_.to_dict().set(info.name, shard->tensor(info.name));
      }
    }
    for (const auto& [name, shard] : shard_of)
      VOLT_CHECK(contents_.to_dict().contains(Value(name)), "'", path, "' places tensor '", name, "' in '",
                 shard, "', which does not hold it");
  }
  CheckpointFormat format() const override { return CheckpointFormat::kSafetensors; }
  const std::string& path() const override { return path_; }
  const Value& contents() const override { return contents_; }
  std::map<std::string, std::string> metadata() const override { return metadata_; }
  bool release_pages(const at::Tensor& tensor) const override {
    for (const auto& shard : shards_)
      if (shard->release_pages(tensor)) return true;
    return false;
  }

 private:
  std::string path_;
  std::vector<std::unique_ptr<SafetensorsReader>> shards_;
  std::map<std::string, std::string> metadata_;
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
  if (ends_with(path, ".index.json")) return std::make_unique<SafetensorsIndexCheckpointReader>(path);
  struct stat status {};
  if (::stat(path.c_str(), &status) == 0 && S_ISDIR(status.st_mode)) {
    if (is_dcp_directory(path)) return detail::open_dcp_reader(path);
    // A Hugging Face model directory.
    const std::string index = path + "/model.safetensors.index.json";
    if (::access(index.c_str(), F_OK) == 0) return std::make_unique<SafetensorsIndexCheckpointReader>(index);
    const std::string single = path + "/model.safetensors";
    if (::access(single.c_str(), F_OK) == 0) return std::make_unique<SafetensorsCheckpointReader>(single);
    VOLT_FAIL("'", path, "' is a directory without model.safetensors.index.json or model.safetensors",
              " and without the .metadata of a DCP checkpoint");
  }
  if (TorchFileReader::is_torch_file(path)) return std::make_unique<TorchCheckpointReader>(path);
  return std::make_unique<SafetensorsCheckpointReader>(path);
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

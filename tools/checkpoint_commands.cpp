#include "checkpoint_commands.h"

#include <ATen/ATen.h>
#include <sys/stat.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "volt/checkpoint/checkpoint.h"
#include "volt/checkpoint/checkpoint_file.h"
#include "volt/checkpoint/dcp.h"
#include "volt/checkpoint/state_dict.h"
#include "volt/error.h"
#include "volt/models/gpt.h"
#include "volt/trainer/trainer.h"

namespace volt::tools {
namespace {

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int unit = 0;
  while (bytes >= 1000 && unit < 4) {
    bytes /= 1000;
    ++unit;
  }
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), unit == 0 ? "%.0f %s" : "%.2f %s", bytes, units[unit]);
  return buffer;
}

std::string dtype_name(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kDouble:
      return "float64";
    case c10::kFloat:
      return "float32";
    case c10::kHalf:
      return "float16";
    case c10::kBFloat16:
      return "bfloat16";
    case c10::kLong:
      return "int64";
    case c10::kInt:
      return "int32";
    case c10::kShort:
      return "int16";
    case c10::kChar:
      return "int8";
    case c10::kByte:
      return "uint8";
    case c10::kBool:
      return "bool";
    default:
      return c10::toString(dtype);
  }
}

c10::ScalarType parse_dtype(const std::string& name) {
  static const std::map<std::string, c10::ScalarType> names = {
      {"float32", c10::kFloat},     {"fp32", c10::kFloat},    {"float", c10::kFloat},
      {"float16", c10::kHalf},      {"fp16", c10::kHalf},     {"half", c10::kHalf},
      {"bfloat16", c10::kBFloat16}, {"bf16", c10::kBFloat16}, {"float64", c10::kDouble},
      {"fp64", c10::kDouble},       {"double", c10::kDouble}};
  auto it = names.find(name);
  VOLT_CHECK(it != names.end(), "unknown --dtype '", name,
             "'; use one of float32 (fp32), float16 (fp16), bfloat16 (bf16), float64 (fp64)");
  return it->second;
}

nlohmann::json to_json(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kNone:
      return nullptr;
    case ValueKind::kBool:
      return v.to_bool();
    case ValueKind::kInt:
      return v.to_int();
    case ValueKind::kDouble:
      return std::isfinite(v.to_double()) ? nlohmann::json(v.to_double()) : nlohmann::json(v.repr());
    case ValueKind::kString:
      return v.to_string();
    case ValueKind::kList:
    case ValueKind::kTuple: {
      nlohmann::json out = nlohmann::json::array();
      for (const Value& item : v.items()) out.push_back(to_json(item));
      return out;
    }
    case ValueKind::kDict: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& [key, value] : v.to_dict())
        out[key.is_string() ? key.to_string() : key.repr(0)] = to_json(value);
      return out;
    }
    default:
      return v.repr();
  }
}

uint64_t file_size(const std::string& path) {
  struct stat status {};
  return ::stat(path.c_str(), &status) == 0 ? static_cast<uint64_t>(status.st_size) : 0;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out;
  for (int64_t d : shape) out += (out.empty() ? "" : ", ") + std::to_string(d);
  return "[" + out + "]";
}

// A DCP directory: its tensors with their chunks and where each lives, its byte items, its files.
void inspect_dcp(const std::string& dir, bool json) {
  const DcpMetadata metadata = read_dcp_metadata(dir);
  uint64_t total_bytes = 0, total_elements = 0, file_bytes = 0;
  nlohmann::json tensors = nlohmann::json::array(), bytes = nlohmann::json::array(),
                 files = nlohmann::json::array();
  for (const std::string& file : metadata.files) {
    const uint64_t size = file_size(dir + "/" + file);
    file_bytes += size;
    files.push_back({{"name", file}, {"bytes", size}});
  }
  for (const auto& [name, info] : metadata.tensors) {
    uint64_t elements = 1;
    for (int64_t d : info.size) elements *= static_cast<uint64_t>(d);
    const uint64_t size = elements * c10::elementSize(info.dtype);
    total_elements += elements;
    total_bytes += size;
    nlohmann::json chunks = nlohmann::json::array();
    for (const auto& c : info.chunks)
      chunks.push_back({{"offsets", c.offsets},
                        {"sizes", c.sizes},
                        {"file", c.storage.file},
                        {"offset", c.storage.offset},
                        {"length", c.storage.length}});
    tensors.push_back({{"name", name},
                       {"dtype", dtype_name(info.dtype)},
                       {"shape", info.size},
                       {"bytes", size},
                       {"chunks", chunks}});
  }
  for (const auto& [name, storage] : metadata.bytes)
    bytes.push_back(
        {{"name", name}, {"file", storage.file}, {"offset", storage.offset}, {"length", storage.length}});
  if (json) {
    std::cout << nlohmann::json(
                     {{"file", dir},
                      {"format", "dcp"},
                      {"version", metadata.version},
                      {"file_bytes", file_bytes},
                      {"files", files},
                      {"tensors", tensors},
                      {"bytes", bytes},
                      {"total",
                       {{"tensors", tensors.size()}, {"elements", total_elements}, {"bytes", total_bytes}}}})
                     .dump(2)
              << "\n";
    return;
  }
  std::cout << dir << "  (dcp" << (metadata.version.empty() ? "" : " " + metadata.version) << ", "
            << metadata.files.size() << " data files, " << human_bytes(static_cast<double>(file_bytes))
            << ")\n";
  for (const auto& f : files)
    std::printf("  file %-30s %s\n", f["name"].get<std::string>().c_str(),
                human_bytes(f["bytes"].get<double>()).c_str());
  std::cout << "tensors:\n";
  for (const auto& t : tensors) {
    std::printf("  %-60s %-9s %s  %s, %zu chunks\n", t["name"].get<std::string>().c_str(),
                t["dtype"].get<std::string>().c_str(),
                shape_text(t["shape"].get<std::vector<int64_t>>()).c_str(),
                human_bytes(t["bytes"].get<double>()).c_str(), t["chunks"].size());
    for (const auto& c : t["chunks"])
      std::printf("      chunk at %s size %s in %s @%llu\n",
                  shape_text(c["offsets"].get<std::vector<int64_t>>()).c_str(),
                  shape_text(c["sizes"].get<std::vector<int64_t>>()).c_str(),
                  c["file"].get<std::string>().c_str(), (unsigned long long)c["offset"].get<uint64_t>());
  }
  if (!bytes.empty()) std::cout << "byte items:\n";
  for (const auto& b : bytes)
    std::printf("  %-60s %llu bytes in %s\n", b["name"].get<std::string>().c_str(),
                (unsigned long long)b["length"].get<uint64_t>(), b["file"].get<std::string>().c_str());
  std::printf("total %zu tensors, %llu elements, %s\n", tensors.size(), (unsigned long long)total_elements,
              human_bytes(static_cast<double>(total_bytes)).c_str());
}

// Consolidates a DCP directory tensor by tensor: each is assembled from its chunks only when the writer
// reaches it, so peak memory is one tensor.
void convert_dcp(const std::string& dir, const std::string& out, const std::string& dtype_text) {
  const CheckpointFormat out_format = format_for_path(out);
  const DcpMetadata metadata = read_dcp_metadata(dir);
  c10::optional<c10::ScalarType> dtype;
  if (!dtype_text.empty()) dtype = parse_dtype(dtype_text);
  std::unordered_map<const void*, std::string> names;
  Value contents = Value::dict(true);
  for (const auto& [name, info] : metadata.tensors) {
    const c10::ScalarType saved = info.dtype;
    const bool cast = dtype && at::isFloatingType(saved);
    at::Tensor meta =
        at::empty(info.size, at::TensorOptions().dtype(cast ? *dtype : saved).device(at::kMeta));
    names.emplace(meta.storage().unsafeGetStorageImpl(), name);
    contents.to_dict().set(name, Value(meta));
  }
  TensorStreamHooks hooks;
  hooks.materialize = [&](const at::Tensor& meta) {
    const std::string& name = names.at(meta.storage().unsafeGetStorageImpl());
    return load_dcp_tensor(dir, metadata, name).to(meta.scalar_type()).reshape(meta.sizes());
  };
  if (out_format == CheckpointFormat::kSafetensors) {
    if (!metadata.bytes.empty())
      std::cerr << "volt convert: safetensors holds tensors only; leaving out " << metadata.bytes.size()
                << " byte items, e.g. '" << metadata.bytes.begin()->first << "'\n";
    write_checkpoint(out, contents, out_format,
                     CheckpointWriteOptions().metadata({{"format", "pt"}}).hooks(hooks));
    return;
  }
  for (const auto& [name, storage] : metadata.bytes) contents.to_dict().set(name, load_dcp_object(dir, name));
  write_checkpoint(out, contents, out_format, CheckpointWriteOptions().hooks(hooks));
}

void inspect(const std::string& path, bool json) {
  if (is_dcp_directory(path)) return inspect_dcp(path, json);
  auto reader = CheckpointReader::open(path);
  const Value& contents = reader->contents();
  const Value tensors = flatten_tensors(contents);
  struct Total {
    uint64_t count = 0, elements = 0, bytes = 0;
  };
  std::map<std::string, Total> by_dtype;
  Total total;
  nlohmann::json listed = nlohmann::json::array();
  for (const auto& [key, value] : tensors.to_dict()) {
    const at::Tensor& t = value.to_tensor();
    const uint64_t elements = static_cast<uint64_t>(t.numel());
    const uint64_t bytes = elements * t.element_size();
    for (Total* sum : {&total, &by_dtype[dtype_name(t.scalar_type())]}) {
      sum->count += 1;
      sum->elements += elements;
      sum->bytes += bytes;
    }
    listed.push_back({{"name", key.to_string()},
                      {"dtype", dtype_name(t.scalar_type())},
                      {"shape", t.sizes().vec()},
                      {"bytes", bytes}});
  }
  const bool lightning = contents.is_dict() && contents.to_dict().contains("state_dict");
  if (json) {
    nlohmann::json out = {
        {"file", path},
        {"format", format_name(reader->format())},
        {"file_bytes", file_size(path)},
        {"tensors", listed},
        {"total", {{"tensors", total.count}, {"elements", total.elements}, {"bytes", total.bytes}}}};
    for (const auto& [dtype, sum] : by_dtype)
      out["by_dtype"][dtype] = {{"tensors", sum.count}, {"elements", sum.elements}, {"bytes", sum.bytes}};
    if (!reader->metadata().empty()) out["metadata"] = reader->metadata();
    if (lightning) {
      for (const auto& [key, value] : contents.to_dict()) {
        const std::string name = key.is_string() ? key.to_string() : key.repr(0);
        if (name == "state_dict") continue;
        if (value.is_dict() || value.is_list()) {
          if (name == "hyper_parameters" || name == "loops")
            out[name] = to_json(value);
          else
            out[name + "_count"] = value.is_dict() ? value.to_dict().size() : value.items().size();
        } else {
          out[name] = to_json(value);
        }
      }
    }
    std::cout << out.dump(2) << "\n";
    return;
  }
  std::cout << path << "  (" << format_name(reader->format()) << ", " << human_bytes(file_size(path))
            << ")\n";
  if (lightning) {
    for (const auto& [key, value] : contents.to_dict()) {
      const std::string name = key.is_string() ? key.to_string() : key.repr(0);
      if (name == "state_dict") continue;
      if ((value.is_list() || value.is_dict()) && name != "hyper_parameters") {
        const size_t n = value.is_dict() ? value.to_dict().size() : value.items().size();
        std::cout << "  " << name << ": " << n << (n == 1 ? " entry" : " entries") << "\n";
      } else {
        std::cout << "  " << name << ": " << value.repr(16) << "\n";
      }
    }
  } else if (!contents.is_dict()) {
    std::cout << "  contents: " << contents.repr(8) << "\n";
  }
  for (const auto& [key, value] : reader->metadata())
    std::cout << "  metadata " << key << ": " << value << "\n";
  std::cout << "tensors:\n";
  for (const auto& t : listed) {
    std::string shape;
    for (const auto& d : t["shape"]) shape += (shape.empty() ? "" : ", ") + std::to_string(d.get<int64_t>());
    std::printf("  %-60s %-9s [%s]  %s\n", t["name"].get<std::string>().c_str(),
                t["dtype"].get<std::string>().c_str(), shape.c_str(),
                human_bytes(t["bytes"].get<double>()).c_str());
  }
  for (const auto& [dtype, sum] : by_dtype)
    std::printf("total %-9s %llu tensors, %llu elements, %s\n", dtype.c_str(), (unsigned long long)sum.count,
                (unsigned long long)sum.elements, human_bytes(static_cast<double>(sum.bytes)).c_str());
  std::printf("total %llu tensors, %llu elements, %s\n", (unsigned long long)total.count,
              (unsigned long long)total.elements, human_bytes(static_cast<double>(total.bytes)).c_str());
}

// Replaces floating tensors by meta placeholders of `dtype`, whose data the writer asks for one at a time.
// Views with the same geometry of the same storage (tied weights) share one placeholder.
class Converter {
 public:
  Converter(const CheckpointReader& reader, c10::optional<c10::ScalarType> dtype)
      : reader_(reader), dtype_(dtype) {}

  Value convert(const Value& v) {
    switch (v.kind()) {
      case ValueKind::kTensor:
        return convert_tensor(v.to_tensor());
      case ValueKind::kList:
      case ValueKind::kTuple: {
        std::vector<Value> items;
        for (const Value& item : v.items()) items.push_back(convert(item));
        return v.is_list() ? Value::list(std::move(items)) : Value::tuple(std::move(items));
      }
      case ValueKind::kDict: {
        Value out = Value::dict(v.to_dict().ordered());
        for (const auto& [key, value] : v.to_dict()) out.to_dict().set(key, convert(value));
        return out;
      }
      default:
        return v;
    }
  }

  TensorStreamHooks hooks() {
    TensorStreamHooks hooks;
    hooks.materialize = [this](const at::Tensor& meta) {
      auto it = sources_.find(meta.storage().unsafeGetStorageImpl());
      VOLT_CHECK(it != sources_.end(), "internal: no source for a converted tensor");
      return it->second.to(*dtype_).contiguous();
    };
    hooks.written = [this](const at::Tensor& written) {
      auto it = sources_.find(written.storage().unsafeGetStorageImpl());
      reader_.release_pages(it != sources_.end() ? it->second : written);
    };
    return hooks;
  }

 private:
  Value convert_tensor(const at::Tensor& t) {
    if (!dtype_ || !at::isFloatingType(t.scalar_type()) || t.scalar_type() == *dtype_) return Value(t);
    std::string key = std::to_string(reinterpret_cast<uintptr_t>(t.storage().unsafeGetStorageImpl())) + "@" +
                      std::to_string(t.storage_offset());
    for (int64_t d = 0; d < t.dim(); ++d)
      key += ":" + std::to_string(t.size(d)) + "/" + std::to_string(t.stride(d));
    auto it = placeholders_.find(key);
    if (it != placeholders_.end()) return Value(it->second);
    at::Tensor meta = at::empty(t.sizes(), at::TensorOptions().dtype(*dtype_).device(at::kMeta));
    sources_.emplace(meta.storage().unsafeGetStorageImpl(), t);
    placeholders_.emplace(key, meta);
    return Value(meta);
  }

  const CheckpointReader& reader_;
  c10::optional<c10::ScalarType> dtype_;
  std::unordered_map<const void*, at::Tensor> sources_;
  std::unordered_map<std::string, at::Tensor> placeholders_;
};

void convert(const std::string& in, const std::string& out, const std::string& dtype_text) {
  if (is_dcp_directory(in)) return convert_dcp(in, out, dtype_text);
  const CheckpointFormat out_format = format_for_path(out);
  auto reader = CheckpointReader::open(in);
  c10::optional<c10::ScalarType> dtype;
  if (!dtype_text.empty()) dtype = parse_dtype(dtype_text);
  Converter converter(*reader, dtype);
  Value contents = converter.convert(reader->contents());
  std::map<std::string, std::string> metadata = reader->metadata();
  const bool lightning = contents.is_dict() && contents.to_dict().contains("state_dict");

  if (out_format == CheckpointFormat::kSafetensors) {
    if (lightning) {
      const Checkpoint ckpt = Checkpoint::from_value(contents);
      std::vector<std::string> kept_out;
      for (const auto& [key, value] : contents.to_dict())
        if (!(key.is_string() && key.to_string() == "state_dict")) kept_out.push_back(key.repr(0));
      std::string list;
      for (const auto& k : kept_out) list += (list.empty() ? "" : ", ") + k;
      std::cerr << "volt convert: safetensors holds the weights only; keeping state_dict, leaving out "
                << list << "\n";
      metadata["epoch"] = std::to_string(ckpt.epoch);
      metadata["global_step"] = std::to_string(ckpt.global_step);
      contents = ckpt.state_dict;
    }
    std::vector<std::string> dropped;
    Value flat = flatten_tensors(contents, &dropped);
    if (!dropped.empty())
      std::cerr << "volt convert: " << dropped.size() << " non-tensor entries left out, e.g. '" << dropped[0]
                << "'\n";
    if (metadata.empty()) metadata["format"] = "pt";
    write_checkpoint(out, flat, out_format,
                     CheckpointWriteOptions().metadata(metadata).hooks(converter.hooks()));
    return;
  }
  // To a PyTorch file: a .ckpt gets Lightning's layout; a .pt keeps what was read.
  const bool to_ckpt = out.size() >= 5 && out.compare(out.size() - 5, 5, ".ckpt") == 0;
  if (to_ckpt && !lightning) {
    Checkpoint ckpt = Checkpoint::from_value(contents);
    for (const char* key : {"epoch", "global_step"}) {
      auto it = metadata.find(key);
      if (it != metadata.end())
        (std::string(key) == "epoch" ? ckpt.epoch : ckpt.global_step) = std::stoll(it->second);
    }
    contents = ckpt.to_value();
  }
  write_checkpoint(out, contents, out_format, CheckpointWriteOptions().hooks(converter.hooks()));
}

// A model zoo GPT initialized by volt (init_module, counter-based generator) and saved as a checkpoint.
void save_model(const std::string& model_name, const std::string& precision, uint64_t seed,
                const std::string& out) {
  at::manual_seed(seed);
  Trainer trainer(TrainerOptions().accelerator("cpu").precision(Precision(precision)));
  models::GPT model{nullptr};
  {
    auto scope = trainer.init_module();
    model = models::GPT(models::GPTConfig::preset(model_name));
  }
  Checkpoint ckpt;
  ckpt.state_dict = state_dict(*model);
  ckpt.hyper_parameters = model->config.to_hparams().value();
  ckpt.hyper_parameters.to_dict().set("model", model_name);
  ckpt.hyper_parameters.to_dict().set("precision", precision);
  ckpt.save(out, /*lossy=*/true);
}

}  // namespace

void add_checkpoint_commands(CLI::App& app) {
  auto* inspect_command =
      app.add_subcommand("inspect", "list a checkpoint's tensors, hyper-parameters and totals");
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  inspect_command->add_option("FILE", *path, ".ckpt, .pt or .safetensors file, or a DCP directory")
      ->required()
      ->check(CLI::ExistingPath);
  inspect_command->add_flag("--json", *json, "one JSON object instead of text");
  inspect_command->callback([path, json] { inspect(*path, *json); });

  auto* convert_command = app.add_subcommand(
      "convert",
      "convert between .ckpt, .pt, .safetensors and DCP directories (from), streaming tensor by tensor");
  auto in = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto dtype = std::make_shared<std::string>();
  convert_command->add_option("IN", *in, "source checkpoint (a file, or a DCP directory)")
      ->required()
      ->check(CLI::ExistingPath);
  convert_command->add_option("OUT", *out, "destination; the format follows the extension")->required();
  convert_command->add_option("--dtype", *dtype,
                              "cast floating-point tensors: float32, float16, bfloat16, float64");
  convert_command->callback([in, out, dtype] { convert(*in, *out, *dtype); });

  auto* save_command = app.add_subcommand(
      "save-model", "build a model zoo model with trainer.init_module() and save it as a checkpoint");
  auto model = std::make_shared<std::string>("gpt2");
  auto precision = std::make_shared<std::string>("32-true");
  auto seed = std::make_shared<uint64_t>(0);
  auto file = std::make_shared<std::string>();
  save_command->add_option("--model", *model, "gpt2, gpt2-medium, gpt2-large, gpt2-xl")
      ->capture_default_str();
  save_command->add_option("--precision", *precision, "Lightning precision string")->capture_default_str();
  save_command->add_option("--seed", *seed, "torch::manual_seed before building")->capture_default_str();
  save_command->add_option("OUT", *file, ".ckpt, .pt or .safetensors")->required();
  save_command->callback([=] { save_model(*model, *precision, *seed, *file); });
}

}  // namespace volt::tools

#include "dcp_metadata.h"

#include <algorithm>
#include <cstring>
#include <tuple>

#include "pickle.h"
#include "torch_dtypes.h"
#include "volt/error.h"

namespace volt::detail {
namespace {

constexpr const char* kMetadataModule = "torch.distributed.checkpoint.metadata";
constexpr const char* kFilesystemModule = "torch.distributed.checkpoint.filesystem";
// PyTorch 1.13 - 2.1 kept TensorProperties and its memory-format enum here.
constexpr const char* kShardedTensorModule = "torch.distributed._shard.sharded_tensor.metadata";

// Exactly the classes a DCP `.metadata` pickle holds; anything else is refused as in strict torch files.
bool allowed_global(const std::string& module, const std::string& name) {
  if (module == kMetadataModule)
    return name == "Metadata" || name == "TensorStorageMetadata" || name == "BytesStorageMetadata" ||
           name == "ChunkStorageMetadata" || name == "TensorProperties" || name == "MetadataIndex" ||
           name == "StorageMeta" || name == "_MEM_FORMAT_ENCODING";
  if (module == kShardedTensorModule) return name == "TensorProperties" || name == "MEM_FORMAT_ENCODING";
  if (module == kFilesystemModule) return name == "_StorageInfo";
  if (module == "torch") {
    if (name == "Size" || name == "strided") return true;
    return dtype_of_attribute(name).has_value();
  }
  if (module == "torch.serialization") return name == "_get_layout";
  // Enum members pickle as getattr(EnumClass, "NAME") in Python >= 3.12; StorageMeta's checkpoint_id is a
  // Path.
  if (module == "builtins") return name == "getattr";
  if (module == "pathlib" || module == "pathlib._local")
    return name == "PosixPath" || name == "PurePosixPath";
  return false;
}

std::string join(const std::vector<int64_t>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
  return out + "]";
}

class Parser {
 public:
  explicit Parser(const std::string& path) : path_(path) {}

  [[noreturn]] void fail(const std::string& message) const {
    VOLT_FAIL("'", path_, "': ", message,
              " (a DCP .metadata file holds torch.distributed.checkpoint's Metadata)");
  }
  bool is_class(const Value& v, const char* name) const {
    if (!v.is_object()) return false;
    const Object& o = v.to_object();
    return o.name == name &&
           (o.module == kMetadataModule || o.module == kFilesystemModule || o.module == kShardedTensorModule);
  }
  // A dataclass instance: NEWOBJ of the class, then BUILD with its __dict__.
  const Dict& fields(const Value& v, const char* name) const {
    if (!is_class(v, name)) fail(std::string("expected a ") + name + ", found " + v.repr(2));
    const Object& o = v.to_object();
    if (!o.has_state || !o.state.is_dict()) fail(std::string("a ") + name + " has no fields");
    return o.state.to_dict();
  }
  const Value& field(const Dict& d, const char* key, const char* owner) const {
    const Value* v = d.find(Value(key));
    if (v == nullptr) fail(std::string("a ") + owner + " has no '" + key + "'");
    return *v;
  }
  int64_t integer(const Value& v, const char* what) const {
    if (!v.is_int()) fail(std::string(what) + " is not an int but " + v.repr(2));
    return v.to_int();
  }
  std::vector<int64_t> size(const Value& v, const char* what) const {
    // torch.Size((...)) or a plain tuple/list of ints
    const Value* items = &v;
    if (v.is_object() && v.to_object().module == "torch" && v.to_object().name == "Size") {
      const Value& args = v.to_object().args;
      if (!args.is_tuple() || args.items().size() != 1)
        fail(std::string(what) + " is a malformed torch.Size");
      items = &args.items()[0];
    }
    if (!items->is_tuple() && !items->is_list()) fail(std::string(what) + " is not a size but " + v.repr(2));
    std::vector<int64_t> out;
    for (const Value& item : items->items()) {
      const int64_t n = integer(item, what);
      if (n < 0) fail(std::string(what) + " holds the negative number " + std::to_string(n));
      out.push_back(n);
    }
    return out;
  }
  c10::ScalarType dtype(const Value& properties) const {
    if (!is_class(properties, "TensorProperties") || !properties.to_object().has_state)
      fail("a tensor's properties are not a TensorProperties");
    const Value& state = properties.to_object().state;
    const Value* d = nullptr;
    if (state.is_tuple() && !state.items().empty())
      d = &state.items()[0];  // __getstate__: (dtype, layout, ...)
    if (state.is_dict()) d = state.to_dict().find(Value("dtype"));
    if (d == nullptr || !d->is_object() || d->to_object().module != "torch")
      fail("a tensor's dtype is not a torch dtype");
    if (const auto dtype = dtype_of_attribute(d->to_object().name)) return *dtype;
    fail("unsupported dtype torch." + d->to_object().name);
  }

  DcpMetadata run(const Value& root) {
    DcpMetadata out;
    const Dict& metadata = fields(root, "Metadata");
    if (const Value* version = metadata.find(Value("version")); version != nullptr && version->is_string())
      out.version = version->to_string();
    // storage_data: {MetadataIndex(fqn, offset, index): _StorageInfo(relative_path, offset, length)}
    std::map<std::pair<std::string, std::vector<int64_t>>, DcpStorage> tensor_items;
    std::map<std::string, DcpStorage> byte_items;
    const Value& storage_data = field(metadata, "storage_data", "Metadata");
    if (!storage_data.is_dict()) fail("storage_data is not a dict");
    for (const auto& [key, value] : storage_data.to_dict()) {
      const Dict& index = fields(key, "MetadataIndex");
      const Value& fqn = field(index, "fqn", "MetadataIndex");
      if (!fqn.is_string()) fail("a MetadataIndex's fqn is not a str");
      const Value* offset = index.find(Value("offset"));
      const Dict& info = fields(value, "_StorageInfo");
      DcpStorage storage;
      const Value& file = field(info, "relative_path", "_StorageInfo");
      if (!file.is_string()) fail("a _StorageInfo's relative_path is not a str");
      storage.file = file.to_string();
      if (storage.file.empty() || storage.file.find('/') != std::string::npos || storage.file == "." ||
          storage.file == ".." || storage.file.find('\0') != std::string::npos)
        fail("item '" + fqn.to_string() + "' lives in '" + storage.file +
             "', which is not a file name inside the checkpoint directory");
      const int64_t at = integer(field(info, "offset", "_StorageInfo"), "an item offset");
      const int64_t length = integer(field(info, "length", "_StorageInfo"), "an item length");
      if (at < 0 || length < 0) fail("item '" + fqn.to_string() + "' has a negative offset or length");
      storage.offset = static_cast<uint64_t>(at);
      storage.length = static_cast<uint64_t>(length);
      if (const Value* transforms = info.find(Value("transform_descriptors"));
          transforms != nullptr && !transforms->is_none() &&
          !((transforms->is_list() || transforms->is_tuple()) && transforms->items().empty()))
        fail("item '" + fqn.to_string() + "' is stored through transforms " + transforms->repr(4) +
             " (compression or encryption extensions), which volt does not read; save without extensions");
      if (offset == nullptr || offset->is_none())
        byte_items[fqn.to_string()] = storage;
      else
        tensor_items[{fqn.to_string(), size(*offset, "a MetadataIndex offset")}] = storage;
    }
    const Value& entries = field(metadata, "state_dict_metadata", "Metadata");
    if (!entries.is_dict()) fail("state_dict_metadata is not a dict");
    for (const auto& [key, value] : entries.to_dict()) {
      if (!key.is_string()) fail("a state_dict_metadata key is not a str");
      const std::string& name = key.to_string();
      if (is_class(value, "BytesStorageMetadata")) {
        auto it = byte_items.find(name);
        if (it == byte_items.end()) fail("byte item '" + name + "' has no entry in storage_data");
        out.bytes[name] = it->second;
        continue;
      }
      const Dict& tensor = fields(value, "TensorStorageMetadata");
      DcpTensorInfo info;
      info.dtype = dtype(field(tensor, "properties", "TensorStorageMetadata"));
      info.size = size(field(tensor, "size", "TensorStorageMetadata"), "a tensor size");
      const Value& chunks = field(tensor, "chunks", "TensorStorageMetadata");
      if (!chunks.is_list()) fail("tensor '" + name + "' has chunks that are not a list");
      for (const Value& chunk : chunks.items()) {
        const Dict& c = fields(chunk, "ChunkStorageMetadata");
        DcpChunkInfo ci;
        ci.offsets = size(field(c, "offsets", "ChunkStorageMetadata"), "a chunk offset");
        ci.sizes = size(field(c, "sizes", "ChunkStorageMetadata"), "a chunk size");
        auto it = tensor_items.find({name, ci.offsets});
        if (it == tensor_items.end())
          fail("the chunk of tensor '" + name + "' at offsets " + Value::tuple({}).repr() +
               " has no entry in storage_data");
        ci.storage = it->second;
        info.chunks.push_back(std::move(ci));
      }
      check_tiling("'" + path_ + "'", name, info);
      out.tensors[name] = std::move(info);
    }
    // planner_data: {fqn: (key or list index, ...)}, the nesting a flat name came from. Custom planners
    // may keep anything there, so whatever is not such a path for a known item is ignored.
    if (const Value* planner = metadata.find(Value("planner_data"));
        planner != nullptr && planner->is_dict()) {
      for (const auto& [key, path] : planner->to_dict()) {
        if (!key.is_string() || !(out.tensors.count(key.to_string()) || out.bytes.count(key.to_string())) ||
            !path.is_tuple() || path.items().empty())
          continue;
        bool keys = true;
        for (const Value& part : path.items()) keys = keys && (part.is_string() || part.is_int());
        if (keys) out.paths[key.to_string()] = path;
      }
    }
    for (const auto& [name, tensor] : out.tensors)
      for (const auto& chunk : tensor.chunks) out.files.push_back(chunk.storage.file);
    for (const auto& [name, storage] : out.bytes) out.files.push_back(storage.file);
    std::sort(out.files.begin(), out.files.end());
    out.files.erase(std::unique(out.files.begin(), out.files.end()), out.files.end());
    return out;
  }

 private:
  const std::string& path_;
};

Value global(const char* module, const std::string& name) { return Value::object(module, name); }
Value dataclass(const char* module, const char* name, Value state) {
  Value v = Value::object(module, name, Value::tuple());
  Object& o = v.to_object();
  o.has_args = true;
  o.created_by_new = true;
  o.state = std::move(state);
  o.has_state = true;
  return v;
}
Value torch_size(const std::vector<int64_t>& dims) {
  std::vector<Value> items(dims.begin(), dims.end());
  Value v = Value::object("torch", "Size", Value::tuple({Value::tuple(items)}));
  v.to_object().has_args = true;
  return v;
}
Value fields(std::initializer_list<std::pair<const char*, Value>> items) {
  Value d = Value::dict();
  for (const auto& [key, value] : items) d.to_dict().set(key, value);
  return d;
}

}  // namespace

const char* dcp_dtype_name(c10::ScalarType dtype) {
  if (const TorchDtype* known = torch_dtype(dtype)) return known->name;
  VOLT_FAIL("DCP checkpoints cannot hold tensors of ", c10::toString(dtype), " in volt; convert them first");
}

void check_tiling(const std::string& what, const std::string& name, const DcpTensorInfo& info) {
  const size_t dims = info.size.size();
  // Elements counted in a wide type: a hostile size must not wrap the coverage sum.
  __int128 total = 1, covered = 0;
  for (int64_t s : info.size) total *= s;
  for (size_t i = 0; i < info.chunks.size(); ++i) {
    const DcpChunkInfo& c = info.chunks[i];
    VOLT_CHECK(c.offsets.size() == dims && c.sizes.size() == dims, what, ": tensor '", name, "' has ", dims,
               " dimensions but a chunk at offsets ", join(c.offsets), " with sizes ", join(c.sizes));
    __int128 volume = 1;
    for (size_t d = 0; d < dims; ++d) {
      VOLT_CHECK(c.offsets[d] >= 0 && c.sizes[d] >= 0 && c.offsets[d] <= info.size[d] &&
                     c.sizes[d] <= info.size[d] - c.offsets[d],
                 what, ": the chunk of tensor '", name, "' at offsets ", join(c.offsets), " with sizes ",
                 join(c.sizes), " reaches outside its size ", join(info.size), " (offsets out of range)");
      volume *= c.sizes[d];
    }
    covered += volume;
    if (volume == 0) continue;
    for (size_t j = 0; j < i; ++j) {
      const DcpChunkInfo& o = info.chunks[j];
      bool overlap = true;
      for (size_t d = 0; d < dims && overlap; ++d)
        overlap = c.offsets[d] < o.offsets[d] + o.sizes[d] && o.offsets[d] < c.offsets[d] + c.sizes[d];
      VOLT_CHECK(!overlap, what, ": chunks of tensor '", name, "' at offsets ", join(o.offsets), " and ",
                 join(c.offsets), " overlap");
    }
  }
  VOLT_CHECK(covered == total, what, ": the chunks of tensor '", name, "' cover ",
             static_cast<long long>(covered), " of its ", static_cast<long long>(total), " elements (size ",
             join(info.size), "): the checkpoint is incomplete (chunk not covering)");
}

DcpMetadata parse_dcp_metadata(const char* data, size_t size, const std::string& path) {
  UnpickleOptions options;
  options.strict = true;
  options.allow_object = allowed_global;
  const StorageLoader no_storages = [&](const std::string&, c10::ScalarType, int64_t,
                                        const std::string&) -> c10::Storage {
    VOLT_FAIL("'", path, "': a DCP .metadata pickle holds no tensor storages");
  };
  const Value root = unpickle(data, size, no_storages, "'" + path + "'", options);
  return Parser(path).run(root);
}

namespace {

// An item's nested keys; a name with none given is a top-level key (a tuple of itself).
Value planner_path(const DcpMetadata& metadata, const std::string& name) {
  auto it = metadata.paths.find(name);
  if (it == metadata.paths.end()) return Value::tuple({name});
  VOLT_CHECK(it->second.is_tuple() && !it->second.items().empty(), "the planner path of '", name,
             "' must be a non-empty tuple of keys and indices");
  return it->second;
}

}  // namespace

std::string pickle_dcp_metadata(const DcpMetadata& metadata) {
  const Value strided = global("torch", "strided");
  Value contiguous = Value::object(kMetadataModule, "_MEM_FORMAT_ENCODING", Value::tuple({int64_t{0}}));
  contiguous.to_object().has_args = true;
  Value state_dict_metadata = Value::dict();
  Value planner_data = Value::dict();
  Value storage_data = Value::dict();
  for (const auto& [name, info] : metadata.tensors) {
    // (dtype, layout, requires_grad, memory format, pin_memory): TensorProperties.__getstate__
    Value properties = dataclass(
        kMetadataModule, "TensorProperties",
        Value::tuple({global("torch", dcp_dtype_name(info.dtype)), strided, false, contiguous, false}));
    Value chunks = Value::list();
    int64_t index = 0;
    for (const DcpChunkInfo& chunk : info.chunks) {
      chunks.items().push_back(
          dataclass(kMetadataModule, "ChunkStorageMetadata",
                    fields({{"offsets", torch_size(chunk.offsets)}, {"sizes", torch_size(chunk.sizes)}})));
      storage_data.to_dict().set(
          dataclass(kMetadataModule, "MetadataIndex",
                    fields({{"fqn", name}, {"offset", torch_size(chunk.offsets)}, {"index", index++}})),
          dataclass(kFilesystemModule, "_StorageInfo",
                    fields({{"relative_path", chunk.storage.file},
                            {"offset", static_cast<int64_t>(chunk.storage.offset)},
                            {"length", static_cast<int64_t>(chunk.storage.length)}})));
    }
    state_dict_metadata.to_dict().set(
        name,
        dataclass(kMetadataModule, "TensorStorageMetadata",
                  fields({{"properties", properties}, {"size", torch_size(info.size)}, {"chunks", chunks}})));
    planner_data.to_dict().set(name, planner_path(metadata, name));
  }
  for (const auto& [name, storage] : metadata.bytes) {
    Value bytes = Value::object(kMetadataModule, "BytesStorageMetadata", Value::tuple());
    bytes.to_object().has_args = true;
    bytes.to_object().created_by_new = true;
    state_dict_metadata.to_dict().set(name, bytes);
    planner_data.to_dict().set(name, planner_path(metadata, name));
    storage_data.to_dict().set(dataclass(kMetadataModule, "MetadataIndex",
                                         fields({{"fqn", name}, {"offset", Value()}, {"index", Value()}})),
                               dataclass(kFilesystemModule, "_StorageInfo",
                                         fields({{"relative_path", storage.file},
                                                 {"offset", static_cast<int64_t>(storage.offset)},
                                                 {"length", static_cast<int64_t>(storage.length)}})));
  }
  const Value root =
      dataclass(kMetadataModule, "Metadata",
                fields({{"state_dict_metadata", state_dict_metadata},
                        {"planner_data", planner_data},
                        {"storage_data", storage_data},
                        {"storage_meta", Value()},
                        {"version", metadata.version.empty() ? Value("1.0.0") : Value(metadata.version)}}));
  std::vector<PickledStorage> none;
  return pickle(root, &none);
}

}  // namespace volt::detail

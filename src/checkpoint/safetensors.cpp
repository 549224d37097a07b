#include "volt/checkpoint/safetensors.h"

#include "volt/checkpoint/atomic_file.h"
#include "volt/error.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace volt {
namespace {

// The reference implementation's limit (safetensors/src/tensor.rs, MAX_HEADER_SIZE).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeName {
  const char* name;
  c10::ScalarType dtype;
  int rank;  // the reference writer orders tensors by its Dtype enum, descending, then by name
};

const DtypeName kDtypes[] = {
    {"BOOL", c10::kBool, 0},  {"U8", c10::kByte, 1},       {"I8", c10::kChar, 2}, {"I16", c10::kShort, 3},
    {"F16", c10::kHalf, 4},   {"BF16", c10::kBFloat16, 5}, {"I32", c10::kInt, 6}, {"F32", c10::kFloat, 7},
    {"F64", c10::kDouble, 8}, {"I64", c10::kLong, 9},
};

const DtypeName& dtype_entry(c10::ScalarType dtype) {
  for (const auto& d : kDtypes)
    if (d.dtype == dtype) return d;
  VOLT_FAIL(
      "safetensors has no name for dtype ", c10::toString(dtype),
      ": convert the tensor to one of bool, uint8, int8, int16, int32, int64, float16, bfloat16, float32, "
      "float64");
}

uint64_t read_le64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

const char* safetensors_dtype_name(c10::ScalarType dtype) { return dtype_entry(dtype).name; }

struct SafetensorsReader::Mapping {
  void* address = nullptr;
  size_t length = 0;
  ~Mapping() {
    if (address != nullptr && length > 0) munmap(address, length);
  }
};

SafetensorsReader::SafetensorsReader(const std::string& path)
    : path_(path), mapping_(std::make_shared<Mapping>()) {
  auto fail = [&](const auto&... what) { VOLT_FAIL("safetensors file '", path_, "': ", what...); };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open: ", std::strerror(errno));
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    ::close(fd);
    fail("cannot stat: ", std::strerror(errno));
  }
  const auto size = static_cast<uint64_t>(info.st_size);
  if (size < 8) {
    ::close(fd);
    fail("is ", size, " bytes, shorter than the 8-byte header length");
  }
  // Private and writable: tensors handed out may be modified in place without touching the file.
  void* address = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (address == MAP_FAILED) fail("cannot map ", size, " bytes: ", std::strerror(errno));
  mapping_->address = address;
  mapping_->length = size;
  const auto* bytes = static_cast<const unsigned char*>(address);

  const uint64_t header_bytes = read_le64(bytes);
  if (header_bytes > kMaxHeaderBytes)
    fail("header length ", header_bytes, " exceeds the limit of ", kMaxHeaderBytes);
  if (header_bytes > size - 8)
    fail("header length ", header_bytes, " exceeds the ", size - 8, " bytes after it");
  if (header_bytes == 0 || bytes[8] != '{') fail("header does not start with '{'");
  const char* header = reinterpret_cast<const char*>(bytes + 8);
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(header, header + header_bytes);
  } catch (const nlohmann::json::exception& e) {
    fail("header is not valid JSON: ", e.what());
  }
  if (!json.is_object()) fail("header is not a JSON object");
  data_ = header + header_bytes;
  const uint64_t data_bytes = size - 8 - header_bytes;

  auto as_count = [&](const nlohmann::json& v, const std::string& name, const char* field) {
    if (!v.is_number_unsigned())
      fail("tensor '", name, "': ", field, " must hold non-negative integers, got ", v.dump());
    return v.get<uint64_t>();
  };
  for (const auto& [name, value] : json.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) fail("__metadata__ must be an object of strings");
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string()) fail("__metadata__ value of '", key, "' is not a string");
        metadata_[key] = text.get<std::string>();
      }
      continue;
    }
    if (!value.is_object()) fail("tensor '", name, "' is not an object");
    if (!value.contains("dtype") || !value["dtype"].is_string())
      fail("tensor '", name, "' has no dtype string");
    if (!value.contains("shape") || !value["shape"].is_array())
      fail("tensor '", name, "' has no shape array");
    if (!value.contains("data_offsets") || !value["data_offsets"].is_array() ||
        value["data_offsets"].size() != 2)
      fail("tensor '", name, "' needs data_offsets [begin, end]");
    SafetensorsEntry entry;
    entry.name = name;
    const auto dtype_text = value["dtype"].get<std::string>();
    const DtypeName* dtype = nullptr;
    for (const auto& d : kDtypes)
      if (dtype_text == d.name) dtype = &d;
    if (dtype == nullptr)
      fail("tensor '", name, "' has dtype '", dtype_text, "', which volt cannot represent");
    entry.dtype = dtype->dtype;
    uint64_t numel = 1;
    for (const auto& dim : value["shape"]) {
      const uint64_t extent = as_count(dim, name, "shape");
      if (extent > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, extent, &numel))
        fail("tensor '", name, "' has shape ", value["shape"].dump(), ", whose size overflows");
      entry.shape.push_back(static_cast<int64_t>(extent));
    }
    entry.begin = as_count(value["data_offsets"][0], name, "data_offsets");
    entry.end = as_count(value["data_offsets"][1], name, "data_offsets");
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(c10::elementSize(entry.dtype)), &nbytes))
      fail("tensor '", name, "' has shape ", value["shape"].dump(), ", whose byte size overflows");
    if (entry.begin > entry.end || entry.end - entry.begin != nbytes)
      fail("tensor '", name, "' data_offsets [", entry.begin, ",", entry.end, "] do not match shape ",
           value["shape"].dump(), " x ", dtype_text, " = ", nbytes, " bytes");
    entries_.push_back(std::move(entry));
  }
  std::sort(entries_.begin(), entries_.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // The data must be tiled exactly: no overlap, no hole, nothing past the end (as the reference checks).
  uint64_t expected = 0;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const auto& e = entries_[i];
    if (e.begin < expected) fail("tensors '", entries_[i - 1].name, "' and '", e.name, "' overlap");
    if (e.begin > expected)
      fail("a hole of ", e.begin - expected, " bytes lies before tensor '", e.name, "'");
    expected = e.end;
    if (expected > data_bytes)
      fail("tensor '", e.name, "' ends at ", expected, ", past the ", data_bytes, " data bytes");
    index_[e.name] = i;
  }
  if (expected != data_bytes) fail("the tensors cover ", expected, " of the ", data_bytes, " data bytes");
}

const SafetensorsEntry& SafetensorsReader::entry(const std::string& name) const {
  auto it = index_.find(name);
  VOLT_CHECK(it != index_.end(), "safetensors file '", path_, "' has no tensor '", name, "'");
  return entries_[it->second];
}

at::Tensor SafetensorsReader::tensor(const std::string& name) const {
  const auto& e = entry(name);
  auto options = at::TensorOptions().dtype(e.dtype).device(at::kCPU);
  const char* source = data_ + e.begin;
  const auto item = static_cast<uintptr_t>(c10::elementSize(e.dtype));
  if (reinterpret_cast<uintptr_t>(source) % item == 0) {
    auto keep_alive = mapping_;
    return at::from_blob(
        const_cast<char*>(source), e.shape, [keep_alive](void*) {}, options);
  }
  at::Tensor copy = at::empty(e.shape, options);
  std::memcpy(copy.data_ptr(), source, e.end - e.begin);
  return copy;
}

bool SafetensorsReader::is_mapped(const at::Tensor& tensor) const {
  const auto* p = static_cast<const char*>(tensor.data_ptr());
  const auto* base = static_cast<const char*>(mapping_->address);
  return p >= base && p < base + mapping_->length;
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<const std::pair<std::string, at::Tensor>*> order;
  for (const auto& item : tensors) {
    VOLT_CHECK(item.first != "__metadata__", "'__metadata__' is reserved by safetensors: rename that tensor");
    VOLT_CHECK(item.second.defined(), "tensor '", item.first, "' is undefined: cannot save it to '", path,
               "'");
    dtype_entry(item.second.scalar_type());  // throws for dtypes safetensors cannot name
    order.push_back(&item);
  }
  std::sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    const int ra = dtype_entry(a->second.scalar_type()).rank, rb = dtype_entry(b->second.scalar_type()).rank;
    return ra != rb ? ra > rb : a->first < b->first;
  });
  for (size_t i = 1; i < order.size(); ++i)
    VOLT_CHECK(order[i - 1]->first != order[i]->first, "tensor name '", order[i]->first, "' appears twice");

  // The header is written by hand so that its key order is the reference writer's.
  std::string header = "{";
  if (!metadata.empty()) header += "\"__metadata__\":" + nlohmann::json(metadata).dump() + ",";
  uint64_t offset = 0;
  for (const auto* item : order) {
    const auto& t = item->second;
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header += nlohmann::json(item->first).dump() + ":{\"dtype\":\"" + dtype_entry(t.scalar_type()).name +
              "\",\"shape\":" + nlohmann::json(t.sizes().vec()).dump() + ",\"data_offsets\":[" +
              std::to_string(offset) + "," + std::to_string(offset + bytes) + "]},";
    offset += bytes;
  }
  if (header.back() == ',') header.pop_back();
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');

  write_file_atomically(path, [&](AtomicFileWriter& out) {
    unsigned char length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(header.size() >> (8 * i));
    out.write(length, 8);
    out.write(header.data(), header.size());
    for (const auto* item : order) {  // one tensor at a time: peak memory is the largest tensor
      const at::Tensor cpu = item->second.detach().to(at::kCPU).contiguous();
      out.write(cpu.data_ptr(), static_cast<size_t>(cpu.numel()) * cpu.element_size());
    }
  });
}

}  // namespace volt

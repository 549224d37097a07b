#include "volt/checkpoint/safetensors.h"

#include "mapped_file.h"
#include "safetensors_header.h"
#include "volt/checkpoint/atomic_file.h"
#include "volt/error.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <functional>
#include <tuple>
#include <unordered_set>

// Tensor bytes go between memory and file as they are; safetensors data is little-endian.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "volt's safetensors layer needs a little-endian host");

namespace volt {
namespace {

using detail::brief;
using detail::HeaderEntry;
using detail::HeaderParser;
using detail::kMetadataKey;

// MAX_HEADER_SIZE in safetensors/src/tensor.rs: the reference refuses to read or write larger headers.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct Dtype {
  const char* name;
  c10::ScalarType scalar_type;  // Undefined: a safetensors dtype LibTorch 1.13 has no type for
};

// Every dtype of the reference's `Dtype` enum, in its order. The reference writer sorts tensors by this
// order, descending (widest alignment first), then by name, so a file's layout depends on it.
const Dtype kDtypes[] = {
    {"BOOL", c10::kBool},
    {"F4", c10::ScalarType::Undefined},
    {"F6_E2M3", c10::ScalarType::Undefined},
    {"F6_E3M2", c10::ScalarType::Undefined},
    {"U8", c10::kByte},
    {"I8", c10::kChar},
    {"F8_E5M2", c10::ScalarType::Undefined},
    {"F8_E4M3", c10::ScalarType::Undefined},
    {"F8_E8M0", c10::ScalarType::Undefined},
    {"F8_E4M3FNUZ", c10::ScalarType::Undefined},
    {"F8_E5M2FNUZ", c10::ScalarType::Undefined},
    {"I16", c10::kShort},
    {"U16", c10::ScalarType::Undefined},
    {"F16", c10::kHalf},
    {"BF16", c10::kBFloat16},
    {"I32", c10::kInt},
    {"U32", c10::ScalarType::Undefined},
    {"F32", c10::kFloat},
    {"C64", c10::kComplexFloat},
    {"F64", c10::kDouble},
    {"I64", c10::kLong},
    {"U64", c10::ScalarType::Undefined},
};
constexpr char kReadableDtypes[] = "BOOL, U8, I8, I16, F16, BF16, I32, F32, C64, F64, I64";

const Dtype* dtype_named(const std::string& name) {
  for (const auto& dtype : kDtypes)
    if (name == dtype.name && dtype.scalar_type != c10::ScalarType::Undefined) return &dtype;
  return nullptr;
}

bool is_safetensors_dtype(const std::string& name) {
  for (const auto& dtype : kDtypes)
    if (name == dtype.name) return true;
  return false;
}

// The dtype's position in kDtypes, or -1 when safetensors cannot hold it.
int dtype_rank(c10::ScalarType scalar_type) {
  for (size_t i = 0; i < std::size(kDtypes); ++i)
    if (kDtypes[i].scalar_type == scalar_type) return static_cast<int>(i);
  return -1;
}

template <typename Number>
std::string json_list(const std::vector<Number>& numbers) {
  std::string text = "[";
  for (size_t i = 0; i < numbers.size(); ++i) text += (i ? "," : "") + std::to_string(numbers[i]);
  return text + "]";
}

std::string offsets_text(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + "," + std::to_string(end) + "]";
}

template <typename... Args>
[[noreturn]] void fail_file(const std::string& path, const Args&... what) {
  VOLT_FAIL("safetensors file '", path, "': ", what...);
}

// Checks one entry's numbers against each other and against the data size, as the reference's
// Metadata::validate does, plus what LibTorch needs (sizes and strides in int64).
TensorInfo checked_entry(const std::string& path, HeaderEntry& entry, uint64_t data_bytes) {
  const std::string name = brief(entry.name);
  const Dtype* dtype = dtype_named(entry.dtype);
  if (dtype == nullptr && is_safetensors_dtype(entry.dtype))
    fail_file(path, "tensor '", name, "' has dtype ", entry.dtype, ", which volt cannot represent; it reads ",
              kReadableDtypes, " (convert the file with the safetensors Python package)");
  if (dtype == nullptr)
    fail_file(path, "tensor '", name, "' has unknown dtype '", brief(entry.dtype), "'; volt reads ",
              kReadableDtypes);
  const uint64_t element_bytes = c10::elementSize(dtype->scalar_type);
  const std::string shape = brief(json_list(entry.shape));
  // Elements are counted as the reference counts them: in 64 bits, dimension by dimension, any overflow
  // an error (even when a later dimension is 0).
  uint64_t numel = 1, bytes = 0, strided_extent = 1;
  bool overflow = false, too_large_for_torch = false;
  for (const uint64_t extent : entry.shape) {
    overflow = overflow || __builtin_mul_overflow(numel, extent, &numel);
    too_large_for_torch =
        too_large_for_torch || extent > uint64_t{INT64_MAX} ||
        __builtin_mul_overflow(strided_extent, std::max<uint64_t>(extent, 1), &strided_extent) ||
        strided_extent > uint64_t{INT64_MAX};
  }
  overflow = overflow || __builtin_mul_overflow(numel, element_bytes, &bytes);
  if (overflow)
    fail_file(path, "tensor '", name, "' shape ", shape, " x ", dtype->name,
              " overflows a 64-bit byte count");
  if (too_large_for_torch)
    fail_file(path, "tensor '", name, "' shape ", shape,
              " is too large for a LibTorch tensor (its sizes and strides must fit in int64)");
  const uint64_t begin = entry.offsets[0], end = entry.offsets[1];
  if (end < begin)
    fail_file(path, "tensor '", name, "' data_offsets ", offsets_text(begin, end), " end before they begin");
  if (end - begin != bytes)
    fail_file(path, "tensor '", name, "' data_offsets ", offsets_text(begin, end), " do not match shape ",
              shape, " x ", dtype->name, " = ", bytes, " bytes");
  if (end > data_bytes)
    fail_file(path, "tensor '", name, "' data_offsets ", offsets_text(begin, end),
              " run past the end of the data (", data_bytes, " bytes)");
  return TensorInfo{std::move(entry.name), dtype->scalar_type,
                    std::vector<int64_t>(entry.shape.begin(), entry.shape.end()), begin, end};
}

// JSON text of a string as serde_json writes it (escapes only '"', '\\' and control characters).
std::string json_string(const std::string& text, const std::string& what, const std::string& path) {
  try {
    return nlohmann::json(text).dump();
  } catch (const nlohmann::json::exception&) {
    VOLT_FAIL("cannot save '", path, "': ", what, " '", brief(text),
              "' is not valid UTF-8, which safetensors requires");
  }
}

}  // namespace

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  mapping_ = detail::MappedFile::open(path, "safetensors file");
  const uint64_t file_bytes = mapping_->size();
  if (file_bytes < 8)
    fail_file(path, "is ", file_bytes, " bytes long; a safetensors file begins with an 8-byte header length");
  const auto* bytes = reinterpret_cast<const unsigned char*>(mapping_->data());

  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | bytes[i];
  if (header_bytes > file_bytes - 8)
    fail_file(path, "header length ", header_bytes, " exceeds the file size ", file_bytes,
              " (the file is truncated or not a safetensors file)");
  if (header_bytes > kMaxHeaderBytes)
    fail_file(path, "header length ", header_bytes, " exceeds the safetensors limit of ", kMaxHeaderBytes,
              " bytes");
  const char* header = mapping_->data() + 8;
  if (header_bytes == 0 || header[0] != '{')
    fail_file(path, "header does not begin with '{'; it must be a JSON object");
  // nlohmann's lexer takes a NUL byte for the end of the input, which would hide whatever follows it
  // (serde_json rejects it); JSON text has no place for a raw NUL.
  if (const void* nul = std::memchr(header, '\0', header_bytes))
    fail_file(path, "header has a NUL byte at offset ", static_cast<const char*>(nul) - header,
              "; it is not valid JSON");

  HeaderParser parser;
  if (!nlohmann::json::sax_parse(header, header + header_bytes, &parser))
    fail_file(path, parser.error.empty() ? "header is not valid JSON" : parser.error);
  metadata_ = std::move(parser.metadata);
  data_ = header + header_bytes;
  const uint64_t data_bytes = file_bytes - 8 - header_bytes;

  tensors_.reserve(parser.entries.size());
  for (auto& entry : parser.entries) tensors_.push_back(checked_entry(path, entry, data_bytes));
  std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  // The tensors must tile the data exactly, which also rules out polyglot files with hidden content.
  uint64_t covered = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const TensorInfo& tensor = tensors_[i];
    if (tensor.begin < covered)
      fail_file(path, "tensors '", brief(tensors_[i - 1].name), "' and '", brief(tensor.name),
                "' overlap (data_offsets ", offsets_text(tensors_[i - 1].begin, tensors_[i - 1].end), " and ",
                offsets_text(tensor.begin, tensor.end), ")");
    if (tensor.begin > covered)
      fail_file(path, "a hole of ", tensor.begin - covered, " bytes at data offset ", covered,
                " belongs to no tensor (the next is '", brief(tensor.name), "')");
    covered = tensor.end;
    index_.emplace(tensor.name, i);
  }
  if (covered != data_bytes)
    fail_file(path, "the tensors cover ", covered, " of the ", data_bytes, " data bytes; the last ",
              data_bytes - covered, " belong to no tensor");
}

const TensorInfo& SafetensorsReader::info(const std::string& name) const& {
  const auto found = index_.find(name);
  if (found == index_.end())
    VOLT_FAIL("safetensors file '", path_, "' has no tensor '", name, "' (it holds ", tensors_.size(),
              " tensors)");
  return tensors_[found->second];
}

at::Tensor SafetensorsReader::tensor(const std::string& name) const {
  const TensorInfo& info = this->info(name);
  // A view of the mapping that keeps it alive after the reader is gone (a copy only for unaligned data).
  return mapping_->tensor(data_ + info.begin, info.shape, info.dtype);
}

bool SafetensorsReader::release_pages(const at::Tensor& tensor) const {
  if (!is_mapped(tensor)) return false;
  // The tensor's own bytes: safetensors tensors are whole storages, and a view releases only itself.
  mapping_->release_pages(tensor.data_ptr(), static_cast<uint64_t>(tensor.numel()) * tensor.element_size());
  return true;
}

bool SafetensorsReader::is_mapped(const at::Tensor& tensor) const { return mapping_->is_mapped(tensor); }

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata, const TensorStreamHooks& hooks) {
  struct Item {
    const std::string* name;
    const at::Tensor* tensor;
    int rank;
    uint64_t bytes;
  };
  std::vector<Item> items;
  items.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    VOLT_CHECK(name != kMetadataKey, "cannot save '", path,
               "': the tensor name '__metadata__' is reserved by safetensors");
    VOLT_CHECK(tensor.defined(), "cannot save '", path, "': tensor '", name, "' is undefined");
    VOLT_CHECK(tensor.layout() == at::kStrided, "cannot save '", path, "': tensor '", name, "' is ",
               tensor.layout(), "; safetensors holds dense tensors (call to_dense())");
    VOLT_CHECK(!tensor.is_meta() || hooks.materialize, "cannot save '", path, "': tensor '", name,
               "' is on the meta device and has no data; materialize it first");
    const int rank = dtype_rank(tensor.scalar_type());
    VOLT_CHECK(
        rank >= 0, "cannot save '", path, "': tensor '", name, "' has dtype ", tensor.scalar_type(),
        ", which safetensors cannot hold in volt; convert it to one of bool, uint8, int8, int16, int32, "
        "int64, float16, bfloat16, float32, float64, complex64");
    items.push_back({&name, &tensor, rank, static_cast<uint64_t>(tensor.numel()) * tensor.element_size()});
  }
  // The reference writer's order (safetensors/src/tensor.rs, prepare): dtype descending, then name by bytes.
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.rank != b.rank ? a.rank > b.rank : *a.name < *b.name;
  });

  // serde_json's layout, as the reference writes it: __metadata__ first, then the tensors; no spaces.
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    for (const auto& [key, value] : metadata) {
      if (header.back() != '{') header += ',';
      header +=
          json_string(key, "the metadata key", path) + ":" + json_string(value, "the metadata value", path);
    }
    header += '}';
  }
  std::unordered_set<std::string> names;
  uint64_t offset = 0;
  for (const Item& item : items) {
    VOLT_CHECK(names.insert(*item.name).second, "cannot save '", path, "': the tensor name '", *item.name,
               "' appears twice");
    if (header.size() > 1) header += ',';
    header += json_string(*item.name, "the tensor name", path) + ":{\"dtype\":\"" + kDtypes[item.rank].name +
              "\",\"shape\":" + json_list(item.tensor->sizes().vec()) +
              ",\"data_offsets\":" + offsets_text(offset, offset + item.bytes) + "}";
    offset += item.bytes;
  }
  header += '}';
  header.append((8 - header.size() % 8) % 8, ' ');  // the reference pads so that the data starts 8-aligned
  VOLT_CHECK(header.size() <= kMaxHeaderBytes, "cannot save '", path, "': its header would be ",
             header.size(), " bytes, over the safetensors limit of ", kMaxHeaderBytes,
             " (too many tensors or too much metadata)");

  write_file_atomically(path, [&](AtomicFileWriter& out) {
    unsigned char length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(uint64_t{header.size()} >> (8 * i));
    out.write(length, sizeof length);
    out.write(header.data(), header.size());
    for (const Item& item : items) {  // one tensor at a time: peak memory is one tensor, not the model
      at::Tensor cpu;
      try {
        // resolve_conj/neg: a conjugate view's memory holds the unconjugated values.
        if (item.tensor->is_meta()) {
          cpu = hooks.materialize(*item.tensor).contiguous();
          VOLT_CHECK(cpu.device().is_cpu() && cpu.scalar_type() == item.tensor->scalar_type() &&
                         cpu.sizes() == item.tensor->sizes(),
                     "cannot save '", path, "': the data streamed for tensor '", *item.name,
                     "' does not match its dtype and shape");
        } else {
          cpu = item.tensor->detach().to(at::kCPU).resolve_conj().resolve_neg().contiguous();
        }
      } catch (const c10::Error& e) {
        VOLT_FAIL("cannot save '", path, "': copying tensor '", *item.name,
                  "' to the CPU failed: ", e.what_without_backtrace());
      }
      if (item.bytes > 0) out.write(cpu.data_ptr(), item.bytes);
      if (hooks.written) hooks.written(*item.tensor);
    }
  });
}

}  // namespace volt

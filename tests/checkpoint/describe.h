// The canonical description of a checkpoint value that tests/checkpoint/torch_file_oracle.py computes in
// Python, computed here from volt's reading, so that both sides compare as JSON.
#pragma once

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include "volt/checkpoint/value.h"

namespace volt::testing {

inline std::string python_dtype(c10::ScalarType dtype) {
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
    case c10::kComplexFloat:
      return "complex64";
    case c10::kComplexDouble:
      return "complex128";
    default:
      return c10::toString(dtype);
  }
}

inline std::string hex(const void* data, size_t bytes) {
  std::string out;
  const auto* p = static_cast<const unsigned char*>(data);
  char buffer[3];
  for (size_t i = 0; i < bytes; ++i) {
    std::snprintf(buffer, sizeof(buffer), "%02x", p[i]);
    out += buffer;
  }
  return out;
}

class Describer {
 public:
  nlohmann::json operator()(const Value& v) {
    using nlohmann::json;
    switch (v.kind()) {
      case ValueKind::kNone:
        return nullptr;
      case ValueKind::kBool:
        return {{"bool", v.to_bool()}};
      case ValueKind::kInt:
        return {{"int", v.to_int()}};
      case ValueKind::kDouble: {
        const double d = v.to_double();
        return {{"float", hex(&d, 8)}};
      }
      case ValueKind::kString:
        return {{"str", v.to_string()}};
      case ValueKind::kBytes:
        return {{"bytes", hex(v.to_string().data(), v.to_string().size())}};
      case ValueKind::kTensor: {
        const at::Tensor& t = v.to_tensor();
        int64_t index = -1;
        if (t.numel() > 0) {
          const void* key = t.storage().unsafeGetStorageImpl();
          index = storages_.emplace(key, static_cast<int64_t>(storages_.size())).first->second;
        }
        at::Tensor flat = t.detach().cpu().contiguous().reshape(-1);
        return {{"tensor",
                 {{"dtype", python_dtype(t.scalar_type())},
                  {"shape", t.sizes().vec()},
                  {"stride", t.strides().vec()},
                  {"offset", t.storage_offset()},
                  {"requires_grad", t.requires_grad()},
                  {"storage", index},
                  {"data", hex(flat.data_ptr(), static_cast<size_t>(flat.numel()) * flat.element_size())}}}};
      }
      case ValueKind::kList:
      case ValueKind::kTuple: {
        json items = json::array();
        for (const Value& item : v.items()) items.push_back((*this)(item));
        return {{v.is_list() ? "list" : "tuple", items}};
      }
      case ValueKind::kDict: {
        json items = json::array();
        for (const auto& item : v.to_dict())
          items.push_back(json::array({(*this)(item.first), (*this)(item.second)}));
        return {{"dict", items}, {"ordered", v.to_dict().ordered()}};
      }
      case ValueKind::kObject:
        return {{"object", v.to_object().qualified_name()}};
    }
    return nullptr;
  }

 private:
  std::map<const void*, int64_t> storages_;
};

inline nlohmann::json describe(const Value& v) { return Describer()(v); }

}  // namespace volt::testing

// detail::pickle(): protocol 2 as torch.save writes it, so that Python's pickle and torch.load read it.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "pickle.h"
#include "pickle_opcodes.h"
#include "volt/error.h"

namespace volt::detail {
namespace {

using Op = PickleOpcode;

// Python's pickler batches APPENDS and SETITEMS by this many items.
constexpr size_t kBatchSize = 1000;

void check_utf8(const std::string& text) {
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    const int n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    VOLT_CHECK(n > 0 && i + n <= text.size(), "cannot save the string '", text.substr(0, 60),
               "': it is not valid UTF-8 (Python could not read it); save it as bytes instead");
    for (int k = 1; k < n; ++k)
      VOLT_CHECK((static_cast<unsigned char>(text[i + k]) & 0xc0) == 0x80, "cannot save the string '",
                 text.substr(0, 60), "': it is not valid UTF-8; save it as bytes instead");
    i += n;
  }
}

class Pickler {
 public:
  Pickler(std::vector<PickledStorage>* storages, bool allow_meta)
      : storages_(storages), allow_meta_(allow_meta) {}
  std::string run(const Value& value) {
    emit(Op::kProto);
    put_le(2, 1);
    save(value, 0);
    emit(Op::kStop);
    return std::move(out_);
  }

 private:
  void save(const Value& v, int depth);
  void save_tensor(const at::Tensor& t);
  void save_string(const std::string& text);
  void save_int(int64_t value);
  void save_bytes(const std::string& bytes);
  void save_global(const std::string& module, const std::string& name) {
    emit(Op::kGlobal);
    out_ += module + "\n" + name + "\n";
  }
  void emit(Op op) { out_ += static_cast<char>(op); }
  void put_le(uint64_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) out_ += static_cast<char>((value >> (8 * i)) & 0xff);
  }
  void memoize(const void* id) {
    const size_t index = memo_.size();
    memo_[id] = index;
    if (index < 256) {
      emit(Op::kBinPut);
      put_le(index, 1);
    } else {
      emit(Op::kLongBinPut);
      put_le(index, 4);
    }
  }
  bool memo_get(const void* id) {
    auto it = memo_.find(id);
    if (it == memo_.end()) return false;
    if (it->second < 256) {
      emit(Op::kBinGet);
      put_le(it->second, 1);
    } else {
      emit(Op::kLongBinGet);
      put_le(it->second, 4);
    }
    return true;
  }
  void save_items(const std::vector<Value>& items, int depth) {
    for (size_t i = 0; i < items.size(); i += kBatchSize) {
      const size_t n = std::min(kBatchSize, items.size() - i);
      if (n > 1) emit(Op::kMark);
      for (size_t j = i; j < i + n; ++j) save(items[j], depth + 1);
      emit(n > 1 ? Op::kAppends : Op::kAppend);
    }
  }
  void save_pairs(const std::vector<Dict::Item>& items, int depth) {
    for (size_t i = 0; i < items.size(); i += kBatchSize) {
      const size_t n = std::min(kBatchSize, items.size() - i);
      if (n > 1) emit(Op::kMark);
      for (size_t j = i; j < i + n; ++j) {
        save(items[j].first, depth + 1);
        save(items[j].second, depth + 1);
      }
      emit(n > 1 ? Op::kSetItems : Op::kSetItem);
    }
  }

  std::string out_;
  std::vector<PickledStorage>* storages_;
  bool allow_meta_;
  std::unordered_map<const void*, size_t> memo_;
  std::unordered_map<const void*, size_t> storage_index_;  // StorageImpl -> index into storages_
};

void Pickler::save_string(const std::string& text) {
  check_utf8(text);
  emit(Op::kBinUnicode);
  put_le(text.size(), 4);
  VOLT_CHECK(text.size() < 0xffffffffu, "a string of ", text.size(),
             " bytes is too long for pickle protocol 2");
  out_ += text;
}

void Pickler::save_int(int64_t value) {
  if (value >= 0 && value < 256) {
    emit(Op::kBinInt1);
    put_le(value, 1);
  } else if (value >= 0 && value < 65536) {
    emit(Op::kBinInt2);
    put_le(value, 2);
  } else if (value >= INT32_MIN && value <= INT32_MAX) {
    emit(Op::kBinInt);
    put_le(static_cast<uint32_t>(value), 4);
  } else {
    // LONG1 with the fewest two's complement bytes.
    std::string bytes;
    uint64_t bits = static_cast<uint64_t>(value);
    for (int i = 0; i < 8; ++i) bytes += static_cast<char>((bits >> (8 * i)) & 0xff);
    while (bytes.size() > 1) {
      const unsigned char last = static_cast<unsigned char>(bytes.back());
      const unsigned char before = static_cast<unsigned char>(bytes[bytes.size() - 2]);
      if ((last == 0x00 && !(before & 0x80)) || (last == 0xff && (before & 0x80)))
        bytes.pop_back();
      else
        break;
    }
    emit(Op::kLong1);
    put_le(bytes.size(), 1);
    out_ += bytes;
  }
}

// As Python 3 does at protocol 2: _codecs.encode(bytes.decode('latin1'), 'latin1').
void Pickler::save_bytes(const std::string& bytes) {
  std::string text;
  for (unsigned char c : bytes) {
    if (c < 0x80) {
      text += static_cast<char>(c);
    } else {
      text += static_cast<char>(0xc0 | (c >> 6));
      text += static_cast<char>(0x80 | (c & 0x3f));
    }
  }
  save_global("_codecs", "encode");
  save_string(text);
  save_string("latin1");
  emit(Op::kTuple2);
  emit(Op::kReduce);
}

// torch._utils._rebuild_tensor_v2(persistent storage, offset, sizes, strides, requires_grad, OrderedDict()).
void Pickler::save_tensor(const at::Tensor& t) {
  VOLT_CHECK(t.defined(), "cannot save an undefined tensor");
  VOLT_CHECK(t.layout() == at::kStrided, "cannot save a ", t.layout(),
             " tensor; only dense tensors can be saved");
  VOLT_CHECK(!t.is_meta() || allow_meta_,
             "cannot save a meta tensor: it has no data (materialize the module first)");
  const c10::Storage storage = t.storage();
  const c10::ScalarType dtype = t.scalar_type();
  const std::string cls = storage_class_name(dtype);
  const void* impl = storage.unsafeGetStorageImpl();
  auto it = storage_index_.find(impl);
  if (it == storage_index_.end()) {
    it = storage_index_.emplace(impl, storages_->size()).first;
    storages_->push_back({std::to_string(storages_->size()), storage, dtype});
  }
  const PickledStorage& saved = (*storages_)[it->second];
  VOLT_CHECK(saved.dtype == dtype, "cannot save tensors of ", c10::toString(saved.dtype), " and ",
             c10::toString(dtype), " that view the same storage (PyTorch cannot either); clone one of them");
  const int64_t element = static_cast<int64_t>(c10::elementSize(dtype));
  save_global("torch._utils", "_rebuild_tensor_v2");
  emit(Op::kMark);
  emit(Op::kMark);  // the persistent id ('storage', <class>, key, location, numel)
  save_string("storage");
  save_global("torch", cls);
  save_string(saved.key);
  save_string("cpu");
  save_int(static_cast<int64_t>(storage.nbytes()) / element);
  emit(Op::kTuple);
  emit(Op::kBinPersId);
  save_int(t.storage_offset());
  emit(Op::kMark);
  for (int64_t s : t.sizes()) save_int(s);
  emit(Op::kTuple);
  emit(Op::kMark);
  for (int64_t s : t.strides()) save_int(s);
  emit(Op::kTuple);
  emit(t.requires_grad() ? Op::kNewTrue : Op::kNewFalse);
  save_global("collections", "OrderedDict");  // OrderedDict() for the backward hooks
  emit(Op::kEmptyTuple);
  emit(Op::kReduce);
  emit(Op::kTuple);
  emit(Op::kReduce);
}

void Pickler::save(const Value& v, int depth) {
  VOLT_CHECK(depth < 1000, "cannot save values nested more than 1000 levels deep");
  const void* id = v.container_identity();
  if (id != nullptr && memo_get(id)) return;
  switch (v.kind()) {
    case ValueKind::kNone:
      emit(Op::kNone);
      return;
    case ValueKind::kBool:
      emit(v.to_bool() ? Op::kNewTrue : Op::kNewFalse);
      return;
    case ValueKind::kInt:
      save_int(v.to_int());
      return;
    case ValueKind::kDouble: {
      const double d = v.to_double();
      uint64_t bits;
      std::memcpy(&bits, &d, 8);
      emit(Op::kBinFloat);  // big-endian
      for (int i = 7; i >= 0; --i) out_ += static_cast<char>((bits >> (8 * i)) & 0xff);
      return;
    }
    case ValueKind::kString:
      save_string(v.to_string());
      return;
    case ValueKind::kBytes:
      save_bytes(v.to_string());
      return;
    case ValueKind::kTensor:
      save_tensor(v.to_tensor());
      return;
    case ValueKind::kList:
      emit(Op::kEmptyList);
      memoize(id);
      save_items(v.items(), depth);
      return;
    case ValueKind::kTuple: {
      const auto& items = v.items();
      if (items.empty()) {
        emit(Op::kEmptyTuple);
        return;
      }
      if (items.size() > 3) emit(Op::kMark);
      for (const Value& item : items) save(item, depth + 1);
      const Op sized[] = {Op::kTuple1, Op::kTuple2, Op::kTuple3};
      emit(items.size() <= 3 ? sized[items.size() - 1] : Op::kTuple);
      memoize(id);
      return;
    }
    case ValueKind::kDict:
      if (v.to_dict().ordered()) {
        save_global("collections", "OrderedDict");
        emit(Op::kEmptyTuple);
        emit(Op::kReduce);
      } else {
        emit(Op::kEmptyDict);
      }
      memoize(id);
      save_pairs(v.to_dict().items(), depth);
      return;
    case ValueKind::kObject: {
      const Object& o = v.to_object();
      save_global(o.module, o.name);
      if (o.has_args) {
        save(o.args, depth + 1);
        emit(o.created_by_new ? Op::kNewObj : Op::kReduce);
      }
      memoize(id);
      if (!o.appended.empty()) save_items(o.appended, depth);
      if (!o.set_items.empty()) save_pairs(o.set_items, depth);
      if (o.has_state) {
        save(o.state, depth + 1);
        emit(Op::kBuild);
      }
      return;
    }
  }
}

}  // namespace

std::string pickle(const Value& value, std::vector<PickledStorage>* storages, bool allow_meta) {
  return Pickler(storages, allow_meta).run(value);
}

}  // namespace volt::detail

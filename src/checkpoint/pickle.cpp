#include "pickle.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "volt/error.h"

namespace volt::detail {
namespace {

struct StorageClass {
  const char* name;
  c10::ScalarType dtype;
};

// torch.<Name>Storage classes that torch.save names in persistent ids. UntypedStorage holds bytes.
const StorageClass kStorageClasses[] = {
    {"DoubleStorage", c10::kDouble},
    {"FloatStorage", c10::kFloat},
    {"HalfStorage", c10::kHalf},
    {"BFloat16Storage", c10::kBFloat16},
    {"LongStorage", c10::kLong},
    {"IntStorage", c10::kInt},
    {"ShortStorage", c10::kShort},
    {"CharStorage", c10::kChar},
    {"ByteStorage", c10::kByte},
    {"BoolStorage", c10::kBool},
    {"ComplexFloatStorage", c10::kComplexFloat},
    {"ComplexDoubleStorage", c10::kComplexDouble},
    {"UntypedStorage", c10::kByte},
};

const StorageClass* storage_class(const std::string& module, const std::string& name) {
  if (module != "torch") return nullptr;
  for (const auto& c : kStorageClasses)
    if (name == c.name) return &c;
  return nullptr;
}

// The size of a value with its shared references expanded (roughly what Dict's key encoding or repr()
// writes for it), counted only up to `limit`: a pickle builds a tuple of 2**n leaves in 2n bytes.
uint64_t expanded_size(const Value& v, uint64_t limit) {
  uint64_t size = 24;
  if (v.is_string() || v.is_bytes()) size += v.to_string().size();
  const auto add = [&](const Value& item) {
    if (size <= limit) size += expanded_size(item, limit - size);
  };
  if (v.is_list() || v.is_tuple()) {
    for (const Value& item : v.items()) add(item);
  } else if (v.is_dict()) {
    for (const auto& [key, value] : v.to_dict()) add(key), add(value);
  } else if (v.is_object()) {
    add(v.to_object().args);
  }
  return size;
}

// repr() for messages about a hostile value: repr() itself expands shared references.
std::string brief_repr(const Value& v, size_t max_items) {
  if (expanded_size(v, 4096) <= 4096) return v.repr(max_items);
  return std::string("a ") + kind_name(v.kind()) + " too large to show";
}

// Markers for the stack: a storage from a persistent id travels as a 1-D tensor over the whole storage.
class Unpickler {
 public:
  Unpickler(const char* data, size_t size, const StorageLoader& load, const std::string& what,
            const UnpickleOptions& options)
      : begin_(data),
        p_(data),
        end_(data + size),
        load_(load),
        what_(what),
        options_(options),
        key_budget_((uint64_t{1} << 20) + 64 * uint64_t{size}) {}

  Value run();

 private:
  [[noreturn]] void fail(std::string message) const {
    // Text from the file can hold NUL bytes, which would cut what() short.
    for (size_t at = message.find('\0'); at != std::string::npos; at = message.find('\0', at))
      message.replace(at, 1, "\\0");
    VOLT_FAIL(what_, ": ", message, " (at pickle byte ", position_, ")");
  }
  const char* take(size_t bytes) {
    if (static_cast<size_t>(end_ - p_) < bytes)
      fail("the pickle ends in the middle of an instruction (truncated?)");
    const char* at = p_;
    p_ += bytes;
    return at;
  }
  uint64_t le(int bytes) {
    const char* at = take(bytes);
    uint64_t value = 0;
    for (int i = bytes - 1; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(at[i]);
    return value;
  }
  std::string line() {
    const char* start = p_;
    const void* newline = std::memchr(p_, '\n', static_cast<size_t>(end_ - p_));
    if (newline == nullptr) fail("a text argument has no end of line (truncated?)");
    p_ = static_cast<const char*>(newline) + 1;
    return std::string(start, static_cast<const char*>(newline));
  }
  std::string counted(uint64_t length) {
    if (length > static_cast<uint64_t>(end_ - p_))
      fail("a string of " + std::to_string(length) + " bytes is longer than what is left of the pickle");
    return std::string(take(length), length);
  }

  Value pop() {
    if (stack_.size() <= floor()) fail("the pickle pops from an empty stack");
    Value value = std::move(stack_.back());
    stack_.pop_back();
    return value;
  }
  Value& top() {
    if (stack_.size() <= floor()) fail("the pickle reads an empty stack");
    return stack_.back();
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  std::vector<Value> pop_mark() {
    if (marks_.empty()) fail("the pickle closes a MARK that was never opened");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<Value> items(std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(mark)),
                             std::make_move_iterator(stack_.end()));
    stack_.resize(mark);
    return items;
  }

  // Containers are frozen once they are placed inside another: a later mutation would be a cycle (which
  // real checkpoints never hold) or a hostile file building unbounded depth.
  // Bookkeeping is keyed by container identity, so every tracked container is kept alive until the end:
  // a freed one's address could otherwise be reused by a new container and inherit its state.
  struct Tracked {
    Value keep_alive;
    int depth = 1;
    bool frozen = false;
  };
  Tracked& track(const Value& v) {
    Tracked& t = tracked_[v.container_identity()];
    if (t.keep_alive.is_none()) t.keep_alive = v;
    return t;
  }
  int depth(const Value& v) const {
    const void* id = v.container_identity();
    if (id == nullptr) return 0;
    auto it = tracked_.find(id);
    return it == tracked_.end() ? 1 : it->second.depth;
  }
  void adopt(const Value& parent, const Value& child) {
    if (child.container_identity() == nullptr) return;
    if (child.same_container(parent)) fail("a container contains itself (cyclic data is not supported)");
    const int d = depth(child) + 1;
    track(child).frozen = true;
    if (d > options_.max_depth)
      fail("values nest deeper than " + std::to_string(options_.max_depth) + " levels");
    Tracked& mine = track(parent);
    mine.depth = std::max(mine.depth, d);
  }
  // Dicts index their keys by an encoding that expands shared references: what all keys expand to
  // together is bounded by the pickle's size, so a few bytes cannot make it exponential or quadratic.
  void charge_key(const Value& key) {
    const uint64_t cost = expanded_size(key, key_budget_ + 1);
    if (cost > key_budget_)
      fail("dict keys expand to more bytes than the pickle can justify (shared references in hostile keys)");
    key_budget_ -= cost;
  }
  void mutable_check(const Value& container, const char* op) {
    auto it = tracked_.find(container.container_identity());
    if (it != tracked_.end() && it->second.frozen)
      fail(std::string(op) +
           " modifies a container already placed inside another (cyclic data is not supported)");
  }
  Value make_tuple(std::vector<Value> items) {
    Value tuple = Value::tuple();
    for (const Value& item : items) adopt(tuple, item);
    tuple.items() = std::move(items);
    return tuple;
  }

  Value make_set(const char* name, std::vector<Value> items) {
    Value list = Value::list();
    append_items(list, std::move(items));
    Value set = Value::object("builtins", name, make_tuple({list}));
    set.to_object().has_args = true;
    adopt(set, set.to_object().args);
    return set;
  }
  Value global(const std::string& module, const std::string& name);
  bool allowed(const std::string& module, const std::string& name) const {
    return options_.allow_object && options_.allow_object(module, name);
  }
  Value reduce(const Value& callable, const Value& args);
  Value rebuild_tensor(const std::vector<Value>& args, size_t first_extra);
  Value persistent_load(const Value& pid);
  void set_items(Value& target, std::vector<Value> items);
  void append_items(Value& target, std::vector<Value> items);

  const char* const begin_;
  const char* p_;
  const char* end_;
  size_t position_ = 0;
  const StorageLoader& load_;
  const std::string& what_;
  UnpickleOptions options_;
  std::vector<Value> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value> memo_;
  std::unordered_map<const void*, Tracked> tracked_;
  std::unordered_map<std::string, c10::Storage> storages_;
  uint64_t key_budget_;  // see charge_key()
};

bool is_global(const Value& v, const char* module, const char* name) {
  return v.is_object() && !v.to_object().has_args && v.to_object().module == module &&
         v.to_object().name == name;
}

int64_t checked_int(const Value& v, const char* what, const std::string& where) {
  if (!v.is_int()) VOLT_FAIL(where, ": ", what, " must be an int but is ", kind_name(v.kind()));
  return v.to_int();
}

Value Unpickler::global(const std::string& module, const std::string& name) {
  // Every global becomes an inert marker; only reduce() gives meaning to the allow-listed ones.
  const bool known = storage_class(module, name) != nullptr ||
                     (module == "collections" && name == "OrderedDict") ||
                     (module == "torch._utils" &&
                      (name == "_rebuild_tensor_v2" || name == "_rebuild_tensor" ||
                       name == "_rebuild_parameter" || name == "_rebuild_parameter_with_state")) ||
                     (module == "torch._tensor" && name == "_rebuild_from_type_v2") ||
                     (module == "_codecs" && name == "encode") || (module == "torch" && (name == "Tensor")) ||
                     (module == "torch.nn.parameter" && name == "Parameter");
  if (!known && options_.strict && !allowed(module, name))
    fail("the pickle refers to '" + module + "." + name +
         "', which is not data volt reads (strict mode; without it the value is kept as an opaque object)");
  return Value::object(module, name);
}

Value Unpickler::persistent_load(const Value& pid) {
  if (!pid.is_tuple() || pid.items().size() != 5 || !pid.items()[0].is_string() ||
      pid.items()[0].to_string() != "storage")
    fail("unsupported persistent id " + brief_repr(pid, 4) +
         " (torch.save writes ('storage', type, key, location, numel))");
  const auto& f = pid.items();
  const StorageClass* cls = nullptr;
  if (f[1].is_object() && !f[1].to_object().has_args)
    cls = storage_class(f[1].to_object().module, f[1].to_object().name);
  if (cls == nullptr) fail("unsupported storage type " + brief_repr(f[1], 2));
  if (!f[2].is_string() || !f[3].is_string()) fail("the storage key and location must be strings");
  const int64_t numel = checked_int(f[4], "the storage size", what_);
  if (numel < 0) fail("negative storage size " + std::to_string(numel));
  const std::string& key = f[2].to_string();
  if (key.find('\0') != std::string::npos) fail("a storage key holds a NUL byte");
  auto it = storages_.find(key);
  if (it == storages_.end())
    it = storages_.emplace(key, load_(key, cls->dtype, numel, f[3].to_string())).first;
  const c10::Storage& storage = it->second;
  const int64_t element = static_cast<int64_t>(c10::elementSize(cls->dtype));
  if (static_cast<int64_t>(storage.nbytes()) / element < numel)
    fail("storage '" + key + "' holds " + std::to_string(storage.nbytes()) + " bytes, fewer than " +
         std::to_string(numel) + " elements of " + c10::toString(cls->dtype));
  at::Tensor whole = at::empty({0}, at::TensorOptions().dtype(cls->dtype));
  whole.set_(storage, 0, {numel}, {1});
  return Value(whole);
}

std::vector<int64_t> int_tuple(const Value& v, const char* what, const std::string& where) {
  if (!v.is_tuple() && !v.is_list()) VOLT_FAIL(where, ": tensor ", what, " must be a tuple of ints");
  std::vector<int64_t> out;
  for (const Value& item : v.items()) out.push_back(checked_int(item, what, where));
  return out;
}

Value Unpickler::rebuild_tensor(const std::vector<Value>& args, size_t first_extra) {
  // (storage, storage_offset, size, stride, [requires_grad, backward_hooks, [metadata]])
  if (args.size() < 4)
    fail("a tensor rebuild has " + std::to_string(args.size()) + " arguments, expected at least 4");
  if (!args[0].is_tensor()) fail("a tensor rebuild's first argument is not a storage");
  const at::Tensor& whole = args[0].to_tensor();
  const int64_t offset = checked_int(args[1], "storage offset", what_);
  const std::vector<int64_t> sizes = int_tuple(args[2], "size", what_);
  const std::vector<int64_t> strides = int_tuple(args[3], "stride", what_);
  if (sizes.size() != strides.size())
    fail("a tensor has " + std::to_string(sizes.size()) + " sizes but " + std::to_string(strides.size()) +
         " strides");
  // The largest element index the view touches must lie inside the storage; every step checked for overflow.
  if (offset < 0) fail("negative storage offset");
  int64_t last = offset;
  bool empty = false;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] < 0 || strides[d] < 0) fail("negative size or stride in a tensor");
    if (sizes[d] == 0) empty = true;
  }
  // LibTorch multiplies the sizes in order and throws when a step overflows (even before a later 0).
  uint64_t numel = 1;
  for (const int64_t size : sizes)
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(size), &numel) || numel > uint64_t{INT64_MAX})
      fail("a tensor's sizes multiply to more elements than int64 can count");
  if (!empty) {
    for (size_t d = 0; d < sizes.size(); ++d) {
      int64_t span = 0;
      if (__builtin_mul_overflow(sizes[d] - 1, strides[d], &span) ||
          __builtin_add_overflow(last, span, &last))
        fail("a tensor's sizes and strides overflow");
    }
    if (last >= whole.numel())
      fail("a tensor view (offset " + std::to_string(offset) + ", sizes " + args[2].repr() + ", strides " +
           args[3].repr() + ") reaches element " + std::to_string(last) + " of a storage of " +
           std::to_string(whole.numel()));
  } else if (offset > whole.numel()) {
    fail("an empty tensor's offset lies past its storage");
  }
  at::Tensor tensor = at::empty({0}, whole.options());
  try {
    tensor.set_(whole.storage(), offset, sizes, strides);
  } catch (const c10::Error& e) {
    fail(std::string("LibTorch rejects a tensor view: ") + e.what_without_backtrace());
  }
  if (args.size() > first_extra && args[first_extra].is_bool() && args[first_extra].to_bool()) {
    if (!at::isFloatingType(tensor.scalar_type()) && !at::isComplexType(tensor.scalar_type()))
      fail("requires_grad on a tensor of " + std::string(c10::toString(tensor.scalar_type())));
    tensor.requires_grad_(true);
  }
  return Value(tensor);
}

Value Unpickler::reduce(const Value& callable, const Value& args) {
  if (!args.is_tuple()) fail("REDUCE arguments are not a tuple");
  const auto& a = args.items();
  if (is_global(callable, "collections", "OrderedDict")) {
    Value dict = Value::dict(true);
    if (!a.empty()) {
      if (!a[0].is_list() && !a[0].is_tuple()) fail("OrderedDict() argument is not a list of pairs");
      for (const Value& pair : a[0].items()) {
        if (!(pair.is_tuple() || pair.is_list()) || pair.items().size() != 2)
          fail("OrderedDict() item is not a pair");
        adopt(dict, pair.items()[0]);
        adopt(dict, pair.items()[1]);
        charge_key(pair.items()[0]);
        dict.to_dict().set(pair.items()[0], pair.items()[1]);
      }
    }
    return dict;
  }
  if (is_global(callable, "torch._utils", "_rebuild_tensor_v2")) return rebuild_tensor(a, 4);
  if (is_global(callable, "torch._utils", "_rebuild_tensor")) return rebuild_tensor(a, 4);
  if (is_global(callable, "torch._utils", "_rebuild_parameter") ||
      is_global(callable, "torch._utils", "_rebuild_parameter_with_state")) {
    if (a.size() < 2 || !a[0].is_tensor()) fail("_rebuild_parameter expects (tensor, requires_grad, ...)");
    at::Tensor tensor = a[0].to_tensor();
    if (a[1].is_bool() && a[1].to_bool() && at::isFloatingType(tensor.scalar_type()))
      tensor.requires_grad_(true);
    return Value(tensor);
  }
  if (is_global(callable, "torch._tensor", "_rebuild_from_type_v2")) {
    // (func, type, args, state): a tensor subclass; volt keeps the tensor.
    if (a.size() < 3 || !a[2].is_tuple()) fail("_rebuild_from_type_v2 expects (func, type, args, state)");
    Value inner = reduce(a[0], a[2]);
    if (!inner.is_tensor()) fail("_rebuild_from_type_v2 rebuilds something that is not a tensor");
    return inner;
  }
  if (is_global(callable, "_codecs", "encode")) {
    // Protocol 2 writes Python 3 bytes as _codecs.encode(text, 'latin1').
    if (a.size() != 2 || !a[0].is_string() || !a[1].is_string()) fail("unexpected _codecs.encode arguments");
    const std::string& encoding = a[1].to_string();
    const std::string& text = a[0].to_string();
    if (encoding != "latin1" && encoding != "latin-1") return Value::bytes(text);
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) {
      const unsigned char c = static_cast<unsigned char>(text[i]);
      if (c < 0x80) {
        out += static_cast<char>(c);
      } else if ((c & 0xe0) == 0xc0 && i + 1 < text.size() && c <= 0xc3) {
        out += static_cast<char>(((c & 0x1f) << 6) | (static_cast<unsigned char>(text[++i]) & 0x3f));
      } else {
        fail("bytes encoded as latin1 hold a character above U+00FF");
      }
    }
    return Value::bytes(out);
  }
  if (!callable.is_object() || callable.to_object().has_args)
    fail("REDUCE applies " + brief_repr(callable, 2) + ", which is not a global");
  if (options_.strict && !allowed(callable.to_object().module, callable.to_object().name))
    fail("the pickle calls '" + callable.to_object().qualified_name() + "' (strict mode)");
  Value object = Value::object(callable.to_object().module, callable.to_object().name, args);
  object.to_object().has_args = true;
  adopt(object, args);
  return object;
}

void Unpickler::set_items(Value& target, std::vector<Value> items) {
  if (items.size() % 2) fail("SETITEMS has an odd number of items");
  mutable_check(target, "SETITEM");
  for (size_t i = 0; i < items.size(); i += 2) {
    adopt(target, items[i]);
    adopt(target, items[i + 1]);
    if (target.is_dict()) {
      charge_key(items[i]);
      target.to_dict().set(std::move(items[i]), std::move(items[i + 1]));
    } else if (target.is_object()) {
      target.to_object().set_items.emplace_back(std::move(items[i]), std::move(items[i + 1]));
    } else {
      fail("SETITEM on a " + std::string(kind_name(target.kind())));
    }
  }
}

void Unpickler::append_items(Value& target, std::vector<Value> items) {
  mutable_check(target, "APPEND");
  for (Value& item : items) {
    adopt(target, item);
    if (target.is_list()) {
      target.items().push_back(std::move(item));
    } else if (target.is_object()) {
      target.to_object().appended.push_back(std::move(item));
    } else {
      fail("APPEND on a " + std::string(kind_name(target.kind())));
    }
  }
}

Value Unpickler::run() {
  for (;;) {
    position_ = static_cast<size_t>(p_ - begin_);
    const unsigned char op = static_cast<unsigned char>(*take(1));
    switch (op) {
      case 0x80: {  // PROTO
        const uint64_t protocol = le(1);
        if (protocol > 5) fail("pickle protocol " + std::to_string(protocol) + " is newer than 5");
        break;
      }
      case 0x95:
        le(8);
        break;     // FRAME: a hint only
      case '.': {  // STOP
        if (stack_.size() != 1 || !marks_.empty())
          fail("the pickle stops with " + std::to_string(stack_.size()) + " values on the stack");
        // Whatever walks the result (flatten, repr, equals, convert) expands shared references: bound
        // that by the pickle's size, or a few bytes of memo references could expand exponentially.
        const uint64_t budget = (uint64_t{1} << 20) + 64 * static_cast<uint64_t>(end_ - begin_);
        if (expanded_size(stack_.back(), budget + 1) > budget)
          fail("shared references expand the value far beyond the pickle's size (a hostile file)");
        return std::move(stack_.back());
      }
      case '(':
        marks_.push_back(stack_.size());
        break;  // MARK
      case '0':
        pop();
        break;  // POP
      case '1':
        pop_mark();
        break;  // POP_MARK
      case '2':
        stack_.push_back(top());
        break;  // DUP
      case 'N':
        stack_.emplace_back();
        break;
      case 0x88:
        stack_.emplace_back(true);
        break;
      case 0x89:
        stack_.emplace_back(false);
        break;
      case 'J':
        stack_.emplace_back(static_cast<int64_t>(static_cast<int32_t>(le(4))));
        break;  // BININT
      case 'K':
        stack_.emplace_back(static_cast<int64_t>(le(1)));
        break;  // BININT1
      case 'M':
        stack_.emplace_back(static_cast<int64_t>(le(2)));
        break;      // BININT2
      case 0x8a:    // LONG1
      case 0x8b: {  // LONG4
        const uint64_t n = op == 0x8a ? le(1) : le(4);
        if (n > static_cast<uint64_t>(end_ - p_)) fail("a long integer is longer than the pickle");
        const char* bytes = take(n);
        // Little-endian two's complement; beyond 8 bytes only sign extension is allowed.
        const bool negative = n > 0 && (static_cast<unsigned char>(bytes[n - 1]) & 0x80);
        for (uint64_t i = 8; i < n; ++i)
          if (static_cast<unsigned char>(bytes[i]) != (negative ? 0xff : 0x00))
            fail("an integer does not fit in 64 bits");
        uint64_t value = negative ? ~uint64_t{0} : 0;
        for (uint64_t i = std::min<uint64_t>(n, 8); i-- > 0;)
          value = (value << 8) | static_cast<unsigned char>(bytes[i]);
        if (n < 8 && n > 0 && negative) value |= ~uint64_t{0} << (8 * n);
        if (n >= 8 && (static_cast<int64_t>(value) < 0) != negative)
          fail("an integer does not fit in 64 bits");
        stack_.emplace_back(static_cast<int64_t>(value));
        break;
      }
      case 'I':    // INT (text; I00/I01 are False/True)
      case 'L': {  // LONG (text)
        std::string text = line();
        if (!text.empty() && text.back() == 'L') text.pop_back();
        if (op == 'I' && text == "00") {
          stack_.emplace_back(false);
          break;
        }
        if (op == 'I' && text == "01") {
          stack_.emplace_back(true);
          break;
        }
        errno = 0;
        char* stop = nullptr;
        const long long value = std::strtoll(text.c_str(), &stop, 10);
        if (text.empty() || *stop != '\0' || errno == ERANGE)
          fail("bad integer literal '" + text.substr(0, 40) + "'");
        stack_.emplace_back(static_cast<int64_t>(value));
        break;
      }
      case 'G': {  // BINFLOAT, big-endian
        const char* bytes = take(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | static_cast<unsigned char>(bytes[i]);
        double value;
        std::memcpy(&value, &bits, 8);
        stack_.emplace_back(value);
        break;
      }
      case 'F': {  // FLOAT (text)
        const std::string text = line();
        char* stop = nullptr;
        const double value = std::strtod(text.c_str(), &stop);
        if (text.empty() || *stop != '\0') fail("bad float literal '" + text.substr(0, 40) + "'");
        stack_.emplace_back(value);
        break;
      }
      case 'X':
        stack_.emplace_back(counted(le(4)));
        break;  // BINUNICODE
      case 0x8c:
        stack_.emplace_back(counted(le(1)));
        break;  // SHORT_BINUNICODE
      case 0x8d:
        stack_.emplace_back(counted(le(8)));
        break;  // BINUNICODE8
      case 'T':
        stack_.push_back(Value::bytes(counted(le(4))));
        break;  // BINSTRING (Python 2 str)
      case 'U':
        stack_.push_back(Value::bytes(counted(le(1))));
        break;  // SHORT_BINSTRING
      case 'B':
        stack_.push_back(Value::bytes(counted(le(4))));
        break;  // BINBYTES
      case 'C':
        stack_.push_back(Value::bytes(counted(le(1))));
        break;  // SHORT_BINBYTES
      case 0x8e:
        stack_.push_back(Value::bytes(counted(le(8))));
        break;  // BINBYTES8
      case '}':
        stack_.push_back(Value::dict());
        break;
      case ']':
        stack_.push_back(Value::list());
        break;
      case ')':
        stack_.push_back(Value::tuple());
        break;
      case 'd': {  // DICT
        Value dict = Value::dict();
        set_items(dict, pop_mark());
        stack_.push_back(std::move(dict));
        break;
      }
      case 'l': {  // LIST
        Value list = Value::list();
        append_items(list, pop_mark());
        stack_.push_back(std::move(list));
        break;
      }
      case 't':
        stack_.push_back(make_tuple(pop_mark()));
        break;
      case 0x85:
        stack_.push_back(make_tuple({pop()}));
        break;
      case 0x86: {
        Value b = pop(), a = pop();
        stack_.push_back(make_tuple({std::move(a), std::move(b)}));
        break;
      }
      case 0x87: {
        Value c = pop(), b = pop(), a = pop();
        stack_.push_back(make_tuple({std::move(a), std::move(b), std::move(c)}));
        break;
      }
      case 's': {  // SETITEM
        Value value = pop(), key = pop();
        set_items(top(), {std::move(key), std::move(value)});
        break;
      }
      case 'u': {  // SETITEMS
        std::vector<Value> items = pop_mark();
        set_items(top(), std::move(items));
        break;
      }
      case 'a': {  // APPEND
        Value item = pop();
        append_items(top(), {std::move(item)});
        break;
      }
      case 'e': {  // APPENDS
        std::vector<Value> items = pop_mark();
        append_items(top(), std::move(items));
        break;
      }
      // Sets become opaque builtins.set([items]) objects, which is how protocol 2 writes them back.
      case 0x8f:
        stack_.push_back(make_set("set", {}));
        break;      // EMPTY_SET
      case 0x90: {  // ADDITEMS
        std::vector<Value> items = pop_mark();
        Value& set = top();
        if (!set.is_object() || set.to_object().module != "builtins" || set.to_object().name != "set" ||
            !set.to_object().has_args || set.to_object().args.items().size() != 1 ||
            !set.to_object().args.items()[0].is_list())
          fail("ADDITEMS on something that is not a set");
        mutable_check(set, "ADDITEMS");
        // The set holds its items through a list: adding the set itself would make a reference cycle.
        for (const Value& item : items)
          if (item.same_container(set)) fail("a set contains itself (cyclic data is not supported)");
        Value list = set.to_object().args.items()[0];
        track(list).frozen = false;
        append_items(list, std::move(items));
        track(list).frozen = true;
        track(set).depth = depth(list) + 1;
        break;
      }
      case 0x91:
        stack_.push_back(make_set("frozenset", pop_mark()));
        break;     // FROZENSET
      case 'c': {  // GLOBAL
        const std::string module = line();
        const std::string name = line();
        stack_.push_back(global(module, name));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        Value name = pop(), module = pop();
        if (!module.is_string() || !name.is_string()) fail("STACK_GLOBAL needs two strings");
        stack_.push_back(global(module.to_string(), name.to_string()));
        break;
      }
      case 'R': {  // REDUCE
        Value args = pop(), callable = pop();
        stack_.push_back(reduce(callable, args));
        break;
      }
      case 0x81: {  // NEWOBJ: cls.__new__(cls, *args)
        Value args = pop(), cls = pop();
        if (!cls.is_object() || cls.to_object().has_args) fail("NEWOBJ on something that is not a class");
        if (!args.is_tuple()) fail("NEWOBJ arguments are not a tuple");
        if (options_.strict && !allowed(cls.to_object().module, cls.to_object().name))
          fail("the pickle creates a '" + cls.to_object().qualified_name() + "' (strict mode)");
        Value object = Value::object(cls.to_object().module, cls.to_object().name, args);
        object.to_object().has_args = true;
        object.to_object().created_by_new = true;
        adopt(object, args);
        stack_.push_back(std::move(object));
        break;
      }
      case 'b': {  // BUILD
        Value state = pop();
        Value& target = top();
        if (target.is_tensor()) break;  // a tensor's python attributes; volt keeps only the data
        if (!target.is_object() && !target.is_dict())
          fail("BUILD on a " + std::string(kind_name(target.kind())));
        mutable_check(target, "BUILD");
        adopt(target, state);
        if (target.is_object()) {
          target.to_object().state = std::move(state);
          target.to_object().has_state = true;
        }
        // An OrderedDict's state is its __dict__ (state_dict()'s `_metadata`): not data, dropped.
        break;
      }
      case 'Q': {  // BINPERSID
        Value pid = pop();
        stack_.push_back(persistent_load(pid));
        break;
      }
      case 'q':
        memo_[le(1)] = top();
        break;  // BINPUT
      case 'r':
        memo_[le(4)] = top();
        break;     // LONG_BINPUT
      case 'p': {  // PUT (text)
        const std::string text = line();
        memo_[std::strtoull(text.c_str(), nullptr, 10)] = top();
        break;
      }
      case 0x94:
        memo_[memo_.size()] = top();
        break;     // MEMOIZE
      case 'h':    // BINGET
      case 'j':    // LONG_BINGET
      case 'g': {  // GET (text)
        const uint64_t index = op == 'h'   ? le(1)
                               : op == 'j' ? le(4)
                                           : std::strtoull(line().c_str(), nullptr, 10);
        auto it = memo_.find(index);
        if (it == memo_.end())
          fail("the pickle refers to memo entry " + std::to_string(index) + ", which was never stored");
        stack_.push_back(it->second);
        break;
      }
      default: {
        char hex[8];
        std::snprintf(hex, sizeof(hex), "0x%02x", op);
        fail(std::string("unsupported or invalid pickle opcode ") + hex);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------- pickler

class Pickler {
 public:
  Pickler(std::vector<PickledStorage>* storages, bool allow_meta)
      : storages_(storages), allow_meta_(allow_meta) {}
  std::string run(const Value& value) {
    out_ += "\x80\x02";
    save(value, 0);
    out_ += '.';
    return std::move(out_);
  }

 private:
  void save(const Value& v, int depth);
  void save_tensor(const at::Tensor& t);
  void save_string(const std::string& text);
  void save_int(int64_t value);
  void save_global(const std::string& module, const std::string& name) {
    out_ += "c" + module + "\n" + name + "\n";
  }
  void put_le(uint64_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) out_ += static_cast<char>((value >> (8 * i)) & 0xff);
  }
  void memoize(const void* id) {
    const size_t index = memo_.size();
    memo_[id] = index;
    if (index < 256) {
      out_ += 'q';
      put_le(index, 1);
    } else {
      out_ += 'r';
      put_le(index, 4);
    }
  }
  bool memo_get(const void* id) {
    auto it = memo_.find(id);
    if (it == memo_.end()) return false;
    if (it->second < 256) {
      out_ += 'h';
      put_le(it->second, 1);
    } else {
      out_ += 'j';
      put_le(it->second, 4);
    }
    return true;
  }
  void save_items(const std::vector<Value>& items, int depth, char batch_op, char single_op) {
    for (size_t i = 0; i < items.size(); i += 1000) {
      const size_t n = std::min<size_t>(1000, items.size() - i);
      if (n > 1) out_ += '(';
      for (size_t j = i; j < i + n; ++j) save(items[j], depth + 1);
      out_ += n > 1 ? batch_op : single_op;
    }
  }
  void save_pairs(const std::vector<Dict::Item>& items, int depth) {
    for (size_t i = 0; i < items.size(); i += 1000) {
      const size_t n = std::min<size_t>(1000, items.size() - i);
      if (n > 1) out_ += '(';
      for (size_t j = i; j < i + n; ++j) {
        save(items[j].first, depth + 1);
        save(items[j].second, depth + 1);
      }
      out_ += n > 1 ? 'u' : 's';
    }
  }

  std::string out_;
  std::vector<PickledStorage>* storages_;
  bool allow_meta_;
  std::unordered_map<const void*, size_t> memo_;
  std::unordered_map<const void*, size_t> storage_index_;  // StorageImpl -> index into storages_
};

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

void Pickler::save_string(const std::string& text) {
  check_utf8(text);
  out_ += 'X';
  put_le(text.size(), 4);
  VOLT_CHECK(text.size() < 0xffffffffu, "a string of ", text.size(),
             " bytes is too long for pickle protocol 2");
  out_ += text;
}

void Pickler::save_int(int64_t value) {
  if (value >= 0 && value < 256) {
    out_ += 'K';
    put_le(value, 1);
  } else if (value >= 0 && value < 65536) {
    out_ += 'M';
    put_le(value, 2);
  } else if (value >= INT32_MIN && value <= INT32_MAX) {
    out_ += 'J';
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
    out_ += '\x8a';
    put_le(bytes.size(), 1);
    out_ += bytes;
  }
}

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
  out_ += '(';
  out_ += '(';
  save_string("storage");
  save_global("torch", cls);
  save_string(saved.key);
  save_string("cpu");
  save_int(static_cast<int64_t>(storage.nbytes()) / element);
  out_ += "tQ";  // TUPLE, BINPERSID
  save_int(t.storage_offset());
  out_ += '(';
  for (int64_t s : t.sizes()) save_int(s);
  out_ += 't';
  out_ += '(';
  for (int64_t s : t.strides()) save_int(s);
  out_ += 't';
  out_ += t.requires_grad() ? '\x88' : '\x89';
  save_global("collections", "OrderedDict");
  out_ += ")R";  // OrderedDict() for the backward hooks
  out_ += "tR";
}

void Pickler::save(const Value& v, int depth) {
  VOLT_CHECK(depth < 1000, "cannot save values nested more than 1000 levels deep");
  const void* id = v.container_identity();
  if (id != nullptr && memo_get(id)) return;
  switch (v.kind()) {
    case ValueKind::kNone:
      out_ += 'N';
      return;
    case ValueKind::kBool:
      out_ += v.to_bool() ? '\x88' : '\x89';
      return;
    case ValueKind::kInt:
      save_int(v.to_int());
      return;
    case ValueKind::kDouble: {
      const double d = v.to_double();
      uint64_t bits;
      std::memcpy(&bits, &d, 8);
      out_ += 'G';
      for (int i = 7; i >= 0; --i) out_ += static_cast<char>((bits >> (8 * i)) & 0xff);
      return;
    }
    case ValueKind::kString:
      save_string(v.to_string());
      return;
    case ValueKind::kBytes: {
      // As Python 3 does at protocol 2: _codecs.encode(bytes.decode('latin1'), 'latin1').
      std::string text;
      for (unsigned char c : v.to_string()) {
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
      out_ += "\x86R";
      return;
    }
    case ValueKind::kTensor:
      save_tensor(v.to_tensor());
      return;
    case ValueKind::kList:
      out_ += ']';
      memoize(id);
      save_items(v.items(), depth, 'e', 'a');
      return;
    case ValueKind::kTuple: {
      const auto& items = v.items();
      if (items.empty()) {
        out_ += ')';
        return;
      }
      if (items.size() > 3) out_ += '(';
      for (const Value& item : items) save(item, depth + 1);
      out_ += items.size() == 1 ? '\x85' : items.size() == 2 ? '\x86' : items.size() == 3 ? '\x87' : 't';
      memoize(id);
      return;
    }
    case ValueKind::kDict:
      if (v.to_dict().ordered()) {
        save_global("collections", "OrderedDict");
        out_ += ")R";
      } else {
        out_ += '}';
      }
      memoize(id);
      save_pairs(v.to_dict().items(), depth);
      return;
    case ValueKind::kObject: {
      const Object& o = v.to_object();
      save_global(o.module, o.name);
      if (o.has_args) {
        save(o.args, depth + 1);
        out_ += o.created_by_new ? '\x81' : 'R';
      }
      memoize(id);
      if (!o.appended.empty()) save_items(o.appended, depth, 'e', 'a');
      if (!o.set_items.empty()) save_pairs(o.set_items, depth);
      if (o.has_state) {
        save(o.state, depth + 1);
        out_ += 'b';
      }
      return;
    }
  }
}

}  // namespace

Value unpickle(const char* data, size_t size, const StorageLoader& load_storage, const std::string& what,
               const UnpickleOptions& options) {
  return Unpickler(data, size, load_storage, what, options).run();
}

std::string pickle(const Value& value, std::vector<PickledStorage>* storages, bool allow_meta) {
  return Pickler(storages, allow_meta).run(value);
}

std::string storage_class_name(c10::ScalarType dtype) {
  for (const auto& c : kStorageClasses)
    if (c.dtype == dtype && std::strcmp(c.name, "UntypedStorage") != 0) return c.name;
  VOLT_FAIL("PyTorch files cannot hold tensors of ", c10::toString(dtype));
}

}  // namespace volt::detail

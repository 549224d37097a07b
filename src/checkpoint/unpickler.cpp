#include "unpickler.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "pickle_opcodes.h"
#include "volt/error.h"

namespace volt::detail {
namespace {

// Python's own data globals: OrderedDict, and _codecs.encode, which protocol 2 writes Python 3 bytes with.
bool is_data_global(const std::string& module, const std::string& name) {
  return (module == "collections" && name == "OrderedDict") || (module == "_codecs" && name == "encode");
}

}  // namespace

bool is_global(const Value& v, const char* module, const char* name) {
  return v.is_object() && !v.to_object().has_args && v.to_object().module == module &&
         v.to_object().name == name;
}

Unpickler::Unpickler(const char* data, size_t size, const StorageLoader& load, const std::string& what,
                     const UnpickleOptions& options)
    : begin_(data),
      p_(data),
      end_(data + size),
      what_(what),
      options_(options),
      containers_(*this, options.max_depth, (uint64_t{1} << 20) + 64 * uint64_t{size}),
      torch_(load) {}

void Unpickler::fail(std::string message) const {
  // Text from the file can hold NUL bytes, which would cut what() short.
  for (size_t at = message.find('\0'); at != std::string::npos; at = message.find('\0', at))
    message.replace(at, 1, "\\0");
  VOLT_FAIL(what_, ": ", message, " (at pickle byte ", position_, ")");
}

const char* Unpickler::take(size_t bytes) {
  if (static_cast<size_t>(end_ - p_) < bytes)
    fail("the pickle ends in the middle of an instruction (truncated?)");
  const char* at = p_;
  p_ += bytes;
  return at;
}

uint64_t Unpickler::le(int bytes) {
  const char* at = take(bytes);
  uint64_t value = 0;
  for (int i = bytes - 1; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(at[i]);
  return value;
}

std::string Unpickler::line() {
  const char* start = p_;
  const void* newline = std::memchr(p_, '\n', static_cast<size_t>(end_ - p_));
  if (newline == nullptr) fail("a text argument has no end of line (truncated?)");
  p_ = static_cast<const char*>(newline) + 1;
  return std::string(start, static_cast<const char*>(newline));
}

std::string Unpickler::counted(uint64_t length) {
  if (length > static_cast<uint64_t>(end_ - p_))
    fail("a string of " + std::to_string(length) + " bytes is longer than what is left of the pickle");
  return std::string(take(length), length);
}

Value Unpickler::pop() {
  if (stack_.size() <= floor()) fail("the pickle pops from an empty stack");
  Value value = std::move(stack_.back());
  stack_.pop_back();
  return value;
}

Value& Unpickler::top() {
  if (stack_.size() <= floor()) fail("the pickle reads an empty stack");
  return stack_.back();
}

std::vector<Value> Unpickler::pop_mark() {
  if (marks_.empty()) fail("the pickle closes a MARK that was never opened");
  const size_t mark = marks_.back();
  marks_.pop_back();
  std::vector<Value> items(std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(mark)),
                           std::make_move_iterator(stack_.end()));
  stack_.resize(mark);
  return items;
}

// LONG1 / LONG4: `n` bytes of little-endian two's complement; beyond 8 bytes only sign extension is allowed.
Value Unpickler::long_integer(uint64_t n) {
  if (n > static_cast<uint64_t>(end_ - p_)) fail("a long integer is longer than the pickle");
  const char* bytes = take(n);
  const bool negative = n > 0 && (static_cast<unsigned char>(bytes[n - 1]) & 0x80);
  for (uint64_t i = 8; i < n; ++i)
    if (static_cast<unsigned char>(bytes[i]) != (negative ? 0xff : 0x00))
      fail("an integer does not fit in 64 bits");
  uint64_t value = negative ? ~uint64_t{0} : 0;
  for (uint64_t i = std::min<uint64_t>(n, 8); i-- > 0;)
    value = (value << 8) | static_cast<unsigned char>(bytes[i]);
  if (n < 8 && n > 0 && negative) value |= ~uint64_t{0} << (8 * n);
  if (n >= 8 && (static_cast<int64_t>(value) < 0) != negative) fail("an integer does not fit in 64 bits");
  return Value(static_cast<int64_t>(value));
}

// INT / LONG: a decimal line (LONG's may end in 'L'); INT's "00" and "01" are False and True.
Value Unpickler::text_integer(bool is_int_opcode) {
  std::string text = line();
  if (!text.empty() && text.back() == 'L') text.pop_back();
  if (is_int_opcode && text == "00") return Value(false);
  if (is_int_opcode && text == "01") return Value(true);
  errno = 0;
  char* stop = nullptr;
  const long long value = std::strtoll(text.c_str(), &stop, 10);
  if (text.empty() || *stop != '\0' || errno == ERANGE)
    fail("bad integer literal '" + text.substr(0, 40) + "'");
  return Value(static_cast<int64_t>(value));
}

Value Unpickler::global(const std::string& module, const std::string& name) {
  // Every global becomes an inert marker; only reduce() gives meaning to the allow-listed ones.
  const bool known = is_data_global(module, name) || TorchRebuild::is_known(module, name);
  if (!known && options_.strict && !allowed(module, name))
    fail("the pickle refers to '" + module + "." + name +
         "', which is not data volt reads (strict mode; without it the value is kept as an opaque object)");
  return Value::object(module, name);
}

Value Unpickler::ordered_dict(const std::vector<Value>& a) {
  Value dict = Value::dict(true);
  if (a.empty()) return dict;
  if (!a[0].is_list() && !a[0].is_tuple()) fail("OrderedDict() argument is not a list of pairs");
  for (const Value& pair : a[0].items()) {
    if (!(pair.is_tuple() || pair.is_list()) || pair.items().size() != 2)
      fail("OrderedDict() item is not a pair");
    containers_.adopt(dict, pair.items()[0]);
    containers_.adopt(dict, pair.items()[1]);
    containers_.charge_key(pair.items()[0]);
    dict.to_dict().set(pair.items()[0], pair.items()[1]);
  }
  return dict;
}

// Protocol 2 writes Python 3 bytes as _codecs.encode(text, 'latin1').
Value Unpickler::latin1_bytes(const std::vector<Value>& a) {
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

Value Unpickler::reduce(const Value& callable, const Value& args) {
  if (!args.is_tuple()) fail("REDUCE arguments are not a tuple");
  const auto& a = args.items();
  if (is_global(callable, "collections", "OrderedDict")) return ordered_dict(a);
  if (std::optional<Value> tensor = torch_.reduce(callable, a, *this)) return std::move(*tensor);
  if (is_global(callable, "_codecs", "encode")) return latin1_bytes(a);
  if (!callable.is_object() || callable.to_object().has_args)
    fail("REDUCE applies " + brief_repr(callable, 2) + ", which is not a global");
  if (options_.strict && !allowed(callable.to_object().module, callable.to_object().name))
    fail("the pickle calls '" + callable.to_object().qualified_name() + "' (strict mode)");
  Value object = Value::object(callable.to_object().module, callable.to_object().name, args);
  object.to_object().has_args = true;
  containers_.adopt(object, args);
  return object;
}

// NEWOBJ: cls.__new__(cls, *args), kept as an opaque object.
Value Unpickler::new_object(const Value& cls, const Value& args) {
  if (!cls.is_object() || cls.to_object().has_args) fail("NEWOBJ on something that is not a class");
  if (!args.is_tuple()) fail("NEWOBJ arguments are not a tuple");
  if (options_.strict && !allowed(cls.to_object().module, cls.to_object().name))
    fail("the pickle creates a '" + cls.to_object().qualified_name() + "' (strict mode)");
  Value object = Value::object(cls.to_object().module, cls.to_object().name, args);
  object.to_object().has_args = true;
  object.to_object().created_by_new = true;
  containers_.adopt(object, args);
  return object;
}

void Unpickler::build(Value state) {
  Value& target = top();
  if (target.is_tensor()) return;  // a tensor's python attributes; volt keeps only the data
  if (!target.is_object() && !target.is_dict()) fail("BUILD on a " + std::string(kind_name(target.kind())));
  containers_.check_mutable(target, "BUILD");
  containers_.adopt(target, state);
  if (target.is_object()) {
    target.to_object().state = std::move(state);
    target.to_object().has_state = true;
  }
  // An OrderedDict's state is its __dict__ (state_dict()'s `_metadata`): not data, dropped.
}

Value Unpickler::run() {
  using Op = PickleOpcode;
  for (;;) {
    position_ = static_cast<size_t>(p_ - begin_);
    const auto op = static_cast<Op>(*take(1));
    switch (op) {
      case Op::kProto: {
        const uint64_t protocol = le(1);
        if (protocol > 5) fail("pickle protocol " + std::to_string(protocol) + " is newer than 5");
        break;
      }
      case Op::kFrame:
        le(8);
        break;
      case Op::kStop: {
        if (stack_.size() != 1 || !marks_.empty())
          fail("the pickle stops with " + std::to_string(stack_.size()) + " values on the stack");
        // Whatever walks the result (flatten, repr, equals, convert) expands shared references: bound
        // that by the pickle's size, or a few bytes of memo references could expand exponentially.
        const uint64_t budget = (uint64_t{1} << 20) + 64 * static_cast<uint64_t>(end_ - begin_);
        if (expanded_size(stack_.back(), budget + 1) > budget)
          fail("shared references expand the value far beyond the pickle's size (a hostile file)");
        return std::move(stack_.back());
      }
      case Op::kMark:
        marks_.push_back(stack_.size());
        break;
      case Op::kPop:
        pop();
        break;
      case Op::kPopMark:
        pop_mark();
        break;
      case Op::kDup:
        stack_.push_back(top());
        break;
      case Op::kNone:
        stack_.emplace_back();
        break;
      case Op::kNewTrue:
        stack_.emplace_back(true);
        break;
      case Op::kNewFalse:
        stack_.emplace_back(false);
        break;
      case Op::kBinInt:
        stack_.emplace_back(static_cast<int64_t>(static_cast<int32_t>(le(4))));
        break;
      case Op::kBinInt1:
        stack_.emplace_back(static_cast<int64_t>(le(1)));
        break;
      case Op::kBinInt2:
        stack_.emplace_back(static_cast<int64_t>(le(2)));
        break;
      case Op::kLong1:
        stack_.push_back(long_integer(le(1)));
        break;
      case Op::kLong4:
        stack_.push_back(long_integer(le(4)));
        break;
      case Op::kInt:
      case Op::kLong:
        stack_.push_back(text_integer(op == Op::kInt));
        break;
      case Op::kBinFloat: {  // big-endian
        const char* bytes = take(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | static_cast<unsigned char>(bytes[i]);
        double value;
        std::memcpy(&value, &bits, 8);
        stack_.emplace_back(value);
        break;
      }
      case Op::kFloat: {
        const std::string text = line();
        char* stop = nullptr;
        const double value = std::strtod(text.c_str(), &stop);
        if (text.empty() || *stop != '\0') fail("bad float literal '" + text.substr(0, 40) + "'");
        stack_.emplace_back(value);
        break;
      }
      case Op::kBinUnicode:
        stack_.emplace_back(counted(le(4)));
        break;
      case Op::kShortBinUnicode:
        stack_.emplace_back(counted(le(1)));
        break;
      case Op::kBinUnicode8:
        stack_.emplace_back(counted(le(8)));
        break;
      case Op::kBinString:  // Python 2 str
      case Op::kBinBytes:
        stack_.push_back(Value::bytes(counted(le(4))));
        break;
      case Op::kShortBinString:
      case Op::kShortBinBytes:
        stack_.push_back(Value::bytes(counted(le(1))));
        break;
      case Op::kBinBytes8:
        stack_.push_back(Value::bytes(counted(le(8))));
        break;
      case Op::kEmptyDict:
        stack_.push_back(Value::dict());
        break;
      case Op::kEmptyList:
        stack_.push_back(Value::list());
        break;
      case Op::kEmptyTuple:
        stack_.push_back(Value::tuple());
        break;
      case Op::kDict: {
        Value dict = Value::dict();
        containers_.set_items(dict, pop_mark());
        stack_.push_back(std::move(dict));
        break;
      }
      case Op::kList: {
        Value list = Value::list();
        containers_.append_items(list, pop_mark());
        stack_.push_back(std::move(list));
        break;
      }
      case Op::kTuple:
        stack_.push_back(containers_.make_tuple(pop_mark()));
        break;
      case Op::kTuple1:
        stack_.push_back(containers_.make_tuple({pop()}));
        break;
      case Op::kTuple2: {
        Value b = pop(), a = pop();
        stack_.push_back(containers_.make_tuple({std::move(a), std::move(b)}));
        break;
      }
      case Op::kTuple3: {
        Value c = pop(), b = pop(), a = pop();
        stack_.push_back(containers_.make_tuple({std::move(a), std::move(b), std::move(c)}));
        break;
      }
      case Op::kSetItem: {
        Value value = pop(), key = pop();
        containers_.set_items(top(), {std::move(key), std::move(value)});
        break;
      }
      case Op::kSetItems: {
        std::vector<Value> items = pop_mark();
        containers_.set_items(top(), std::move(items));
        break;
      }
      case Op::kAppend: {
        Value item = pop();
        containers_.append_items(top(), {std::move(item)});
        break;
      }
      case Op::kAppends: {
        std::vector<Value> items = pop_mark();
        containers_.append_items(top(), std::move(items));
        break;
      }
      case Op::kEmptySet:
        stack_.push_back(containers_.make_set("set", {}));
        break;
      case Op::kAddItems: {
        std::vector<Value> items = pop_mark();
        containers_.add_to_set(top(), std::move(items));
        break;
      }
      case Op::kFrozenSet:
        stack_.push_back(containers_.make_set("frozenset", pop_mark()));
        break;
      case Op::kGlobal: {
        const std::string module = line();
        const std::string name = line();
        stack_.push_back(global(module, name));
        break;
      }
      case Op::kStackGlobal: {
        Value name = pop(), module = pop();
        if (!module.is_string() || !name.is_string()) fail("STACK_GLOBAL needs two strings");
        stack_.push_back(global(module.to_string(), name.to_string()));
        break;
      }
      case Op::kReduce: {
        Value args = pop(), callable = pop();
        stack_.push_back(reduce(callable, args));
        break;
      }
      case Op::kNewObj: {
        Value args = pop(), cls = pop();
        stack_.push_back(new_object(cls, args));
        break;
      }
      case Op::kBuild:
        build(pop());
        break;
      case Op::kBinPersId: {
        Value pid = pop();
        stack_.push_back(torch_.persistent_load(pid, *this));
        break;
      }
      case Op::kBinPut:
        memo_[le(1)] = top();
        break;
      case Op::kLongBinPut:
        memo_[le(4)] = top();
        break;
      case Op::kPut: {
        const std::string text = line();
        memo_[std::strtoull(text.c_str(), nullptr, 10)] = top();
        break;
      }
      case Op::kMemoize:
        memo_[memo_.size()] = top();
        break;
      case Op::kBinGet:
      case Op::kLongBinGet:
      case Op::kGet: {
        const uint64_t index = op == Op::kBinGet       ? le(1)
                               : op == Op::kLongBinGet ? le(4)
                                                       : std::strtoull(line().c_str(), nullptr, 10);
        auto it = memo_.find(index);
        if (it == memo_.end())
          fail("the pickle refers to memo entry " + std::to_string(index) + ", which was never stored");
        stack_.push_back(it->second);
        break;
      }
      default: {
        char hex[8];
        std::snprintf(hex, sizeof(hex), "0x%02x", static_cast<unsigned>(op));
        fail(std::string("unsupported or invalid pickle opcode ") + hex);
      }
    }
  }
}

Value unpickle(const char* data, size_t size, const StorageLoader& load_storage, const std::string& what,
               const UnpickleOptions& options) {
  return Unpickler(data, size, load_storage, what, options).run();
}

}  // namespace volt::detail

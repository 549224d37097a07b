#include "volt/checkpoint/value.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <sstream>

#include "volt/error.h"

namespace volt {

const char* kind_name(ValueKind kind) {
  switch (kind) {
    case ValueKind::kNone:
      return "None";
    case ValueKind::kBool:
      return "bool";
    case ValueKind::kInt:
      return "int";
    case ValueKind::kDouble:
      return "float";
    case ValueKind::kString:
      return "str";
    case ValueKind::kBytes:
      return "bytes";
    case ValueKind::kTensor:
      return "Tensor";
    case ValueKind::kList:
      return "list";
    case ValueKind::kTuple:
      return "tuple";
    case ValueKind::kDict:
      return "dict";
    case ValueKind::kObject:
      return "object";
  }
  return "?";
}

Value::Value(at::Tensor tensor)
    : kind_(ValueKind::kTensor), tensor_(std::make_shared<at::Tensor>(std::move(tensor))) {}

Value Value::bytes(std::string data) {
  Value value(std::move(data));
  value.kind_ = ValueKind::kBytes;
  return value;
}

Value Value::list(std::vector<Value> items) {
  Value value;
  value.kind_ = ValueKind::kList;
  value.items_ = std::make_shared<std::vector<Value>>(std::move(items));
  return value;
}

Value Value::tuple(std::vector<Value> items) {
  Value value = list(std::move(items));
  value.kind_ = ValueKind::kTuple;
  return value;
}

Value Value::dict(bool ordered) {
  Value value;
  value.kind_ = ValueKind::kDict;
  value.dict_ = std::make_shared<Dict>(ordered);
  return value;
}

Value Value::object(std::string module, std::string name, Value args) {
  Value value;
  value.kind_ = ValueKind::kObject;
  value.object_ = std::make_shared<Object>();
  value.object_->module = std::move(module);
  value.object_->name = std::move(name);
  value.object_->args = std::move(args);
  return value;
}

namespace {
[[noreturn]] void wrong_kind(ValueKind want, ValueKind got) {
  VOLT_FAIL("expected a value of kind ", kind_name(want), " but it is ", kind_name(got));
}
}  // namespace

bool Value::to_bool() const {
  if (kind_ != ValueKind::kBool) wrong_kind(ValueKind::kBool, kind_);
  return int_ != 0;
}

int64_t Value::to_int() const {
  if (kind_ != ValueKind::kInt) wrong_kind(ValueKind::kInt, kind_);
  return int_;
}

double Value::to_double() const {
  if (kind_ == ValueKind::kInt) return static_cast<double>(int_);
  if (kind_ != ValueKind::kDouble) wrong_kind(ValueKind::kDouble, kind_);
  return double_;
}

const std::string& Value::to_string() const& {
  if (kind_ != ValueKind::kString && kind_ != ValueKind::kBytes) wrong_kind(ValueKind::kString, kind_);
  return *string_;
}

std::string Value::to_string() && { return static_cast<const Value&>(*this).to_string(); }

const at::Tensor& Value::to_tensor() const& {
  if (kind_ != ValueKind::kTensor) wrong_kind(ValueKind::kTensor, kind_);
  return *tensor_;
}

at::Tensor Value::to_tensor() && { return static_cast<const Value&>(*this).to_tensor(); }

std::vector<Value>& Value::items() & {
  if (kind_ != ValueKind::kList && kind_ != ValueKind::kTuple) wrong_kind(ValueKind::kList, kind_);
  return *items_;
}

const std::vector<Value>& Value::items() const& { return const_cast<Value*>(this)->items(); }

// A temporary that is the container's only owner gives it up; one that shares it copies it.
const std::vector<Value> Value::items() && {
  std::vector<Value>& items = static_cast<Value&>(*this).items();
  if (items_.use_count() == 1) return std::move(items);
  return items;
}

Dict& Value::to_dict() & {
  if (kind_ != ValueKind::kDict) wrong_kind(ValueKind::kDict, kind_);
  return *dict_;
}

const Dict& Value::to_dict() const& { return const_cast<Value*>(this)->to_dict(); }

const Dict Value::to_dict() && {
  Dict& dict = static_cast<Value&>(*this).to_dict();
  if (dict_.use_count() == 1) return std::move(dict);
  return dict;
}

Object& Value::to_object() & {
  if (kind_ != ValueKind::kObject) wrong_kind(ValueKind::kObject, kind_);
  return *object_;
}

const Object& Value::to_object() const& { return const_cast<Value*>(this)->to_object(); }

const Object Value::to_object() && {
  Object& object = static_cast<Value&>(*this).to_object();
  if (object_.use_count() == 1) return std::move(object);
  return object;
}

Value Value::operator[](const std::string& key) && { return static_cast<const Value&>(*this)[key]; }

const Value& Value::operator[](const std::string& key) const& {
  const Value* found = to_dict().find(Value(key));
  if (found == nullptr) {
    std::string some;
    size_t shown = 0;
    for (const auto& item : to_dict()) {
      if (shown++ == 8) {
        some += ", ...";
        break;
      }
      some += (shown > 1 ? ", " : "") + item.first.repr(0);
    }
    VOLT_FAIL("no key '", key, "' in this dict; its keys are: ", some.empty() ? "(none)" : some);
  }
  return *found;
}

const void* Value::container_identity() const {
  switch (kind_) {
    case ValueKind::kList:
    case ValueKind::kTuple:
      return items_.get();
    case ValueKind::kDict:
      return dict_.get();
    case ValueKind::kObject:
      return object_.get();
    default:
      return nullptr;
  }
}

bool Value::same_container(const Value& other) const {
  const void* mine = container_identity();
  return mine != nullptr && mine == other.container_identity();
}

namespace {
bool tensors_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const at::Tensor ca = a.cpu().contiguous();
  const at::Tensor cb = b.cpu().contiguous();
  const size_t bytes = static_cast<size_t>(ca.numel()) * ca.element_size();
  return bytes == 0 || std::memcmp(ca.data_ptr(), cb.data_ptr(), bytes) == 0;
}
}  // namespace

bool Value::equals(const Value& other) const {
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case ValueKind::kNone:
      return true;
    case ValueKind::kBool:
    case ValueKind::kInt:
      return int_ == other.int_;
    case ValueKind::kDouble:
      return std::memcmp(&double_, &other.double_, sizeof(double)) == 0 || double_ == other.double_;
    case ValueKind::kString:
    case ValueKind::kBytes:
      return *string_ == *other.string_;
    case ValueKind::kTensor:
      return tensors_equal(*tensor_, *other.tensor_);
    case ValueKind::kList:
    case ValueKind::kTuple: {
      if (items_ == other.items_) return true;
      if (items_->size() != other.items_->size()) return false;
      for (size_t i = 0; i < items_->size(); ++i)
        if (!(*items_)[i].equals((*other.items_)[i])) return false;
      return true;
    }
    case ValueKind::kDict: {
      if (dict_ == other.dict_) return true;
      if (dict_->size() != other.dict_->size()) return false;
      for (const auto& item : *dict_) {
        const Value* theirs = other.dict_->find(item.first);
        if (theirs == nullptr || !item.second.equals(*theirs)) return false;
      }
      return true;
    }
    case ValueKind::kObject: {
      if (object_ == other.object_) return true;
      const Object& a = *object_;
      const Object& b = *other.object_;
      if (a.module != b.module || a.name != b.name || a.has_args != b.has_args ||
          a.created_by_new != b.created_by_new || a.has_state != b.has_state || !a.args.equals(b.args) ||
          !a.state.equals(b.state) || a.appended.size() != b.appended.size() ||
          a.set_items.size() != b.set_items.size())
        return false;
      for (size_t i = 0; i < a.appended.size(); ++i)
        if (!a.appended[i].equals(b.appended[i])) return false;
      for (size_t i = 0; i < a.set_items.size(); ++i)
        if (!a.set_items[i].first.equals(b.set_items[i].first) ||
            !a.set_items[i].second.equals(b.set_items[i].second))
          return false;
      return true;
    }
  }
  return false;
}

namespace {
std::string quote_text(const std::string& text, size_t limit = 80) {
  std::string out = "'";
  for (size_t i = 0; i < text.size() && i < limit; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buffer[8];
      std::snprintf(buffer, sizeof(buffer), "\\x%02x", c);
      out += buffer;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > limit) out += "...";
  return out + "'";
}
}  // namespace

std::string Value::repr(size_t max_items) const {
  std::ostringstream out;
  switch (kind_) {
    case ValueKind::kNone:
      return "None";
    case ValueKind::kBool:
      return int_ ? "True" : "False";
    case ValueKind::kInt:
      return std::to_string(int_);
    case ValueKind::kDouble: {
      if (std::isnan(double_)) return "nan";
      if (std::isinf(double_)) return double_ > 0 ? "inf" : "-inf";
      out.precision(17);
      out << double_;
      std::string text = out.str();
      if (text.find_first_of(".eE") == std::string::npos) text += ".0";
      return text;
    }
    case ValueKind::kString:
      return quote_text(*string_);
    case ValueKind::kBytes:
      return "b" + quote_text(*string_);
    case ValueKind::kTensor: {
      const at::Tensor& t = *tensor_;
      if (!t.defined()) return "Tensor(undefined)";
      out << "Tensor(" << c10::toString(t.scalar_type()) << ", [";
      for (int64_t d = 0; d < t.dim(); ++d) out << (d ? ", " : "") << t.size(d);
      out << "])";
      return out.str();
    }
    case ValueKind::kList:
    case ValueKind::kTuple: {
      const bool is_list = kind_ == ValueKind::kList;
      out << (is_list ? "[" : "(");
      for (size_t i = 0; i < items_->size(); ++i) {
        if (i == max_items) {
          out << ", ... (" << items_->size() << " items)";
          break;
        }
        out << (i ? ", " : "") << (*items_)[i].repr(max_items);
      }
      if (!is_list && items_->size() == 1) out << ",";
      out << (is_list ? "]" : ")");
      return out.str();
    }
    case ValueKind::kDict: {
      out << "{";
      size_t i = 0;
      for (const auto& item : *dict_) {
        if (i == max_items) {
          out << ", ... (" << dict_->size() << " items)";
          break;
        }
        out << (i++ ? ", " : "") << item.first.repr(max_items) << ": " << item.second.repr(max_items);
      }
      out << "}";
      return out.str();
    }
    case ValueKind::kObject: {
      out << "<" << object_->qualified_name();
      if (object_->has_args) out << object_->args.repr(max_items);
      out << ">";
      return out.str();
    }
  }
  return "?";
}

namespace {
// A canonical, collision-free encoding of a key, following Python's hashing: equal numbers are one key
// (True == 1 == 1.0), tuples hash by their items, everything else (objects, tensors) by identity.
void index_key(const Value& key, std::string* out) {
  switch (key.kind()) {
    case ValueKind::kNone:
      *out += "n";
      return;
    case ValueKind::kBool:
    case ValueKind::kInt:
      *out += "i" + std::to_string(key.is_bool() ? int64_t(key.to_bool()) : key.to_int()) + ";";
      return;
    case ValueKind::kDouble: {
      const double d = key.to_double();
      if (d == std::floor(d) && std::fabs(d) < 9.2e18) {
        *out += "i" + std::to_string(static_cast<int64_t>(d)) + ";";
        return;
      }
      char buffer[40];
      std::snprintf(buffer, sizeof(buffer), "d%.17g;", d);
      *out += buffer;
      return;
    }
    case ValueKind::kString:
    case ValueKind::kBytes:
      *out += (key.is_string() ? "s" : "b") + std::to_string(key.to_string().size()) + ":" + key.to_string();
      return;
    case ValueKind::kTuple:
      *out += "t" + std::to_string(key.items().size()) + "(";
      for (const Value& item : key.items()) index_key(item, out);
      *out += ")";
      return;
    case ValueKind::kTensor: {
      char buffer[40];
      std::snprintf(buffer, sizeof(buffer), "T%p;",
                    static_cast<const void*>(key.to_tensor().unsafeGetTensorImpl()));
      *out += buffer;
      return;
    }
    default: {
      char buffer[40];
      std::snprintf(buffer, sizeof(buffer), "o%p;", key.container_identity());
      *out += buffer;
      return;
    }
  }
}

std::string encoded_key(const Value& key) {
  std::string out;
  index_key(key, &out);
  return out;
}
}  // namespace

void Dict::set(Value key, Value value) {
  std::string encoded = encoded_key(key);
  auto it = index_.find(encoded);
  if (it != index_.end()) {
    items_[it->second].second = std::move(value);
    return;
  }
  index_.emplace(std::move(encoded), items_.size());
  items_.emplace_back(std::move(key), std::move(value));
}

const Value* Dict::find(const Value& key) const& { return const_cast<Dict*>(this)->find(key); }

Value* Dict::find(const Value& key) & {
  auto it = index_.find(encoded_key(key));
  return it == index_.end() ? nullptr : &items_[it->second].second;
}

bool Dict::erase(const Value& key) {
  auto it = index_.find(encoded_key(key));
  if (it == index_.end()) return false;
  items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(it->second));
  reindex();
  return true;
}

void Dict::reindex() {
  index_.clear();
  for (size_t i = 0; i < items_.size(); ++i) index_.emplace(encoded_key(items_[i].first), i);
}

}  // namespace volt

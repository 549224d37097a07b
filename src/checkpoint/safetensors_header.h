// Reading a safetensors header: a SAX parser over the JSON (nlohmann's json_sax) that keeps only the
// entries and __metadata__, with the reference implementation's limits. Internal to safetensors.cpp.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_set>
#include <vector>

#include "volt/error.h"

namespace volt::detail {

constexpr char kMetadataKey[] = "__metadata__";
// serde_json's recursion limit, which the reference reader inherits: it rejects a 128th nested container.
constexpr size_t kMaxNesting = 127;

// Names and numbers from a hostile header can be megabytes long: messages quote a prefix.
inline std::string brief(const std::string& text, size_t limit = 160) {
  std::string out = text.substr(0, limit);
  if (text.size() > limit) {
    size_t cut = limit;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;  // keep UTF-8 whole
    out = text.substr(0, cut) + "...(" + std::to_string(text.size()) + " bytes)";
  }
  // JSON strings can hold "\u0000", and a NUL byte would cut the message short.
  for (size_t at = out.find('\0'); at != std::string::npos; at = out.find('\0', at))
    out.replace(at, 1, "\\u0000");
  return out;
}

// A header entry as written in the file, before its numbers are checked against each other.
struct HeaderEntry {
  std::string name;
  std::string dtype;
  std::vector<uint64_t> shape;
  uint64_t offsets[2] = {0, 0};
  size_t offset_count = 0;
  bool has_dtype = false, has_shape = false, has_offsets = false;
};

// Reads the header as a stream of JSON events (nlohmann's SAX interface): it keeps only the entries, so a
// hostile 100 MB header costs no DOM, deep nesting costs no stack, and duplicate keys, which the spec
// disallows and a DOM would silently merge, are seen. Unknown fields of an entry are skipped, as the
// reference does.
class HeaderParser final : public nlohmann::json_sax<nlohmann::json> {
 public:
  std::vector<HeaderEntry> entries;
  std::map<std::string, std::string> metadata;
  std::string error;

  bool null() override {
    // The reference reads `"__metadata__": null` as no metadata.
    if (skipped_depth_ == 0 && !levels_.empty() && levels_.back() == Level::kHeader && key_ == kMetadataKey)
      return true;
    return scalar("null");
  }
  bool boolean(bool value) override { return scalar(value ? "true" : "false"); }
  // Only negative numbers arrive here; non-negative ones come as number_unsigned.
  bool number_integer(number_integer_t value) override {
    return scalar(value == 0 ? "-0" : std::to_string(value));
  }
  bool number_float(number_float_t /*value*/, const string_t& text) override { return scalar(text); }
  bool binary(binary_t& /*value*/) override { return scalar("binary data"); }

  bool number_unsigned(number_unsigned_t value) override {
    if (skipped_depth_ > 0) return true;
    if (!levels_.empty() && levels_.back() == Level::kShape) {
      entry_.shape.push_back(value);
      return true;
    }
    if (!levels_.empty() && levels_.back() == Level::kDataOffsets) {
      if (entry_.offset_count == 2)
        return fail("tensor '", brief(entry_.name),
                    "' data_offsets must be [begin, end], not 3 or more numbers");
      entry_.offsets[entry_.offset_count++] = value;
      return true;
    }
    return scalar(std::to_string(value));
  }

  bool string(string_t& value) override {
    if (skipped_depth_ > 0 || in_unknown_field()) return true;
    if (!levels_.empty() && levels_.back() == Level::kMetadata) {
      metadata.emplace(field_, std::move(value));
      return true;
    }
    if (!levels_.empty() && levels_.back() == Level::kEntry && field_ == "dtype") {
      entry_.dtype = std::move(value);
      return true;
    }
    return unexpected("a string");
  }

  bool start_object(std::size_t /*elements*/) override {
    if (levels_.size() + skipped_depth_ == kMaxNesting) return too_deep();
    if (skipped_depth_ > 0) return ++skipped_depth_, true;
    if (levels_.empty()) return levels_.push_back(Level::kHeader), true;
    if (in_unknown_field()) return skipped_depth_ = 1, true;
    if (levels_.back() != Level::kHeader) return unexpected("an object");
    if (key_ == kMetadataKey) return levels_.push_back(Level::kMetadata), true;
    entry_ = HeaderEntry{};
    entry_.name = key_;
    levels_.push_back(Level::kEntry);
    return true;
  }

  bool key(string_t& key) override {
    if (skipped_depth_ > 0) return true;
    switch (levels_.back()) {
      case Level::kHeader:
        if (!names_.insert(key).second)
          return key == kMetadataKey ? fail("__metadata__ appears twice")
                                     : fail("tensor '", brief(key), "' appears twice");
        key_ = std::move(key);
        return true;
      case Level::kMetadata:
        if (metadata.count(key) > 0) return fail("__metadata__ key '", brief(key), "' appears twice");
        field_ = std::move(key);
        return true;
      default:  // Level::kEntry
        field_ = std::move(key);
        bool* seen = field_ == "dtype"          ? &entry_.has_dtype
                     : field_ == "shape"        ? &entry_.has_shape
                     : field_ == "data_offsets" ? &entry_.has_offsets
                                                : nullptr;
        if (seen != nullptr && *seen)
          return fail("tensor '", brief(entry_.name), "' has two '", field_, "' fields");
        if (seen != nullptr) *seen = true;
        return true;
    }
  }

  bool end_object() override {
    if (skipped_depth_ > 0) return --skipped_depth_, true;
    if (levels_.back() == Level::kEntry) {
      for (const auto& [present, field] :
           {std::pair{entry_.has_dtype, "dtype"}, std::pair{entry_.has_shape, "shape"},
            std::pair{entry_.has_offsets, "data_offsets"}})
        if (!present) return fail("tensor '", brief(entry_.name), "' has no '", field, "'");
      entries.push_back(std::move(entry_));
    }
    levels_.pop_back();
    return true;
  }

  bool start_array(std::size_t /*elements*/) override {
    if (levels_.size() + skipped_depth_ == kMaxNesting) return too_deep();
    if (skipped_depth_ > 0) return ++skipped_depth_, true;
    if (in_unknown_field()) return skipped_depth_ = 1, true;
    if (!levels_.empty() && levels_.back() == Level::kEntry && field_ == "shape")
      return levels_.push_back(Level::kShape), true;
    if (!levels_.empty() && levels_.back() == Level::kEntry && field_ == "data_offsets")
      return levels_.push_back(Level::kDataOffsets), true;
    return unexpected("an array");
  }

  bool end_array() override {
    if (skipped_depth_ > 0) return --skipped_depth_, true;
    if (levels_.back() == Level::kDataOffsets && entry_.offset_count != 2)
      return fail("tensor '", brief(entry_.name), "' data_offsets must be [begin, end], not ",
                  entry_.offset_count, " number(s)");
    levels_.pop_back();
    return true;
  }

  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& e) override {
    std::string what = e.what();
    if (const auto prefix_end = what.find("] ");
        what.rfind("[json.exception", 0) == 0 && prefix_end != what.npos)
      what = what.substr(prefix_end + 2);
    return fail("header is not valid JSON: ", brief(what, 300));
  }

 private:
  enum class Level { kHeader, kMetadata, kEntry, kShape, kDataOffsets };

  template <typename... Args>
  bool fail(const Args&... what) {
    if (error.empty()) error = detail::concat(what...);
    return false;  // stops the parser
  }

  bool too_deep() {
    return fail("header nests objects and arrays deeper than ", kMaxNesting,
                " levels, the limit of the reference reader");
  }

  bool in_unknown_field() const {
    return !levels_.empty() && levels_.back() == Level::kEntry && field_ != "dtype" && field_ != "shape" &&
           field_ != "data_offsets";
  }

  // A value that safetensors has no place for, unless it sits in an unknown field.
  bool scalar(const std::string& text) {
    if (skipped_depth_ > 0 || in_unknown_field()) return true;
    return unexpected(text);
  }

  bool unexpected(const std::string& what) {
    const std::string got = ", got " + brief(what);
    if (levels_.empty()) return fail("header is not a JSON object");
    switch (levels_.back()) {
      case Level::kHeader:
        if (key_ == kMetadataKey) return fail("__metadata__ must be an object of strings", got);
        return fail("tensor '", brief(key_), "' must be an object with dtype, shape and data_offsets", got);
      case Level::kMetadata:
        return fail("__metadata__ value of '", brief(field_), "' must be a string", got);
      case Level::kEntry:
        if (field_ == "dtype") return fail("tensor '", brief(entry_.name), "' dtype must be a string", got);
        if (field_ == "shape")
          return fail("tensor '", brief(entry_.name), "' shape must be an array of non-negative integers",
                      got);
        return fail("tensor '", brief(entry_.name),
                    "' data_offsets must be [begin, end] of non-negative integers", got);
      case Level::kShape:
        return fail("tensor '", brief(entry_.name), "' shape must hold non-negative integers", got);
      default:  // Level::kDataOffsets
        return fail("tensor '", brief(entry_.name), "' data_offsets must hold non-negative integers", got);
    }
  }

  std::vector<Level> levels_;  // the objects and arrays open around the current event
  size_t skipped_depth_ = 0;   // > 0 inside the value of an unknown entry field
  std::string key_;            // the current top-level key: a tensor name or __metadata__
  std::string field_;          // the current key inside an entry or __metadata__
  std::unordered_set<std::string> names_;
  HeaderEntry entry_;
};

}  // namespace volt::detail

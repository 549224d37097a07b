#include "logger_files.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "volt/checkpoint/atomic_file.h"
#include "volt/error.h"

namespace fs = std::filesystem;

namespace volt::detail {

int64_t next_version(const std::string& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return 0;
  int64_t next = 0;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string folder = it->path().filename().string();
    const std::string prefix = "version_";
    if (folder.compare(0, prefix.size(), prefix) != 0 || !it->is_directory(ec)) continue;
    // As Lightning's name.split("_")[1].isdigit(): "version_3_old" counts as 3.
    const std::string digits = folder.substr(prefix.size(), folder.find('_', prefix.size()) - prefix.size());
    if (digits.empty() || digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos)
      continue;
    next = std::max<int64_t>(next, std::stoll(digits) + 1);
  }
  return next;
}

namespace {

bool plain_yaml_safe(const std::string& text) {
  if (text.empty() || text.front() == ' ' || text.back() == ' ' || text.back() == ':') return false;
  // Indicators that would start another YAML construct; '-' only starts one when a space follows it.
  const char first = text.front();
  if (std::string("?:,[]{}#&*!|>'\"%@`").find(first) != std::string::npos) return false;
  if (first == '-' && (text.size() == 1 || text[1] == ' ')) return false;
  if (text.find(": ") != std::string::npos || text.find(" #") != std::string::npos) return false;
  for (unsigned char c : text)
    if (c < 0x20 || c == 0x7f) return false;
  return true;
}

}  // namespace

std::string yaml_scalar(const std::string& text) {
  if (plain_yaml_safe(text)) return text;
  bool control = false;
  for (unsigned char c : text) control = control || c < 0x20 || c == 0x7f;
  if (!control) {
    std::string quoted = "'";
    for (char c : text) quoted += c == '\'' ? std::string("''") : std::string(1, c);
    return quoted + "'";
  }
  // Only double quotes can carry control characters, as escapes.
  std::string quoted = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      quoted += '\\';
      quoted += static_cast<char>(c);
    } else if (c == '\n') {
      quoted += "\\n";
    } else if (c == '\t') {
      quoted += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      const char* hex = "0123456789abcdef";
      quoted += "\\x";
      quoted += hex[c >> 4];
      quoted += hex[c & 15];
    } else {
      quoted += static_cast<char>(c);
    }
  }
  return quoted + "\"";
}

LoggerFiles::LoggerFiles(std::string save_dir, std::string name, int64_t version)
    : save_dir_(std::move(save_dir)), name_(std::move(name)), version_(version) {
  VOLT_CHECK(version >= -1, "logger version ", version,
             " is not a version; pass N >= 0 for version_N, or -1 for the next free one");
}

void LoggerFiles::resolve() const {
  if (!log_dir_.empty()) return;
  // As Lightning: an empty name puts version_N straight under save_dir.
  const fs::path root = name_.empty() ? fs::path(save_dir_) : fs::path(save_dir_) / name_;
  if (version_ < 0) version_ = next_version(root.string());
  const std::string dir = (root / ("version_" + std::to_string(version_))).string();
  std::error_code ec;
  fs::create_directories(dir, ec);
  VOLT_CHECK(!ec && fs::is_directory(dir), "cannot create the log folder '", dir, "'",
             ec ? " (" + ec.message() + ")" : std::string(), "; pass a save_dir where it can be created");
  log_dir_ = dir;
}

const std::string& LoggerFiles::log_dir() const {
  resolve();
  return log_dir_;
}

int64_t LoggerFiles::version() const {
  resolve();
  return version_;
}

void LoggerFiles::update_hparams(const std::vector<std::pair<std::string, std::string>>& hparams) {
  for (const auto& [key, value] : hparams) hparams_[key] = value;
  hparams_saved_ = false;
}

void LoggerFiles::save_hparams() {
  if (hparams_saved_) return;
  std::string yaml;
  for (const auto& [key, value] : hparams_) yaml += yaml_scalar(key) + ": " + yaml_scalar(value) + "\n";
  if (hparams_.empty()) yaml = "{}\n";  // what PyYAML dumps for an empty dict
  const std::string path = (fs::path(log_dir()) / "hparams.yaml").string();
  write_file_atomically(path, [&](AtomicFileWriter& out) { out.write(yaml.data(), yaml.size()); });
  hparams_saved_ = true;
}

}  // namespace volt::detail

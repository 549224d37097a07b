#include "volt/trainer/csv_logger.h"

#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <system_error>

#include "logger_files.h"
#include "volt/checkpoint/atomic_file.h"
#include "volt/error.h"

namespace fs = std::filesystem;

namespace volt {

namespace {

// Python's repr(float), which csv.DictWriter writes: the shortest digits that read back the same,
// positional for exponents -4..15, else d.ddde+XX.
std::string python_float(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value < 0 ? "-inf" : "inf";
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::scientific);
  const std::string scientific(buffer, result.ptr);  // "-1.2345e+05"
  const size_t e = scientific.find('e');
  std::string sign, mantissa = scientific.substr(0, e);
  if (mantissa.front() == '-') {
    sign = "-";
    mantissa.erase(0, 1);
  }
  std::string digits = mantissa.substr(0, 1) + (mantissa.size() > 2 ? mantissa.substr(2) : "");
  const int exponent = std::stoi(scientific.substr(e + 1));
  if (exponent < -4 || exponent >= 16) {
    std::string out = sign + digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    const std::string power = std::to_string(std::abs(exponent));
    return out + (exponent < 0 ? "e-" : "e+") + (power.size() < 2 ? "0" : "") + power;
  }
  if (exponent < 0) return sign + "0." + std::string(-exponent - 1, '0') + digits;
  if (digits.size() <= static_cast<size_t>(exponent) + 1) digits.append(exponent + 1 - digits.size(), '0');
  const std::string whole = digits.substr(0, exponent + 1), fraction = digits.substr(exponent + 1);
  return sign + whole + "." + (fraction.empty() ? "0" : fraction);
}

// csv.QUOTE_MINIMAL of Python's excel dialect.
std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

// The excel dialect ends rows with \r\n, as csv.DictWriter does.
std::string csv_row(const std::vector<std::string>& fields) {
  std::string row;
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i > 0) row += ',';
    row += csv_field(fields[i]);
  }
  return row + "\r\n";
}

// Rows of a file this logger wrote (quoted fields may hold commas, quotes and line breaks).
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, any = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c != '"') {
        field += c;
      } else if (i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else {
        quoted = false;
      }
    } else if (c == '"') {
      quoted = any = true;
    } else if (c == ',') {
      row.push_back(std::move(field));
      field.clear();
    } else if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      row.push_back(std::move(field));
      rows.push_back(std::move(row));
      field.clear();
      row.clear();
      any = false;
    } else {
      field += c;
      any = true;
    }
  }
  if (any || !field.empty() || !row.empty()) {
    row.push_back(std::move(field));
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  VOLT_CHECK(in, "cannot read '", path, "' to widen its header; check that the log folder is readable");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

CSVLogger::CSVLogger(CSVLoggerOptions options)
    : options_(std::move(options)),
      files_(
          std::make_unique<detail::LoggerFiles>(options_.save_dir(), options_.name(), options_.version())) {
  VOLT_CHECK(options_.flush_logs_every_n_steps() >= 1, "flush_logs_every_n_steps is ",
             options_.flush_logs_every_n_steps(), "; pass 1 or more");
}

CSVLogger::~CSVLogger() {
  if (!started_) return;
  try {
    flush();
  } catch (...) {
    // A destructor cannot report; finalize() is where write errors surface.
  }
}

std::string CSVLogger::name() const { return options_.name(); }

std::string CSVLogger::log_dir() const { return files_->log_dir(); }

int64_t CSVLogger::version() const { return files_->version(); }

void CSVLogger::start() {
  if (started_) return;
  const fs::path metrics_file = fs::path(files_->log_dir()) / "metrics.csv";
  std::error_code ec;
  fs::remove(metrics_file, ec);
  VOLT_CHECK(!ec, "cannot remove the old '", metrics_file.string(), "' (", ec.message(),
             "); remove it, or pass another version");
  started_ = true;
}

void CSVLogger::log_hyperparams(const std::vector<std::pair<std::string, std::string>>& hparams) {
  start();
  files_->update_hparams(hparams);
}

void CSVLogger::log_metrics(const std::map<std::string, double>& metrics, int64_t step) {
  start();
  rows_.emplace_back(step, metrics);
  rows_.back().second.erase("step");  // the step argument wins, as in Lightning
  if ((step + 1) % options_.flush_logs_every_n_steps() == 0) flush();
}

void CSVLogger::flush() {
  start();
  files_->save_hparams();
  if (rows_.empty()) return;
  const std::string path = (fs::path(files_->log_dir()) / "metrics.csv").string();

  std::set<std::string> keys(keys_.begin(), keys_.end());
  const size_t old_count = keys.size();
  keys.insert("step");
  for (const auto& row : rows_)
    for (const auto& metric : row.second) keys.insert(metric.first);
  const bool file_exists = fs::is_regular_file(path);
  const bool widened = keys.size() != old_count;
  keys_.assign(keys.begin(), keys.end());

  if (widened && file_exists) {
    // As Lightning's _rewrite_with_new_header: the rows written so far move under the wider header.
    const auto old_rows = parse_csv(read_file(path));
    std::string text = csv_row(keys_);
    if (!old_rows.empty()) {
      const auto& old_header = old_rows.front();
      for (size_t r = 1; r < old_rows.size(); ++r) {
        std::map<std::string, std::string> cells;
        for (size_t c = 0; c < old_header.size() && c < old_rows[r].size(); ++c)
          cells[old_header[c]] = old_rows[r][c];
        std::vector<std::string> fields;
        for (const auto& key : keys_) fields.push_back(cells.count(key) ? cells[key] : "");
        text += csv_row(fields);
      }
    }
    write_file_atomically(path, [&](AtomicFileWriter& out) { out.write(text.data(), text.size()); });
  }

  std::string text = file_exists ? "" : csv_row(keys_);
  for (const auto& [step, metrics] : rows_) {
    std::vector<std::string> fields;
    for (const auto& key : keys_) {
      const auto found = metrics.find(key);
      if (key == "step")
        fields.push_back(std::to_string(step));
      else
        fields.push_back(found == metrics.end() ? "" : python_float(found->second));
    }
    text += csv_row(fields);
  }
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out << text;
  out.flush();
  VOLT_CHECK(out, "cannot write '", path, "'; check that the log folder is writable and the disk not full");
  rows_.clear();
}

void CSVLogger::finalize(const std::string& /*status*/) {
  // As Lightning: a logger that logged nothing leaves no files.
  if (started_) flush();
}

}  // namespace volt

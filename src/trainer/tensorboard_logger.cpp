#include "volt/trainer/tensorboard_logger.h"

#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "logger_files.h"
#include "volt/error.h"

namespace fs = std::filesystem;

namespace volt {

namespace {

// CRC-32C (Castagnoli), which TFRecord framing uses; reflected polynomial 0x82F63B78.
uint32_t crc32c(const std::string& bytes) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t crc = i;
      for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (crc & 1 ? 0x82F63B78u : 0u);
      t[i] = crc;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : bytes) crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

// TFRecord masks its CRCs so that a CRC of data that embeds CRCs stays well distributed.
uint32_t masked_crc(const std::string& bytes) {
  const uint32_t crc = crc32c(bytes);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

void put_fixed(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((value >> (8 * i)) & 0xFF);
}

// uint64 length, masked CRC of the length bytes, data, masked CRC of the data; all little-endian.
std::string tfrecord(const std::string& data) {
  std::string length;
  put_fixed(length, data.size(), 8);
  std::string record = length;
  put_fixed(record, masked_crc(length), 4);
  record += data;
  put_fixed(record, masked_crc(data), 4);
  return record;
}

// Protobuf wire format, just what Event and Summary need.
void put_varint(std::string& out, uint64_t value) {
  for (; value >= 0x80; value >>= 7) out += static_cast<char>((value & 0x7F) | 0x80);
  out += static_cast<char>(value);
}
void put_tag(std::string& out, int field, int wire_type) { put_varint(out, (field << 3) | wire_type); }
void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_tag(out, field, 2);
  put_varint(out, bytes.size());
  out += bytes;
}
void put_double(std::string& out, int field, double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  put_tag(out, field, 1);
  put_fixed(out, bits, 8);
}
void put_float(std::string& out, int field, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  put_tag(out, field, 5);
  put_fixed(out, bits, 4);
}

double wall_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// tensorflow.Event: wall_time = 1, step = 2, file_version = 3, summary = 5.
std::string file_version_event() {
  std::string event;
  put_double(event, 1, wall_time());
  put_bytes(event, 3, "brain.Event:2");
  return event;
}

std::string scalar_event(const std::string& tag, double value, int64_t step) {
  std::string summary_value;  // Summary.Value: tag = 1, simple_value = 2
  put_bytes(summary_value, 1, tag);
  put_float(summary_value, 2, static_cast<float>(value));
  std::string summary;  // Summary: repeated value = 1
  put_bytes(summary, 1, summary_value);
  std::string event;
  put_double(event, 1, wall_time());
  put_tag(event, 2, 0);
  put_varint(event, static_cast<uint64_t>(step));
  put_bytes(event, 5, summary);
  return event;
}

// The last part of the file name, as torch's SummaryWriter counts its event files per process.
std::atomic<int> event_files_opened{0};

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "localhost";
  return name;
}

}  // namespace

TensorBoardLogger::TensorBoardLogger(TensorBoardLoggerOptions options)
    : options_(std::move(options)),
      files_(
          std::make_unique<detail::LoggerFiles>(options_.save_dir(), options_.name(), options_.version())) {}

TensorBoardLogger::~TensorBoardLogger() {
  if (event_file_.empty()) return;
  try {
    flush();
  } catch (...) {
    // A destructor cannot report; finalize() is where write errors surface.
  }
}

std::string TensorBoardLogger::name() const { return options_.name(); }

std::string TensorBoardLogger::log_dir() const { return files_->log_dir(); }

int64_t TensorBoardLogger::version() const { return files_->version(); }

void TensorBoardLogger::open() {
  if (!event_file_.empty()) return;
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  char stamp[32];
  std::snprintf(stamp, sizeof stamp, "%010lld", static_cast<long long>(seconds));
  const std::string file = "events.out.tfevents." + std::string(stamp) + "." + host_name() + "." +
                           std::to_string(getpid()) + "." + std::to_string(event_files_opened++);
  const std::string path = (fs::path(files_->log_dir()) / file).string();
  out_.open(path, std::ios::binary | std::ios::trunc);
  VOLT_CHECK(out_.is_open(), "cannot create the TensorBoard events file '", path,
             "'; check that the log folder is writable");
  event_file_ = path;
  // TensorBoard recognises the file by this first record; writing it now shows the run at once.
  pending_ += tfrecord(file_version_event());
  write_pending();
}

void TensorBoardLogger::write_pending() {
  out_.write(pending_.data(), static_cast<std::streamsize>(pending_.size()));
  out_.flush();
  VOLT_CHECK(out_, "cannot write the TensorBoard events file '", event_file_,
             "'; check that the disk is not full");
  pending_.clear();
}

void TensorBoardLogger::log_hyperparams(const std::vector<std::pair<std::string, std::string>>& hparams) {
  open();
  files_->update_hparams(hparams);
}

void TensorBoardLogger::log_metrics(const std::map<std::string, double>& metrics, int64_t step) {
  open();
  for (const auto& [tag, value] : metrics) pending_ += tfrecord(scalar_event(tag, value, step));
  // Bounded memory between flushes; torch's SummaryWriter also writes on its own every so often.
  if (pending_.size() >= (1u << 20)) write_pending();
}

void TensorBoardLogger::flush() {
  open();
  files_->save_hparams();
  write_pending();
}

void TensorBoardLogger::finalize(const std::string& /*status*/) {
  if (event_file_.empty()) return;
  flush();
  out_.close();
  // A later log opens a new events file, as torch's SummaryWriter does after close().
  event_file_.clear();
}

}  // namespace volt

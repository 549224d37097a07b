#include "volt/trainer/csv_logger.h"
#include "volt/trainer/tensorboard_logger.h"

#include "volt/error.h"

#include <gtest/gtest.h>

#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "python_oracle.h"
#include "temp_dir.h"
#include "test_paths.h"

namespace fs = std::filesystem;
using volt::testing::TempDir;

namespace {

// A fresh folder under the system temp dir, removed with everything in it at the end of the test.
std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// Rows of a CSV file written with Python's excel dialect: \r\n line ends, "" inside quoted fields.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows(1);
  std::string field;
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted && c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
      field += '"';
      ++i;
    } else if (c == '"') {
      quoted = !quoted;
    } else if (!quoted && c == ',') {
      rows.back().push_back(field);
      field.clear();
    } else if (!quoted && c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
      rows.back().push_back(field);
      field.clear();
      rows.emplace_back();
      ++i;
    } else {
      field += c;
    }
  }
  EXPECT_TRUE(field.empty() && rows.back().empty()) << "the file does not end with \\r\\n";
  rows.pop_back();
  return rows;
}

using Rows = std::vector<std::vector<std::string>>;

// --- A TFRecord / Event reader, written apart from volt's writer (bitwise CRC, not a table). ---

uint32_t crc32c(const std::string& bytes) {
  uint32_t crc = ~0u;
  for (unsigned char byte : bytes) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
  }
  return ~crc;
}

uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

uint64_t little_endian(const std::string& bytes, size_t at, int size) {
  uint64_t value = 0;
  for (int i = size - 1; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(bytes.at(at + i));
  return value;
}

// The records' data; throws std::runtime_error on a CRC mismatch or a truncated record.
std::vector<std::string> read_tfrecords(const std::string& file) {
  std::vector<std::string> records;
  size_t at = 0;
  while (at < file.size()) {
    if (file.size() - at < 12) throw std::runtime_error("truncated length at byte " + std::to_string(at));
    const std::string length_bytes = file.substr(at, 8);
    const uint64_t length = little_endian(file, at, 8);
    if (little_endian(file, at + 8, 4) != masked(crc32c(length_bytes)))
      throw std::runtime_error("length CRC mismatch at byte " + std::to_string(at));
    at += 12;
    if (length > file.size() - at || file.size() - at - length < 4)
      throw std::runtime_error("truncated data at byte " + std::to_string(at));
    std::string data = file.substr(at, length);
    if (little_endian(file, at + length, 4) != masked(crc32c(data)))
      throw std::runtime_error("data CRC mismatch at byte " + std::to_string(at));
    at += length + 4;
    records.push_back(std::move(data));
  }
  return records;
}

struct Field {
  int number = 0;
  int wire_type = 0;
  uint64_t number_value = 0;  // varint, fixed64, fixed32
  std::string bytes;          // length-delimited
};

uint64_t read_varint(const std::string& message, size_t& at) {
  uint64_t value = 0;
  for (int shift = 0;; shift += 7) {
    if (shift > 63) throw std::runtime_error("varint too long");
    const auto byte = static_cast<unsigned char>(message.at(at++));
    value |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if (!(byte & 0x80)) return value;
  }
}

std::vector<Field> read_fields(const std::string& message) {
  std::vector<Field> fields;
  for (size_t at = 0; at < message.size();) {
    Field field;
    const uint64_t key = read_varint(message, at);
    field.number = static_cast<int>(key >> 3);
    field.wire_type = static_cast<int>(key & 7);
    if (field.wire_type == 0) {
      field.number_value = read_varint(message, at);
    } else if (field.wire_type == 1 || field.wire_type == 5) {
      const int size = field.wire_type == 1 ? 8 : 4;
      field.number_value = little_endian(message, at, size);
      at += size;
    } else if (field.wire_type == 2) {
      const uint64_t length = read_varint(message, at);
      if (length > message.size() - at) throw std::runtime_error("field runs past its message");
      field.bytes = message.substr(at, length);
      at += length;
    } else {
      throw std::runtime_error("unexpected wire type " + std::to_string(field.wire_type));
    }
    fields.push_back(std::move(field));
  }
  return fields;
}

struct Scalar {
  std::string tag;
  int64_t step = 0;
  float value = 0;
};

struct Events {
  std::string file_version;
  std::vector<double> wall_times;
  std::vector<Scalar> scalars;
};

Events read_events(const std::string& file) {
  Events events;
  for (const std::string& record : read_tfrecords(file)) {
    int64_t step = 0;
    double wall_time = 0;
    for (const Field& field : read_fields(record)) {
      if (field.number == 1 && field.wire_type == 1) {
        std::memcpy(&wall_time, &field.number_value, sizeof wall_time);
      } else if (field.number == 2 && field.wire_type == 0) {
        step = static_cast<int64_t>(field.number_value);
      } else if (field.number == 3 && field.wire_type == 2) {
        events.file_version = field.bytes;
      } else if (field.number == 5 && field.wire_type == 2) {
        for (const Field& value : read_fields(field.bytes)) {
          if (value.number != 1 || value.wire_type != 2) continue;
          Scalar scalar;
          scalar.step = step;
          for (const Field& part : read_fields(value.bytes)) {
            if (part.number == 1 && part.wire_type == 2) scalar.tag = part.bytes;
            if (part.number == 2 && part.wire_type == 5) {
              const auto bits = static_cast<uint32_t>(part.number_value);
              std::memcpy(&scalar.value, &bits, sizeof bits);
            }
          }
          events.scalars.push_back(scalar);
        }
      }
    }
    events.wall_times.push_back(wall_time);
  }
  return events;
}

std::vector<fs::path> event_files(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0) files.push_back(entry.path());
  return files;
}

}  // namespace

// --- CSVLogger ---

TEST(CSVLogger, WritesOneRowPerStepWithSortedKeysAndAStepColumn) {
  TempDir tmp("logger");
  volt::CSVLogger logger(volt::CSVLoggerOptions(tmp.path()));
  logger.log_metrics({{"train_loss", 2.5}, {"epoch", 0}, {"lr", 0.001}}, 0);
  logger.log_metrics({{"train_loss", 1.25}, {"epoch", 0}, {"lr", 0.001}}, 1);
  logger.finalize("success");

  EXPECT_EQ(logger.log_dir(), (fs::path(tmp.path()) / "lightning_logs" / "version_0").string());
  EXPECT_EQ(read_bytes(fs::path(logger.log_dir()) / "metrics.csv"),
            "epoch,lr,step,train_loss\r\n"
            "0.0,0.001,0,2.5\r\n"
            "0.0,0.001,1,1.25\r\n");
}

TEST(CSVLogger, WidensHeaderWhenANewMetricAppears) {
  TempDir tmp("logger");
  volt::CSVLogger logger(volt::CSVLoggerOptions(tmp.path()).flush_logs_every_n_steps(1));
  logger.log_metrics({{"loss", 3.0}}, 0);
  logger.log_metrics({{"loss", 2.0}}, 1);
  EXPECT_EQ(parse_csv(read_bytes(fs::path(logger.log_dir()) / "metrics.csv")),
            (Rows{{"loss", "step"}, {"3.0", "0"}, {"2.0", "1"}}));

  // A key sorting before, one between and a quoted one: every earlier row moves under the new header.
  logger.log_metrics({{"loss", 1.5}, {"acc", 0.5}, {"val, \"top\"", 0.25}}, 2);
  logger.log_metrics({{"loss", 1.0}}, 3);
  logger.finalize("success");
  const std::string text = read_bytes(fs::path(logger.log_dir()) / "metrics.csv");
  EXPECT_EQ(parse_csv(text), (Rows{{"acc", "loss", "step", "val, \"top\""},
                                   {"", "3.0", "0", ""},
                                   {"", "2.0", "1", ""},
                                   {"0.5", "1.5", "2", "0.25"},
                                   {"", "1.0", "3", ""}}));
  EXPECT_EQ(text.substr(0, text.find("\r\n")), "acc,loss,step,\"val, \"\"top\"\"\"");
}

TEST(CSVLogger, WritesFloatsAsPythonReprDoes) {
  TempDir tmp("logger");
  volt::CSVLogger logger(volt::CSVLoggerOptions(tmp.path()));
  const std::vector<std::pair<double, std::string>> cases = {
      {0.1, "0.1"},
      {1.0, "1.0"},
      {-0.0, "-0.0"},
      {123.456, "123.456"},
      {0.0001, "0.0001"},
      {0.00001, "1e-05"},
      {1.5e-7, "1.5e-07"},
      {1e15, "1000000000000000.0"},
      {1e16, "1e+16"},
      {12345678901234567890.0, "1.2345678901234567e+19"},
      {1.0 / 3.0, "0.3333333333333333"},
      {std::numeric_limits<double>::quiet_NaN(), "nan"},
      {std::numeric_limits<double>::infinity(), "inf"},
      {-std::numeric_limits<double>::infinity(), "-inf"},
      {1e-320, "1e-320"},
      {1.7976931348623157e308, "1.7976931348623157e+308"},
  };
  for (size_t i = 0; i < cases.size(); ++i) logger.log_metrics({{"x", cases[i].first}}, i);
  logger.finalize("success");
  const Rows rows = parse_csv(read_bytes(fs::path(logger.log_dir()) / "metrics.csv"));
  ASSERT_EQ(rows.size(), cases.size() + 1);
  for (size_t i = 0; i < cases.size(); ++i)
    EXPECT_EQ(rows[i + 1], (std::vector<std::string>{std::to_string(i), cases[i].second}));
}

TEST(CSVLogger, WritesEveryNStepsAndWhatIsLeftOnFinalize) {
  TempDir tmp("logger");
  volt::CSVLogger logger(volt::CSVLoggerOptions(tmp.path()).flush_logs_every_n_steps(2));
  const fs::path metrics = fs::path(logger.log_dir()) / "metrics.csv";
  logger.log_metrics({{"loss", 1.0}}, 0);
  EXPECT_FALSE(fs::exists(metrics));
  logger.log_metrics({{"loss", 2.0}}, 1);  // (1 + 1) % 2 == 0, as Lightning counts
  EXPECT_EQ(parse_csv(read_bytes(metrics)).size(), 3u);
  logger.log_metrics({{"loss", 3.0}}, 2);
  EXPECT_EQ(parse_csv(read_bytes(metrics)).size(), 3u);
  logger.finalize("success");
  EXPECT_EQ(parse_csv(read_bytes(metrics)),
            (Rows{{"loss", "step"}, {"1.0", "0"}, {"2.0", "1"}, {"3.0", "2"}}));
}

TEST(CSVLogger, TakesTheStepArgumentOverAMetricNamedStep) {
  TempDir tmp("logger");
  volt::CSVLogger logger(volt::CSVLoggerOptions(tmp.path()));
  logger.log_metrics({{"step", 99}, {"loss", 1.0}}, 7);
  logger.finalize("success");
  EXPECT_EQ(parse_csv(read_bytes(fs::path(logger.log_dir()) / "metrics.csv")),
            (Rows{{"loss", "step"}, {"1.0", "7"}}));
}

TEST(CSVLogger, PicksOnePastTheLargestVersionFolder) {
  TempDir tmp("logger");
  const fs::path root = fs::path(tmp.path()) / "runs";
  {
    volt::CSVLogger first(volt::CSVLoggerOptions(tmp.path()).name("runs"));
    EXPECT_EQ(first.version(), 0);
    volt::CSVLogger second(volt::CSVLoggerOptions(tmp.path()).name("runs"));
    first.log_metrics({{"loss", 1.0}}, 0);
    EXPECT_EQ(second.version(), 1);  // the first one's folder exists by now
  }
  // Only folders named version_<digits>[_...] count, as Lightning's split("_")[1].isdigit().
  fs::create_directories(root / "version_6_old");
  fs::create_directories(root / "version_x");
  fs::create_directories(root / "versions_40");
  write_bytes(root / "version_50", "a file, not a folder");
  volt::CSVLogger next(volt::CSVLoggerOptions(tmp.path()).name("runs"));
  EXPECT_EQ(next.version(), 7);
  EXPECT_EQ(next.log_dir(), (root / "version_7").string());
  EXPECT_TRUE(fs::is_directory(root / "version_7"));
}

TEST(CSVLogger, PutsVersionFoldersStraightInSaveDirWhenTheNameIsEmpty) {
  TempDir tmp("logger");
  volt::CSVLogger logger(volt::CSVLoggerOptions(tmp.path()).name(""));
  EXPECT_EQ(logger.log_dir(), (fs::path(tmp.path()) / "version_0").string());
}

TEST(CSVLogger, StartsAnExplicitVersionAfreshWithoutTouchingOthers) {
  TempDir tmp("logger");
  const fs::path dir = fs::path(tmp.path()) / "lightning_logs" / "version_3";
  fs::create_directories(dir);
  write_bytes(dir / "metrics.csv", "old,step\r\n1,0\r\n");
  volt::CSVLogger logger(volt::CSVLoggerOptions(tmp.path()).version(3));
  EXPECT_EQ(logger.version(), 3);
  logger.log_metrics({{"new", 2.0}}, 5);
  logger.finalize("success");
  EXPECT_EQ(read_bytes(dir / "metrics.csv"), "new,step\r\n2.0,5\r\n");
  EXPECT_FALSE(fs::exists(fs::path(tmp.path()) / "lightning_logs" / "version_0"));
}

TEST(CSVLogger, WritesHyperparametersAsSortedYamlQuotingStringsThatNeedIt) {
  TempDir tmp("logger");
  volt::CSVLogger logger(volt::CSVLoggerOptions(tmp.path()));
  logger.log_hyperparams({{"lr", "0.001"},
                          {"optimizer", "adam"},
                          {"name", "my run: 2"},
                          {"empty", ""},
                          {"quote", "it's"},
                          {"negative", "-1"},
                          {"dash", "- item"},
                          {"list", "[1, 2]"},
                          {"padded", " x "},
                          {"comment", "a #b"},
                          {"lines", "a\nb\t\"c\""},
                          {"model/n_layer", "12"}});
  logger.log_hyperparams({{"lr", "0.01"}});  // a later value replaces the earlier one
  logger.finalize("success");
  EXPECT_EQ(read_bytes(fs::path(logger.log_dir()) / "hparams.yaml"),
            "comment: 'a #b'\n"
            "dash: '- item'\n"
            "empty: ''\n"
            "lines: \"a\\nb\\t\\\"c\\\"\"\n"
            "list: '[1, 2]'\n"
            "lr: 0.01\n"
            "model/n_layer: 12\n"
            "name: 'my run: 2'\n"
            "negative: -1\n"
            "optimizer: adam\n"
            "padded: ' x '\n"
            "quote: it's\n");
  EXPECT_FALSE(fs::exists(fs::path(logger.log_dir()) / "metrics.csv"));  // no metrics, no table
}

TEST(CSVLogger, WritesEmptyHyperparametersAsAnEmptyYamlMapping) {
  TempDir tmp("logger");
  volt::CSVLogger logger(volt::CSVLoggerOptions(tmp.path()));
  logger.log_metrics({{"loss", 1.0}}, 0);
  logger.finalize("success");
  EXPECT_EQ(read_bytes(fs::path(logger.log_dir()) / "hparams.yaml"), "{}\n");  // as PyYAML dumps {}
}

TEST(CSVLogger, LeavesNoFilesWhenNothingWasLogged) {
  TempDir tmp("logger");
  { volt::CSVLogger logger(volt::CSVLoggerOptions(tmp.path())); }
  volt::CSVLogger logger(volt::CSVLoggerOptions(tmp.path()));
  logger.finalize("success");
  EXPECT_TRUE(fs::is_empty(tmp.path()));
}

TEST(CSVLogger, NamesTheFolderItCannotCreate) {
  TempDir tmp("logger");
  write_bytes(fs::path(tmp.path()) / "blocker", "a file where the save dir should be");
  const std::string save_dir = (fs::path(tmp.path()) / "blocker" / "logs").string();
  volt::CSVLogger logger{volt::CSVLoggerOptions(save_dir)};
  try {
    logger.log_metrics({{"loss", 1.0}}, 0);
    FAIL() << "expected volt::Error";
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find(save_dir), std::string::npos) << e.what();
  }
}

TEST(CSVLogger, RejectsOptionsThatMeanNothing) {
  EXPECT_THROW(volt::CSVLogger(volt::CSVLoggerOptions().flush_logs_every_n_steps(0)), volt::Error);
  EXPECT_THROW(volt::CSVLogger(volt::CSVLoggerOptions().version(-2)), volt::Error);
}

// --- TensorBoardLogger ---

TEST(TensorBoardReader, ComputesTheCastagnoliCheckValue) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);  // the CRC-32C catalogue's check value
  EXPECT_EQ(crc32c(""), 0u);
}

TEST(TensorBoardLogger, WritesRecordsWhoseCrcsCheckAndWhoseEventsDecode) {
  TempDir tmp("logger");
  volt::TensorBoardLogger logger(volt::TensorBoardLoggerOptions(tmp.path()));
  logger.log_metrics({{"train/loss", 2.5}, {"lr", 0.001}}, 0);
  logger.log_metrics({{"train/loss", 1.25}}, 1);
  logger.log_metrics({{"train/loss", 0.1}}, 123456789012);  // a multi-byte varint
  logger.finalize("success");

  EXPECT_EQ(logger.log_dir(), (fs::path(tmp.path()) / "lightning_logs" / "version_0").string());
  const auto files = event_files(logger.log_dir());
  ASSERT_EQ(files.size(), 1u);
  // events.out.tfevents.<10-digit seconds>.<host>.<pid>.<n>
  const std::string name = files[0].filename().string();
  const std::string pid = "." + std::to_string(getpid()) + ".";
  EXPECT_NE(name.find(pid), std::string::npos) << name;
  EXPECT_EQ(name.find_first_not_of("0123456789", 20), 30u) << name;

  const Events events = read_events(read_bytes(files[0]));
  EXPECT_EQ(events.file_version, "brain.Event:2");
  ASSERT_EQ(events.wall_times.size(), 5u);  // file_version + one event per scalar
  const double now = static_cast<double>(time(nullptr));
  for (double wall_time : events.wall_times) EXPECT_NEAR(wall_time, now, 60.0);
  ASSERT_EQ(events.scalars.size(), 4u);
  EXPECT_EQ(events.scalars[0].tag, "lr");  // the metrics map's order
  EXPECT_EQ(events.scalars[0].step, 0);
  EXPECT_EQ(events.scalars[0].value, 0.001f);
  EXPECT_EQ(events.scalars[1].tag, "train/loss");
  EXPECT_EQ(events.scalars[1].value, 2.5f);
  EXPECT_EQ(events.scalars[2].step, 1);
  EXPECT_EQ(events.scalars[2].value, 1.25f);
  EXPECT_EQ(events.scalars[3].step, 123456789012);
  EXPECT_EQ(events.scalars[3].value, 0.1f);
}

TEST(TensorBoardLogger, CrcCheckCatchesABitFlipAnywhereInTheFile) {
  TempDir tmp("logger");
  volt::TensorBoardLogger logger(volt::TensorBoardLoggerOptions(tmp.path()));
  logger.log_metrics({{"loss", 1.0}, {"acc", 0.5}}, 3);
  logger.finalize("success");
  const std::string good = read_bytes(event_files(logger.log_dir()).at(0));
  ASSERT_NO_THROW(read_tfrecords(good));
  // Every bit of every byte: length, length CRC, data and data CRC of each record.
  for (size_t byte = 0; byte < good.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = good;
      bad[byte] = static_cast<char>(bad[byte] ^ (1 << bit));
      EXPECT_THROW(read_tfrecords(bad), std::runtime_error) << "byte " << byte << " bit " << bit;
    }
  }
}

TEST(TensorBoardLogger, KeepsRecordsInMemoryUntilFlush) {
  TempDir tmp("logger");
  volt::TensorBoardLogger logger(volt::TensorBoardLoggerOptions(tmp.path()));
  logger.log_metrics({{"loss", 1.0}}, 0);
  const fs::path file = logger.event_file();
  EXPECT_EQ(read_events(read_bytes(file)).scalars.size(), 0u);  // only the file_version record so far
  EXPECT_EQ(read_events(read_bytes(file)).file_version, "brain.Event:2");
  logger.flush();
  EXPECT_EQ(read_events(read_bytes(file)).scalars.size(), 1u);
  logger.log_metrics({{"loss", 0.5}}, 1);
  logger.finalize("success");
  EXPECT_EQ(read_events(read_bytes(file)).scalars.size(), 2u);
  EXPECT_TRUE(logger.event_file().empty());
}

TEST(TensorBoardLogger, WritesHyperparametersYamlAndPicksTheNextVersion) {
  TempDir tmp("logger");
  fs::create_directories(fs::path(tmp.path()) / "tb" / "version_2");
  volt::TensorBoardLogger logger(volt::TensorBoardLoggerOptions(tmp.path()).name("tb"));
  logger.log_hyperparams({{"lr", "0.001"}, {"optimizer", "adam w"}});
  logger.finalize("success");
  EXPECT_EQ(logger.version(), 3);
  EXPECT_EQ(read_bytes(fs::path(tmp.path()) / "tb" / "version_3" / "hparams.yaml"),
            "lr: 0.001\noptimizer: adam w\n");
}

TEST(TensorBoardLogger, PythonTensorBoardReadsTheSameStepsAndValues) {
  VOLT_SKIP_WITHOUT_VENV();
  const std::string python = volt::testing::venv_python();
  if (volt::testing::run_command(volt::testing::shell_quote(python) + " -c 'import tensorboard'").exit_code !=
      0)
    GTEST_SKIP() << "the test venv at " << python << " has no tensorboard package";
  TempDir tmp("logger");
  volt::TensorBoardLogger logger(volt::TensorBoardLoggerOptions(tmp.path()));
  for (int64_t step = 0; step < 30; ++step) {
    const double loss = 3.0 / (1.0 + static_cast<double>(step)), lr = 1e-3 * std::pow(0.9, step);
    logger.log_metrics({{"train/loss", loss}, {"lr-Adam", lr}}, step * 10);
    if (step == 10) logger.flush();  // records from two writes read as one stream
  }
  logger.finalize("success");

  const auto result = volt::testing::run_command(
      volt::testing::shell_quote(python) + " " +
      volt::testing::shell_quote(volt::testing::test_source_dir() + "/trainer/tensorboard_oracle.py") + " " +
      volt::testing::shell_quote(logger.log_dir()));
  ASSERT_EQ(result.exit_code, 0) << result.output;

  // Lines "step<TAB>repr(value)<TAB>tag", tags sorted: lr-Adam, then train/loss.
  std::istringstream lines(result.output);
  std::vector<Scalar> read;
  for (std::string line; std::getline(lines, line);) {
    const size_t tab1 = line.find('\t'), tab2 = line.find('\t', tab1 + 1);
    ASSERT_NE(tab2, std::string::npos) << "unexpected oracle line: " << line;
    Scalar scalar;
    scalar.step = std::stoll(line.substr(0, tab1));
    const double value = std::strtod(line.substr(tab1 + 1, tab2 - tab1 - 1).c_str(), nullptr);
    scalar.value = static_cast<float>(value);
    EXPECT_EQ(static_cast<double>(scalar.value), value) << "TensorBoard's value is not a float32: " << line;
    scalar.tag = line.substr(tab2 + 1);
    read.push_back(scalar);
  }
  ASSERT_EQ(read.size(), 60u) << result.output;
  for (int64_t step = 0; step < 30; ++step) {
    const Scalar& lr = read[step];
    const Scalar& loss = read[30 + step];
    EXPECT_EQ(lr.tag, "lr-Adam");
    EXPECT_EQ(lr.step, step * 10);
    EXPECT_EQ(lr.value, static_cast<float>(1e-3 * std::pow(0.9, step)));
    EXPECT_EQ(loss.tag, "train/loss");
    EXPECT_EQ(loss.step, step * 10);
    EXPECT_EQ(loss.value, static_cast<float>(3.0 / (1.0 + static_cast<double>(step))));
  }
}

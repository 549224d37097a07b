#include "volt/checkpoint/safetensors.h"
#include "volt/checkpoint/atomic_file.h"
#include "volt/error.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace fs = std::filesystem;

namespace {

// The same tensors as reference_tensors() in safetensors_oracle.py.
std::vector<std::pair<std::string, at::Tensor>> reference_tensors() {
  auto base = torch::arange(24, torch::kFloat64).reshape({2, 3, 4}) / 7 - 1;
  return {
      {"f64", base.clone()},
      {"f32", base.to(torch::kFloat32).transpose(0, 2)},  // saved contiguous, like the oracle's
      {"f16", base.to(torch::kFloat16)},
      {"bf16", base.to(torch::kBFloat16)[1]},
      {"i64", torch::arange(10, torch::kInt64) * 1000000007},
      {"i32", torch::arange(6, torch::kInt32).reshape({2, 3}) - 3},
      {"i16", torch::arange(5, torch::kInt16) * -300},
      {"i8", torch::arange(7, torch::kInt8) - 3},
      {"u8", torch::arange(9, torch::kUInt8) * 28},
      {"bool", torch::arange(5).remainder(2) == 0},
      {"layer.0.weight", base.to(torch::kFloat32)[0]},
      {"empty", torch::zeros({0, 3})},
      {"scalar", torch::scalar_tensor(2.5, torch::kFloat32)},
  };
}

// As in safetensors_oracle.py: one key, because the reference writes several in a random order.
const std::map<std::string, std::string> kMetadata{{"format", "pt"}};

std::string python() {
  if (const char* p = std::getenv("VOLT_PYTHON")) return p;
  const char* cache = std::getenv("VOLT_CACHE");
  const char* home = std::getenv("HOME");
  return (cache ? std::string(cache) : std::string(home ? home : ".") + "/.cache/volt") + "/venv/bin/python";
}

int run_oracle(const std::string& mode, const std::string& path) {
  const std::string command =
      python() + " " + VOLT_TEST_SOURCE_DIR + "/checkpoint/safetensors_oracle.py " + mode + " '" + path + "'";
  return std::system(command.c_str());
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("volt_safetensors_" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  // A file with this header JSON and this many data bytes.
  std::string crafted(const std::string& header, size_t data_bytes) const {
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    return bytes + header + std::string(data_bytes, '\x01');
  }

  void expect_rejected(const std::string& bytes, const std::string& defect) const {
    const auto path = file("bad.safetensors");
    write_bytes(path, bytes);
    try {
      volt::SafetensorsReader reader(path);
      ADD_FAILURE() << "accepted a file whose defect is: " << defect;
    } catch (const volt::Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(path), std::string::npos) << message;
      EXPECT_NE(message.find(defect), std::string::npos) << "expected '" << defect << "' in: " << message;
    }
  }

  fs::path dir_;
};

}  // namespace

TEST_F(Safetensors, RoundTripsEveryDtypeShapeAndMetadata) {
  const auto path = file("round.safetensors");
  const std::map<std::string, std::string> metadata{
      {"format", "pt"}, {"source", "volt"}, {"\u00e9t\u00e9", "\"q\""}};
  volt::save_safetensors(path, reference_tensors(), metadata);
  volt::SafetensorsReader reader(path);
  EXPECT_EQ(reader.metadata(), metadata);
  EXPECT_EQ(reader.entries().size(), reference_tensors().size());
  for (const auto& [name, expected] : reference_tensors()) {
    ASSERT_TRUE(reader.contains(name)) << name;
    auto got = reader.tensor(name);
    EXPECT_EQ(got.scalar_type(), expected.scalar_type()) << name;
    EXPECT_EQ(got.sizes(), expected.sizes()) << name;
    EXPECT_TRUE(torch::equal(got, expected.contiguous())) << name;
  }
  EXPECT_THROW(reader.tensor("missing"), volt::Error);
}

TEST_F(Safetensors, WritesTheReferenceLayoutByteForByte) {
  if (access(python().c_str(), X_OK) != 0) GTEST_SKIP() << "no venv Python at " << python();
  const auto ours = file("ours.safetensors"), theirs = file("theirs.safetensors");
  volt::save_safetensors(ours, reference_tensors(), kMetadata);
  ASSERT_EQ(run_oracle("write", theirs), 0);
  const auto a = read_bytes(ours), b = read_bytes(theirs);
  EXPECT_EQ(a.size(), b.size());
  EXPECT_TRUE(a == b) << "header ours:   " << a.substr(8, 200) << "\nheader theirs: " << b.substr(8, 200);
  EXPECT_EQ(run_oracle("check", ours), 0) << "safetensors.torch.load_file rejected or misread volt's file";
}

TEST_F(Safetensors, ReadsWhatTheReferenceWrites) {
  if (access(python().c_str(), X_OK) != 0) GTEST_SKIP() << "no venv Python at " << python();
  const auto theirs = file("theirs.safetensors");
  ASSERT_EQ(run_oracle("write", theirs), 0);
  volt::SafetensorsReader reader(theirs);
  EXPECT_EQ(reader.metadata(), kMetadata);
  for (const auto& [name, expected] : reference_tensors())
    EXPECT_TRUE(torch::equal(reader.tensor(name), expected.contiguous())) << name;
}

TEST_F(Safetensors, AlignedTensorsViewTheMappingCopyOnWrite) {
  const auto path = file("map.safetensors");
  auto weight = torch::arange(4096, torch::kFloat32).reshape({64, 64});
  volt::save_safetensors(path, {{"w", weight}});
  const auto before = read_bytes(path);
  at::Tensor mapped;
  {
    volt::SafetensorsReader reader(path);
    mapped = reader.tensor("w");
    EXPECT_TRUE(reader.is_mapped(mapped));
  }
  EXPECT_TRUE(torch::equal(mapped, weight));  // the tensor keeps the mapping alive
  mapped.mul_(2);                             // private memory: the file does not change
  EXPECT_EQ(read_bytes(path), before);
}

TEST_F(Safetensors, EveryTruncationIsAnErrorNotACrash) {
  const auto path = file("whole.safetensors");
  volt::save_safetensors(path, reference_tensors(), kMetadata);
  const auto whole = read_bytes(path);
  for (size_t length = 0; length < whole.size(); ++length) {
    write_bytes(file("cut.safetensors"), whole.substr(0, length));
    EXPECT_THROW(volt::SafetensorsReader(file("cut.safetensors")), volt::Error) << "length " << length;
  }
}

TEST_F(Safetensors, HostileHeadersAreNamedDefects) {
  const std::string ok_entry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  expect_rejected("", "shorter than the 8-byte header length");
  expect_rejected(std::string("\xff\xff\xff\xff\xff\x00\x00\x00", 8) + "{}", "exceeds the limit");
  expect_rejected(std::string("\x00\x10\x00\x00\x00\x00\x00\x00", 8) + "{}", "exceeds the 2 bytes after it");
  expect_rejected(crafted("[1,2]", 0), "does not start with '{'");
  expect_rejected(crafted("{\"a\":", 0), "not valid JSON");
  expect_rejected(crafted(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}})", 12),
                  "do not match shape");
  expect_rejected(crafted("{" + ok_entry + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
                  "overlap");
  expect_rejected(crafted(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
                  "a hole of 4 bytes");
  expect_rejected(crafted("{" + ok_entry + "}", 4), "past the 4 data bytes");
  expect_rejected(crafted("{" + ok_entry + "}", 12), "cover 8 of the 12 data bytes");
  expect_rejected(
      crafted(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}})", 8),
      "overflows");
  expect_rejected(crafted(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "non-negative");
  expect_rejected(crafted(R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2),
                  "'F8_E4M3', which volt cannot represent");
  expect_rejected(crafted(R"({"a":{"dtype":"F32","shape":[2]}})", 8), "needs data_offsets");
  expect_rejected(crafted(R"({"__metadata__":{"k":1}})", 0), "is not a string");
}

TEST_F(Safetensors, WriterRejectsWhatTheFormatCannotHold) {
  EXPECT_THROW(
      volt::save_safetensors(file("x.safetensors"), {{"c", torch::zeros({2}, torch::kComplexFloat)}}),
      volt::Error);
  EXPECT_THROW(
      volt::save_safetensors(file("x.safetensors"), {{"a", torch::zeros({1})}, {"a", torch::zeros({1})}}),
      volt::Error);
  EXPECT_FALSE(fs::exists(file("x.safetensors")));
}

TEST_F(Safetensors, AWriterKilledMidSaveLeavesThePreviousFileIntact) {
  const auto path = file("model.safetensors");
  volt::save_safetensors(path, {{"w", torch::ones({16})}});
  const auto good = read_bytes(path);
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    volt::AtomicFileWriter writer(path);
    const std::string half(8 << 20, 'x');
    writer.write(half.data(), half.size());
    (void)!write(ready[1], "h", 1);  // half written: the parent kills us now
    pause();
    _exit(0);
  }
  char signal_byte = 0;
  ASSERT_EQ(read(ready[0], &signal_byte, 1), 1);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_EQ(read_bytes(path), good);
  volt::SafetensorsReader reader(path);
  EXPECT_TRUE(torch::equal(reader.tensor("w"), torch::ones({16})));
  // A later save replaces it, and an abandoned writer leaves no temporary file behind.
  volt::save_safetensors(path, {{"w", torch::zeros({4})}});
  EXPECT_TRUE(torch::equal(volt::SafetensorsReader(path).tensor("w"), torch::zeros({4})));
  std::string temporary;
  {
    volt::AtomicFileWriter abandoned(file("other.safetensors"));
    temporary = abandoned.temporary_path();
    EXPECT_TRUE(fs::exists(temporary));
  }
  EXPECT_FALSE(fs::exists(temporary));
  EXPECT_FALSE(fs::exists(file("other.safetensors")));
}

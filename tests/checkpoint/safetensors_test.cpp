#include "volt/checkpoint/safetensors.h"

#include "volt/error.h"

#include <gtest/gtest.h>

#include <torch/torch.h>
#include "python_oracle.h"
#include "test_paths.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace fs = std::filesystem;

namespace {

// The same tensors as reference_tensors() in safetensors_oracle.py, built the same way.
std::vector<std::pair<std::string, at::Tensor>> reference_tensors() {
  const auto base = torch::arange(24, torch::kFloat64).reshape({2, 3, 4}) / 7 - 1;
  const auto base32 = base.to(torch::kFloat32);
  return {
      {"f64", base.clone()},
      {"f32.transposed", base32.transpose(0, 2)},  // not contiguous: the writer packs it
      {"f16", base.to(torch::kFloat16)},
      {"bf16", base.to(torch::kBFloat16)[1]},
      {"c64", torch::complex(base32, -2 * base32)[0]},
      {"i64", torch::arange(10, torch::kInt64) * 1000000007 - 4000000000},
      {"i32", torch::arange(6, torch::kInt32).reshape({2, 3}) - 3},
      {"i16", torch::arange(5, torch::kInt16) * -300},
      {"i8", torch::arange(7, torch::kInt8) - 3},
      {"u8", torch::arange(9, torch::kUInt8) * 28},
      {"bool", torch::arange(5).remainder(2) == 0},
      {"Upper", base32[0][0]},
      {"layer.10.w\xc3\xa9ight", base32[1][2]},
      {"layer.9.weight", base32[0]},
      {"quote\"back\\slash\ttab", torch::arange(3, torch::kInt8)},
      {"empty", torch::zeros({0, 3})},
      {"empty.i64", torch::zeros({2, 0}, torch::kInt64)},
      {"scalar", torch::scalar_tensor(2.5, torch::kFloat32)},
      {"scalar.bool", torch::scalar_tensor(true, torch::kBool)},
  };
}

// As METADATA in safetensors_oracle.py: one key (the reference orders several at random), with escapes.
const std::map<std::string, std::string> kReferenceMetadata{
    {"n\xc3\xb6te \"1\"", "line\nbreak\\ \x01\x1f\x7f \xc3\xa9 \xf0\x9f\x98\x80 / </script>"}};

std::string oracle_script() { return volt::testing::test_source_dir() + "/checkpoint/safetensors_oracle.py"; }

struct OracleJob {
  std::string mode;  // "write" (the reference writes path) or "check" (the reference reads path)
  std::string path;
  bool with_metadata;
};

// Runs safetensors_oracle.py once for all `jobs` (importing torch takes seconds).
volt::testing::CommandResult run_oracle(const std::vector<OracleJob>& jobs) {
  using volt::testing::shell_quote;
  std::string command = shell_quote(volt::testing::venv_python()) + " " + shell_quote(oracle_script());
  for (const auto& job : jobs)
    command += " " + job.mode + " " + shell_quote(job.path) + " " +
               (job.with_metadata ? "with-metadata" : "without-metadata");
  return volt::testing::run_command(command);
}

#define SKIP_WITHOUT_REFERENCE_PYTHON() VOLT_SKIP_WITHOUT_VENV()

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  // A fresh file each time: ext4 flushes a file truncated and rewritten in place (auto_da_alloc), which
  // makes thousands of rewrites take a minute.
  std::remove(path.c_str());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::string little_endian_u64(uint64_t value) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return bytes;
}

uint64_t header_length(const std::string& file_bytes) {
  uint64_t length = 0;
  for (int i = 7; i >= 0 && file_bytes.size() >= 8; --i)
    length = (length << 8) | static_cast<unsigned char>(file_bytes[i]);
  return length;
}

// A file with this header text and `data` after it.
std::string file_with_header(const std::string& header, const std::string& data = "") {
  return little_endian_u64(header.size()) + header + data;
}

// Reads every byte of the tensor, so that ASan or a fault catches data outside the mapping.
uint64_t byte_checksum(const at::Tensor& tensor) {
  const auto contiguous = tensor.contiguous();
  const auto* bytes = static_cast<const unsigned char*>(contiguous.data_ptr());
  uint64_t sum = 0;
  for (int64_t i = 0; i < contiguous.numel() * contiguous.element_size(); ++i) sum = sum * 31 + bytes[i];
  return sum;
}

class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "volt_safetensors_XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  // Expects the reader to refuse `bytes` with a volt::Error naming the file and containing `defect`.
  void expect_rejected(const std::string& bytes, const std::string& defect) const {
    const auto path = file("hostile.safetensors");
    write_bytes(path, bytes);
    try {
      volt::SafetensorsReader reader(path);
      ADD_FAILURE() << "accepted a file whose defect is: " << defect;
    } catch (const volt::Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(path), std::string::npos) << "the message does not name the file: " << message;
      EXPECT_NE(message.find(defect), std::string::npos) << "expected '" << defect << "' in: " << message;
    }
  }

  fs::path dir_;
};

}  // namespace

TEST_F(Safetensors, RoundTripsEveryDtypeShapeAndValueWithMetadata) {
  const auto path = file("round_trip.safetensors");
  const std::map<std::string, std::string> metadata{{"format", "pt"}, {"step", "1200"}, {"", "empty key"}};
  volt::save_safetensors(path, reference_tensors(), metadata);
  volt::SafetensorsReader reader(path);
  EXPECT_EQ(reader.path(), path);
  EXPECT_EQ(reader.metadata(), metadata);
  EXPECT_EQ(reader.tensors().size(), reference_tensors().size());
  for (const auto& [name, expected] : reference_tensors()) {
    ASSERT_TRUE(reader.contains(name)) << name;
    const auto got = reader.tensor(name);
    EXPECT_EQ(got.scalar_type(), expected.scalar_type()) << name;
    EXPECT_EQ(got.sizes(), expected.sizes()) << name;
    EXPECT_TRUE(got.is_contiguous()) << name;
    EXPECT_TRUE(torch::equal(got, expected)) << name;
    EXPECT_EQ(reader.info(name).shape, expected.sizes().vec()) << name;
  }
}

TEST_F(Safetensors, SavesStridedExpandedAndConjugatedTensorsByTheirValues) {
  const auto path = file("views.safetensors");
  const auto matrix = torch::arange(30, torch::kFloat32).reshape({5, 6});
  const auto complex = torch::complex(matrix, matrix + 100);
  const std::vector<std::pair<std::string, at::Tensor>> views{
      {"every_other_column", matrix.slice(1, 0, 6, 2)},
      {"transposed", matrix.t()},
      {"expanded", torch::arange(3, torch::kInt32).unsqueeze(0).expand({4, 3})},
      {"conjugated", complex.conj()},
      {"requires_grad", matrix.clone().requires_grad_(true)},
  };
  volt::save_safetensors(path, views);
  volt::SafetensorsReader reader(path);
  for (const auto& [name, view] : views)
    EXPECT_TRUE(torch::equal(reader.tensor(name), view.detach())) << name;
  EXPECT_EQ(torch::imag(reader.tensor("conjugated"))[0][0].item<float>(), -100.0f);
}

TEST_F(Safetensors, RoundTripsTensorsOfManyDimensionsAndLongNames) {
  const auto path = file("wide.safetensors");
  std::vector<int64_t> shape(100, 1);
  shape.front() = 2;
  shape.back() = 3;
  const auto tensor = torch::arange(6, torch::kInt16).reshape(shape);
  const std::string long_name(100'000, 'n');
  volt::save_safetensors(path, {{long_name, tensor}});
  volt::SafetensorsReader reader(path);
  EXPECT_EQ(reader.info(long_name).shape, shape);
  EXPECT_TRUE(torch::equal(reader.tensor(long_name), tensor));
}

TEST_F(Safetensors, RoundTripsAFileWithoutTensorsOrMetadata) {
  const auto path = file("nothing.safetensors");
  volt::save_safetensors(path, {});
  EXPECT_EQ(read_bytes(path), little_endian_u64(8) + "{}      ");
  volt::SafetensorsReader reader(path);
  EXPECT_TRUE(reader.tensors().empty());
  EXPECT_TRUE(reader.metadata().empty());
}

TEST_F(Safetensors, ListsTensorsInFileOrderWithOffsetsThatTileTheData) {
  const auto path = file("order.safetensors");
  volt::save_safetensors(path, reference_tensors());
  volt::SafetensorsReader reader(path);
  uint64_t covered = 0;
  for (const auto& info : reader.tensors()) {
    EXPECT_EQ(info.begin, covered) << info.name;
    covered = info.end;
  }
  // The reference order: widest dtype first (I64 before F64 before C64 ...), then by name as bytes.
  EXPECT_EQ(reader.tensors().front().name, "empty.i64");
  EXPECT_EQ(reader.tensors().back().name, "scalar.bool");
  const auto bytes = read_bytes(path);
  const uint64_t header_bytes = header_length(bytes);
  EXPECT_EQ(header_bytes % 8, 0u) << "the header is padded so that the data starts 8-aligned";
  EXPECT_EQ(bytes.size(), 8 + header_bytes + covered);
}

TEST_F(Safetensors, WritesTheSameBytesAsTheReferenceWriter) {
  SKIP_WITHOUT_REFERENCE_PYTHON();
  const auto oracle = run_oracle({{"write", file("reference_metadata.safetensors"), true},
                                  {"write", file("reference_plain.safetensors"), false}});
  ASSERT_EQ(oracle.exit_code, 0) << oracle.output;
  ASSERT_NE(oracle.output.find("oracle ok"), std::string::npos) << oracle.output;
  for (const bool with_metadata : {true, false}) {
    const auto ours = file("volt.safetensors");
    volt::save_safetensors(ours, reference_tensors(),
                           with_metadata ? kReferenceMetadata : std::map<std::string, std::string>{});
    const auto a = read_bytes(ours);
    const auto b =
        read_bytes(file(with_metadata ? "reference_metadata.safetensors" : "reference_plain.safetensors"));
    EXPECT_EQ(a.size(), b.size());
    EXPECT_TRUE(a == b) << "with_metadata=" << with_metadata
                        << "\nvolt:      " << a.substr(8, header_length(a))
                        << "\nreference: " << b.substr(8, header_length(b));
  }
}

TEST_F(Safetensors, TheReferenceReaderLoadsEveryValueVoltWrote) {
  SKIP_WITHOUT_REFERENCE_PYTHON();
  volt::save_safetensors(file("volt_metadata.safetensors"), reference_tensors(), kReferenceMetadata);
  volt::save_safetensors(file("volt_plain.safetensors"), reference_tensors());
  const auto oracle = run_oracle(
      {{"check", file("volt_metadata.safetensors"), true}, {"check", file("volt_plain.safetensors"), false}});
  EXPECT_EQ(oracle.exit_code, 0) << oracle.output;
  EXPECT_NE(oracle.output.find("oracle ok"), std::string::npos) << oracle.output;
}

TEST_F(Safetensors, ReadsEveryValueTheReferenceWriterWrote) {
  SKIP_WITHOUT_REFERENCE_PYTHON();
  const auto path = file("reference.safetensors");
  const auto oracle = run_oracle({{"write", path, true}});
  ASSERT_EQ(oracle.exit_code, 0) << oracle.output;
  volt::SafetensorsReader reader(path);
  EXPECT_EQ(reader.metadata(), kReferenceMetadata);
  EXPECT_EQ(reader.tensors().size(), reference_tensors().size());
  for (const auto& [name, expected] : reference_tensors()) {
    ASSERT_TRUE(reader.contains(name)) << name;
    const auto got = reader.tensor(name);
    EXPECT_EQ(got.scalar_type(), expected.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(got, expected)) << name;
  }
}

TEST_F(Safetensors, AlignedTensorsViewTheMappingAndOutliveTheReader) {
  const auto path = file("mapped.safetensors");
  volt::save_safetensors(path, reference_tensors());
  std::vector<std::pair<std::string, at::Tensor>> loaded;
  {
    volt::SafetensorsReader reader(path);
    for (const auto& info : reader.tensors()) {
      auto tensor = reader.tensor(info.name);
      EXPECT_EQ(reader.is_mapped(tensor), info.end > info.begin) << info.name;
      loaded.emplace_back(info.name, tensor);
    }
  }
  const auto expected = reference_tensors();
  for (const auto& [name, tensor] : loaded) {
    const auto match =
        std::find_if(expected.begin(), expected.end(), [&](const auto& e) { return e.first == name; });
    EXPECT_TRUE(torch::equal(tensor, match->second)) << name << " after the reader is gone";
  }
}

TEST_F(Safetensors, SavingOverAMappedFileLeavesItsTensorsValid) {
  const auto path = file("replaced.safetensors");
  volt::save_safetensors(path, {{"w", torch::arange(1024, torch::kFloat32)}});
  const auto mapped = volt::SafetensorsReader(path).tensor("w");
  volt::save_safetensors(path, {{"w", torch::zeros({1024})}});  // a new inode; the old one stays mapped
  EXPECT_TRUE(torch::equal(mapped, torch::arange(1024, torch::kFloat32)));
  EXPECT_TRUE(torch::equal(volt::SafetensorsReader(path).tensor("w"), torch::zeros({1024})));
}

TEST_F(Safetensors, UnalignedTensorsAreCopiedWithTheirValues) {
  // A 9-byte header puts the data at file offset 17: F32 data there cannot be viewed in place.
  std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}})";
  header.append((9 - header.size() % 8 + 8) % 8, ' ');
  ASSERT_EQ(header.size() % 8, 1u);
  const float values[2] = {1.5f, -2.25f};
  std::string data(reinterpret_cast<const char*>(values), sizeof values);
  data += std::string("\x07\x08\x09", 3);
  const auto path = file("unaligned.safetensors");
  write_bytes(path, file_with_header(header, data));
  volt::SafetensorsReader reader(path);
  const auto a = reader.tensor("a"), b = reader.tensor("b");
  EXPECT_FALSE(reader.is_mapped(a));
  EXPECT_TRUE(reader.is_mapped(b));
  EXPECT_TRUE(torch::equal(a, torch::tensor({1.5f, -2.25f})));
  EXPECT_TRUE(torch::equal(b, torch::tensor({7, 8, 9}, torch::kUInt8)));
}

TEST_F(Safetensors, EveryTruncationIsAnErrorNamingTheFile) {
  const auto whole_path = file("whole.safetensors");
  volt::save_safetensors(whole_path, reference_tensors(), kReferenceMetadata);
  const auto whole = read_bytes(whole_path);
  for (size_t length = 0; length < whole.size(); ++length) {
    const auto path = file("truncated.safetensors");
    write_bytes(path, whole.substr(0, length));
    try {
      volt::SafetensorsReader reader(path);
      ADD_FAILURE() << "accepted the file cut to " << length << " of " << whole.size() << " bytes";
    } catch (const volt::Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
}

TEST_F(Safetensors, CorruptHeaderBytesAreErrorsOrValidFilesNeverCrashes) {
  const auto whole_path = file("whole.safetensors");
  volt::save_safetensors(whole_path, reference_tensors(), kReferenceMetadata);
  const auto whole = read_bytes(whole_path);
  const size_t header_end = 8 + header_length(whole);
  int accepted = 0, rejected = 0;
  volatile uint64_t checksum = 0;  // keeps the reads of accepted tensors from being optimized away
  for (size_t position = 0; position < header_end; ++position) {
    for (const char replacement : {'\0', '\xff', '{', '}', '"', ',', '[', '9', ' ', '-'}) {
      if (whole[position] == replacement) continue;
      std::string corrupt = whole;
      corrupt[position] = replacement;
      const auto path = file("corrupt.safetensors");
      write_bytes(path, corrupt);
      try {
        volt::SafetensorsReader reader(path);
        for (const auto& info : reader.tensors())
          checksum =
              checksum + byte_checksum(reader.tensor(info.name));  // volatile: no compound assignment (C++20)
        ++accepted;
      } catch (const volt::Error& e) {
        EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
        ++rejected;
      }
    }
  }
  EXPECT_GT(rejected, accepted);  // most single-byte corruptions break the header
}

TEST_F(Safetensors, RejectsFilesTooShortForAHeaderLength) {
  expect_rejected("", "is 0 bytes long");
  expect_rejected(std::string("\x02\0\0\0\0\0\0", 7), "is 7 bytes long");
  const auto directory = file("a_directory");
  fs::create_directory(directory);
  try {
    volt::SafetensorsReader reader(directory);
    ADD_FAILURE() << "read a directory";
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("is not a regular file"), std::string::npos) << e.what();
  }
  try {
    volt::SafetensorsReader reader(file("missing.safetensors"));
    ADD_FAILURE() << "opened a missing file";
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos) << e.what();
  }
}

TEST_F(Safetensors, RejectsHeaderLengthsBeyondTheFile) {
  expect_rejected(little_endian_u64(999999999999) + "{}      ",
                  "header length 999999999999 exceeds the file size 16");
  expect_rejected(little_endian_u64(~uint64_t{0}) + "{}",
                  "header length 18446744073709551615 exceeds the file size 10");
  expect_rejected(little_endian_u64(9) + "{}      ", "header length 9 exceeds the file size 16");
}

TEST_F(Safetensors, RejectsHeadersOverTheReferenceLimitOfOneHundredMegabytes) {
  // A sparse file: the header length fits in the file, but exceeds MAX_HEADER_SIZE.
  const auto path = file("huge_header.safetensors");
  const uint64_t header_bytes = 100'000'001;
  write_bytes(path, little_endian_u64(header_bytes) + "{");
  fs::resize_file(path, 8 + header_bytes);
  try {
    volt::SafetensorsReader reader(path);
    ADD_FAILURE() << "accepted a 100,000,001-byte header";
  } catch (const volt::Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("header length 100000001 exceeds the safetensors limit of 100000000"),
        std::string::npos)
        << e.what();
  }
}

TEST_F(Safetensors, RejectsHeadersThatAreNotAJsonObject) {
  expect_rejected(file_with_header(""), "header does not begin with '{'");
  expect_rejected(file_with_header("[1,2]"), "header does not begin with '{'");
  expect_rejected(file_with_header(" {}"), "header does not begin with '{'");
  expect_rejected(file_with_header("\xef\xbb\xbf{}"), "header does not begin with '{'");  // a UTF-8 BOM
  expect_rejected(file_with_header("{\"a\":"), "header is not valid JSON");
  expect_rejected(file_with_header("{}x"), "header is not valid JSON");
  expect_rejected(file_with_header(std::string("{}\0", 3)), "header has a NUL byte at offset 2");
  expect_rejected(file_with_header(std::string("{}\0{\"hidden\":1}", 15)),
                  "header has a NUL byte at offset 2");
  expect_rejected(file_with_header("{'a':1}"), "header is not valid JSON");
  expect_rejected(file_with_header("{\"a\xff\":{}}"), "header is not valid JSON");    // not UTF-8
  expect_rejected(file_with_header(R"({"\ud800":{}})"), "header is not valid JSON");  // a lone surrogate
  expect_rejected(file_with_header("{\"a\":1}"),
                  "tensor 'a' must be an object with dtype, shape and data_offsets, got 1");
  // Deep nesting is an error, not a stack overflow.
  expect_rejected(file_with_header(R"({"a":{"dtype":"F32","shape":)" + std::string(1'000'000, '[')),
                  "tensor 'a' shape must hold non-negative integers, got an array");
  expect_rejected(file_with_header(R"({"__metadata__":)" + std::string(1'000'000, '[')),
                  "__metadata__ must be an object of strings, got an array");
  // Where the reference skips a value (an unknown entry field), it still stops at 127 levels.
  const auto nested = [](size_t depth) {
    return file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":)" +
                                std::string(depth, '[') + std::string(depth, ']') + "}}",
                            std::string(8, '\0'));
  };
  expect_rejected(nested(126), "header nests objects and arrays deeper than 127 levels");
  expect_rejected(nested(1'000'000), "header nests objects and arrays deeper than 127 levels");
  write_bytes(file("nested.safetensors"), nested(125));
  EXPECT_NO_THROW(volt::SafetensorsReader(file("nested.safetensors")));
}

TEST_F(Safetensors, RejectsOffsetsThatOverlapLeaveHolesOrRunPastTheData) {
  const std::string a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  expect_rejected(file_with_header("{" + a + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                   std::string(8, '\0')),
                  "tensors 'a' and 'b' overlap");
  expect_rejected(file_with_header("{" + a + R"(,"b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                                   std::string(8, '\0')),
                  "tensors 'a' and 'b' overlap");
  expect_rejected(
      file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0')),
      "a hole of 4 bytes at data offset 0");
  expect_rejected(file_with_header("{" + a + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})",
                                   std::string(16, '\0')),
                  "a hole of 4 bytes at data offset 8");
  expect_rejected(file_with_header("{" + a + "}", std::string(4, '\0')),
                  "tensor 'a' data_offsets [0,8] run past the end of the data (4 bytes)");
  expect_rejected(file_with_header("{" + a + "}", std::string(12, '\0')),
                  "the tensors cover 8 of the 12 data bytes");
  expect_rejected(file_with_header("{}", "x"), "the tensors cover 0 of the 1 data bytes");
  expect_rejected(
      file_with_header(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", std::string(8, '\0')),
      "tensor 'a' data_offsets [8,0] end before they begin");
}

TEST_F(Safetensors, RejectsSizesThatDisagreeWithShapeAndDtype) {
  expect_rejected(
      file_with_header(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", std::string(12, '\0')),
      "tensor 'w' data_offsets [0,12] do not match shape [2,2] x F32 = 16 bytes");
  expect_rejected(
      file_with_header(R"({"s":{"dtype":"F64","shape":[],"data_offsets":[0,4]}})", std::string(4, '\0')),
      "tensor 's' data_offsets [0,4] do not match shape [] x F64 = 8 bytes");
}

TEST_F(Safetensors, RejectsShapesWhoseSizeOverflows) {
  expect_rejected(
      file_with_header(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}})",
                       std::string(8, '\0')),
      "tensor 'a' shape [4294967296,4294967296,4] x F32 overflows a 64-bit byte count");
  expect_rejected(
      file_with_header(R"({"a":{"dtype":"F32","shape":[3037000500,3037000500],"data_offsets":[0,8]}})",
                       std::string(8, '\0')),
      "overflows a 64-bit byte count");
  // The reference counts dimension by dimension, so an overflow before a 0 is still an overflow.
  expect_rejected(
      file_with_header(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})"),
      "overflows a 64-bit byte count");
  // Valid for the reference, but LibTorch sizes are int64.
  expect_rejected(
      file_with_header(R"({"a":{"dtype":"U8","shape":[18446744073709551615,0],"data_offsets":[0,0]}})"),
      "is too large for a LibTorch tensor");
  expect_rejected(
      file_with_header(R"({"a":{"dtype":"U8","shape":[9223372036854775807,2,0],"data_offsets":[0,0]}})"),
      "is too large for a LibTorch tensor");
  // A byte size that fits but disagrees with the data is a size mismatch, never an allocation.
  expect_rejected(
      file_with_header(R"({"a":{"dtype":"U8","shape":[9223372036854775807],"data_offsets":[0,8]}})",
                       std::string(8, '\0')),
      "do not match shape [9223372036854775807] x U8 = 9223372036854775807 bytes");
}

TEST_F(Safetensors, RejectsNumbersThatAreNotNonNegativeIntegers) {
  const auto with_shape = [](const std::string& shape) {
    return file_with_header(R"({"a":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,8]}})",
                            std::string(8, '\0'));
  };
  expect_rejected(with_shape("[-2]"), "tensor 'a' shape must hold non-negative integers, got -2");
  expect_rejected(with_shape("[-0,2]"), "shape must hold non-negative integers, got -0");
  expect_rejected(with_shape("[2.0]"), "shape must hold non-negative integers, got 2.0");
  expect_rejected(with_shape("[2e0]"), "shape must hold non-negative integers, got 2e0");
  expect_rejected(with_shape("[18446744073709551616]"), "got 18446744073709551616");
  expect_rejected(with_shape("[\"2\"]"), "got a string");
  expect_rejected(with_shape("[null]"), "got null");
  expect_rejected(with_shape("2"), "tensor 'a' shape must be an array of non-negative integers, got 2");
  expect_rejected(
      file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", std::string(8, '\0')),
      "tensor 'a' data_offsets must hold non-negative integers, got -8");
  expect_rejected(
      file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", std::string(8, '\0')),
      "tensor 'a' data_offsets must be [begin, end]");
  expect_rejected(
      file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8]}})", std::string(8, '\0')),
      "tensor 'a' data_offsets must be [begin, end], not 1 number(s)");
  expect_rejected(
      file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":{"0":0}}})", std::string(8, '\0')),
      "tensor 'a' data_offsets must be [begin, end] of non-negative integers, got an object");
}

TEST_F(Safetensors, RejectsMissingFieldsAndDtypesVoltCannotRepresent) {
  expect_rejected(file_with_header(R"({"a":{"dtype":"F32","shape":[2]}})", std::string(8, '\0')),
                  "tensor 'a' has no 'data_offsets'");
  expect_rejected(file_with_header(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')),
                  "tensor 'a' has no 'dtype'");
  expect_rejected(file_with_header(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", std::string(8, '\0')),
                  "tensor 'a' has no 'shape'");
  expect_rejected(
      file_with_header(R"({"a":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')),
      "tensor 'a' dtype must be a string, got 32");
  expect_rejected(
      file_with_header(R"({"a":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')),
      "tensor 'a' has unknown dtype 'f32'");
  for (const std::string dtype : {"F8_E4M3", "F8_E5M2", "U16", "U32", "U64", "F4"})
    expect_rejected(
        file_with_header(R"({"a":{"dtype":")" + dtype + R"(","shape":[0],"data_offsets":[0,0]}})"),
        "tensor 'a' has dtype " + dtype + ", which volt cannot represent");
}

TEST_F(Safetensors, RejectsDuplicateKeysThatTheSpecDisallows) {
  const std::string a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  expect_rejected(file_with_header("{" + a + "," + a + "}", std::string(8, '\0')),
                  "tensor 'a' appears twice");
  expect_rejected(file_with_header(R"({"__metadata__":{},"__metadata__":{}})"), "__metadata__ appears twice");
  expect_rejected(file_with_header(R"({"__metadata__":{"k":"1","k":"2"}})"),
                  "__metadata__ key 'k' appears twice");
  expect_rejected(file_with_header(R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                                   std::string(8, '\0')),
                  "tensor 'a' has two 'dtype' fields");
}

TEST_F(Safetensors, RejectsMetadataThatIsNotAMapOfStrings) {
  expect_rejected(file_with_header(R"({"__metadata__":{"k":1}})"),
                  "__metadata__ value of 'k' must be a string, got 1");
  expect_rejected(file_with_header(R"({"__metadata__":{"k":{"nested":"x"}}})"),
                  "__metadata__ value of 'k' must be a string, got an object");
  expect_rejected(file_with_header(R"({"__metadata__":"text"})"),
                  "__metadata__ must be an object of strings, got a string");
}

TEST_F(Safetensors, AcceptsWhatTheReferenceReaderAccepts) {
  const auto path = file("lenient.safetensors");
  const float values[2] = {3.0f, 4.0f};
  const std::string data(reinterpret_cast<const char*>(values), sizeof values);
  // Unknown entry fields, null metadata, zero-size tensors sharing an offset (one with the largest size
  // LibTorch allows), trailing whitespace of every JSON kind, and no padding.
  write_bytes(path, file_with_header(
                        R"({"__metadata__":null,"z":{"dtype":"I64","shape":[0,5],"data_offsets":[8,8]},)"
                        R"("a":{"extra":)" +
                            std::string(100, '[') + std::string(100, ']') +
                            R"(,"dtype":"F32","shape":[2],"data_offsets":[0,8],"more":{"x":[1,-2.5,null]}},)"
                            R"("y":{"dtype":"BOOL","shape":[9223372036854775807,0],"data_offsets":[8,8]}} )"
                            "\n\t\r",
                        data));
  volt::SafetensorsReader reader(path);
  EXPECT_TRUE(reader.metadata().empty());
  ASSERT_EQ(reader.tensors().size(), 3u);
  EXPECT_EQ(reader.tensors()[0].name, "a");
  EXPECT_TRUE(torch::equal(reader.tensor("a"), torch::tensor({3.0f, 4.0f})));
  EXPECT_EQ(reader.tensor("z").sizes(), (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(reader.tensor("y").scalar_type(), torch::kBool);
  EXPECT_EQ(reader.tensor("y").size(0), INT64_MAX);
}

TEST_F(Safetensors, AMissingTensorIsAnErrorNamingTheFileAndTheName) {
  const auto path = file("small.safetensors");
  volt::save_safetensors(path, {{"present", torch::ones({2})}});
  volt::SafetensorsReader reader(path);
  EXPECT_FALSE(reader.contains("absent"));
  for (const auto& lookup :
       std::vector<std::function<void()>>{[&] { reader.info("absent"); }, [&] { reader.tensor("absent"); }}) {
    try {
      lookup();
      ADD_FAILURE() << "found a tensor that is not there";
    } catch (const volt::Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("'absent'"), std::string::npos) << e.what();
    }
  }
}

TEST_F(Safetensors, WriterRefusesWhatTheFormatCannotHoldAndLeavesNoFile) {
  const auto path = file("refused.safetensors");
  const std::vector<std::pair<std::string, std::vector<std::pair<std::string, at::Tensor>>>> refused{
      {"safetensors cannot hold", {{"c", torch::zeros({2}, torch::kComplexDouble)}}},
      {"'a' appears twice", {{"a", torch::zeros({1})}, {"b", torch::zeros({1})}, {"a", torch::zeros({1})}}},
      {"'a' appears twice", {{"a", torch::zeros({1})}, {"a", torch::zeros({1}, torch::kInt8)}}},
      {"'__metadata__' is reserved", {{"__metadata__", torch::zeros({1})}}},
      {"is undefined", {{"u", at::Tensor()}}},
      {"meta device", {{"m", torch::empty({4}, torch::kMeta)}}},
      {"not valid UTF-8", {{"bad\xff", torch::zeros({1})}}},
      {"to_dense", {{"s", torch::zeros({2, 2}).to_sparse()}}},
  };
  for (const auto& [defect, tensors] : refused) {
    try {
      volt::save_safetensors(path, tensors);
      ADD_FAILURE() << "saved tensors whose defect is: " << defect;
    } catch (const volt::Error& e) {
      EXPECT_NE(std::string(e.what()).find(defect), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(volt::save_safetensors(path, {{"a", torch::zeros({1})}}, {{"k\xff", "v"}}), volt::Error);
  EXPECT_TRUE(fs::is_empty(dir_)) << "a refused save left a file behind";
}

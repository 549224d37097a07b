#include "volt/data/fashion_mnist.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "python_oracle.h"
#include "volt/error.h"

using volt::data::FashionMNIST;
namespace fs = std::filesystem;

namespace {
bool have_dataset() {
  return fs::exists(std::string(FashionMNIST::kDefaultRoot) + "/train-labels-idx1-ubyte.gz");
}
#define SKIP_WITHOUT_DATASET() \
  if (!have_dataset()) GTEST_SKIP() << "Debian's dataset-fashion-mnist is not installed"
}  // namespace

TEST(FashionMNIST, ReadsDebiansFilesWithBalancedClasses) {
  SKIP_WITHOUT_DATASET();
  FashionMNIST train(FashionMNIST::kTrain), test(FashionMNIST::kTest);
  EXPECT_EQ(train.size().value(), 60000u);
  EXPECT_EQ(test.size().value(), 10000u);
  EXPECT_EQ(train.images().sizes(), (std::vector<int64_t>{60000, 1, 28, 28}));
  EXPECT_EQ(train.images().scalar_type(), torch::kFloat);
  EXPECT_GE(train.images().min().item<float>(), 0.0f);
  EXPECT_LE(train.images().max().item<float>(), 1.0f);
  // 6000 training and 1000 test images per class, as the dataset is published.
  EXPECT_TRUE(torch::equal(torch::bincount(train.labels()), torch::full({10}, 6000, torch::kLong)));
  EXPECT_TRUE(torch::equal(torch::bincount(test.labels()), torch::full({10}, 1000, torch::kLong)));
}

TEST(FashionMNIST, PixelsMatchWhatPythonReadsFromTheSameFile) {
  SKIP_WITHOUT_DATASET();
  const std::string path = std::string(FashionMNIST::kDefaultRoot) + "/t10k-images-idx3-ubyte.gz";
  const auto result = volt::testing::run_command(
      "/usr/bin/python3 -c \"import gzip,sys; d=gzip.open(sys.argv[1]).read(); "
      "print(sum(d[16:16+784]), sum(d[16+784*9999:]), d[16+300])\" " +
      volt::testing::shell_quote(path));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  FashionMNIST test(FashionMNIST::kTest);
  const auto bytes = (test.images() * 255).round().to(torch::kLong);
  const std::string ours = std::to_string(bytes[0].sum().item<int64_t>()) + " " +
                           std::to_string(bytes[9999].sum().item<int64_t>()) + " " +
                           std::to_string(bytes[0].flatten()[300].item<int64_t>()) + "\n";
  EXPECT_EQ(result.output, ours);
}

TEST(FashionMNIST, BatchesGatherTheIndexedExamples) {
  SKIP_WITHOUT_DATASET();
  FashionMNIST test(FashionMNIST::kTest);
  const std::vector<size_t> indices{5, 0, 9999};
  const auto batch = test.get_batch(indices);
  EXPECT_EQ(batch.data.sizes(), (std::vector<int64_t>{3, 1, 28, 28}));
  for (size_t i = 0; i < indices.size(); ++i) {
    EXPECT_TRUE(torch::equal(batch.data[i], test.images()[static_cast<int64_t>(indices[i])]));
    EXPECT_EQ(batch.target[i].item<int64_t>(),
              test.labels()[static_cast<int64_t>(indices[i])].item<int64_t>());
  }
  // Through LibTorch's own loader: whole epochs of stacked batches.
  auto loader = torch::data::make_data_loader(test, torch::data::samplers::SequentialSampler(10000),
                                              torch::data::DataLoaderOptions(4096));
  int64_t seen = 0;
  for (const auto& b : *loader) seen += b.data.size(0);
  EXPECT_EQ(seen, 10000);
}

TEST(FashionMNIST, MissingFilesNameTheDebianPackage) {
  try {
    FashionMNIST data(FashionMNIST::kTrain, "/nonexistent/fashion");
    FAIL();
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("apt-get install dataset-fashion-mnist"), std::string::npos);
  }
}

TEST(FashionMNIST, TruncatedAndHostileFilesThrowNamingTheFile) {
  SKIP_WITHOUT_DATASET();
  const fs::path dir = fs::temp_directory_path() / ("volt-idx-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto write_gz = [&](const std::string& name, const std::string& bytes) {
    const std::string path = (dir / name).string();
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
    return path;
  };
  const std::string header("\x00\x00\x08\x01\x00\x00\x00\x0a", 8);  // 10 labels
  const auto truncated = write_gz("truncated.gz", header + std::string(5, '\x01'));
  const auto huge = write_gz(
      "huge.gz", std::string("\x00\x00\x08\x03\x7f\xff\xff\xff\x7f\xff\xff\xff\x00\x00\x00\x02", 16));
  const auto trailing = write_gz("trailing.gz", header + std::string(11, '\x01'));
  const auto wrong_type = write_gz("type.gz", std::string("\x00\x00\x0d\x01\x00\x00\x00\x01", 8) + "abcd");
  for (const auto& [path, defect] : std::vector<std::pair<std::string, std::string>>{
           {truncated, "truncated"}, {huge, "elements"}, {trailing, "after"}, {wrong_type, "type"}}) {
    try {
      volt::data::read_idx_file(path);
      ADD_FAILURE() << path << " was accepted";
    } catch (const volt::Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(defect), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(
      volt::data::read_idx_file(write_gz("ok.gz", header + std::string(10, '\x02'))).sum().item<int64_t>(),
      20);
  fs::remove_all(dir);
}

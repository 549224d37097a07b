// Hugging Face sharded safetensors (model.safetensors.index.json + shards) read wherever one safetensors
// file is: the checkpoint reader, Checkpoint::load / load_state_dict, and the CLI's inspect and convert.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "python_oracle.h"
#include "temp_dir.h"
#include "test_paths.h"
#include "volt/checkpoint/checkpoint.h"
#include "volt/checkpoint/checkpoint_file.h"
#include "volt/checkpoint/load_state_dict.h"
#include "volt/checkpoint/safetensors.h"
#include "volt/error.h"

namespace fs = std::filesystem;
using volt::testing::TempDir;

namespace {

torch::nn::Sequential model() {
  return torch::nn::Sequential(torch::nn::Linear(4, 3), torch::nn::ReLU(), torch::nn::Linear(3, 2));
}

// The model's weights as one file and as two shards with the index Hugging Face's save_pretrained writes.
void save_both(torch::nn::Sequential& m, const TempDir& dir) {
  std::vector<std::pair<std::string, at::Tensor>> all, first, second;
  for (const auto& p : m->named_parameters()) {
    all.emplace_back(p.key(), p.value().detach());
    (p.key().rfind("0.", 0) == 0 ? first : second).emplace_back(p.key(), p.value().detach());
  }
  volt::save_safetensors(dir / "single.safetensors", all, {{"format", "pt"}});
  fs::create_directory(dir / "hf");
  volt::save_safetensors(dir / "hf/model-00001-of-00002.safetensors", first, {{"format", "pt"}});
  volt::save_safetensors(dir / "hf/model-00002-of-00002.safetensors", second, {{"format", "pt"}});
  std::ofstream index(dir / "hf/model.safetensors.index.json");
  index << "{\"metadata\": {\"total_size\": 92}, \"weight_map\": {";
  for (size_t i = 0; i < all.size(); ++i)
    index << (i ? ", " : "") << "\"" << all[i].first << "\": \"model-0000"
          << (all[i].first.rfind("0.", 0) == 0 ? 1 : 2) << "-of-00002.safetensors\"";
  index << "}}";
}

}  // namespace

TEST(SafetensorsIndex, ShardedLoadEqualsTheUnshardedFile) {
  TempDir dir("hf-index");
  auto m = model();
  save_both(m, dir);
  const auto single = volt::CheckpointReader::open(dir / "single.safetensors");
  for (const std::string& path : {dir / "hf/model.safetensors.index.json", dir / "hf"}) {
    const auto sharded = volt::CheckpointReader::open(path);
    EXPECT_EQ(sharded->format(), volt::CheckpointFormat::kSafetensors);
    EXPECT_EQ(sharded->metadata().at("total_size"), "92");
    ASSERT_EQ(sharded->contents().to_dict().size(), single->contents().to_dict().size());
    for (const auto& [key, value] : single->contents().to_dict())
      EXPECT_TRUE(value.equals(*sharded->contents().to_dict().find(key))) << key.to_string();
  }
  // Into a fresh module, through the Checkpoint loader a load_from_checkpoint uses.
  auto fresh = model();
  const volt::Checkpoint ckpt = volt::Checkpoint::load(dir / "hf/model.safetensors.index.json");
  EXPECT_TRUE(volt::load_state_dict(*fresh, ckpt.state_dict).complete());
  for (const auto& p : m->named_parameters())
    EXPECT_TRUE(at::equal(p.value(), fresh->named_parameters()[p.key()])) << p.key();
}

TEST(SafetensorsIndex, InconsistentIndexIsAnErrorNamingTheFile) {
  TempDir dir("hf-index");
  auto m = model();
  save_both(m, dir);
  const std::string index = dir / "hf/model.safetensors.index.json";
  std::ofstream(index)
      << R"({"weight_map": {"0.weight": "model-00001-of-00002.safetensors", "ghost": "model-00001-of-00002.safetensors"}})";
  try {
    volt::CheckpointReader::open(index);
    ADD_FAILURE() << "no error";
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model-00001-of-00002.safetensors"), std::string::npos) << e.what();
  }
  std::ofstream(index) << R"({"weight_map": {"0.weight": "missing.safetensors"}})";
  try {
    volt::CheckpointReader::open(index);
    ADD_FAILURE() << "no error";
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.safetensors"), std::string::npos) << e.what();
  }
  std::ofstream(index) << "{not json";
  EXPECT_THROW(volt::CheckpointReader::open(index), volt::Error);
}

TEST(SafetensorsIndex, CliInspectsAndConvertsAShardedModel) {
  const std::string volt = volt::testing::volt_cli();
  if (volt.empty()) GTEST_SKIP() << "the volt CLI was not built (VOLT_BUILD_TOOLS=OFF)";
  TempDir dir("hf-index");
  auto m = model();
  save_both(m, dir);
  const auto inspected =
      volt::testing::run_command(volt + " inspect " + volt::testing::shell_quote(dir / "hf"));
  ASSERT_EQ(inspected.exit_code, 0) << inspected.output;
  EXPECT_NE(inspected.output.find("2.weight"), std::string::npos) << inspected.output;
  const auto converted = volt::testing::run_command(
      volt + " convert " + volt::testing::shell_quote(dir / "hf/model.safetensors.index.json") + " " +
      volt::testing::shell_quote(dir / "out.safetensors"));
  ASSERT_EQ(converted.exit_code, 0) << converted.output;
  volt::SafetensorsReader a(dir / "single.safetensors"), b(dir / "out.safetensors");
  for (const auto& info : a.tensors())
    EXPECT_TRUE(at::equal(a.tensor(info.name), b.tensor(info.name))) << info.name;
}

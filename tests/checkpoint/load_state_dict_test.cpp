// load_state_dict: strict matching that changes nothing on failure, zero-copy adoption of mapped memory,
// casts, meta modules, and loads inside an init scope that leave the unloaded tensors bitwise as a full
// init would have made them.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <random>

#include "volt/checkpoint/load_from_checkpoint.h"
#include "volt/checkpoint/load_state_dict.h"
#include "volt/checkpoint/state_dict.h"
#include "volt/checkpoint/torch_file.h"
#include "volt/error.h"
#include "volt/init/init_scope.h"
#include "volt/models/gpt.h"

namespace fs = std::filesystem;
using volt::Value;

namespace {

volt::models::GPTConfig tiny() {
  return volt::models::GPTConfig().n_layer(2).n_head(2).n_embd(16).vocab_size(37).block_size(8);
}

std::string temp_file(const std::string& name) {
  return (fs::temp_directory_path() / ("volt-load-" + std::to_string(::getpid()) + "-" + name)).string();
}

// A deep copy, so that comparisons are not fooled by shared memory.
Value snapshot(const Value& sd) {
  Value out = Value::dict(true);
  for (const auto& [k, v] : sd.to_dict()) out.to_dict().set(k, v.to_tensor().clone());
  return out;
}

TEST(LoadStateDict, StrictMismatchThrowsListingKeysAndChangesNothing) {
  volt::models::GPT source(tiny());
  volt::models::GPT target(tiny());
  Value sd = snapshot(volt::state_dict(*source));
  sd.to_dict().erase("h.0.ln_1.weight");
  sd.to_dict().set("extra.weight", torch::zeros({2}));
  sd.to_dict().set("wpe.weight", torch::zeros({3, 3}));
  const Value before = snapshot(volt::state_dict(*target));
  try {
    volt::load_state_dict(*target, sd);
    FAIL() << "strict load of a mismatched checkpoint succeeded";
  } catch (const volt::Error& e) {
    const std::string message = e.what();
    for (const char* fragment : {"1 missing (h.0.ln_1.weight)", "1 unexpected (extra.weight)",
                                 "wpe.weight: checkpoint [3, 3], module [8, 16]", "strict(false)"})
      EXPECT_NE(message.find(fragment), std::string::npos) << fragment << " in " << message;
  }
  EXPECT_TRUE(volt::state_dict(*target).equals(before)) << "a failed strict load changed the module";

  const volt::LoadReport report = volt::load_state_dict(*target, sd, volt::LoadOptions().strict(false));
  EXPECT_EQ(report.missing, std::vector<std::string>{"h.0.ln_1.weight"});
  EXPECT_EQ(report.unexpected, std::vector<std::string>{"extra.weight"});
  EXPECT_EQ(report.mismatched.size(), 1u);
  EXPECT_TRUE(Value(target->named_parameters()["h.1.mlp.c_fc.weight"]).equals(sd["h.1.mlp.c_fc.weight"]));
  EXPECT_TRUE(Value(target->named_parameters()["h.0.ln_1.weight"]).equals(before["h.0.ln_1.weight"]));
}

TEST(LoadStateDict, AdoptsMappedMemoryWithoutCopyAndTrainsInPlaceWithoutTouchingTheFile) {
  volt::models::GPT source(tiny());
  const std::string path = temp_file("zero_copy.pt");
  const Value saved = snapshot(volt::state_dict(*source));
  volt::save_torch_file(path, saved);
  volt::models::GPT target(tiny());
  {
    volt::TorchFileReader reader(path);
    const volt::LoadReport report = volt::load_state_dict(*target, reader.contents());
    EXPECT_TRUE(report.complete()) << report.summary();
    EXPECT_EQ(report.zero_copy.size(), report.loaded.size());
    EXPECT_TRUE(reader.release_pages(target->named_parameters()["wte.weight"])) << "not viewing the file";
  }
  EXPECT_TRUE(volt::state_dict(*target).equals(saved));
  EXPECT_TRUE(target->named_parameters()["wte.weight"].requires_grad());
  // One optimizer step writes the adopted memory (copy-on-write) and leaves the file as it was.
  torch::optim::SGD sgd(target->parameters(), 0.1);
  target->forward(torch::randint(0, 37, {2, 8})).sum().backward();
  sgd.step();
  EXPECT_FALSE(volt::state_dict(*target).equals(saved));
  EXPECT_TRUE(volt::TorchFileReader(path).contents().equals(saved));
  fs::remove(path);
}

TEST(LoadStateDict, CastsToTheModulesDtypeAndMaterializesMetaModules) {
  volt::models::GPT source(tiny());
  const Value saved = snapshot(volt::state_dict(*source));
  volt::models::GPT half{nullptr};
  {
    auto scope = volt::init_module(volt::InitOptions().dtype(torch::kBFloat16).empty(true));
    half = volt::models::GPT(tiny());
  }
  const auto report = volt::load_state_dict(*half, saved);
  EXPECT_TRUE(report.zero_copy.empty());
  EXPECT_EQ(half->named_parameters()["wte.weight"].scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(half->named_parameters()["wte.weight"],
                           saved["wte.weight"].to_tensor().to(torch::kBFloat16)));

  volt::models::GPT meta{nullptr};
  {
    auto scope = volt::init_module(volt::InitOptions().mode(volt::InitMode::kMeta));
    meta = volt::models::GPT(tiny());
  }
  ASSERT_TRUE(meta->named_parameters()["wte.weight"].is_meta());
  volt::load_state_dict(*meta, saved);
  EXPECT_TRUE(volt::state_dict(*meta).equals(saved));
  for (const auto& p : meta->parameters()) EXPECT_TRUE(p.device().is_cpu());
  EXPECT_TRUE(meta->forward(torch::randint(0, 37, {1, 8})).isfinite().all().item<bool>());
}

// A load inside a materializing init scope: what the checkpoint holds is loaded, what it lacks keeps the
// values a full init with the same seed gives, bitwise, whatever was skipped.
TEST(LoadStateDict, InsideAnInitScopeMissingTensorsAreBitwiseTheFullInit) {
  volt::models::GPT full{nullptr};
  {
    auto scope = volt::init_module(volt::InitOptions().seed(1234));
    full = volt::models::GPT(tiny());
  }
  volt::models::GPT other(tiny());
  Value partial = snapshot(volt::state_dict(*other));
  std::mt19937 rng(7);
  std::vector<std::string> dropped;
  const Value all = volt::state_dict(*other);
  for (const auto& item : all.to_dict())
    if (rng() % 2) {
      dropped.push_back(item.first.to_string());
      partial.to_dict().erase(item.first);
    }
  ASSERT_GT(dropped.size(), 3u);
  volt::models::GPT loaded{nullptr};
  {
    auto scope = volt::init_module(volt::InitOptions().seed(1234));
    loaded = volt::models::GPT(tiny());
    const auto report = volt::load_state_dict(*loaded, partial, volt::LoadOptions().strict(false));
    EXPECT_EQ(report.missing.size(), dropped.size());
  }
  const Value got = volt::state_dict(*loaded);
  const Value want = volt::state_dict(*full);
  for (const auto& [key, value] : got.to_dict()) {
    const Value* from_file = partial.to_dict().find(key);
    EXPECT_TRUE(value.equals(from_file ? *from_file : *want.to_dict().find(key))) << key.to_string();
  }
}

}  // namespace

namespace {

TEST(LoadFromCheckpoint, ConstructsFromHyperParametersInsideTheCallersScope) {
  volt::models::GPT source(tiny());
  volt::Checkpoint ckpt;
  ckpt.state_dict = snapshot(volt::state_dict(*source));
  ckpt.hyper_parameters = tiny().to_hparams().value();
  const std::string path = temp_file("from_hparams.ckpt");
  ckpt.save(path);

  volt::models::GPT loaded{nullptr};
  {
    auto scope = volt::init_module(volt::InitOptions().dtype(torch::kBFloat16).empty(true));
    loaded = volt::load_from_checkpoint<volt::models::GPT>(path);
  }
  EXPECT_EQ(loaded->config.n_layer(), 2);
  for (const auto& item : loaded->named_parameters()) {
    EXPECT_EQ(item.value().scalar_type(), torch::kBFloat16) << item.key();
    EXPECT_TRUE(torch::equal(item.value(), ckpt.state_dict[item.key()].to_tensor().to(torch::kBFloat16)))
        << item.key();
  }

  // Overrides win over what the file says; a strict load then reports what no longer fits.
  try {
    volt::load_from_checkpoint<volt::models::GPT>(path, volt::HParams().set("n_layer", 1));
    FAIL() << "a 1-layer GPT loaded a 2-layer checkpoint strictly";
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unexpected (h.1."), std::string::npos) << e.what();
  }
  auto one = volt::load_from_checkpoint<volt::models::GPT>(path, volt::HParams().set("n_layer", 1),
                                                           volt::LoadOptions().strict(false));
  EXPECT_EQ(one->config.n_layer(), 1);

  volt::save_torch_file(path, ckpt.state_dict);  // weights only: nothing to construct from
  try {
    volt::load_from_checkpoint<volt::models::GPT>(path);
    FAIL();
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("construct it yourself"), std::string::npos) << e.what();
  }
  volt::models::GPT mine(tiny());
  EXPECT_TRUE(volt::load_from_checkpoint(path, mine).complete());
  try {
    volt::HParams().set("n_layer", "two").get<int64_t>("n_layer");
    FAIL();
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("hyper-parameter 'n_layer'"), std::string::npos) << e.what();
  }
  fs::remove(path);
}

}  // namespace

// volt::Module's non-persistent buffers (PyTorch's register_buffer(..., persistent=False)): they follow the
// module but stay out of state_dict, load_state_dict and checkpoints, so PyTorch's files load strictly.
#include "volt/core/module.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>

#include "core/tiny_lm.h"
#include "python_oracle.h"
#include "test_paths.h"
#include "trainer/trainer_fixtures.h"
#include "volt/checkpoint/load_state_dict.h"
#include "volt/checkpoint/state_dict.h"
#include "volt/checkpoint/torch_file.h"
#include "volt/error.h"
#include "volt/init/init_scope.h"

using namespace volt;
using namespace volt::testing;

namespace {

std::vector<std::string> keys(const Value& dict) {
  std::vector<std::string> out;
  for (const auto& [key, value] : dict.to_dict()) out.push_back(key.to_string());
  return out;
}

// What PyTorch's TinyLM().state_dict() lists (tied_lm_oracle.py), in its order.
const std::vector<std::string> kPyTorchKeys{"wte.weight", "mix.scale", "mix.proj.weight", "mix.proj.bias",
                                            "ln.weight",  "ln.bias",   "lm_head.weight"};

// The venv's Python, else Debian's (torch 1.13): both write the oracle's state dict.
std::string any_torch_python() {
  if (executable(venv_python())) return venv_python();
  return "/usr/bin/python3";
}

}  // namespace

TEST(ModuleBuffers, NonPersistentBuffersAreBuffersButNotState) {
  TinyLM model;
  std::vector<std::string> buffers;
  for (const auto& item : model.named_buffers()) buffers.push_back(item.key());
  EXPECT_EQ(buffers, (std::vector<std::string>{"positions", "mix.mask", "mix.scale"}));
  EXPECT_FALSE(model.is_persistent_buffer("positions"));
  EXPECT_FALSE(model.mix->is_persistent_buffer("mask"));
  EXPECT_TRUE(model.mix->is_persistent_buffer("scale"));
  // PyTorch's names in PyTorch's order: module by module, parameters then persistent buffers.
  EXPECT_EQ(keys(state_dict(model)), kPyTorchKeys);
}

TEST(ModuleBuffers, NonPersistentBuffersFollowTheModuleAndInitScopes) {
  {
    auto scope = init_module(InitOptions().dtype(torch::kBFloat16));
    TinyLM model;
    EXPECT_EQ(model.mix->mask.scalar_type(), torch::kBFloat16);
    EXPECT_EQ(model.positions.scalar_type(), torch::kLong);  // integer buffers keep their dtype
  }
  {
    auto scope = init_module(InitOptions().mode(InitMode::kMeta));
    TinyLM model;
    EXPECT_TRUE(model.mix->mask.is_meta());
    EXPECT_TRUE(model.positions.is_meta());
  }
  {
    // Empty init skips parameters' random init only: the mask keeps the values the model computes.
    auto scope = init_module(InitOptions().mode(InitMode::kEmpty));
    TinyLM model;
    EXPECT_TRUE(torch::equal(model.mix->mask, torch::ones({kBlock, kBlock}).tril()));
  }
  TinyLM model;
  model.to(torch::kDouble);
  EXPECT_EQ(model.mix->mask.scalar_type(), torch::kDouble);
  EXPECT_EQ(model.named_buffers()["mix.mask"].unsafeGetTensorImpl(), model.mix->mask.unsafeGetTensorImpl());
  EXPECT_FALSE(state_dict(model).to_dict().contains("mix.mask"));
}

TEST(ModuleBuffers, StrictLoadOfPyTorchsStateDictPasses) {
  TempDir dir("buffers");
  const std::string file = dir.path() + "/tiny_lm.pt";
  const auto result = run_command(shell_quote(any_torch_python()) + " " +
                                  shell_quote(test_source_dir() + "/core/tied_lm_oracle.py") +
                                  " state_dict " + shell_quote(file));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const Value saved = TorchFileReader(file).contents();
  EXPECT_EQ(keys(saved), kPyTorchKeys);

  TinyLM model;
  const auto report = load_state_dict(model, saved);  // strict: throws on any missing or unexpected key
  EXPECT_TRUE(report.complete()) << report.summary();
  for (const auto& name : kPyTorchKeys)
    EXPECT_TRUE(torch::equal(model.named_parameters().contains(name) ? model.named_parameters()[name]
                                                                     : model.named_buffers()[name],
                             saved[name].to_tensor()))
        << name;
  // Still one tensor under both names, and the buffers PyTorch did not save keep the model's values.
  EXPECT_EQ(model.lm_head->weight.unsafeGetTensorImpl(), model.wte->weight.unsafeGetTensorImpl());
  EXPECT_TRUE(torch::equal(model.mix->mask, torch::ones({kBlock, kBlock}).tril()));
  EXPECT_TRUE(torch::equal(model.positions, torch::arange(kBlock)));
}

TEST(ModuleBuffers, ANonPersistentBufferInAFileIsUnexpectedAsInPyTorch) {
  TinyLM model;
  Value sd = state_dict(model);
  sd.to_dict().set("mix.mask", torch::zeros({kBlock, kBlock}));
  EXPECT_THROW(load_state_dict(model, sd), Error);
  const auto report = load_state_dict(model, sd, LoadOptions().strict(false));
  EXPECT_EQ(report.unexpected, (std::vector<std::string>{"mix.mask"}));
  EXPECT_TRUE(torch::equal(model.mix->mask, torch::ones({kBlock, kBlock}).tril()));  // not loaded
}

TEST(ModuleBuffers, OnlyAModuleThatKeepsPersistenceCanRegisterANonPersistentBuffer) {
  torch::nn::Linear plain(2, 3);
  try {
    volt::register_buffer(*plain, "mask", torch::ones({2}), /*persistent=*/false);
    FAIL() << "a module without BufferPersistence took a non-persistent buffer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("volt::BufferPersistence"), std::string::npos) << e.what();
  }
  volt::register_buffer(*plain, "kept", torch::ones({2}), /*persistent=*/true);
  EXPECT_TRUE(state_dict(*plain).to_dict().contains("kept"));
}

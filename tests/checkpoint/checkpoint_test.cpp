// volt::Checkpoint (Lightning's layout), the format-agnostic reader/writer, state_dict naming, and the
// `volt inspect` / `volt convert` commands.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "checkpoint/describe.h"
#include "python_oracle.h"
#include "temp_dir.h"
#include "test_paths.h"
#include "volt/checkpoint/checkpoint.h"
#include "volt/checkpoint/checkpoint_file.h"
#include "volt/checkpoint/state_dict.h"
#include "volt/checkpoint/torch_file.h"
#include "volt/error.h"
#include "volt/models/gpt.h"

namespace fs = std::filesystem;
using volt::Value;
using volt::testing::run_command;
using volt::testing::TempDir;

namespace {

std::string oracle() { return volt::testing::test_source_dir() + "/checkpoint/torch_file_oracle.py"; }

volt::Checkpoint small_checkpoint() {
  at::manual_seed(1);
  volt::Checkpoint ckpt;
  ckpt.state_dict.to_dict().set("layer.weight", at::randn({4, 3}));
  ckpt.state_dict.to_dict().set("layer.bias", at::randn({4}));
  ckpt.epoch = 2;
  ckpt.global_step = 40;
  ckpt.hyper_parameters.to_dict().set("lr", 0.01);
  Value adam = Value::dict();
  Value state = Value::dict();
  Value param0 = Value::dict();
  param0.to_dict().set("step", at::scalar_tensor(40.0));
  param0.to_dict().set("exp_avg", at::zeros({4, 3}));
  state.to_dict().set(0, param0);
  adam.to_dict().set("state", state);
  Value group = Value::dict();
  group.to_dict().set("lr", 0.01);
  group.to_dict().set("betas", Value::tuple({0.9, 0.999}));
  group.to_dict().set("params", Value::list({0, 1}));
  adam.to_dict().set("param_groups", Value::list({group}));
  ckpt.optimizer_states.items().push_back(adam);
  return ckpt;
}

TEST(Checkpoint, ReadsPythonLightningShapedFilesIntoTypedFields) {
  TempDir dir("checkpoint");
  const auto written = run_command("/usr/bin/python3 '" + oracle() + "' write '" + (dir / "") + "'");
  ASSERT_EQ(written.exit_code, 0) << written.output;
  const volt::Checkpoint ckpt = volt::Checkpoint::load(dir / "lightning_shaped.ckpt");
  EXPECT_EQ(ckpt.epoch, 3);
  EXPECT_EQ(ckpt.global_step, 12345678901);
  EXPECT_EQ(ckpt.state_dict.to_dict().size(), 9u);  // 2 Linear x 2, BatchNorm weight, bias and 3 buffers
  EXPECT_EQ(ckpt.optimizer_states.items().size(), 1u);
  EXPECT_EQ(ckpt.hyper_parameters["layers"].items()[1].to_int(), 8);
  EXPECT_EQ(ckpt.extra["pytorch-lightning_version"].to_string(), "2.6.6");
  // Written back, Python reads the same checkpoint.
  ckpt.save(dir / "again.ckpt");
  std::ofstream(dir / "again.ckpt.json") << volt::testing::describe(ckpt.to_value()).dump();
  const auto checked = run_command("/usr/bin/python3 '" + oracle() + "' check '" + (dir / "again.ckpt") +
                                   "' '" + (dir / "again.ckpt.json") + "'");
  EXPECT_EQ(checked.exit_code, 0) << checked.output;
}

TEST(Checkpoint, SafetensorsKeepsWeightsAndRefusesToDropStateSilently) {
  TempDir dir("checkpoint");
  const volt::Checkpoint ckpt = small_checkpoint();
  try {
    ckpt.save(dir / "w.safetensors");
    FAIL() << "saving optimizer state into safetensors must not silently drop it";
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("lossy=true"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir / "w.safetensors"));
  ckpt.save(dir / "w.safetensors", /*lossy=*/true);
  const volt::Checkpoint back = volt::Checkpoint::load(dir / "w.safetensors");
  EXPECT_EQ(back.epoch, 2);
  EXPECT_EQ(back.global_step, 40);
  EXPECT_TRUE(back.state_dict.equals(ckpt.state_dict));
  EXPECT_TRUE(back.optimizer_states.items().empty());
  // A bare state dict is a checkpoint too.
  volt::save_torch_file(dir / "sd.pt", ckpt.state_dict);
  EXPECT_TRUE(volt::Checkpoint::load(dir / "sd.pt").state_dict.equals(ckpt.state_dict));
  EXPECT_THROW(volt::format_for_path(dir / "model.onnx"), volt::Error);
}

TEST(Checkpoint, StateDictNamesFollowPython) {
  volt::models::GPT gpt(
      volt::models::GPTConfig().n_layer(2).n_head(2).n_embd(8).vocab_size(11).block_size(5));
  const Value sd = volt::state_dict(*gpt);
  EXPECT_TRUE(sd.to_dict().ordered());
  EXPECT_TRUE(sd.to_dict().contains("h.1.attn.c_attn.weight")) << sd.repr(64);
  EXPECT_TRUE(sd.to_dict().contains("wte.weight")) << sd.repr(64);
  // Detached, sharing the module's memory.
  EXPECT_EQ(sd["wte.weight"].to_tensor().data_ptr(), gpt->named_parameters()["wte.weight"].data_ptr());
  EXPECT_FALSE(sd["wte.weight"].to_tensor().requires_grad());
}

TEST(CheckpointCli, ConvertStreamsBetweenFormatsWithDtypeAndKeepsTiedViewsTied) {
  const std::string volt = volt::testing::volt_cli();
  if (volt.empty()) GTEST_SKIP() << "the volt CLI was not built (VOLT_BUILD_TOOLS=OFF)";
  TempDir dir("checkpoint");
  volt::Checkpoint ckpt = small_checkpoint();
  const at::Tensor tied = at::randn({6, 4});
  ckpt.state_dict.to_dict().set("wte.weight", tied);
  ckpt.state_dict.to_dict().set("lm_head.weight", tied);  // tied, as GPT-2's head is in Python
  ckpt.state_dict.to_dict().set("steps", at::arange(3, at::kLong));
  ckpt.save(dir / "a.ckpt");
  const auto to_bf16 =
      run_command(volt + " convert '" + (dir / "a.ckpt") + "' '" + (dir / "b.ckpt") + "' --dtype bf16");
  ASSERT_EQ(to_bf16.exit_code, 0) << to_bf16.output;
  const volt::Checkpoint b = volt::Checkpoint::load(dir / "b.ckpt");
  for (const auto& [key, value] : ckpt.state_dict.to_dict()) {
    const at::Tensor source = value.to_tensor();
    const at::Tensor expected = at::isFloatingType(source.scalar_type()) ? source.to(at::kBFloat16) : source;
    EXPECT_TRUE(Value(expected).equals(b.state_dict.to_dict().find(key)->to_tensor())) << key.to_string();
  }
  EXPECT_TRUE(b.state_dict["wte.weight"].to_tensor().storage().is_alias_of(
      b.state_dict["lm_head.weight"].to_tensor().storage()));
  EXPECT_EQ(b.optimizer_states.items()[0]["state"]
                .to_dict()
                .find(0)
                ->to_dict()
                .find("exp_avg")
                ->to_tensor()
                .scalar_type(),
            at::kBFloat16);
  EXPECT_EQ(b.epoch, 2);

  const auto to_safetensors =
      run_command(volt + " convert '" + (dir / "b.ckpt") + "' '" + (dir / "c.safetensors") + "'");
  ASSERT_EQ(to_safetensors.exit_code, 0) << to_safetensors.output;
  EXPECT_NE(to_safetensors.output.find("leaving out"), std::string::npos) << to_safetensors.output;
  const auto to_float32 = run_command(volt + " convert '" + (dir / "c.safetensors") + "' '" +
                                      (dir / "d.ckpt") + "' --dtype float32");
  ASSERT_EQ(to_float32.exit_code, 0) << to_float32.output;
  const volt::Checkpoint d = volt::Checkpoint::load(dir / "d.ckpt");
  EXPECT_EQ(d.global_step, 40);
  EXPECT_TRUE(
      d.state_dict["layer.weight"].equals(Value(b.state_dict["layer.weight"].to_tensor().to(at::kFloat))));

  const auto inspected = run_command(volt + " inspect --json '" + (dir / "b.ckpt") + "' 2>/dev/null");
  ASSERT_EQ(inspected.exit_code, 0) << inspected.output;
  const auto json = nlohmann::json::parse(inspected.output);
  EXPECT_EQ(json["format"], "torch");
  EXPECT_EQ(json["epoch"], 2);
  EXPECT_EQ(json["hyper_parameters"]["lr"], 0.01);
  EXPECT_EQ(json["by_dtype"]["bfloat16"]["tensors"].get<int>(), 6);  // 4 weights, Adam step and exp_avg
  const auto refused =
      run_command(volt + " convert '" + (dir / "b.ckpt") + "' '" + (dir / "e.ckpt") + "' --dtype int3");
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.output.find("float32 (fp32)"), std::string::npos) << refused.output;
  EXPECT_FALSE(fs::exists(dir / "e.ckpt"));
}

}  // namespace

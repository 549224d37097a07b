// DCP checkpoints: volt reads what PyTorch's torch.distributed.checkpoint wrote from two Gloo ranks, PyTorch
// loads what volt wrote from 2 and 3 ranks, volt reshards N -> M, a rank killed mid-save leaves the previous
// checkpoint loadable, and broken files are errors that name the file.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "checkpoint/dcp_metadata.h"
#include "distributed/multi_process.h"
#include "python_oracle.h"
#include "temp_dir.h"
#include "test_paths.h"
#include "volt/checkpoint/checkpoint_file.h"
#include "volt/checkpoint/dcp.h"
#include "volt/checkpoint/safetensors.h"
#include "volt/checkpoint/torch_file.h"
#include "volt/distributed/cluster_environment.h"
#include "volt/error.h"

namespace fs = std::filesystem;
using volt::testing::run_command;
using volt::testing::shell_quote;
using volt::testing::TempDir;

namespace volt::detail {
int free_loopback_port();
}

namespace {

std::string oracle() { return volt::testing::test_source_dir() + "/checkpoint/dcp_oracle.py"; }
std::string dcp_worker() {
  return (fs::read_symlink("/proc/self/exe").parent_path() / "volt_dcp_worker").string();
}

// `world` workers of `arguments` on a fresh loopback port, bounded by a deadline.
volt::testing::RunResult run_ranks(int world, const std::vector<std::string>& arguments,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(90)) {
  const std::string port = std::to_string(volt::detail::free_loopback_port());
  std::vector<volt::testing::Command> commands;
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> argv{dcp_worker()};
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    commands.push_back({argv,
                        {{"RANK", std::to_string(r)},
                         {"LOCAL_RANK", std::to_string(r)},
                         {"WORLD_SIZE", std::to_string(world)},
                         {"LOCAL_WORLD_SIZE", std::to_string(world)},
                         {"MASTER_ADDR", "127.0.0.1"},
                         {"MASTER_PORT", port}}});
  }
  return volt::testing::run_processes(commands, timeout);
}

void expect_all_ok(const volt::testing::RunResult& run) {
  ASSERT_FALSE(run.timed_out) << run.output();
  for (const auto& process : run.processes) EXPECT_TRUE(process.exited_zero()) << run.output();
  EXPECT_TRUE(run.left_behind.empty()) << run.output();
}

// `call` throws a volt::Error whose message holds `part`.
template <typename F>
void expect_error(F call, const std::string& part) {
  try {
    call();
    ADD_FAILURE() << "no volt::Error (expected one mentioning '" << part << "')";
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

volt::DcpState small_state() {
  volt::DcpState state;
  const at::Tensor w = at::arange(35, at::kFloat).reshape({7, 5}) * 0.5;
  state.tensors["model.w"] = {{7, 5}, {{{0, 0}, w.slice(0, 0, 4)}, {{4, 0}, w.slice(0, 4, 7)}}};
  state.tensors["model.e"] = {{10, 3}, {{{0, 0}, ((at::arange(30).reshape({10, 3}) - 7).to(at::kBFloat16))}}};
  state.tensors["model.b"] = {{4}, {{{0}, at::tensor({1.5, -2.0, 3.25, 4.0}, at::kDouble)}}};
  state.tensors["optimizer.step"] = {{}, {{{}, at::scalar_tensor(11, at::kLong)}}};
  state.bytes["step"] = volt::torch_save_bytes(volt::Value(int64_t{7}));
  return state;
}

}  // namespace

TEST(Dcp, ReadsWhatPyTorchWroteFromTwoGlooRanks) {
  VOLT_SKIP_WITHOUT_VENV();
  TempDir dir("dcp");
  const auto written = run_command("timeout 240 " + shell_quote(volt::testing::venv_python()) + " " +
                                   shell_quote(oracle()) + " write " + shell_quote(dir.path()) + " 2");
  ASSERT_EQ(written.exit_code, 0) << written.output;
  const std::string ckpt = dir / "ckpt";
  const volt::DcpMetadata metadata = volt::read_dcp_metadata(ckpt);
  EXPECT_EQ(metadata.files, (std::vector<std::string>{"__0_0.distcp", "__1_0.distcp"}));
  ASSERT_EQ(metadata.tensors.count("model.w"), 1u);
  EXPECT_EQ(metadata.tensors.at("model.w").chunks.size(), 2u);
  EXPECT_EQ(metadata.tensors.at("model.e").dtype, at::kBFloat16);
  EXPECT_EQ(metadata.tensors.at("model.b").chunks.size(), 1u);  // replicated: written once
  EXPECT_TRUE(metadata.bytes.count("step") && metadata.bytes.count("hparams.lr"));
  volt::SafetensorsReader expected(dir / "expected.safetensors");
  for (const auto& info : expected.tensors()) {
    const at::Tensor got = volt::load_dcp_tensor(ckpt, metadata, info.name);
    EXPECT_TRUE(got.scalar_type() == info.dtype && at::equal(got, expected.tensor(info.name))) << info.name;
  }
  // Resharded to three readers: rows [0, 3), [3, 5), [5, 7) of a tensor saved as [0, 4), [4, 7).
  const at::Tensor w = expected.tensor("model.w");
  for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, 3}, {3, 5}, {5, 7}}) {
    at::Tensor rows = at::empty({end - begin, 5});
    volt::load_dcp(ckpt, {{"model.w", {{{begin, 0}, rows}}}});
    EXPECT_TRUE(at::equal(rows, w.slice(0, begin, end))) << begin;
  }
  EXPECT_EQ(volt::load_dcp_object(ckpt, "step").to_int(), 7);
  EXPECT_EQ(volt::load_dcp_object(ckpt, "hparams.name").to_string(), "tiny");
  // Behind CheckpointReader, whole: nested as planner_data says, tensors assembled, byte items as values.
  const auto reader = volt::CheckpointReader::open(ckpt);
  EXPECT_EQ(reader->format(), volt::CheckpointFormat::kDcp);
  const volt::Value& contents = reader->contents();
  EXPECT_TRUE(at::equal(contents["model"]["w"].to_tensor(), w));
  EXPECT_TRUE(at::equal(contents["model"]["e"].to_tensor(), expected.tensor("model.e")));
  EXPECT_EQ(contents["optimizer"]["step"].to_tensor().item<int64_t>(), 11);
  EXPECT_EQ(contents["hparams"]["name"].to_string(), "tiny");
  EXPECT_EQ(contents["step"].to_int(), 7);
}

TEST(Dcp, PyTorchLoadsWhatVoltWroteFromOneProcess) {
  VOLT_SKIP_WITHOUT_VENV();
  TempDir dir("dcp");
  volt::save_dcp(dir / "ckpt", small_state(), nullptr);
  std::vector<std::pair<std::string, at::Tensor>> expected;
  for (const auto& [name, tensor] : small_state().tensors)
    expected.emplace_back(name, at::cat([&] {
                                  std::vector<at::Tensor> parts;
                                  for (const auto& c : tensor.chunks) parts.push_back(c.local.reshape({-1}));
                                  return parts;
                                }())
                                    .reshape(tensor.global_size));
  volt::save_safetensors(dir / "expected.safetensors", expected);
  const auto checked =
      run_command("timeout 120 " + shell_quote(volt::testing::venv_python()) + " " + shell_quote(oracle()) +
                  " check " + shell_quote(dir / "ckpt") + " " + shell_quote(dir / "expected.safetensors"));
  EXPECT_EQ(checked.exit_code, 0) << checked.output;
}

TEST(Dcp, PyTorchLoadsWhatTwoAndThreeVoltRanksWrote) {
  VOLT_SKIP_WITHOUT_VENV();
  for (int world : {2, 3}) {
    TempDir dir("dcp");
    expect_all_ok(run_ranks(world, {"save", dir / "ckpt", "--seed", "0"}));
    // The worker's global tensors, as the worker builds them (seed 0).
    volt::save_safetensors(dir / "expected.safetensors",
                           {{"model.w", at::arange(77, at::kFloat).reshape({11, 7}) * 0.25},
                            {"model.e", (at::arange(30, at::kFloat).reshape({3, 10})).to(at::kBFloat16)},
                            {"model.b", at::tensor({1.5, -2.0, 3.25}, at::kDouble)},
                            {"optimizer.step", at::scalar_tensor(11, at::kLong)}});
    const auto checked =
        run_command("timeout 120 " + shell_quote(volt::testing::venv_python()) + " " + shell_quote(oracle()) +
                    " check " + shell_quote(dir / "ckpt") + " " + shell_quote(dir / "expected.safetensors"));
    EXPECT_EQ(checked.exit_code, 0) << "world " << world << ": " << checked.output;
    EXPECT_EQ(volt::read_dcp_metadata(dir / "ckpt").files.size(), static_cast<size_t>(world));
  }
}

TEST(Dcp, ReshardsTwoToThreeThreeToOneOneToTwo) {
  for (auto [saved, loaded] : {std::pair<int, int>{2, 3}, {3, 1}, {1, 2}}) {
    TempDir dir("dcp");
    const std::string seed = std::to_string(saved * 10 + loaded);
    expect_all_ok(run_ranks(saved, {"save", dir / "ckpt", "--seed", seed}));
    expect_all_ok(run_ranks(loaded, {"load", dir / "ckpt", "--seed", seed}));
  }
}

TEST(Dcp, KilledRankMidSaveLeavesThePreviousCheckpointLoadable) {
  TempDir dir("dcp");
  const std::string ckpt = dir / "ckpt";
  expect_all_ok(run_ranks(2, {"save", ckpt, "--seed", "1"}));
  // Save again, with bulk to keep the ranks writing, and SIGKILL rank 1 once its file is being written.
  std::atomic<bool> done{false};
  volt::testing::RunResult run;
  std::thread saving([&] {
    run = run_ranks(2, {"save", ckpt, "--seed", "2", "--big-mb", "64", "--pid-file", dir / "pid"},
                    std::chrono::seconds(60));
    done = true;
  });
  bool killed = false;
  while (!done && !killed) {
    for (const auto& entry : fs::directory_iterator(dir.path())) {
      const std::string name = entry.path().filename().string();
      if (name.rfind(".ckpt.dcp-tmp.", 0) != 0 || !entry.is_directory()) continue;
      for (const auto& file : fs::directory_iterator(entry.path()))
        if (file.path().filename().string().find("__1_0.distcp") != std::string::npos) {
          std::ifstream pid_in(dir / "pid.1");
          pid_t pid = 0;
          if (pid_in >> pid && pid > 0) killed = ::kill(pid, SIGKILL) == 0;
        }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  saving.join();
  ASSERT_TRUE(killed) << "the save finished before rank 1 could be killed:\n" << run.output();
  EXPECT_FALSE(run.processes.at(0).exited_zero()) << run.output();  // rank 0 reports the failure
  // The previous checkpoint is whole, and the torn one (left under its temporary name) is not complete.
  expect_all_ok(run_ranks(1, {"load", ckpt, "--seed", "1"}));
  EXPECT_EQ(volt::read_dcp_metadata(ckpt).tensors.count("big.0"), 0u);
  for (const auto& entry : fs::directory_iterator(dir.path()))
    if (entry.path().filename().string().rfind(".ckpt.dcp-tmp.", 0) == 0)
      expect_error([&] { volt::read_dcp_metadata(entry.path().string()); }, "has no .metadata");
}

TEST(Dcp, BrokenFilesAreErrorsNamingTheFile) {
  TempDir dir("dcp");
  const std::string ckpt = dir / "ckpt";
  volt::save_dcp(ckpt, small_state(), nullptr);
  const std::string metadata_path = ckpt + "/.metadata";
  const std::string good = [&] {
    std::ifstream in(metadata_path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  const auto write = [](const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  };
  // Truncated .metadata.
  write(metadata_path, good.substr(0, good.size() / 2));
  expect_error([&] { volt::read_dcp_metadata(ckpt); }, metadata_path);
  // A pickle that calls something other than DCP's dataclasses.
  write(metadata_path, std::string("\x80\x02"
                                   "cos\nsystem\n"
                                   "X\x02\x00\x00\x00id\x85R.",
                                   23));
  expect_error([&] { volt::read_dcp_metadata(ckpt); }, "os.system");
  // Offsets out of range and a chunk missing, written as well-formed metadata.
  volt::DcpMetadata metadata = volt::detail::parse_dcp_metadata(good.data(), good.size(), metadata_path);
  volt::DcpMetadata far = metadata;
  far.tensors["model.w"].chunks[0].storage.offset = 1 << 30;
  write(metadata_path, volt::detail::pickle_dcp_metadata(far));
  expect_error([&] { volt::read_dcp_metadata(ckpt); }, "__0_0.distcp' is");
  volt::DcpMetadata hole = metadata;
  hole.tensors["model.w"].chunks.pop_back();
  write(metadata_path, volt::detail::pickle_dcp_metadata(hole));
  expect_error([&] { volt::read_dcp_metadata(ckpt); }, "chunk not covering");
  volt::DcpMetadata outside = metadata;
  outside.tensors["model.w"].chunks[1].offsets = {5, 0};
  write(metadata_path, volt::detail::pickle_dcp_metadata(outside));
  expect_error([&] { volt::read_dcp_metadata(ckpt); }, "offsets out of range");
  // Truncated data file: found before anything is loaded.
  write(metadata_path, good);
  const std::string data = ckpt + "/__0_0.distcp";
  fs::resize_file(data, fs::file_size(data) / 2);
  expect_error([&] { volt::read_dcp_metadata(ckpt); }, data);
  // A corrupt item inside the file.
  volt::save_dcp(ckpt, small_state(), nullptr);
  {
    std::fstream f(data, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(metadata.tensors["model.w"].chunks[0].storage.offset));
    f.write("garbage!", 8);
  }
  expect_error([&] { volt::load_dcp_tensor(ckpt, volt::read_dcp_metadata(ckpt), "model.w"); }, data);
  // A directory that is not a checkpoint.
  expect_error([&] { volt::read_dcp_metadata(dir.path()); }, "has no .metadata");
}

TEST(Dcp, SaveReplacesAPreviousCheckpointAndRefusesOtherDirectories) {
  TempDir dir("dcp");
  const std::string ckpt = dir / "ckpt";
  volt::save_dcp(ckpt, small_state(), nullptr);
  volt::DcpState second = small_state();
  second.tensors["model.b"].chunks[0].local = at::full({4}, 9.0, at::kDouble);
  volt::save_dcp(ckpt, second, nullptr);
  const auto metadata = volt::read_dcp_metadata(ckpt);
  EXPECT_TRUE(at::equal(volt::load_dcp_tensor(ckpt, metadata, "model.b"), at::full({4}, 9.0, at::kDouble)));
  size_t entries = 0;
  for (auto it = fs::directory_iterator(dir.path()); it != fs::directory_iterator(); ++it) ++entries;
  EXPECT_EQ(entries, 1u);  // no temporary or old directory left behind
  fs::create_directory(dir / "other");
  std::ofstream(dir / "other/notes.txt") << "keep me";
  expect_error([&] { volt::save_dcp(dir / "other", small_state(), nullptr); }, "is not a DCP checkpoint");
  EXPECT_TRUE(fs::exists(dir / "other/notes.txt"));
  // Chunks that leave a hole are refused before anything is written.
  volt::DcpState holey = small_state();
  holey.tensors["model.w"].chunks.pop_back();
  expect_error([&] { volt::save_dcp(dir / "holey", holey, nullptr); }, "chunk not covering");
  EXPECT_FALSE(fs::exists(dir / "holey"));
}

TEST(DcpCli, InspectListsAndConvertConsolidatesADcpDirectory) {
  const std::string volt = volt::testing::volt_cli();
  if (volt.empty()) GTEST_SKIP() << "the volt CLI was not built (VOLT_BUILD_TOOLS=OFF)";
  TempDir dir("dcp");
  volt::save_dcp(dir / "ckpt", small_state(), nullptr);
  const auto inspected = run_command(volt + " inspect " + shell_quote(dir / "ckpt"));
  ASSERT_EQ(inspected.exit_code, 0) << inspected.output;
  for (const char* part :
       {"model.w", "[7, 5]", "chunk at [4, 0] size [3, 5] in __0_0.distcp", "bfloat16", "step"})
    EXPECT_NE(inspected.output.find(part), std::string::npos) << part << " in\n" << inspected.output;
  const auto json = run_command(volt + " inspect --json " + shell_quote(dir / "ckpt"));
  EXPECT_NE(json.output.find("\"format\": \"dcp\""), std::string::npos) << json.output;
  const auto converted = run_command(volt + " convert " + shell_quote(dir / "ckpt") + " " +
                                     shell_quote(dir / "out.safetensors"));
  ASSERT_EQ(converted.exit_code, 0) << converted.output;
  volt::SafetensorsReader out(dir / "out.safetensors");
  const at::Tensor w = at::arange(35, at::kFloat).reshape({7, 5}) * 0.5;
  EXPECT_TRUE(at::equal(out.tensor("model.w"), w));
  EXPECT_TRUE(at::equal(out.tensor("optimizer.step"), at::scalar_tensor(11, at::kLong)));
  EXPECT_EQ(out.tensor("model.e").scalar_type(), at::kBFloat16);
  const auto to_pt =
      run_command(volt + " convert " + shell_quote(dir / "ckpt") + " " + shell_quote(dir / "out.pt"));
  ASSERT_EQ(to_pt.exit_code, 0) << to_pt.output;
}

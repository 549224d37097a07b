// DDP with real processes over Gloo on loopback: the worker (ddp_worker.cpp) launches its own ranks, runs
// under torchrun, dies mid-epoch, resumes; its weights are compared with one process on the global batch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <dirent.h>

#include <chrono>
#include <fstream>
#include <random>

#include "distributed/environment_detail.h"
#include "python_oracle.h"
#include "strategies/worker_runner.h"
#include "test_paths.h"
#include "trainer/trainer_fixtures.h"
#include "volt/checkpoint/checkpoint.h"
#include "volt/data/distributed_sampler.h"
#include "volt/strategies/strategy.h"
#include "volt/strategies/strategy_registry.h"
#include "volt/torch_compat.h"

namespace volt::testing {
namespace {

// The weights moved: a run that did nothing would compare equal to another that did nothing.
void expect_trained(const std::string& path) {
  const auto w = weights(path);
  torch::manual_seed(0);
  ASSERT_TRUE(w.count("fc1.weight"));
  EXPECT_GT(w.at("fc1.weight").abs().sum().item<double>(), 0.0);
}

class DDP : public ::testing::TestWithParam<int> {};

TEST_P(DDP, RanksOfBatchBEqualOneProcessOfBatchNB) {
  VOLT_NEED_WORKER();
  const int n = GetParam();
  TempDir dir("ddp-equal");
  const std::string single = dir.path() + "/single.safetensors", ddp = dir.path() + "/ddp.safetensors";
  const std::string common = " --samples " + std::to_string(24 * n) + " --steps 7 --clip 0.5";
  auto one = run_worker("--devices 1 --batch " + std::to_string(8 * n) + common + " --out " + single);
  ASSERT_EQ(one.result.exit_code, 0) << one.result.output;
  const std::string tag = unique_tag();
  auto many = run_worker("--devices " + std::to_string(n) + " --batch 8" + common + " --out " + ddp +
                         " --tag " + tag);
  ASSERT_EQ(many.result.exit_code, 0) << many.result.output;
  EXPECT_NE(many.result.output.find("\"world_size\": " + std::to_string(n)), std::string::npos)
      << many.result.output;
  expect_close(single, ddp, 2e-5);
  EXPECT_EQ(processes_with(tag), 0);
}

TEST_P(DDP, GradientAccumulationSyncsOnlyTheLastMicroBatch) {
  VOLT_NEED_WORKER();
  const int n = GetParam();
  TempDir dir("ddp-accumulate");
  const std::string single = dir.path() + "/single.safetensors", ddp = dir.path() + "/ddp.safetensors";
  const std::string common = " --samples " + std::to_string(32 * n) + " --steps 4 --accumulate 2";
  ASSERT_EQ(run_worker("--devices 1 --batch " + std::to_string(4 * n) + common + " --out " + single)
                .result.exit_code,
            0);
  auto many = run_worker("--devices " + std::to_string(n) + " --batch 4" + common + " --out " + ddp);
  ASSERT_EQ(many.result.exit_code, 0) << many.result.output;
  expect_close(single, ddp, 2e-5);
}

INSTANTIATE_TEST_SUITE_P(Ranks, DDP, ::testing::Values(2, 3));

TEST(DDPResume, FromAMidEpochCheckpointIsExact) {
  VOLT_NEED_WORKER();
  TempDir dir("ddp-resume");
  const std::string whole = dir.path() + "/whole.safetensors", resumed = dir.path() + "/resumed.safetensors";
  // 96 samples, 2 ranks of 8: 6 steps an epoch; the checkpoint at step 3 is mid-epoch, the run crosses an
  // epoch.
  auto a = run_worker("--devices 2 --steps 9 --ckpt-every 3 --root " + dir.path() + " --out " + whole);
  ASSERT_EQ(a.result.exit_code, 0) << a.result.output;
  const std::string ckpt = dir.path() + "/checkpoints/step=3.ckpt";
  ASSERT_TRUE(std::filesystem::exists(ckpt)) << a.result.output;
  auto b =
      run_worker("--devices 2 --steps 9 --resume " + ckpt + " --root " + dir.path() + "/b --out " + resumed);
  ASSERT_EQ(b.result.exit_code, 0) << b.result.output;
  EXPECT_NE(b.result.output.find("\"global_step\": 9"), std::string::npos) << b.result.output;
  expect_trained(resumed);
  expect_close(whole, resumed, 0.0);
}

TEST(DDPFailure, ARankKilledMidEpochEndsTheRunNamingItWithNoProcessLeft) {
  VOLT_NEED_WORKER();
  const std::string tag = unique_tag();
  auto run = run_worker(
      "--devices 3 --steps 50 --samples 2400 --kill-rank 1 --kill-step 3 --timeout-ms 20000 --tag " + tag,
      90);
  EXPECT_NE(run.result.exit_code, 0) << run.result.output;
  EXPECT_NE(run.result.exit_code, 124) << "the run hung until the test's own limit:\n" << run.result.output;
  EXPECT_NE(run.result.output.find("rank 1"), std::string::npos) << run.result.output;
  EXPECT_LT(run.seconds, 40.0) << run.result.output;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(processes_with(tag), 0) << "processes of the run outlived it";
}

TEST(DDPTorchrun, TheSameProgramRunsUnderTorchrun) {
  VOLT_NEED_WORKER();
  const std::string torchrun = std::filesystem::path(venv_python()).parent_path() / "torchrun";
  if (!executable(torchrun))
    GTEST_SKIP() << "no torchrun at " << torchrun << " (run scripts/install-deps.sh)";
  TempDir dir("ddp-torchrun");
  const std::string own = dir.path() + "/own.safetensors", under = dir.path() + "/torchrun.safetensors";
  const std::string common = " --batch 8 --samples 64 --steps 5";
  ASSERT_EQ(run_worker("--devices 2" + common + " --out " + own).result.exit_code, 0);
  // As a user runs it with this LibTorch: 2.x workers use the torchrun agent's store; LibTorch 1.13's store
  // client cannot speak to a 2.x agent's, so there rank 0 hosts volt's store (c10d rendezvous, no shared
  // store).
  const std::string port = std::to_string(volt::detail::free_loopback_port());
  const std::string rendezvous = volt::compat::kTcpStoreSpeaksTorch2Protocol
                                     ? " --master-addr 127.0.0.1 --master-port " + port + " "
                                     : " --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:" + port + " ";
  const std::string prefix =
      std::string(volt::compat::kTcpStoreSpeaksTorch2Protocol ? ""
                                                              : "env TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 ") +
      shell_quote(torchrun) + " --no-python --nproc-per-node 2 --monitor-interval 0.2" + rendezvous;
  auto run = run_command("timeout -k 5 90 " + prefix + shell_quote(worker()) + " --devices 2" + common +
                         " --out " + under);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  expect_close(own, under, 0.0);
}

TEST(DistributedSampler, ShardsLikePyTorchsWithPaddingAndDropLast) {
  // PyTorch: list(DistributedSampler(range(10), num_replicas=3, rank=r, shuffle=False)).
  EXPECT_EQ(distributed_indices(10, DistributedSamplerOptions().num_replicas(3).rank(0).shuffle(false), 0),
            (std::vector<int64_t>{0, 3, 6, 9}));
  EXPECT_EQ(distributed_indices(10, DistributedSamplerOptions().num_replicas(3).rank(2).shuffle(false), 0),
            (std::vector<int64_t>{2, 5, 8, 1}));
  EXPECT_EQ(distributed_indices(
                10, DistributedSamplerOptions().num_replicas(3).rank(1).shuffle(false).drop_last(true), 0),
            (std::vector<int64_t>{1, 4, 7}));
  // Shuffled: disjoint shards covering everything, a new order each epoch, the same for the same epoch.
  std::vector<int64_t> all;
  for (int r = 0; r < 4; ++r) {
    auto mine = distributed_indices(100, DistributedSamplerOptions().num_replicas(4).rank(r).seed(7), 3);
    all.insert(all.end(), mine.begin(), mine.end());
  }
  std::sort(all.begin(), all.end());
  for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(all[static_cast<size_t>(i)], i);
  const auto opts = DistributedSamplerOptions().num_replicas(2).rank(0).seed(7);
  EXPECT_EQ(distributed_indices(50, opts, 1), distributed_indices(50, opts, 1));
  EXPECT_NE(distributed_indices(50, opts, 1), distributed_indices(50, opts, 2));
}

TEST(DistributedSampler, MatchesPyTorchsShuffle) {
  VOLT_SKIP_WITHOUT_VENV();
  // The same ATen randperm from a generator seeded with seed + epoch (1.13's and 2.x's agree on it).
  const auto r =
      run_command(shell_quote(venv_python()) +
                  " -c 'import torch; from torch.utils.data import DistributedSampler as D; s = D(range(37), "
                  "num_replicas=3, rank=1, shuffle=True, seed=5); s.set_epoch(2); print(list(s))'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto mine = distributed_indices(37, DistributedSamplerOptions().num_replicas(3).rank(1).seed(5), 2);
  std::string text = "[";
  for (size_t i = 0; i < mine.size(); ++i) text += (i ? ", " : "") + std::to_string(mine[i]);
  text += "]";
  EXPECT_EQ(r.output.substr(0, r.output.find('\n')), text);
}

TEST(DistributedBatches, EachRankVisitsItsShardOfASizedSource) {
  std::vector<Batch> batches;
  for (int i = 0; i < 7; ++i) batches.emplace_back(at::full({1}, i));
  std::vector<std::vector<int>> seen(3);
  for (int r = 0; r < 3; ++r) {
    const BatchSource shard = distributed_batches(
        BatchSource(batches), DistributedSamplerOptions().num_replicas(3).rank(r).shuffle(false));
    ASSERT_EQ(shard.num_batches(), 3);
    shard.for_each([&](Batch&& b) {
      seen[static_cast<size_t>(r)].push_back(b.data.item<int>());
      return true;
    });
  }
  EXPECT_EQ(seen[0], (std::vector<int>{0, 3, 6}));
  EXPECT_EQ(seen[1], (std::vector<int>{1, 4, 0}));  // padded with the first batch, as PyTorch pads indices
  EXPECT_EQ(seen[2], (std::vector<int>{2, 5, 1}));
}

TEST(Strategy, NamesAsLightningsAndDdpSpawnRefusedWithTheReason) {
  EXPECT_EQ(make_strategy(StrategyOptions().accelerator("cpu"))->name(), "single_device");
  EXPECT_EQ(make_strategy(StrategyOptions().name("single_device").accelerator("cpu"))->name(),
            "single_device");
  try {
    make_strategy(StrategyOptions().name("ddp_spawn"));
    FAIL() << "ddp_spawn was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("re-runs"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_strategy(StrategyOptions().name("single_device").accelerator("cpu").devices(2)), Error);
  EXPECT_THROW(make_strategy(StrategyOptions().name("dpp")), Error);
}

}  // namespace
}  // namespace volt::testing

namespace volt::testing {
namespace {

TEST(DDPLightning, WeightsMatchLightningsDDPFromTheSameStart) {
  VOLT_NEED_WORKER();
  VOLT_SKIP_WITHOUT_VENV();
  const std::string tests_dir = test_source_dir();
  ASSERT_FALSE(tests_dir.empty()) << "no test source folder recorded beside the tests";
  TempDir dir("ddp-lightning");
  const std::string port = std::to_string(21000 + (::getpid() % 20000));
  auto lightning =
      run_command("cd " + shell_quote(dir.path()) + " && MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port +
                  " timeout -k 5 300 " + shell_quote(venv_python()) + " " +
                  shell_quote(tests_dir + "/strategies/lightning_ddp_oracle.py") + " " +
                  shell_quote(dir.path()) + " 8 3");
  ASSERT_EQ(lightning.exit_code, 0) << lightning.output;
  // volt from Lightning's initial weights and data, samples sharded as Lightning's DistributedSampler.
  auto volt_run =
      run_worker("--devices 2 --model cnn --batch 8 --steps 3 --sampler samples --init " + dir.path() +
                 "/init.pt --data " + dir.path() + "/data.pt --out " + dir.path() + "/volt.safetensors");
  ASSERT_EQ(volt_run.result.exit_code, 0) << volt_run.result.output;
  const auto theirs = weights(dir.path() + "/lightning.pt"), ours = weights(dir.path() + "/volt.safetensors"),
             start = weights(dir.path() + "/init.pt");
  ASSERT_EQ(theirs.size(), ours.size());
  for (const auto& [name, t] : theirs) {
    ASSERT_TRUE(ours.count(name)) << name;
    const auto a = t.to(at::kDouble), b = ours.at(name).to(at::kDouble);
    EXPECT_LE((a - b).abs().max().item<double>(), 2e-5) << name;
    if (name.find("weight") != std::string::npos && name.find("bn") == std::string::npos) {
      EXPECT_GT((a - start.at(name).to(at::kDouble)).abs().max().item<double>(), 1e-4)
          << name << " did not train";
    }
  }
}

}  // namespace
}  // namespace volt::testing

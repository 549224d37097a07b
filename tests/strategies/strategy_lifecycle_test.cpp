// The review's defects, each shown by a test that failed before its fix: the loss scaler's state under
// Lightning's "MixedPrecision" key both ways, an incomplete scaler state a volt::Error, collectives before
// setup a volt::Error (was a segfault), DDP's teardown taking its gradient hooks away, and predict tearing
// down as "failed" when a step throws.
#include <gtest/gtest.h>
#include <torch/csrc/autograd/function.h>
#include <torch/torch.h>

#include "python_oracle.h"
#include "temp_dir.h"
#include "trainer/trainer_fixtures.h"
#include "volt/strategies/ddp_strategy.h"
#include "volt/strategies/grad_scaler.h"
#include "volt/strategies/precision_plugin.h"
#include "volt/trainer/logger.h"
#include "volt/trainer/trainer.h"

namespace volt::testing {
namespace {

// A "16-mixed" plugin as on a GPU (the plugin needs no GPU to exist; only its device type).
PrecisionPlugin mixed16() { return PrecisionPlugin(Precision("16-mixed"), c10::kCUDA); }

struct StatusLogger : Logger {
  std::string name() const override { return "status"; }
  std::string log_dir() const override { return "."; }
  void log_hyperparams(const std::vector<std::pair<std::string, std::string>>&) override {}
  void log_metrics(const std::map<std::string, double>&, int64_t) override {}
  void flush() override {}
  void finalize(const std::string& status) override { statuses.push_back(status); }
  std::vector<std::string> statuses;
};

struct FailingPredict : Net {
  at::Tensor predict_step(const Batch&, int64_t batch_idx) override {
    VOLT_CHECK(batch_idx < 1, "predict_step failed on purpose");
    return at::zeros({1});
  }
};

}  // namespace

TEST(PrecisionPlugin, TheScalerStateMovesUnderLightningsMixedPrecisionKeyBothWays) {
  VOLT_SKIP_WITHOUT_VENV();
  TempDir dir("scaler");
  auto plugin = mixed16();
  ASSERT_NE(plugin.scaler(), nullptr);
  Checkpoint ckpt;
  plugin.on_save_checkpoint(ckpt);
  ckpt.save(dir.path() + "/volt.ckpt");
  // PyTorch's GradScaler loads what volt wrote under Lightning's key; Lightning's layout comes back with
  // another scale, which volt restores.
  const std::string script =
      "import sys, torch\n"
      "ck = torch.load(sys.argv[1], weights_only=True)\n"
      "state = ck['MixedPrecision']\n"
      "assert sorted(state) == ['_growth_tracker', 'backoff_factor', 'growth_factor', 'growth_interval', "
      "'scale'], sorted(state)\n"
      "scaler = torch.amp.GradScaler('cpu')\n"
      "scaler.load_state_dict(state)\n"
      "assert scaler.get_scale() == 65536.0, scaler.get_scale()\n"
      "state.update(scale=1024.0, _growth_tracker=7)\n"
      "torch.save({'state_dict': {}, 'epoch': 0, 'global_step': 0, 'MixedPrecision': state}, sys.argv[2])\n";
  const auto run =
      run_command(shell_quote(venv_python()) + " -c " + shell_quote(script) + " " +
                  shell_quote(dir.path() + "/volt.ckpt") + " " + shell_quote(dir.path() + "/pl.ckpt"));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto restored = mixed16();
  restored.on_load_checkpoint(Checkpoint::load(dir.path() + "/pl.ckpt"));
  EXPECT_EQ(restored.scaler()->current_scale(), 1024.0);
  EXPECT_EQ(restored.scaler()->growth_tracker(), 7);
}

TEST(PrecisionPlugin, AnIncompleteScalerStateIsAnErrorNamingTheMissingKey) {
  auto plugin = mixed16();
  Value state = plugin.state_dict();
  state.to_dict().erase("_growth_tracker");
  try {
    plugin.load_state_dict(state);
    FAIL() << "an incomplete scaler state was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has no '_growth_tracker'"), std::string::npos) << e.what();
  }
}

TEST(ParallelStrategy, CollectivesBeforeSetupAreAnErrorNotACrash) {
  DDPStrategy strategy(StrategyOptions().accelerator("cpu"));
  at::Tensor t = at::ones({2});
  EXPECT_THROW(strategy.reduce(t), Error);
  EXPECT_THROW(strategy.all_gather(t), Error);
  EXPECT_THROW(strategy.broadcast(t, 0), Error);
  EXPECT_THROW(strategy.broadcast(std::string("text"), 0), Error);
}

TEST(DDPStrategy, TeardownTakesItsGradientHooksAway) {
  // One rank: a real Gloo group of one process.
  DDPStrategy strategy(StrategyOptions().accelerator("cpu").timeout(std::chrono::seconds(20)));
  strategy.setup_environment();
  Net model;
  strategy.setup(model);
  EXPECT_FALSE(strategy.bucket_sizes().empty());
  const auto param = model.parameters().front();
  EXPECT_EQ(torch::autograd::impl::grad_accumulator(param)->post_hooks().size(), 1u);
  strategy.teardown();
  EXPECT_TRUE(strategy.bucket_sizes().empty());
  EXPECT_EQ(torch::autograd::impl::grad_accumulator(param)->post_hooks().size(), 0u);
}

TEST(Trainer, PredictTearsDownAsFailedWhenAStepThrows) {
  TempDir dir("predict-fails");
  auto logger = std::make_shared<StatusLogger>();
  Trainer trainer(quiet_options(dir.path()).logger({logger}));
  FailingPredict model;
  EXPECT_THROW(trainer.predict(model, to_batches(make_data(32, 1), 8)), Error);
  EXPECT_EQ(logger->statuses, std::vector<std::string>{"failed"});
  EXPECT_EQ(trainer.stage(), Stage::kNone);
}

}  // namespace volt::testing

// Strategies as Lightning's: chosen by a registered name, or passed to the Trainer as an object of the
// user's own class; precision plugins the same way.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "temp_dir.h"
#include "trainer/trainer_fixtures.h"
#include "volt/strategies/single_device_strategy.h"
#include "volt/strategies/strategy_registry.h"
#include "volt/trainer/trainer.h"

namespace volt::testing {
namespace {

// A strategy of the user's own: single-device placement, with every backward and optimizer step counted
// and gradients scaled by a factor before the step (something volt's strategies do not do).
class CountingStrategy : public SingleDeviceStrategy {
 public:
  explicit CountingStrategy(const StrategyOptions& options, double grad_factor = 1.0)
      : SingleDeviceStrategy(options), grad_factor_(grad_factor) {}
  std::string name() const override { return "counting"; }
  void backward(const at::Tensor& loss, bool sync_gradients) override {
    ++backwards;
    SingleDeviceStrategy::backward(loss, sync_gradients);
  }
  bool optimizer_step(torch::optim::Optimizer& optimizer, const std::function<void()>& clip) override {
    ++steps;
    torch::NoGradGuard no_grad;
    for (auto& group : optimizer.param_groups())
      for (auto& p : group.params())
        if (p.grad().defined()) p.mutable_grad().mul_(grad_factor_);
    return SingleDeviceStrategy::optimizer_step(optimizer, clip);
  }
  int backwards = 0, steps = 0;

 private:
  double grad_factor_;
};

// A precision plugin of the user's own: full precision, every backward counted.
class CountingPrecision : public PrecisionPlugin {
 public:
  CountingPrecision() : PrecisionPlugin(Precision("32-true"), c10::kCPU) {}
  void backward(const at::Tensor& loss) override {
    ++backwards;
    PrecisionPlugin::backward(loss);
  }
  int backwards = 0;
};

}  // namespace

TEST(StrategyRegistry, AUserStrategyObjectRunsTheTrainersLoops) {
  TempDir dir("user-strategy");
  const auto data = make_data(64, /*seed=*/3);
  auto batches = to_batches(data, 16);
  auto strategy = std::make_shared<CountingStrategy>(StrategyOptions().accelerator("cpu"));
  Trainer trainer(quiet_options(dir.path()).strategy(strategy).max_epochs(2));
  EXPECT_EQ(&trainer.strategy(), strategy.get());
  Net model;
  trainer.fit(model, batches);
  EXPECT_EQ(strategy->backwards, 8);
  EXPECT_EQ(strategy->steps, 8);
  EXPECT_EQ(trainer.global_step(), 8);
}

TEST(StrategyRegistry, AStrategyOfTheUsersChangesWhatTrainingDoes) {
  // A factor of 0 on every gradient: the weights never move, while the plain strategy moves them.
  TempDir dir("user-strategy-effect");
  const auto data = make_data(64, /*seed=*/3);
  auto batches = to_batches(data, 16);
  Net plain, frozen;
  copy_weights(plain, frozen);
  const auto before = frozen.parameters()[0].clone();
  Trainer(quiet_options(dir.path()).max_epochs(1)).fit(plain, batches);
  Trainer(quiet_options(dir.path())
              .strategy(std::make_shared<CountingStrategy>(StrategyOptions().accelerator("cpu"), 0.0))
              .max_epochs(1))
      .fit(frozen, batches);
  EXPECT_TRUE(frozen.parameters()[0].equal(before));
  EXPECT_FALSE(plain.parameters()[0].equal(before));
}

TEST(StrategyRegistry, AStrategyRegisteredByNameIsWhatTheTrainerBuilds) {
  auto& registry = StrategyRegistry::global();
  if (!registry.contains("counting_test"))
    registry.add(
        "counting_test",
        [](const StrategyOptions& options) { return std::make_shared<CountingStrategy>(options); },
        "a test's strategy");
  EXPECT_EQ(registry.description("counting_test"), "a test's strategy");
  TempDir dir("named-strategy");
  Trainer trainer(quiet_options(dir.path()).strategy("counting_test").max_steps(3));
  auto* counting = dynamic_cast<CountingStrategy*>(&trainer.strategy());
  ASSERT_NE(counting, nullptr);
  Net model;
  trainer.fit(model, to_batches(make_data(64, 4), 16));
  EXPECT_EQ(counting->steps, 3);
  EXPECT_THROW(registry.add("counting_test",
                            [](const StrategyOptions& o) { return std::make_shared<CountingStrategy>(o); }),
               Error);
}

TEST(StrategyRegistry, ListsVoltsStrategiesAndNamesThemWhenAskedForAnUnknownOne) {
  const auto names = StrategyRegistry::global().names();
  for (const char* name :
       {"single_device", "ddp", "fsdp", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3"})
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  EXPECT_EQ(std::find(names.begin(), names.end(), "ddp_spawn"), names.end());
  try {
    make_strategy(StrategyOptions().name("fdsp"));
    FAIL() << "an unknown name was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown strategy 'fdsp': use one of auto, "), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("fsdp"), std::string::npos) << e.what();
  }
}

TEST(StrategyRegistry, TrainerOptionsThatContradictAStrategyObjectAreRefused) {
  auto strategy = std::make_shared<CountingStrategy>(StrategyOptions().accelerator("cpu"));
  EXPECT_THROW(Trainer(TrainerOptions().strategy(strategy).precision("bf16-true")), Error);
  EXPECT_THROW(Trainer(TrainerOptions().strategy(strategy).devices(2)), Error);
  EXPECT_NO_THROW(Trainer(TrainerOptions().strategy(strategy).precision("32-true").enable_logger(false)));
}

TEST(PrecisionPlugin, AUserPluginIsUsedByTheStrategyTheTrainerBuilds) {
  TempDir dir("user-precision");
  auto plugin = std::make_shared<CountingPrecision>();
  Trainer trainer(quiet_options(dir.path()).precision_plugin(plugin).max_steps(5));
  EXPECT_EQ(&trainer.strategy().precision_plugin(), plugin.get());
  Net model;
  trainer.fit(model, to_batches(make_data(96, 5), 16));
  EXPECT_EQ(plugin->backwards, 5);
}

}  // namespace volt::testing

#include "volt/trainer/trainer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "trainer/trainer_fixtures.h"
#include "volt/error.h"
#include "volt/init/huge_page_allocator.h"
#include "volt/init/uninitialized.h"
#include "volt/strategies/grad_scaler.h"
#include "volt/trainer/model_checkpoint.h"

using volt::Trainer;
using volt::TrainerOptions;
using namespace volt::testing;
namespace fs = std::filesystem;

TEST(Trainer, InitModuleBuildsInThePrecisionOnTheRootDevice) {
  Trainer trainer(TrainerOptions().accelerator("cpu").precision("bf16-true"));
  EXPECT_TRUE(trainer.root_device().is_cpu());
  auto scope = trainer.init_module();
  torch::nn::Linear linear(64, 32);
  EXPECT_EQ(linear->weight.dtype(), torch::kBFloat16);
  EXPECT_TRUE(linear->weight.device().is_cpu());
  EXPECT_NE(linear->weight.abs().sum().item<float>(), 0.0f);
}

TEST(Trainer, MixedPrecisionBuildsFloat32Parameters) {
  Trainer trainer(TrainerOptions().accelerator("cpu").precision("bf16-mixed"));
  auto scope = trainer.init_module();
  torch::nn::Linear linear(4, 2);
  EXPECT_EQ(linear->weight.dtype(), torch::kFloat);
}

TEST(Trainer, EmptyInitSkipsParameterInit) {
  Trainer trainer(TrainerOptions().accelerator("cpu").precision("16-true"));
  torch::manual_seed(17);
  uint64_t seed = 0;
  torch::nn::Linear linear{nullptr};
  {
    auto scope = trainer.init_module(/*empty_init=*/true);
    EXPECT_EQ(scope.options().mode(), volt::InitMode::kEmpty);
    seed = scope.seed();
    linear = torch::nn::Linear(2048, 1024);
  }
  EXPECT_EQ(linear->weight.dtype(), torch::kHalf);
  // No random init ran: both inits are recorded as skipped, and the 4 MiB weight still holds the zeros of
  // its fresh huge-page mapping (a uniform_ init would have left ~2M nonzeros).
  EXPECT_EQ(volt::uninitialized(*linear), (std::vector<std::string>{"weight", "bias"}));
  ASSERT_TRUE(volt::is_huge_page_allocation(linear->weight.storage().data_ptr()));
  EXPECT_EQ(linear->weight.count_nonzero().item<int64_t>(), 0);
  // What was skipped is what a materializing scope with the same seed runs: the repair replays it.
  torch::nn::Linear reference{nullptr};
  {
    auto scope = volt::init_module(volt::InitOptions().dtype(torch::kHalf).seed(seed));
    reference = torch::nn::Linear(2048, 1024);
  }
  EXPECT_EQ(volt::initialize_uninitialized(*linear).size(), 2u);
  EXPECT_TRUE(torch::equal(linear->weight, reference->weight));
  EXPECT_TRUE(torch::equal(linear->bias, reference->bias));
}

TEST(Trainer, OptionsRejectUnknownValuesWithTheValidOnes) {
  EXPECT_THROW(TrainerOptions().precision("fp17"), volt::Error);
  EXPECT_THROW(Trainer(TrainerOptions().accelerator("tpu")), volt::Error);
  try {
    Trainer trainer(TrainerOptions().accelerator("cpu").strategy("magic"));
    FAIL();
  } catch (const volt::Error& e) {  // names the strategies there are
    EXPECT_NE(std::string(e.what()).find("deepspeed_stage_3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Trainer(TrainerOptions().accelerator("cpu").strategy("fsdp").sharding(
                   volt::ShardingOptions().state_dict_type("partial"))),
               volt::Error);
  EXPECT_THROW(Trainer(TrainerOptions().accelerator("cpu").strategy("single_device").devices(2)),
               volt::Error);
  EXPECT_THROW(Trainer(TrainerOptions().accelerator("cpu").precision("16-mixed")), volt::Error);
  EXPECT_THROW(Trainer(TrainerOptions().accelerator("cpu").gradient_clip_algorithm("max")), volt::Error);
}

TEST(Trainer, CudaPrecisionBuildsOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU";
  Trainer trainer(TrainerOptions().accelerator("cuda").precision("bf16-true"));
  auto scope = trainer.init_module();
  torch::nn::Linear linear(64, 32);
  EXPECT_TRUE(linear->weight.is_cuda());
  EXPECT_EQ(linear->weight.dtype(), torch::kBFloat16);
}

TEST(Trainer, FitLowersTheLossAndLogsToCsv) {
  TempDir dir("fit-csv");
  const auto data = make_data(512, /*seed=*/1);
  auto batches = to_batches(data, 32);
  Trainer trainer(quiet_options(dir.path()).max_epochs(4));
  Net model;
  const double before = full_loss(model, data);
  trainer.fit(model, batches, batches);
  const double after = full_loss(model, data);
  EXPECT_LT(after, before * 0.8) << "before " << before << " after " << after;
  EXPECT_EQ(trainer.global_step(), 4 * 16);
  EXPECT_EQ(trainer.current_epoch(), 4);
  // The CSV logger's file has per-step train_loss rows and per-epoch val_loss rows.
  const auto csv = read_text(dir.path() + "/lightning_logs/version_0/metrics.csv");
  EXPECT_NE(csv.find("train_loss"), std::string::npos);
  EXPECT_NE(csv.find("val_loss"), std::string::npos);
  ASSERT_TRUE(trainer.callback_metrics().count("val_loss"));
  EXPECT_NEAR(trainer.callback_metrics().at("val_loss"), after, 1e-4);
}

TEST(Trainer, EpochMeansWeighByBatchSize) {
  TempDir dir("weighted");
  // 3 batches of sizes 4, 4, 2 whose per-batch "value" is the batch's first target value.
  std::vector<volt::Batch> batches{{torch::zeros({4, 8}), torch::full({4}, 1.0)},
                                   {torch::zeros({4, 8}), torch::full({4}, 2.0)},
                                   {torch::zeros({2, 8}), torch::full({2}, 4.0)}};
  Net model;
  Trainer trainer(quiet_options(dir.path()));
  const auto metrics = trainer.validate(model, batches);
  ASSERT_TRUE(metrics.count("val_first_target"));
  EXPECT_DOUBLE_EQ(metrics.at("val_first_target"), (4 * 1.0 + 4 * 2.0 + 2 * 4.0) / 10);
}

TEST(Trainer, ResumingFromAnEpochEndCheckpointGivesBitwiseEqualWeights) {
  TempDir dir("resume");
  const auto data = make_data(256, 2);
  SyntheticDataset dataset(data);
  // A shuffling torch::data loader and dropout: both draw from LibTorch's generator.
  auto loader =
      torch::data::make_data_loader(dataset, torch::data::samplers::RandomSampler(dataset.size().value()),
                                    torch::data::DataLoaderOptions(32));
  auto straight = [&](int64_t epochs, const std::string& ckpt_path, const std::string& root) {
    torch::manual_seed(7);
    Net model(/*dropout=*/0.2, /*scheduler=*/true);
    Trainer trainer(quiet_options(root).max_epochs(epochs).enable_checkpointing(true));
    trainer.fit(model, volt::BatchSource(loader, 8), {}, ckpt_path);
    return std::make_pair(volt::state_dict(model), trainer.global_step());
  };
  const auto two = straight(2, "", dir.path() + "/a");
  straight(1, "", dir.path() + "/b");
  const std::string ckpt = dir.path() + "/b/lightning_logs/version_0/checkpoints/epoch=0-step=8.ckpt";
  ASSERT_TRUE(fs::exists(ckpt));
  torch::manual_seed(1234);  // the resume must not depend on the generator's state before fit
  const auto resumed = straight(2, ckpt, dir.path() + "/c");
  EXPECT_EQ(resumed.second, two.second);
  expect_bitwise_equal(two.first, resumed.first);
}

TEST(Trainer, ResumingFromAMidEpochCheckpointGivesBitwiseEqualWeights) {
  TempDir dir("resume-mid");
  const auto data = make_data(256, 3);
  SyntheticDataset dataset(data);
  auto loader =
      torch::data::make_data_loader(dataset, torch::data::samplers::RandomSampler(dataset.size().value()),
                                    torch::data::DataLoaderOptions(32));
  auto run = [&](const std::string& root, const std::string& ckpt_path, int64_t every_n_steps) {
    torch::manual_seed(11);
    Net model(0.2, true);
    std::vector<std::shared_ptr<volt::Callback>> callbacks;
    if (every_n_steps > 0)
      callbacks.push_back(std::make_shared<volt::ModelCheckpoint>(
          volt::ModelCheckpointOptions().dirpath(root).every_n_train_steps(every_n_steps).save_top_k(-1)));
    Trainer trainer(quiet_options(root).max_epochs(2).callbacks(callbacks));
    trainer.fit(model, volt::BatchSource(loader, 8), {}, ckpt_path);
    return volt::state_dict(model);
  };
  const auto straight = run(dir.path() + "/a", "", 3);  // saves at steps 3, 6, 9, ...
  ASSERT_TRUE(fs::exists(dir.path() + "/a/epoch=0-step=3.ckpt"));
  const auto resumed = run(dir.path() + "/b", dir.path() + "/a/epoch=0-step=3.ckpt", 0);
  expect_bitwise_equal(straight, resumed);
  const auto resumed_later = run(dir.path() + "/c", dir.path() + "/a/epoch=1-step=12.ckpt", 0);
  expect_bitwise_equal(straight, resumed_later);
}

TEST(Trainer, AccumulatingKBatchesEqualsOneBatchKTimesLarger) {
  TempDir dir("accumulate");
  const auto data = make_data(128, 4);
  torch::manual_seed(3);
  Net small(0.0, false, /*sgd=*/true);
  Net large(0.0, false, true);
  copy_weights(small, large);
  Trainer accumulating(quiet_options(dir.path()).max_epochs(1).accumulate_grad_batches(4));
  accumulating.fit(small, to_batches(data, 8));
  Trainer plain(quiet_options(dir.path()).max_epochs(1));
  plain.fit(large, to_batches(data, 32));
  EXPECT_EQ(accumulating.global_step(), plain.global_step());
  const auto a = volt::state_dict(small), b = volt::state_dict(large);
  for (const auto& [name, t] : a.to_dict())
    EXPECT_TRUE(torch::allclose(t.to_tensor(), b[name.to_string()].to_tensor(), 1e-5, 1e-6))
        << name.to_string();
}

TEST(Trainer, ClippingBoundsEachUpdate) {
  TempDir dir("clip");
  const auto data = make_data(64, 5);
  for (const std::string algorithm : {"value", "norm"}) {
    torch::manual_seed(5);
    Net model(0.0, false, /*sgd=*/true, /*lr=*/1.0);
    const auto before = volt::state_dict(model);
    std::vector<torch::Tensor> start;
    for (const auto& p : model.parameters()) start.push_back(p.detach().clone());
    Trainer trainer(
        quiet_options(dir.path()).max_steps(1).gradient_clip_val(0.01).gradient_clip_algorithm(algorithm));
    trainer.fit(model, to_batches(data, 64));
    double total_sq = 0, max_abs = 0;
    const auto params = model.parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      const auto change = params[i].detach() - start[i];
      total_sq += change.pow(2).sum().item<double>();
      max_abs = std::max(max_abs, change.abs().max().item<double>());
    }
    if (algorithm == "value") {
      EXPECT_LE(max_abs, 0.01 + 1e-7);
      EXPECT_GT(max_abs, 0.005);
    } else {
      EXPECT_NEAR(std::sqrt(total_sq), 0.01, 1e-4);  // the unclipped norm is far larger
    }
  }
}

TEST(Trainer, Bf16MixedTrainsFloat32WeightsAndBf16TrueKeepsBf16) {
  TempDir dir("precision");
  const auto data = make_data(256, 6);
  {
    Net model;
    Trainer trainer(quiet_options(dir.path()).max_epochs(2).precision("bf16-mixed"));
    const double before = full_loss(model, data);
    const size_t first_training_forward = model.forward_dtypes.size();
    trainer.fit(model, to_batches(data, 32));
    EXPECT_EQ(model.parameters()[0].scalar_type(), torch::kFloat);
    EXPECT_EQ(model.forward_dtypes.at(first_training_forward), torch::kBFloat16);  // under autocast
    EXPECT_LT(full_loss(model, data), before);
  }
  {
    Net model;  // built in float32 outside init_module: converted once at setup
    Trainer trainer(quiet_options(dir.path()).max_epochs(2).precision("bf16-true"));
    trainer.fit(model, to_batches(data, 32));
    for (const auto& p : model.parameters()) EXPECT_EQ(p.scalar_type(), torch::kBFloat16);
    EXPECT_EQ(model.forward_dtypes.back(), torch::kBFloat16);
  }
}

TEST(Trainer, TruePrecisionCastsFloatingTensorsOnlyOnce) {
  TempDir dir("cast");
  struct WithNorm : Net {
    WithNorm() { bn = register_module("bn", torch::nn::BatchNorm1d(16)); }
    torch::nn::BatchNorm1d bn{nullptr};
  } model;
  Trainer trainer(quiet_options(dir.path()).max_epochs(1).precision("bf16-true"));
  trainer.fit(model, to_batches(make_data(64, 10), 32));
  EXPECT_EQ(model.bn->running_mean.scalar_type(), torch::kBFloat16);
  // LibTorch's Module::to(dtype) would make this counter bfloat16 too; PyTorch and volt keep it int64.
  EXPECT_EQ(model.bn->num_batches_tracked.scalar_type(), torch::kLong);
  const auto* before = model.fc1->weight.data_ptr();
  trainer.fit(model, to_batches(make_data(64, 10), 32));  // already there: nothing is copied again
  EXPECT_EQ(model.fc1->weight.data_ptr(), before);
}

TEST(Trainer, MaxStepsAndLimitsBoundTheLoop) {
  TempDir dir("limits");
  const auto data = make_data(320, 7);
  Net model;
  Trainer trainer(quiet_options(dir.path()).max_steps(7).limit_train_batches(0.5).limit_val_batches(2));
  trainer.fit(model, to_batches(data, 32), to_batches(data, 32));
  EXPECT_EQ(trainer.global_step(), 7);
  EXPECT_EQ(model.train_batches_seen, 7);
  // 5 batches an epoch: epoch 0 has one full validation of 2 batches; 2 sanity batches are not counted.
  EXPECT_EQ(model.val_batches_seen, 2 + 2);
}

TEST(Trainer, HooksRunInLightningsOrder) {
  TempDir dir("hooks");
  const auto data = make_data(64, 8);
  auto recorder = std::make_shared<HookRecorder>();
  Net model;
  model.hook_log = &recorder->calls;
  Trainer trainer(quiet_options(dir.path()).max_epochs(1).num_sanity_val_steps(1).callbacks({recorder}));
  trainer.fit(model, to_batches(data, 32), to_batches(data, 32));
  const std::vector<std::string> expected{
      "model.configure_model",          "callback.on_fit_start",        "model.on_fit_start",
      "callback.on_sanity_check_start", "callback.on_validation_start", "model.validation_step",
      "model.on_validation_epoch_end",  "callback.on_validation_end",   "callback.on_sanity_check_end",
      "callback.on_train_epoch_start",  "model.on_train_epoch_start",   "model.training_step",
      "callback.on_train_batch_end",    "model.training_step",          "callback.on_train_batch_end",
      "callback.on_validation_start",   "model.validation_step",        "model.validation_step",
      "model.on_validation_epoch_end",  "callback.on_validation_end",   "callback.on_train_epoch_end",
      "model.on_train_epoch_end",       "callback.on_fit_end",          "model.on_fit_end"};
  EXPECT_EQ(recorder->calls, expected);
}

TEST(Trainer, PredictAndTestRunTheirSteps) {
  TempDir dir("predict");
  const auto data = make_data(96, 9);
  Net model;
  Trainer trainer(quiet_options(dir.path()));
  const auto outputs = trainer.predict(model, to_batches(data, 32));
  ASSERT_EQ(outputs.size(), 3u);
  {
    // predict_step's values, batch by batch: the model's forward on that batch.
    torch::NoGradGuard no_grad;
    model.eval();
    const auto expected = model.forward(data.x);
    for (int64_t i = 0; i < 3; ++i) {
      EXPECT_EQ(outputs[i].sizes(), (std::vector<int64_t>{32, 4}));
      EXPECT_TRUE(torch::allclose(outputs[i], expected.slice(0, 32 * i, 32 * (i + 1)), 1e-6, 1e-6)) << i;
    }
    EXPECT_FALSE(outputs[0].requires_grad());  // predict runs without autograd, as Lightning's
  }
  const auto metrics = trainer.test(model, to_batches(data, 32));
  ASSERT_TRUE(metrics.count("test_loss"));
  EXPECT_NEAR(metrics.at("test_loss"), full_loss(model, data), 1e-4);
}

TEST(GradScaler, SkipsNonFiniteStepsBacksOffAndGrows) {
  auto w = torch::ones({2}, torch::requires_grad());
  torch::optim::SGD sgd({w}, torch::optim::SGDOptions(0.1));
  volt::GradScaler scaler(volt::GradScalerOptions().init_scale(8).growth_interval(2));
  auto run = [&](double grad) {
    w.mutable_grad() = torch::full({2}, grad * scaler.current_scale());
    const bool stepped = scaler.step(sgd);
    sgd.zero_grad();
    return stepped;
  };
  EXPECT_FALSE(run(INFINITY));
  EXPECT_EQ(scaler.current_scale(), 4);
  EXPECT_TRUE(torch::equal(w.detach(), torch::ones({2})));  // the bad step changed nothing
  EXPECT_TRUE(run(1.0));
  EXPECT_FLOAT_EQ(w[0].item<float>(), 0.9f);  // unscaled before the step: 1 - 0.1 * 1
  EXPECT_EQ(scaler.current_scale(), 4);
  EXPECT_TRUE(run(1.0));
  EXPECT_EQ(scaler.current_scale(), 8);  // two good steps: grown
  EXPECT_FALSE(run(NAN));
  EXPECT_EQ(scaler.skipped_steps(), 2);
}

TEST(BatchLimit, CountsAndFractions) {
  EXPECT_EQ(volt::BatchLimit(3).resolve(10, "x"), 3);
  EXPECT_EQ(volt::BatchLimit(30).resolve(10, "x"), 10);
  EXPECT_EQ(volt::BatchLimit(0.25).resolve(10, "x"), 2);
  EXPECT_EQ(volt::BatchLimit(1.0).resolve(c10::nullopt, "x"), INT64_MAX);
  EXPECT_THROW(volt::BatchLimit(0.5).resolve(c10::nullopt, "limit_train_batches"), volt::Error);
  EXPECT_THROW(volt::BatchLimit(1.5).resolve(10, "x"), volt::Error);
}

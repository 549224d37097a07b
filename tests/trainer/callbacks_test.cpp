#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "trainer/trainer_fixtures.h"
#include "volt/trainer/early_stopping.h"
#include "volt/trainer/lr_monitor.h"
#include "volt/trainer/model_checkpoint.h"
#include "volt/trainer/progress_bar.h"

using namespace volt;
using namespace volt::testing;
namespace fs = std::filesystem;

namespace {

// Logs a scripted validation score per epoch.
struct ScriptedNet : Net {
  explicit ScriptedNet(std::vector<double> scores) : scores(std::move(scores)) {}
  void validation_step(const Batch&, int64_t) override {
    log("score", scores.at(static_cast<size_t>(epoch + 1)), LogOptions().prog_bar(true));
  }
  void on_validation_epoch_end() override { ++epoch; }
  std::vector<double> scores;
  int64_t epoch = -1;  // scores[0] is the sanity check's (when it runs), scores[e + 1] epoch e's
};

struct RecordingLogger : Logger {
  std::string name() const override { return "recording"; }
  std::string log_dir() const override { return dir; }
  void log_hyperparams(const std::vector<std::pair<std::string, std::string>>& hp) override { hparams = hp; }
  void log_metrics(const std::map<std::string, double>& metrics, int64_t step) override {
    rows.emplace_back(step, metrics);
  }
  void flush() override {}
  void finalize(const std::string& status) override { final_status = status; }
  std::string dir;
  std::vector<std::pair<std::string, std::string>> hparams;
  std::vector<std::pair<int64_t, std::map<std::string, double>>> rows;
  std::string final_status;
};

std::set<std::string> files_in(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir)) out.insert(entry.path().filename().string());
  return out;
}

}  // namespace

TEST(ModelCheckpoint, KeepsTheTopKByTheMonitorAndDeletesTheRest) {
  TempDir dir("topk");
  const auto data = make_data(64, 1);
  ScriptedNet model({0.0, 0.5, 0.3, 0.4, 0.2, 0.6});
  auto ckpt = std::make_shared<ModelCheckpoint>(ModelCheckpointOptions()
                                                    .dirpath(dir.path())
                                                    .monitor("score")
                                                    .mode("min")
                                                    .save_top_k(2)
                                                    .save_last(true)
                                                    .filename("{epoch:02d}-{score:.2f}"));
  Trainer trainer(quiet_options(dir.path()).max_epochs(5).num_sanity_val_steps(1).callbacks({ckpt}));
  trainer.fit(model, to_batches(data, 32), to_batches(data, 64));
  EXPECT_EQ(files_in(dir.path()),
            (std::set<std::string>{"epoch=03-score=0.20.ckpt", "epoch=01-score=0.30.ckpt", "last.ckpt",
                                   "lightning_logs"}));
  EXPECT_EQ(ckpt->best_model_path(), dir.path() + "/epoch=03-score=0.20.ckpt");
  ASSERT_TRUE(ckpt->best_model_score().has_value());
  EXPECT_DOUBLE_EQ(*ckpt->best_model_score(), 0.2);
  EXPECT_EQ(ckpt->best_k_models().size(), 2u);
  // The saved checkpoints are real: they load, hold the epoch and the callback's own state.
  const auto saved = Checkpoint::load(ckpt->best_model_path());
  EXPECT_EQ(saved.epoch, 3);
  EXPECT_EQ(saved.global_step, 8);
  EXPECT_TRUE(saved.callbacks.to_dict().contains(ckpt->state_key()));
  EXPECT_EQ(
      ckpt->state_key(),
      "ModelCheckpoint{'monitor': 'score', 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1, "
      "'train_time_interval': None}");
  const auto last = Checkpoint::load(dir.path() + "/last.ckpt");
  EXPECT_EQ(last.epoch, 4);
}

TEST(ModelCheckpoint, StateSurvivesAResumeSoTopKContinues) {
  TempDir dir("topk-resume");
  const auto data = make_data(64, 2);
  auto options = ModelCheckpointOptions()
                     .dirpath(dir.path())
                     .monitor("score")
                     .mode("max")
                     .save_top_k(1)
                     .filename("{epoch}-{score}");
  {
    ScriptedNet model({0.0, 0.9, 0.1});
    auto ckpt = std::make_shared<ModelCheckpoint>(options);
    Trainer trainer(quiet_options(dir.path()).max_epochs(2).num_sanity_val_steps(1).callbacks({ckpt}));
    trainer.fit(model, to_batches(data, 32), to_batches(data, 64));
    EXPECT_EQ(ckpt->best_model_path(), dir.path() + "/epoch=0-score=0.9000.ckpt");
  }
  ScriptedNet model({0.5, 0.7, 0.6});  // epochs 1-3, no sanity check on resume; none beats the 0.9 kept
  auto ckpt = std::make_shared<ModelCheckpoint>(options);
  Trainer trainer(quiet_options(dir.path()).max_epochs(4).callbacks({ckpt}));
  trainer.fit(model, to_batches(data, 32), to_batches(data, 64), dir.path() + "/epoch=0-score=0.9000.ckpt");
  EXPECT_EQ(ckpt->best_model_path(), dir.path() + "/epoch=0-score=0.9000.ckpt");
  EXPECT_EQ(ckpt->best_k_models().size(), 1u);
}

TEST(ModelCheckpoint, MissingMonitorNamesWhatWasLogged) {
  TempDir dir("monitor");
  const auto data = make_data(64, 3);
  Net model;
  auto ckpt =
      std::make_shared<ModelCheckpoint>(ModelCheckpointOptions().dirpath(dir.path()).monitor("val_acc"));
  Trainer trainer(quiet_options(dir.path()).max_epochs(1).callbacks({ckpt}));
  try {
    trainer.fit(model, to_batches(data, 32), to_batches(data, 32));
    FAIL() << "expected volt::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("val_acc"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("val_loss"), std::string::npos) << e.what();
  }
}

TEST(EarlyStopping, StopsAfterPatienceValidationsWithoutImprovement) {
  TempDir dir("early");
  const auto data = make_data(64, 4);
  ScriptedNet model({0.0, 1.0, 0.8, 0.85, 0.81, 0.9, 0.1, 0.1});
  auto early = std::make_shared<EarlyStopping>(EarlyStoppingOptions("score").patience(2).min_delta(0.05));
  Trainer trainer(quiet_options(dir.path()).max_epochs(8).num_sanity_val_steps(1).callbacks({early}));
  trainer.fit(model, to_batches(data, 32), to_batches(data, 64));
  // 1.0 -> 0.8 improves; 0.85 and 0.81 do not beat 0.8 by 0.05: stop after epoch 3.
  EXPECT_EQ(early->stopped_epoch(), 3);
  EXPECT_EQ(trainer.current_epoch(), 4);
  EXPECT_DOUBLE_EQ(early->best_score(), 0.8);
  EXPECT_EQ(model.train_batches_seen, 4 * 2);
}

TEST(LearningRateMonitor, LogsTheScheduledRateEveryEpoch) {
  TempDir dir("lr");
  const auto data = make_data(64, 5);
  Net model(0.0, /*scheduler=*/true);  // StepLR(step 1, gamma 0.5) from 1e-2
  auto logger = std::make_shared<RecordingLogger>();
  logger->dir = dir.path();
  Trainer trainer(quiet_options(dir.path())
                      .max_epochs(3)
                      .logger({logger})
                      .callbacks({std::make_shared<LearningRateMonitor>()}));
  trainer.fit(model, to_batches(data, 32));
  std::vector<double> lrs;
  for (const auto& [step, metrics] : logger->rows)
    if (metrics.count("lr-Adam")) lrs.push_back(metrics.at("lr-Adam"));
  ASSERT_EQ(lrs.size(), 3u);
  EXPECT_DOUBLE_EQ(lrs[0], 1e-2);
  EXPECT_DOUBLE_EQ(lrs[1], 5e-3);
  EXPECT_DOUBLE_EQ(lrs[2], 2.5e-3);
  EXPECT_EQ(logger->final_status, "success");
}

TEST(ProgressBar, RendersTqdmStyleLines) {
  EXPECT_EQ(ProgressBar::render("Epoch 2", 5, 10, 2.0, "loss=0.5"),
            "Epoch 2:  50%|█████     | 5/10 [00:02<00:02, 2.50it/s, loss=0.5]");
  EXPECT_EQ(ProgressBar::render("Epoch 0", 3, c10::nullopt, 6.0, ""), "Epoch 0: 3 [00:06, 2.00s/it]");
  EXPECT_EQ(ProgressBar::render("Testing", 10, 10, 1.0, ""),
            "Testing: 100%|██████████| 10/10 [00:01<00:00, 10.00it/s]");
}

TEST(ProgressBar, WritesPlainLinesWhenNotATerminal) {
  TempDir dir("bar");
  const auto data = make_data(320, 6);
  const std::string path = dir.path() + "/out.txt";
  std::FILE* out = std::fopen(path.c_str(), "w");
  Net model;
  Trainer trainer(quiet_options(dir.path())
                      .max_epochs(2)
                      .callbacks({std::make_shared<ProgressBar>(ProgressBarOptions().stream(out))}));
  trainer.fit(model, to_batches(data, 32), to_batches(data, 32));
  std::fclose(out);
  const auto text = read_text(path);
  EXPECT_EQ(text.find('\r'), std::string::npos);
  // About ten lines an epoch: at batches 1..9 and the epoch's end with the epoch's metrics.
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2 * 10) << text;
  EXPECT_NE(text.find("Epoch 1: 100%|██████████| 10/10"), std::string::npos) << text;
  EXPECT_NE(text.find("val_loss="), std::string::npos) << text;
}

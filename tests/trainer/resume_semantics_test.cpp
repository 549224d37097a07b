// Where a resumed fit continues, pinned where volt and Lightning 2.6.6 differ on purpose (README, "Lightning
// compatibility notes"): from an end-of-epoch checkpoint volt starts the next epoch, even with max_steps
// set, where Lightning's iteration-based fit loop trains one more batch in the finished epoch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "trainer/trainer_fixtures.h"

using namespace volt;
using namespace volt::testing;
namespace fs = std::filesystem;

namespace {

// (epoch, batch_idx, first feature of the batch) of every training batch, as the Trainer reports them.
struct BatchLog : Callback {
  void on_train_batch_end(Trainer& trainer, Module&, int64_t batch_idx) override {
    seen.push_back({trainer.current_epoch(), batch_idx});
  }
  std::vector<std::pair<int64_t, int64_t>> seen;
};

struct Run {
  Value weights;
  int64_t global_step = 0;
  std::vector<std::pair<int64_t, int64_t>> seen;
  std::vector<double> first_inputs;
};

struct FirstInput : Net {
  torch::Tensor training_step(const Batch& b, int64_t i) override {
    first_inputs.push_back(b.data[0][0].item<double>());
    return Net::training_step(b, i);
  }
  std::vector<double> first_inputs;
};

Run fit(std::vector<Batch> batches, TrainerOptions options, const std::string& ckpt_path = "") {
  torch::manual_seed(5);
  FirstInput model;
  auto log = std::make_shared<BatchLog>();
  Trainer trainer(options.callbacks({log}));
  trainer.fit(model, batches, {}, ckpt_path);
  return {state_dict(model), trainer.global_step(), log->seen, model.first_inputs};
}

}  // namespace

TEST(ResumeSemantics, AnEndOfEpochCheckpointResumesAtTheNextEpochEvenWithMaxSteps) {
  TempDir dir("resume-semantics");
  const auto batches = to_batches(make_data(32, 21), 8);  // 4 batches an epoch, always in this order
  fit(batches, quiet_options(dir.path() + "/a").max_epochs(1).enable_checkpointing(true));
  const std::string ckpt = dir.path() + "/a/lightning_logs/version_0/checkpoints/epoch=0-step=4.ckpt";
  ASSERT_TRUE(fs::exists(ckpt));

  const auto resumed = fit(batches, quiet_options(dir.path() + "/b").max_steps(5), ckpt);
  // volt: epoch 1, its first batch. (Lightning 2.6.6 would train batch 0 again in epoch 0: its fit loop
  // restarts the finished epoch because a max_steps run is iteration-based.)
  EXPECT_EQ(resumed.seen, (std::vector<std::pair<int64_t, int64_t>>{{1, 0}}));
  EXPECT_EQ(resumed.global_step, 5);
  ASSERT_EQ(resumed.first_inputs.size(), 1u);
  EXPECT_EQ(resumed.first_inputs[0], batches[0].data[0][0].item<double>());

  // And the weights are those of one uninterrupted run of 5 steps: 4 in epoch 0, 1 in epoch 1.
  const auto straight = fit(batches, quiet_options(dir.path() + "/c").max_steps(5));
  EXPECT_EQ(straight.seen,
            (std::vector<std::pair<int64_t, int64_t>>{{0, 0}, {0, 1}, {0, 2}, {0, 3}, {1, 0}}));
  expect_bitwise_equal(straight.weights, resumed.weights);
}

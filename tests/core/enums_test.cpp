// Lightning's string options as enums: built from Lightning's strings, equal to them, anything else refused.
#include <gtest/gtest.h>

#include "volt/core/enums.h"
#include "volt/distributed/cluster_environment.h"
#include "volt/trainer/trainer_options.h"

namespace volt {

TEST(NamedEnum, LightningsStringsBuildTheEnumAndCompareEqualToIt) {
  const GradClipAlgorithm value = "value";
  EXPECT_EQ(value, GradClipAlgorithm::kValue);
  EXPECT_EQ(value, "value");
  EXPECT_NE(value, "norm");
  EXPECT_STREQ(value.name(), "value");
  EXPECT_EQ(TrainerOptions().gradient_clip_algorithm(), GradClipAlgorithm::kNorm);
  EXPECT_EQ(TrainerOptions().gradient_clip_algorithm("value").gradient_clip_algorithm(),
            GradClipAlgorithm::kValue);
  EXPECT_EQ(Interval("step"), Interval::kStep);
  EXPECT_EQ(StateDictType("sharded"), StateDictType::kSharded);
  EXPECT_EQ(Stage(""), Stage::kNone);
  EXPECT_EQ(ClusterSource("slurm"), ClusterSource::kSlurm);
}

TEST(NamedEnum, AnUnknownStringIsRefusedListingTheValidOnes) {
  try {
    GradClipAlgorithm algorithm = "max";
    FAIL() << "clipping by '" << algorithm << "' was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gradient_clip_algorithm 'max': use one of norm, value"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(TrainerOptions().gradient_clip_algorithm("Norm"), Error);
  EXPECT_THROW(Interval("epochs"), Error);
  EXPECT_THROW(StateDictType("local"), Error);
}

}  // namespace volt

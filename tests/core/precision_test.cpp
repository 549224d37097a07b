#include "volt/core/precision.h"
#include "volt/error.h"

#include <gtest/gtest.h>

using volt::Precision;

TEST(Precision, TruePrecisionsKeepParametersInTheirDtype) {
  EXPECT_EQ(Precision("64-true").param_dtype(), c10::kDouble);
  EXPECT_EQ(Precision("32-true").param_dtype(), c10::kFloat);
  EXPECT_EQ(Precision("16-true").param_dtype(), c10::kHalf);
  EXPECT_EQ(Precision("bf16-true").param_dtype(), c10::kBFloat16);
  for (const char* name : {"64-true", "32-true", "16-true", "bf16-true"}) {
    EXPECT_FALSE(Precision(name).is_mixed()) << name;
    EXPECT_FALSE(Precision(name).autocast_dtype().has_value()) << name;
  }
}

TEST(Precision, MixedPrecisionsKeepFloat32ParametersAndAutocast) {
  EXPECT_EQ(Precision("16-mixed").param_dtype(), c10::kFloat);
  EXPECT_EQ(Precision("16-mixed").autocast_dtype(), c10::kHalf);
  EXPECT_EQ(Precision("bf16-mixed").param_dtype(), c10::kFloat);
  EXPECT_EQ(Precision("bf16-mixed").autocast_dtype(), c10::kBFloat16);
  EXPECT_TRUE(Precision("bf16-mixed").is_mixed());
}

TEST(Precision, ShortFormsAreLightningsAliases) {
  EXPECT_EQ(Precision("64").name(), "64-true");
  EXPECT_EQ(Precision("32").name(), "32-true");
  EXPECT_EQ(Precision("16").name(), "16-mixed");
  EXPECT_EQ(Precision("bf16").name(), "bf16-mixed");
  EXPECT_EQ(Precision("bf16"), Precision("bf16-mixed"));
}

TEST(Precision, AcceptsExactlyLightningsTenStrings) {
  EXPECT_EQ(Precision::valid_names().size(), 10u);
  for (const auto& name : Precision::valid_names()) EXPECT_NO_THROW(Precision{name}) << name;
}

TEST(Precision, UnknownStringThrowsListingValidOnes) {
  for (const char* bad : {"fp17", "", "bf16-true ", "BF16-TRUE", "8-true", "mixed"}) {
    try {
      Precision p(bad);
      FAIL() << "accepted '" << bad << "'";
    } catch (const volt::Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(std::string("'") + bad + "'"), std::string::npos) << message;
      for (const auto& name : Precision::valid_names())
        EXPECT_NE(message.find(name), std::string::npos) << message;
    }
  }
}

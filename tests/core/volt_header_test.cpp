// volt/volt.h is "the one header": it includes every public header under include/volt.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "test_paths.h"

TEST(VoltHeader, IncludesEveryPublicHeader) {
  const std::string source = volt::testing::test_source_dir();
  ASSERT_FALSE(source.empty()) << "no test source folder recorded beside the tests";
  const auto include = std::filesystem::path(source).parent_path() / "include";
  std::ifstream in(include / "volt" / "volt.h");
  std::stringstream text;
  text << in.rdbuf();
  int headers = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(include / "volt")) {
    if (entry.path().extension() != ".h" || entry.path().filename() == "volt.h") continue;
    ++headers;
    const std::string name = std::filesystem::relative(entry.path(), include).string();
    EXPECT_NE(text.str().find("#include \"" + name + "\""), std::string::npos) << name << " is not in volt.h";
  }
  EXPECT_GT(headers, 40);
}

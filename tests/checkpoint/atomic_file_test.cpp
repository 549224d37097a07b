#include "volt/checkpoint/atomic_file.h"

#include "volt/error.h"

#include <gtest/gtest.h>

#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Bytes that differ from position to position, so that a mix of two files would show.
std::string patterned_bytes(size_t size, unsigned seed) {
  std::string bytes(size, '\0');
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>((i * 131 + seed * 7 + (i >> 12)) & 0xff);
  return bytes;
}

std::vector<std::string> entries_of(const fs::path& directory) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(directory))
    names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

class AtomicFile : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "volt_atomic_XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

}  // namespace

TEST_F(AtomicFile, CommitReplacesTheFileWithExactlyWhatWasWritten) {
  const auto path = file("model.bin");
  const auto first = patterned_bytes(100'000, 1), second = patterned_bytes(3'000, 2);
  volt::write_file_atomically(path,
                              [&](volt::AtomicFileWriter& out) { out.write(first.data(), first.size()); });
  EXPECT_EQ(read_bytes(path), first);
  {
    volt::AtomicFileWriter out(path);
    out.write(second.data(), 1000);
    out.write(second.data() + 1000, second.size() - 1000);
    EXPECT_EQ(out.bytes_written(), second.size());
    EXPECT_EQ(read_bytes(path), first) << "the target changed before commit";
    out.commit();
  }
  EXPECT_EQ(read_bytes(path), second);
  EXPECT_EQ(entries_of(dir_), std::vector<std::string>{"model.bin"});
}

TEST_F(AtomicFile, WritesToAHiddenTemporaryFileBesideTheTarget) {
  const auto path = file("weights.safetensors");
  volt::AtomicFileWriter out(path);
  const fs::path temporary = out.temporary_path();
  EXPECT_EQ(temporary.parent_path(), dir_);
  const std::string prefix = ".weights.safetensors.tmp." + std::to_string(getpid()) + ".";
  EXPECT_EQ(temporary.filename().string().rfind(prefix, 0), 0u) << temporary;
  EXPECT_GT(temporary.filename().string().size(), prefix.size()) << "no random suffix: " << temporary;
  EXPECT_TRUE(fs::exists(temporary));
  volt::AtomicFileWriter second(path);
  EXPECT_NE(second.temporary_path(), out.temporary_path())
      << "two writers of one path share a temporary file";
}

TEST_F(AtomicFile, AWriterDestroyedWithoutCommitLeavesTheTargetAndNoTemporaryFile) {
  const auto path = file("keep.bin");
  const auto original = patterned_bytes(5'000, 3);
  volt::write_file_atomically(
      path, [&](volt::AtomicFileWriter& out) { out.write(original.data(), original.size()); });
  std::string temporary;
  {
    volt::AtomicFileWriter abandoned(path);
    temporary = abandoned.temporary_path();
    abandoned.write("partial", 7);
  }
  EXPECT_FALSE(fs::exists(temporary));
  EXPECT_EQ(read_bytes(path), original);
  { volt::AtomicFileWriter never_written(file("new.bin")); }
  EXPECT_EQ(entries_of(dir_), std::vector<std::string>{"keep.bin"});
}

TEST_F(AtomicFile, AnExceptionWhileWritingKeepsThePreviousFile) {
  const auto path = file("state.json");
  volt::write_file_atomically(path, [](volt::AtomicFileWriter& out) { out.write("{\"step\":1}", 10); });
  EXPECT_THROW(volt::write_file_atomically(path,
                                           [](volt::AtomicFileWriter& out) {
                                             out.write("{\"st", 4);
                                             throw std::runtime_error("serializer failed");
                                           }),
               std::runtime_error);
  EXPECT_EQ(read_bytes(path), "{\"step\":1}");
  EXPECT_EQ(entries_of(dir_), std::vector<std::string>{"state.json"});
}

TEST_F(AtomicFile, AWriterKilledMidWriteLeavesThePreviousFileByteIdentical) {
  const auto path = file("checkpoint.bin");
  const auto original = patterned_bytes(4 << 20, 4);
  volt::write_file_atomically(
      path, [&](volt::AtomicFileWriter& out) { out.write(original.data(), original.size()); });
  const auto replacement = patterned_bytes(64 << 20, 5);

  int half_written[2];
  ASSERT_EQ(pipe(half_written), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The child writes half of a big replacement, says so, and goes on writing until it is killed.
    try {
      volt::AtomicFileWriter out(path);
      const size_t half = replacement.size() / 2, chunk = 64 << 10;
      out.write(replacement.data(), half);
      if (::write(half_written[1], "h", 1) != 1) _exit(2);
      for (size_t offset = half; offset < replacement.size(); offset += chunk)
        out.write(replacement.data() + offset, chunk);
      ::pause();  // never commits
    } catch (...) {
    }
    _exit(3);
  }
  ::close(half_written[1]);
  pollfd ready{half_written[0], POLLIN, 0};
  const bool child_reported = ::poll(&ready, 1, 60'000) == 1;  // never hang the test run
  char byte = 0;
  const bool child_wrote_half = child_reported && ::read(half_written[0], &byte, 1) == 1;
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  ::close(half_written[0]);
  ASSERT_TRUE(child_wrote_half) << "the writer child did not report (exit status " << status << ")";
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

  EXPECT_TRUE(read_bytes(path) == original) << "the previous file changed while a killed writer replaced it";
  // The killed writer leaves its temporary file (nothing ran to remove it), never a damaged target.
  const auto leftovers = entries_of(dir_);
  ASSERT_EQ(leftovers.size(), 2u);
  EXPECT_EQ(leftovers[0].rfind(".checkpoint.bin.tmp." + std::to_string(child) + ".", 0), 0u) << leftovers[0];
  fs::remove(dir_ / leftovers[0]);

  volt::write_file_atomically(
      path, [&](volt::AtomicFileWriter& out) { out.write(replacement.data(), replacement.size()); });
  EXPECT_TRUE(read_bytes(path) == replacement) << "a later commit did not replace the file";
}

TEST_F(AtomicFile, ErrorsNameThePathAndTheReason) {
  const auto in_missing_directory = file("no_such_dir/model.bin");
  try {
    volt::AtomicFileWriter out(in_missing_directory);
    ADD_FAILURE() << "created a file in a missing directory";
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find(in_missing_directory), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos) << e.what();
  }
  // Renaming a file over a non-empty directory fails at commit; the temporary file goes away.
  const auto directory = file("occupied");
  fs::create_directories(fs::path(directory) / "child");
  try {
    volt::write_file_atomically(directory, [](volt::AtomicFileWriter& out) { out.write("x", 1); });
    ADD_FAILURE() << "replaced a directory";
  } catch (const volt::Error& e) {
    EXPECT_NE(std::string(e.what()).find(directory), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("renaming"), std::string::npos) << e.what();
  }
  EXPECT_EQ(entries_of(dir_), std::vector<std::string>{"occupied"});
  EXPECT_THROW(volt::AtomicFileWriter{file("trailing_slash/")}, volt::Error);
}

TEST_F(AtomicFile, AWriterCommitsOnce) {
  volt::AtomicFileWriter out(file("once.bin"));
  out.write("a", 1);
  out.commit();
  EXPECT_THROW(out.write("b", 1), volt::Error);
  EXPECT_THROW(out.commit(), volt::Error);
  EXPECT_EQ(read_bytes(file("once.bin")), "a");
}

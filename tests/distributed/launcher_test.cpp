// The subprocess launcher, through the real worker program: ranks started by re-running the executable, a
// failed rank stopping the run with its name, and no process of the run left behind on any path.
#include <gtest/gtest.h>

#include "distributed/multi_process.h"

namespace {

using volt::testing::count;
using volt::testing::run_processes;
using volt::testing::worker;
using namespace std::chrono_literals;

void expect_ranks_passed(const volt::testing::RunResult& run, int world) {
  const std::string output = run.output();
  for (int r = 0; r < world; ++r)
    EXPECT_EQ(count(output, "rank " + std::to_string(r) + " of " + std::to_string(world) + " ok"), 1)
        << "rank " << r << "\n"
        << output;
  EXPECT_EQ(count(output, "CHECK FAILED"), 0) << output;
  EXPECT_EQ(static_cast<int>(run.rank_pids.size()), world) << output;
  EXPECT_TRUE(run.left_behind.empty()) << output;
}

}  // namespace

TEST(SubprocessLauncher, TwoRanksLaunchedFromOneProcessPassEveryCollective) {
  const auto run = run_processes({worker({"--devices", "2", "--timeout-ms", "20000"})}, 60s);
  ASSERT_FALSE(run.timed_out) << run.output();
  EXPECT_TRUE(run.processes[0].exited_zero()) << run.output();
  expect_ranks_passed(run, 2);
  // Rank 0 was started plainly; rank 1 found the variables the launcher set.
  EXPECT_NE(run.output().find("rank 0 pid " + std::to_string(run.rank_pids.at(0)) + " detected single"),
            std::string::npos)
      << run.output();
  EXPECT_NE(run.output().find("rank 1 pid " + std::to_string(run.rank_pids.at(1)) +
                              " detected torchrun: local 1 of 2, node 0 of 1, world 2"),
            std::string::npos)
      << run.output();
}

TEST(SubprocessLauncher, ThreeRanksLaunchedFromOneProcessPassEveryCollective) {
  const auto run = run_processes({worker({"--devices", "3", "--timeout-ms", "20000"})}, 60s);
  ASSERT_FALSE(run.timed_out) << run.output();
  EXPECT_TRUE(run.processes[0].exited_zero()) << run.output();
  expect_ranks_passed(run, 3);
}

TEST(SubprocessLauncher, RankKilledMidRunEndsTheRunNamingItWithNoProcessLeft) {
  // Rank 1 SIGKILLs itself at step 3 of 100 (0.1 s each): rank 0's watcher must stop rank 2 and exit 1
  // long before the 20 s collective timeout.
  const auto run = run_processes({worker({"--devices", "3", "--timeout-ms", "20000", "--steps", "100",
                                          "--step-ms", "100", "--die-rank", "1", "--die-at-step", "3"})},
                                 60s);
  const std::string output = run.output();
  ASSERT_FALSE(run.timed_out) << output;
  EXPECT_TRUE(WIFEXITED(run.processes[0].status) && WEXITSTATUS(run.processes[0].status) == 1) << output;
  ASSERT_EQ(run.rank_pids.count(1), 1u) << output;
  ASSERT_EQ(run.dying_ms.count(1), 1u) << output;
  EXPECT_LT(run.end_ms - run.dying_ms.at(1), 5000) << output;  // the watcher, not the 20 s timeout
  EXPECT_NE(
      output.find("volt: rank 1 (pid " + std::to_string(run.rank_pids.at(1)) + ") was killed by signal 9"),
      std::string::npos)
      << output;
  EXPECT_NE(output.find("stopping the other ranks"), std::string::npos) << output;
  EXPECT_EQ(count(output, " ok\n"), 0) << output;
  EXPECT_TRUE(run.left_behind.empty()) << output;
}

TEST(SubprocessLauncher, RankZeroKilledTakesItsChildrenWithIt) {
  // No orphans: the children die with their parent (PR_SET_PDEATHSIG), without any watcher.
  const auto run = run_processes({worker({"--devices", "3", "--timeout-ms", "20000", "--steps", "100",
                                          "--step-ms", "100", "--die-rank", "0", "--die-at-step", "3"})},
                                 60s);
  const std::string output = run.output();
  ASSERT_FALSE(run.timed_out) << output;
  EXPECT_TRUE(WIFSIGNALED(run.processes[0].status) && WTERMSIG(run.processes[0].status) == SIGKILL) << output;
  EXPECT_EQ(run.rank_pids.size(), 3u) << output;
  ASSERT_EQ(run.dying_ms.count(0), 1u) << output;
  EXPECT_LT(run.end_ms - run.dying_ms.at(0), 5000) << output;
  EXPECT_TRUE(run.left_behind.empty()) << output;
}

TEST(SubprocessLauncher, ChildFailingAfterRankZeroFinishedFailsTheRun) {
  // Rank 0 is done and waits for its children at exit: rank 2 exiting with status 3 still fails the run.
  const auto run = run_processes(
      {worker({"--devices", "3", "--timeout-ms", "20000", "--exit-rank", "2", "--exit-status", "3"})}, 60s);
  const std::string output = run.output();
  ASSERT_FALSE(run.timed_out) << output;
  EXPECT_TRUE(WIFEXITED(run.processes[0].status) && WEXITSTATUS(run.processes[0].status) == 1) << output;
  ASSERT_EQ(run.rank_pids.count(2), 1u) << output;
  EXPECT_NE(
      output.find("volt: rank 2 (pid " + std::to_string(run.rank_pids.at(2)) + ") exited with status 3"),
      std::string::npos)
      << output;
  EXPECT_TRUE(run.left_behind.empty()) << output;
}

TEST(SubprocessLauncher, ChildStillRunningAfterTheExitTimeoutIsKilled) {
  // Rank 1 lingers 90 s after its work; rank 0 waits 2 s for it at exit, then stops it and exits 1.
  const auto run = run_processes({worker({"--devices", "2", "--timeout-ms", "20000", "--linger-rank", "1",
                                          "--linger-ms", "90000", "--exit-timeout-ms", "2000"})},
                                 120s);
  const std::string output = run.output();
  ASSERT_FALSE(run.timed_out) << output;
  EXPECT_TRUE(WIFEXITED(run.processes[0].status) && WEXITSTATUS(run.processes[0].status) == 1) << output;
  EXPECT_NE(output.find("rank 1 of 2 ok"), std::string::npos) << output;
  EXPECT_NE(output.find("was still running 2.0 s after rank 0 finished; stopping it"), std::string::npos)
      << output;
  EXPECT_LT(run.seconds, 60.0) << output;  // start-up on a loaded machine + 2 s, far from the 90 s linger
  EXPECT_TRUE(run.left_behind.empty()) << output;
}

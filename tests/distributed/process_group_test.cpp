// Process groups across real processes over loopback (and two network namespaces): the same worker under
// torchrun and under SLURM's variables, and every failure a volt::Error naming the rank within the timeout.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "distributed/environment_detail.h"
#include "distributed/multi_process.h"
#include "python_oracle.h"
#include "volt/torch_compat.h"

namespace {

using volt::testing::Command;
using volt::testing::count;
using volt::testing::run_processes;
using volt::testing::worker;
using namespace std::chrono_literals;

// A free port in 15000..24999, the range Lightning derives from a SLURM job id.
int free_port_in_slurm_range() {
  for (int port = 15000 + static_cast<int>(getpid() % 9000); port < 25000; ++port) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<uint16_t>(port));
    const bool free = bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
    close(fd);
    if (free) return port;
  }
  return -1;
}

std::vector<Command> slurm_job(int tasks, int port, std::vector<std::string> arguments) {
  std::vector<Command> commands;
  for (int r = 0; r < tasks; ++r) {
    arguments.insert(arguments.begin(), {"--devices", std::to_string(tasks)});
    commands.push_back(
        worker(arguments, {{"SLURM_NTASKS", std::to_string(tasks)},
                           {"SLURM_PROCID", std::to_string(r)},
                           {"SLURM_LOCALID", std::to_string(r)},
                           {"SLURM_NODEID", "0"},
                           {"SLURM_NNODES", "1"},
                           {"SLURM_NTASKS_PER_NODE", std::to_string(tasks)},
                           {"SLURM_NODELIST", "127.0.0.[1-2]"},
                           {"SLURM_JOB_NAME", "volt-test"},
                           {"SLURM_JOB_ID", "77" + std::to_string(10000 + port - 15000).substr(1)}}));
    arguments.erase(arguments.begin(), arguments.begin() + 2);
  }
  return commands;
}

// torchrun for this LibTorch: the venv's torchrun serves its own store to the workers, which LibTorch 1.13's
// store client cannot talk to; there, rank 0 hosts volt's store (c10d rendezvous without a shared store).
Command torchrun_command(const std::string& torchrun, std::vector<std::string> worker_arguments) {
  const std::string port = std::to_string(volt::detail::free_loopback_port());
  Command command{{torchrun, "--no-python", "--nproc-per-node", "2", "--monitor-interval", "0.2"}, {}};
  if (volt::compat::kTcpStoreSpeaksTorch2Protocol) {
    command.argv.insert(command.argv.end(), {"--master-addr", "127.0.0.1", "--master-port", port});
  } else {
    command.argv.insert(command.argv.end(),
                        {"--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:" + port});
    command.env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1";
  }
  command.argv.push_back(volt::testing::dist_worker());
  command.argv.insert(command.argv.end(), worker_arguments.begin(), worker_arguments.end());
  return command;
}

}  // namespace

TEST(ProcessGroup, SlurmTasksFindTheirRanksAndPassEveryCollective) {
  const int port = free_port_in_slurm_range();
  ASSERT_GT(port, 0);
  const auto run = run_processes(slurm_job(3, port, {"--timeout-ms", "20000"}), 60s);
  const std::string output = run.output();
  ASSERT_FALSE(run.timed_out) << output;
  for (const auto& process : run.processes) EXPECT_TRUE(process.exited_zero()) << output;
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(count(output, "rank " + std::to_string(r) + " of 3 ok"), 1) << output;
    // The master is the first host of "127.0.0.[1-2]", the port 15000 + the job id's last four digits.
    EXPECT_NE(output.find("rank " + std::to_string(r) + " pid " + std::to_string(run.rank_pids.at(r)) +
                          " detected slurm: local " + std::to_string(r) +
                          " of 3, node 0 of 1, world 3, master "
                          "127.0.0.1:" +
                          std::to_string(port)),
              std::string::npos)
        << output;
  }
  EXPECT_TRUE(run.left_behind.empty()) << output;
}

TEST(ProcessGroup, CollectiveFailureNamesTheRankThatDied) {
  // No launcher watches these SLURM tasks: the survivors' collectives fail, and their volt::Error names
  // the dead rank by the pid it published, within the 8 s timeout.
  const int port = free_port_in_slurm_range();
  ASSERT_GT(port, 0);
  const auto run = run_processes(slurm_job(3, port,
                                           {"--timeout-ms", "8000", "--steps", "100", "--step-ms", "50",
                                            "--die-rank", "2", "--die-at-step", "3"}),
                                 60s);
  const std::string output = run.output();
  ASSERT_FALSE(run.timed_out) << output;
  ASSERT_EQ(run.rank_pids.count(2), 1u) << output;
  EXPECT_TRUE(WIFSIGNALED(run.processes[2].status)) << output;
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(WIFEXITED(run.processes[r].status) && WEXITSTATUS(run.processes[r].status) == 2) << output;
    EXPECT_NE(
        run.processes[r].output.find("failed on rank " + std::to_string(r) + " of 3 (gloo, timeout 8 s"),
        std::string::npos)
        << output;
    EXPECT_NE(
        run.processes[r].output.find("rank 2 (pid " + std::to_string(run.rank_pids.at(2)) + ") is gone"),
        std::string::npos)
        << output;
  }
  ASSERT_EQ(run.dying_ms.count(2), 1u) << output;
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(run.error_ms.count(r), 1u) << output;
    EXPECT_LT(run.error_ms.at(r) - run.dying_ms.at(2), 8000 + 2000) << output;  // within the timeout
  }
  EXPECT_TRUE(run.left_behind.empty()) << output;
}

TEST(DeviceMesh, TwoByTwoMeshGivesEachRankItsRowAndColumnGroups) {
  // Subgroups, a new_group with reordered ranks and a layout sharded along dimension 1, all checked by value.
  const int port = free_port_in_slurm_range();
  ASSERT_GT(port, 0);
  const auto run =
      run_processes(slurm_job(4, port, {"--timeout-ms", "20000", "--steps", "1", "--mesh", "1"}), 90s);
  const std::string output = run.output();
  ASSERT_FALSE(run.timed_out) << output;
  for (const auto& process : run.processes) EXPECT_TRUE(process.exited_zero()) << output;
  for (int r = 0; r < 4; ++r) EXPECT_EQ(count(output, "rank " + std::to_string(r) + " of 4 ok"), 1) << output;
  EXPECT_TRUE(run.left_behind.empty()) << output;
}

TEST(DeviceMesh, ASubgroupMemberThatDiesIsNamedByItsGlobalRankWithinTheTimeout) {
  // Rank 3 dies once the mesh is built: rank 2, its partner in the shard group [2, 3], names it.
  const int port = free_port_in_slurm_range();
  ASSERT_GT(port, 0);
  const auto run = run_processes(
      slurm_job(4, port, {"--timeout-ms", "6000", "--steps", "1", "--mesh", "1", "--mesh-die-rank", "3"}),
      90s);
  const std::string output = run.output();
  ASSERT_FALSE(run.timed_out) << output;
  ASSERT_EQ(run.rank_pids.count(3), 1u) << output;
  EXPECT_TRUE(WIFSIGNALED(run.processes[3].status)) << output;
  EXPECT_TRUE(WIFEXITED(run.processes[2].status) && WEXITSTATUS(run.processes[2].status) == 2) << output;
  EXPECT_NE(
      run.processes[2].output.find("all_reduce failed on rank 0 of 2 (gloo, subgroup of global ranks [2, 3]"),
      std::string::npos)
      << output;
  EXPECT_NE(
      run.processes[2].output.find("global rank 3 (pid " + std::to_string(run.rank_pids.at(3)) + ") is gone"),
      std::string::npos)
      << output;
  ASSERT_EQ(run.dying_ms.count(3), 1u) << output;
  ASSERT_EQ(run.error_ms.count(2), 1u) << output;
  EXPECT_LT(run.error_ms.at(2) - run.dying_ms.at(3), 6000 + 2000) << output;
  EXPECT_TRUE(run.left_behind.empty()) << output;
}

TEST(DeviceMesh, ARankThatNeverJoinsItsSubgroupIsNamedWithinTheTimeout) {
  const int port = free_port_in_slurm_range();
  ASSERT_GT(port, 0);
  const auto run = run_processes(
      slurm_job(4, port, {"--timeout-ms", "5000", "--steps", "1", "--mesh", "1", "--mesh-skip-rank", "3"}),
      90s);
  const std::string output = run.output();
  ASSERT_FALSE(run.timed_out) << output;
  // Rank 1 meets rank 3 in the replicate group [1, 3] first.
  EXPECT_TRUE(WIFEXITED(run.processes[1].status) && WEXITSTATUS(run.processes[1].status) == 2) << output;
  EXPECT_NE(run.processes[1].output.find(
                "global rank 3 did not join the subgroup of global ranks [1, 3] within 5 s"),
            std::string::npos)
      << output;
  EXPECT_TRUE(run.left_behind.empty()) << output;
}

TEST(ProcessGroup, RankThatNeverJoinsIsNamedWithinTheTimeout) {
  // 15 s: on a loaded machine the launched ranks may start seconds after rank 0 (the store host) joins.
  const auto run =
      run_processes({worker({"--devices", "3", "--timeout-ms", "15000", "--never-join-rank", "2"})}, 90s);
  const std::string output = run.output();
  ASSERT_FALSE(run.timed_out) << output;
  EXPECT_FALSE(run.processes[0].exited_zero()) << output;
  EXPECT_NE(output.find("rank 2 of 3 did not join the rendezvous at 127.0.0.1:"), std::string::npos)
      << output;
  EXPECT_NE(output.find("within 15 s"), std::string::npos) << output;
  // Rank 0 waits the whole timeout for rank 2, not less and not much more; the run ends soon after.
  ASSERT_EQ(run.joining_ms.count(0), 1u) << output;
  ASSERT_EQ(run.error_ms.count(0), 1u) << output;
  EXPECT_GE(run.error_ms.at(0) - run.joining_ms.at(0), 14900) << output;
  EXPECT_LT(run.error_ms.at(0) - run.joining_ms.at(0), 15000 + 3000) << output;
  long long last_error = 0;
  for (const auto& [rank, at] : run.error_ms) last_error = std::max(last_error, at);
  EXPECT_LT(run.end_ms - last_error, 5000) << output;
  EXPECT_TRUE(run.left_behind.empty()) << output;
}

TEST(ProcessGroup, RankWhoseStoreNeverAppearsTimesOutSayingWhere) {
  const int port = volt::detail::free_loopback_port();  // nobody listens there
  const auto run = run_processes(
      {worker({"--devices", "2", "--timeout-ms", "2000"}, {{"RANK", "1"},
                                                           {"LOCAL_RANK", "1"},
                                                           {"WORLD_SIZE", "2"},
                                                           {"LOCAL_WORLD_SIZE", "2"},
                                                           {"MASTER_ADDR", "127.0.0.1"},
                                                           {"MASTER_PORT", std::to_string(port)}})},
      60s);
  const std::string output = run.output();
  ASSERT_FALSE(run.timed_out) << output;
  EXPECT_TRUE(WIFEXITED(run.processes[0].status) && WEXITSTATUS(run.processes[0].status) == 2) << output;
  EXPECT_NE(output.find("rank 1 of 2 cannot reach the rendezvous store at 127.0.0.1:" + std::to_string(port) +
                        " within 2 s"),
            std::string::npos)
      << output;
  ASSERT_EQ(run.joining_ms.count(1), 1u) << output;
  ASSERT_EQ(run.error_ms.count(1), 1u) << output;
  EXPECT_LT(run.error_ms.at(1) - run.joining_ms.at(1), 2000 + 4000) << output;
}

TEST(ProcessGroup, SameWorkerUnderTorchrun) {
  const std::string torchrun = volt::testing::venv_torchrun();
  if (torchrun.empty()) GTEST_SKIP() << "no torchrun in the test venv (run scripts/install-deps.sh)";
  const auto run =
      run_processes({torchrun_command(torchrun, {"--devices", "2", "--timeout-ms", "20000"})}, 120s);
  const std::string output = run.output();
  ASSERT_FALSE(run.timed_out) << output;
  EXPECT_TRUE(run.processes[0].exited_zero()) << output;
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(count(output, "rank " + std::to_string(r) + " of 2 ok"), 1) << output;
    ASSERT_EQ(run.rank_pids.count(r), 1u) << output;
    EXPECT_NE(output.find("rank " + std::to_string(r) + " pid " + std::to_string(run.rank_pids.at(r)) +
                          " detected torchrun: local " + std::to_string(r) + " of 2"),
              std::string::npos)
        << output;
  }
  EXPECT_TRUE(run.left_behind.empty()) << output;
}

TEST(ProcessGroup, RankKilledUnderTorchrunEndsTheRunWithNoWorkerLeft) {
  const std::string torchrun = volt::testing::venv_torchrun();
  if (torchrun.empty()) GTEST_SKIP() << "no torchrun in the test venv (run scripts/install-deps.sh)";
  const auto run = run_processes(
      {torchrun_command(torchrun, {"--devices", "2", "--timeout-ms", "20000", "--steps", "100", "--step-ms",
                                   "100", "--die-rank", "1", "--die-at-step", "3"})},
      120s);
  const std::string output = run.output();
  ASSERT_FALSE(run.timed_out) << output;
  EXPECT_FALSE(run.processes[0].exited_zero()) << output;
  EXPECT_EQ(run.rank_pids.size(), 2u) << output;
  ASSERT_EQ(run.dying_ms.count(1), 1u) << output;
  EXPECT_LT(run.end_ms - run.dying_ms.at(1), 15000)
      << output;  // torchrun stops the run, not the 20 s timeout
  EXPECT_EQ(count(output, " ok\n"), 0) << output;
  EXPECT_TRUE(run.left_behind.empty()) << output;
}

TEST(ProcessGroup, OldStoreClientUnderANewerTorchrunAgentIsAClearErrorNotAHang) {
  const std::string torchrun = volt::testing::venv_torchrun();
  if (torchrun.empty()) GTEST_SKIP() << "no torchrun in the test venv (run scripts/install-deps.sh)";
  if (volt::compat::kTcpStoreSpeaksTorch2Protocol)
    GTEST_SKIP()
        << "this LibTorch's TCPStore client speaks the agent store's protocol (see SameWorkerUnderTorchrun)";
  const std::string port = std::to_string(volt::detail::free_loopback_port());
  const auto run = run_processes({{{torchrun, "--no-python", "--nproc-per-node", "2", "--monitor-interval",
                                    "0.2", "--master-addr", "127.0.0.1", "--master-port", port,
                                    volt::testing::dist_worker(), "--devices", "2", "--timeout-ms", "60000"},
                                   {}}},
                                 120s);
  const std::string output = run.output();
  ASSERT_FALSE(run.timed_out) << output;
  EXPECT_FALSE(run.processes[0].exited_zero()) << output;
  EXPECT_NE(output.find("TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"), std::string::npos) << output;
  ASSERT_FALSE(run.joining_ms.empty()) << output;
  EXPECT_LT(run.end_ms - run.joining_ms.begin()->second, 30000) << output;  // well before the 60 s timeout
  EXPECT_TRUE(run.left_behind.empty()) << output;
}

namespace {

// Two network namespaces joined by a veth pair, in a /24 that exists only inside them; deleted on every
// path (deleting a namespace deletes its end of the pair, and the pair with it).
class NamespacePair {
 public:
  NamespacePair() {
    const std::string id = std::to_string(getpid() % 100000);
    first_ = "volt-" + id + "-a";
    second_ = "volt-" + id + "-b";
    subnet_ = "10.213." + std::to_string(getpid() % 250) + ".";
    const std::string veth_a = "vva" + id, veth_b = "vvb" + id;
    const std::vector<std::string> steps = {
        "ip netns add " + first_,
        "ip netns add " + second_,
        "ip link add " + veth_a + " netns " + first_ + " type veth peer name " + veth_b + " netns " + second_,
        "ip -n " + first_ + " addr add " + subnet_ + "1/24 dev " + veth_a,
        "ip -n " + second_ + " addr add " + subnet_ + "2/24 dev " + veth_b,
        "ip -n " + first_ + " link set lo up",
        "ip -n " + second_ + " link set lo up",
        "ip -n " + first_ + " link set " + veth_a + " up",
        "ip -n " + second_ + " link set " + veth_b + " up",
    };
    for (const auto& step : steps) {
      const auto result = volt::testing::run_command(step);
      if (result.exit_code != 0) {
        error_ = step + ": " + result.output;
        return;
      }
    }
  }
  ~NamespacePair() {
    volt::testing::run_command("ip netns del " + first_);
    volt::testing::run_command("ip netns del " + second_);
  }
  NamespacePair(const NamespacePair&) = delete;
  NamespacePair& operator=(const NamespacePair&) = delete;

  const std::string& error() const { return error_; }
  const std::string& first() const { return first_; }
  const std::string& second() const { return second_; }
  std::string address(int host) const { return subnet_ + std::to_string(host); }

 private:
  std::string first_, second_, subnet_, error_;
};

}  // namespace

TEST(ProcessGroup, TwoNodesInTwoNetworkNamespacesOverAVethPair) {
  if (access("/usr/sbin/ip", X_OK) != 0 && access("/sbin/ip", X_OK) != 0 && access("/usr/bin/ip", X_OK) != 0)
    GTEST_SKIP() << "no ip command (install iproute2) to create network namespaces";
  NamespacePair namespaces;
  if (!namespaces.error().empty())
    GTEST_SKIP() << "cannot create two network namespaces joined by a veth pair here (needs root or "
                    "CAP_NET_ADMIN + CAP_SYS_ADMIN): "
                 << namespaces.error();
  const std::string ip = access("/usr/sbin/ip", X_OK) == 0 ? "/usr/sbin/ip"
                         : access("/sbin/ip", X_OK) == 0   ? "/sbin/ip"
                                                           : "/usr/bin/ip";
  // Each node is started plainly with devices 2 and launches its second rank itself; node 1 reaches
  // node 0's store and Gloo devices only through the veth pair.
  std::vector<Command> nodes;
  for (int node = 0; node < 2; ++node) {
    nodes.push_back(
        {{ip, "netns", "exec", node == 0 ? namespaces.first() : namespaces.second(),
          volt::testing::dist_worker(), "--devices", "2", "--num-nodes", "2", "--timeout-ms", "20000"},
         {{"NODE_RANK", std::to_string(node)},
          {"MASTER_ADDR", namespaces.address(1)},
          {"MASTER_PORT", "29500"}}});
  }
  const auto run = run_processes(nodes, 90s);
  const std::string output = run.output();
  ASSERT_FALSE(run.timed_out) << output;
  for (const auto& process : run.processes) EXPECT_TRUE(process.exited_zero()) << output;
  for (int r = 0; r < 4; ++r) EXPECT_EQ(count(output, "rank " + std::to_string(r) + " of 4 ok"), 1) << output;
  EXPECT_NE(run.processes[1].output.find("node 1 of 2, world 4, master " + namespaces.address(1) + ":29500"),
            std::string::npos)
      << output;
  EXPECT_TRUE(run.left_behind.empty()) << output;
}

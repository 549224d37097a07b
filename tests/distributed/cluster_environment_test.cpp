#include "volt/distributed/cluster_environment.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>

#include "distributed/environment_detail.h"
#include "volt/error.h"

namespace {

// Every variable detect() reads: cleared for the test, restored afterwards.
const char* const kVariables[] = {"RANK",
                                  "LOCAL_RANK",
                                  "WORLD_SIZE",
                                  "LOCAL_WORLD_SIZE",
                                  "GROUP_RANK",
                                  "NODE_RANK",
                                  "MASTER_ADDR",
                                  "MASTER_PORT",
                                  "SLURM_NTASKS",
                                  "SLURM_PROCID",
                                  "SLURM_LOCALID",
                                  "SLURM_NODEID",
                                  "SLURM_NNODES",
                                  "SLURM_JOB_NUM_NODES",
                                  "SLURM_NTASKS_PER_NODE",
                                  "SLURM_TASKS_PER_NODE",
                                  "SLURM_NODELIST",
                                  "SLURM_JOB_NODELIST",
                                  "SLURM_JOB_ID",
                                  "SLURM_JOB_NAME"};

using Variables = std::map<std::string, std::string>;

class EnvironmentGuard {
 public:
  explicit EnvironmentGuard(const std::map<std::string, std::string>& values) {
    for (const char* name : kVariables) {
      const char* value = std::getenv(name);
      saved_[name] = value ? std::optional<std::string>(value) : std::nullopt;
      ::unsetenv(name);
    }
    for (const auto& [name, value] : values) ::setenv(name.c_str(), value.c_str(), 1);
  }
  ~EnvironmentGuard() {
    for (const auto& [name, value] : saved_) {
      if (value)
        ::setenv(name.c_str(), value->c_str(), 1);
      else
        ::unsetenv(name.c_str());
    }
  }
  EnvironmentGuard(const EnvironmentGuard&) = delete;
  EnvironmentGuard& operator=(const EnvironmentGuard&) = delete;

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

std::string error_of(int64_t devices, int64_t num_nodes) {
  try {
    volt::ClusterEnvironment::detect(devices, num_nodes);
  } catch (const volt::Error& error) {
    return error.what();
  }
  return "(no error)";
}

}  // namespace

TEST(ClusterEnvironment, NothingSetIsASingleProcessOnLoopbackWithAFreePort) {
  EnvironmentGuard guard({});
  const auto env = volt::ClusterEnvironment::detect(3, 1);
  EXPECT_EQ(env.source, "single");
  EXPECT_FALSE(env.launched_externally());
  EXPECT_EQ(env.global_rank, 0);
  EXPECT_EQ(env.local_rank, 0);
  EXPECT_EQ(env.world_size, 3);
  EXPECT_EQ(env.local_world_size, 3);
  EXPECT_EQ(env.num_nodes, 1);
  EXPECT_EQ(env.master_addr, "127.0.0.1");
  EXPECT_GT(env.master_port, 0);
  EXPECT_LE(env.master_port, 65535);
}

TEST(ClusterEnvironment, SingleMultiNodeReadsNodeRankAndMaster) {
  EnvironmentGuard guard({{"NODE_RANK", "1"}, {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29400"}});
  const auto env = volt::ClusterEnvironment::detect(2, 3);
  EXPECT_EQ(env.source, "single");
  EXPECT_EQ(env.node_rank, 1);
  EXPECT_EQ(env.global_rank, 2);
  EXPECT_EQ(env.world_size, 6);
  EXPECT_EQ(env.local_world_size, 2);
  EXPECT_EQ(env.num_nodes, 3);
  EXPECT_EQ(env.master_addr, "10.0.0.1");
  EXPECT_EQ(env.master_port, 29400);
}

TEST(ClusterEnvironment, SingleMultiNodeWithoutMasterSaysWhatToSet) {
  EnvironmentGuard guard(Variables{{"NODE_RANK", "1"}});
  const auto message = error_of(2, 2);
  EXPECT_NE(message.find("MASTER_ADDR"), std::string::npos) << message;
  EXPECT_NE(message.find("MASTER_PORT"), std::string::npos) << message;
  EXPECT_EQ(message.find("NODE_RANK,"), std::string::npos) << message;  // NODE_RANK is set: not listed
}

TEST(ClusterEnvironment, SingleNodeRankBeyondNumNodesIsAnError) {
  EnvironmentGuard guard({{"NODE_RANK", "2"}, {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29400"}});
  EXPECT_NE(error_of(1, 2).find("NODE_RANK=2 is not below num_nodes=2"), std::string::npos) << error_of(1, 2);
}

TEST(ClusterEnvironment, TorchrunVariables) {
  EnvironmentGuard guard({{"RANK", "3"},
                          {"LOCAL_RANK", "1"},
                          {"WORLD_SIZE", "4"},
                          {"LOCAL_WORLD_SIZE", "2"},
                          {"GROUP_RANK", "1"},
                          {"MASTER_ADDR", "node7"},
                          {"MASTER_PORT", "29501"}});
  const auto env = volt::ClusterEnvironment::detect(2, 2);
  EXPECT_EQ(env.source, "torchrun");
  EXPECT_TRUE(env.launched_externally());
  EXPECT_EQ(env.global_rank, 3);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.node_rank, 1);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_world_size, 2);
  EXPECT_EQ(env.num_nodes, 2);
  EXPECT_EQ(env.master_addr, "node7");
  EXPECT_EQ(env.master_port, 29501);
}

TEST(ClusterEnvironment, TorchrunNodeRankWhenNoGroupRankAndDerivedWhenNeither) {
  {
    EnvironmentGuard guard({{"RANK", "2"},
                            {"LOCAL_RANK", "0"},
                            {"WORLD_SIZE", "4"},
                            {"LOCAL_WORLD_SIZE", "2"},
                            {"NODE_RANK", "1"},
                            {"MASTER_ADDR", "a"},
                            {"MASTER_PORT", "1234"}});
    EXPECT_EQ(volt::ClusterEnvironment::detect(1, 1).node_rank, 1);
  }
  EnvironmentGuard guard({{"RANK", "5"},
                          {"LOCAL_RANK", "1"},
                          {"WORLD_SIZE", "6"},
                          {"LOCAL_WORLD_SIZE", "2"},
                          {"MASTER_ADDR", "a"},
                          {"MASTER_PORT", "1234"}});
  const auto env = volt::ClusterEnvironment::detect(1, 1);  // devices x nodes = 1: any world is accepted
  EXPECT_EQ(env.node_rank, 2);
  EXPECT_EQ(env.num_nodes, 3);
}

TEST(ClusterEnvironment, TorchrunContradictionsNameTheVariable) {
  const std::map<std::string, std::string> base = {
      {"LOCAL_RANK", "0"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}};
  auto with = [&](std::map<std::string, std::string> extra) {
    extra.insert(base.begin(), base.end());
    return extra;
  };
  {
    EnvironmentGuard guard(with({{"RANK", "2"}, {"WORLD_SIZE", "2"}}));
    EXPECT_NE(error_of(1, 1).find("RANK=2 is not below WORLD_SIZE=2"), std::string::npos) << error_of(1, 1);
  }
  {
    EnvironmentGuard guard(with({{"RANK", "0"}, {"WORLD_SIZE", "4"}, {"LOCAL_WORLD_SIZE", "4"}}));
    const auto message = error_of(2, 1);
    EXPECT_NE(message.find("WORLD_SIZE=4"), std::string::npos) << message;
    EXPECT_NE(message.find("devices=2 x num_nodes=1 = 2"), std::string::npos) << message;
    EXPECT_NE(message.find("--nproc-per-node"), std::string::npos) << message;
  }
  {
    EnvironmentGuard guard(with({{"RANK", "abc"}, {"WORLD_SIZE", "2"}}));
    EXPECT_NE(error_of(1, 1).find("RANK='abc' is not a non-negative integer"), std::string::npos)
        << error_of(1, 1);
  }
  {
    EnvironmentGuard guard({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "x"}});
    EXPECT_NE(error_of(1, 1).find("MASTER_PORT is not"), std::string::npos) << error_of(1, 1);
  }
  {
    EnvironmentGuard guard(Variables{{"WORLD_SIZE", "2"}});
    EXPECT_NE(error_of(1, 1).find("WORLD_SIZE is set but RANK is not"), std::string::npos) << error_of(1, 1);
  }
  {
    EnvironmentGuard guard(
        with({{"RANK", "1"}, {"LOCAL_RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}}));
    EXPECT_NE(error_of(1, 1).find("MASTER_PORT=70000"), std::string::npos) << error_of(1, 1);
  }
}

TEST(ClusterEnvironment, TorchrunTakesPrecedenceOverSlurm) {
  EnvironmentGuard guard({{"RANK", "1"},
                          {"LOCAL_RANK", "1"},
                          {"WORLD_SIZE", "2"},
                          {"MASTER_ADDR", "127.0.0.1"},
                          {"MASTER_PORT", "29500"},
                          {"SLURM_NTASKS", "8"},
                          {"SLURM_PROCID", "5"},
                          {"SLURM_LOCALID", "1"}});
  const auto env = volt::ClusterEnvironment::detect(2, 1);
  EXPECT_EQ(env.source, "torchrun");
  EXPECT_EQ(env.global_rank, 1);
}

TEST(ClusterEnvironment, SlurmVariablesAsLightningReadsThem) {
  EnvironmentGuard guard({{"SLURM_NTASKS", "8"},
                          {"SLURM_PROCID", "5"},
                          {"SLURM_LOCALID", "1"},
                          {"SLURM_NODEID", "1"},
                          {"SLURM_NNODES", "2"},
                          {"SLURM_NTASKS_PER_NODE", "4"},
                          {"SLURM_NODELIST", "gpu-node[03-05,07],other1"},
                          {"SLURM_JOB_ID", "1234567"}});
  const auto env = volt::ClusterEnvironment::detect(4, 2);
  EXPECT_EQ(env.source, "slurm");
  EXPECT_EQ(env.global_rank, 5);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.node_rank, 1);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_world_size, 4);
  EXPECT_EQ(env.num_nodes, 2);
  EXPECT_EQ(env.master_addr, "gpu-node03");
  EXPECT_EQ(env.master_port, 15000 + 4567);  // Lightning's SLURMEnvironment.main_port
}

TEST(ClusterEnvironment, SlurmMasterFromEnvironmentAndTasksPerNodeDerived) {
  EnvironmentGuard guard({{"SLURM_NTASKS", "6"},
                          {"SLURM_PROCID", "0"},
                          {"SLURM_LOCALID", "0"},
                          {"SLURM_NODEID", "0"},
                          {"SLURM_JOB_NUM_NODES", "3"},
                          {"SLURM_NODELIST", "a,b,c"},
                          {"MASTER_ADDR", "10.1.2.3"},
                          {"MASTER_PORT", "40000"}});
  const auto env = volt::ClusterEnvironment::detect(2, 3);
  EXPECT_EQ(env.local_world_size, 2);
  EXPECT_EQ(env.num_nodes, 3);
  EXPECT_EQ(env.master_addr, "10.1.2.3");
  EXPECT_EQ(env.master_port, 40000);
}

TEST(ClusterEnvironment, SlurmTasksPerNodeContradictingDevicesSaysBothFixes) {
  EnvironmentGuard guard({{"SLURM_NTASKS", "4"},
                          {"SLURM_PROCID", "0"},
                          {"SLURM_LOCALID", "0"},
                          {"SLURM_NODEID", "0"},
                          {"SLURM_NNODES", "1"},
                          {"SLURM_NTASKS_PER_NODE", "4"}});
  const auto message = error_of(2, 1);
  EXPECT_NE(message.find("devices=2"), std::string::npos) << message;
  EXPECT_NE(message.find("--ntasks-per-node=2"), std::string::npos) << message;
  EXPECT_NE(message.find("devices(4)"), std::string::npos) << message;
}

TEST(ClusterEnvironment, SlurmInteractiveShellIsNotAManagedJob) {
  EnvironmentGuard guard({{"SLURM_NTASKS", "4"}, {"SLURM_PROCID", "2"}, {"SLURM_JOB_NAME", "bash"}});
  EXPECT_EQ(volt::ClusterEnvironment::detect(1, 1).source, "single");
}

TEST(ClusterEnvironment, SlurmWithoutProcidSaysToUseSrun) {
  EnvironmentGuard guard(Variables{{"SLURM_NTASKS", "4"}});
  EXPECT_NE(error_of(1, 1).find("srun"), std::string::npos) << error_of(1, 1);
}

TEST(ClusterEnvironment, FirstHostOfSlurmNodeLists) {
  using volt::detail::first_slurm_host;
  EXPECT_EQ(first_slurm_host("node[03-05,07]"), "node03");
  EXPECT_EQ(first_slurm_host("node[7]"), "node7");
  EXPECT_EQ(first_slurm_host("node[10,2-3]"), "node10");
  EXPECT_EQ(first_slurm_host("host0,host1"), "host0");
  EXPECT_EQ(first_slurm_host("host0 host1"), "host0");
  EXPECT_EQ(first_slurm_host("rack[1-2]-n[01-04],x"), "rack1-n01");
  EXPECT_EQ(first_slurm_host("127.0.0.[1-2]"), "127.0.0.1");
  EXPECT_EQ(first_slurm_host("single"), "single");
}

TEST(ClusterEnvironment, FreeLoopbackPortCanBeBound) {
  const int port = volt::detail::free_loopback_port();
  EXPECT_GT(port, 0);
  EXPECT_LE(port, 65535);
}

TEST(ClusterEnvironment, RejectsZeroDevices) {
  EnvironmentGuard guard({});
  EXPECT_NE(error_of(0, 1).find("devices=0"), std::string::npos);
  EXPECT_NE(error_of(1, 0).find("num_nodes=0"), std::string::npos);
}

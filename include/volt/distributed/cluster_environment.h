// Who this process is in a multi-process run — global and local rank, world size, node, and where rank 0's
// store listens — read from the variables torchrun sets (volt's own launcher sets the same ones) or from
// SLURM's, as Lightning's cluster environments read them.
//
//   auto env = volt::ClusterEnvironment::detect(/*devices=*/2, /*num_nodes=*/1);
//   if (env.source == ClusterSource::kSingle) ...  // nothing set: this process launches the others itself
#pragma once

#include <cstdint>
#include <string>

#include "volt/named_enum.h"

namespace volt {

/// Where a process's rank came from (Lightning's cluster environments): "single" (nothing set),
/// "torchrun" (torchrun's variables, also set by volt's launcher) or "slurm".
struct ClusterSourceNames {
  enum Value { kSingle, kTorchrun, kSlurm };
  static constexpr const char* kNames[] = {"single", "torchrun", "slurm"};
  static constexpr const char* kWhat = "cluster source";
};
using ClusterSource = NamedEnum<ClusterSourceNames>;

struct ClusterEnvironment {
  ClusterSource source = ClusterSource::kSingle;
  int64_t global_rank = 0;
  int64_t local_rank = 0;
  int64_t node_rank = 0;
  int64_t world_size = 1;
  int64_t local_world_size = 1;
  int64_t num_nodes = 1;
  /// Where global rank 0 hosts the c10d TCPStore.
  std::string master_addr = "127.0.0.1";
  int master_port = 0;

  /// Reads the environment: torchrun's RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK or
  /// NODE_RANK, MASTER_ADDR, MASTER_PORT; else SLURM's SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS,
  /// SLURM_NODEID, the first host of SLURM_NODELIST (MASTER_PORT, else a port derived from SLURM_JOB_ID, as
  /// Lightning); else "single": rank 0 of `devices_per_node * num_nodes`, with NODE_RANK, MASTER_ADDR and
  /// MASTER_PORT read when set (multi-node by hand) and a free port picked otherwise. Throws volt::Error when
  /// the variables contradict each other or the Trainer's devices/num_nodes.
  static ClusterEnvironment detect(int64_t devices_per_node, int64_t num_nodes);

  /// Whether another program (torchrun, SLURM, volt's launcher in the parent) started this process.
  bool launched_externally() const { return source != ClusterSource::kSingle; }
};

}  // namespace volt

#include "volt/distributed/cluster_environment.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "environment_detail.h"
#include "volt/error.h"

namespace volt {
namespace detail {

std::optional<std::string> env_value(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

int64_t env_integer(const char* name, const std::string& value, const char* what) {
  const char* begin = value.c_str();
  char* end = nullptr;
  errno = 0;
  const long long parsed = std::strtoll(begin, &end, 10);
  VOLT_CHECK(errno == 0 && end != begin && *end == '\0' && parsed >= 0, "environment variable ", name, "='",
             value, "' is not a non-negative integer; it should hold ", what, ": fix it or unset it");
  return parsed;
}

std::string first_slurm_host(const std::string& nodelist) {
  // "node[03-05,07],gpu1" -> "node03"; "host0 host1" -> "host0"; "rack[1-2]-n[01-04]" -> "rack1-n01".
  std::string host;
  int depth = 0;
  bool in_first_item = false;  // inside brackets: copying the first number of the range until ',' or '-'
  for (char c : nodelist) {
    if (depth == 0 && (c == ',' || c == ' ')) {
      if (!host.empty()) break;
      continue;
    }
    if (c == '[') {
      ++depth;
      in_first_item = true;
      continue;
    }
    if (c == ']') {
      depth = depth > 0 ? depth - 1 : 0;
      in_first_item = false;
      continue;
    }
    if (depth > 0) {
      if (c == ',' || c == '-') in_first_item = false;
      if (in_first_item) host += c;
      continue;
    }
    host += c;
  }
  return host;
}

int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  VOLT_CHECK(fd >= 0, "cannot create a socket to pick a free port (", std::strerror(errno),
             "): set MASTER_PORT to a free TCP port");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  const int error = errno;
  ::close(fd);
  VOLT_CHECK(ok, "cannot bind a socket on 127.0.0.1 to pick a free port (", std::strerror(error),
             "): set MASTER_PORT to a free TCP port");
  return ntohs(address.sin_port);
}

}  // namespace detail

namespace {

using detail::env_integer;
using detail::env_value;

int master_port_from(const std::string& value, const char* origin) {
  const int64_t port = env_integer("MASTER_PORT", value, "the TCP port of rank 0's rendezvous store");
  VOLT_CHECK(port >= 1 && port <= 65535, "MASTER_PORT=", value, " (", origin,
             ") is not a TCP port: set it to a free port in 1..65535 on the host of rank 0");
  return static_cast<int>(port);
}

// The Trainer asked for devices x num_nodes processes; a launcher started world_size. With the defaults
// (1 x 1) any world is accepted, as a program that does not say how many processes it wants.
void check_world_matches(const ClusterEnvironment& env, int64_t devices, int64_t num_nodes,
                         const char* variable, const char* fix) {
  if (devices * num_nodes <= 1) return;
  VOLT_CHECK(env.world_size == devices * num_nodes, variable, "=", env.world_size, " (set by ", env.source,
             ") but the Trainer asked for devices=", devices, " x num_nodes=", num_nodes, " = ",
             devices * num_nodes, " processes: ", fix, ", or set devices/num_nodes to match");
}

ClusterEnvironment from_torchrun(int64_t devices, int64_t num_nodes) {
  ClusterEnvironment env;
  env.source = ClusterSource::kTorchrun;
  const auto rank = env_value("RANK");
  const auto world = env_value("WORLD_SIZE");
  const auto local_rank = env_value("LOCAL_RANK");
  const char* unset =
      "; set RANK, LOCAL_RANK and WORLD_SIZE together (torchrun does), or unset all of them to let "
      "volt launch the processes itself";
  VOLT_CHECK(rank.has_value(), "WORLD_SIZE is set but RANK is not", unset);
  VOLT_CHECK(world.has_value(), "RANK is set but WORLD_SIZE is not", unset);
  env.global_rank = env_integer("RANK", *rank, "this process's global rank");
  env.world_size = env_integer("WORLD_SIZE", *world, "the number of processes in the run");
  VOLT_CHECK(env.world_size >= 1, "WORLD_SIZE=0: the run needs at least one process; fix WORLD_SIZE");
  VOLT_CHECK(env.global_rank < env.world_size, "RANK=", env.global_rank,
             " is not below WORLD_SIZE=", env.world_size, ": each process needs a distinct RANK in 0..",
             env.world_size - 1, "; fix RANK or WORLD_SIZE");
  VOLT_CHECK(local_rank.has_value() || env.world_size == 1,
             "RANK and WORLD_SIZE are set but LOCAL_RANK is not", unset);
  env.local_rank = local_rank ? env_integer("LOCAL_RANK", *local_rank, "this process's rank on its node") : 0;

  if (const auto local_world = env_value("LOCAL_WORLD_SIZE"))
    env.local_world_size =
        env_integer("LOCAL_WORLD_SIZE", *local_world, "the number of processes on this node");
  else
    env.local_world_size = devices * num_nodes > 1 ? devices : env.world_size;
  VOLT_CHECK(env.local_world_size >= 1 && env.local_world_size <= env.world_size,
             "LOCAL_WORLD_SIZE=", env.local_world_size, " must be in 1..WORLD_SIZE=", env.world_size,
             "; fix LOCAL_WORLD_SIZE");
  VOLT_CHECK(env.local_rank < env.local_world_size, "LOCAL_RANK=", env.local_rank,
             " is not below LOCAL_WORLD_SIZE=", env.local_world_size,
             ": each process on a node needs a distinct LOCAL_RANK in 0..", env.local_world_size - 1,
             "; fix LOCAL_RANK or LOCAL_WORLD_SIZE");
  env.num_nodes = (env.world_size + env.local_world_size - 1) / env.local_world_size;

  if (const auto group_rank = env_value("GROUP_RANK"))
    env.node_rank = env_integer("GROUP_RANK", *group_rank, "this node's rank");
  else if (const auto node_rank = env_value("NODE_RANK"))
    env.node_rank = env_integer("NODE_RANK", *node_rank, "this node's rank");
  else
    env.node_rank = env.global_rank / env.local_world_size;
  VOLT_CHECK(env.node_rank < env.num_nodes, "the node rank (GROUP_RANK or NODE_RANK) is ", env.node_rank,
             " but WORLD_SIZE=", env.world_size, " / LOCAL_WORLD_SIZE=", env.local_world_size, " makes ",
             env.num_nodes, " node(s): fix NODE_RANK to 0..", env.num_nodes - 1);
  if (env.world_size % env.local_world_size == 0)
    VOLT_CHECK(env.global_rank == env.node_rank * env.local_world_size + env.local_rank,
               "RANK=", env.global_rank, " contradicts node rank ", env.node_rank,
               " x LOCAL_WORLD_SIZE=", env.local_world_size, " + LOCAL_RANK=", env.local_rank,
               ": fix RANK, LOCAL_RANK or NODE_RANK/GROUP_RANK");

  const auto addr = env_value("MASTER_ADDR");
  const auto port = env_value("MASTER_PORT");
  VOLT_CHECK((addr && port) || env.world_size == 1, "RANK and WORLD_SIZE are set but ",
             addr ? "MASTER_PORT" : "MASTER_ADDR",
             " is not: set MASTER_ADDR and MASTER_PORT to where rank 0's rendezvous store listens "
             "(torchrun sets them), or unset RANK and WORLD_SIZE to let volt launch the processes itself");
  env.master_addr = addr ? *addr : "127.0.0.1";
  env.master_port = port ? master_port_from(*port, "torchrun") : detail::free_loopback_port();

  check_world_matches(env, devices, num_nodes, "WORLD_SIZE",
                      "start torchrun with --nproc-per-node <devices> --nnodes <num_nodes>");
  if (devices * num_nodes > 1)
    VOLT_CHECK(env.local_world_size == devices, "LOCAL_WORLD_SIZE=", env.local_world_size,
               " (set by torchrun) but the Trainer asked for devices=", devices,
               " per node: start torchrun with --nproc-per-node ", devices, ", or set devices(",
               env.local_world_size, ")");
  return env;
}

bool slurm_interactive() {
  // Lightning's rule: an `salloc` shell or `srun --pty bash` is not a managed job; run as plain processes.
  const auto name = env_value("SLURM_JOB_NAME");
  return name && (*name == "bash" || *name == "interactive");
}

ClusterEnvironment from_slurm(int64_t devices, int64_t num_nodes) {
  ClusterEnvironment env;
  env.source = ClusterSource::kSlurm;
  const char* srun =
      ": start the program with srun (which sets SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID for each "
      "task), or unset SLURM_NTASKS to run it as a plain process";
  const auto procid = env_value("SLURM_PROCID");
  const auto localid = env_value("SLURM_LOCALID");
  const auto nodeid = env_value("SLURM_NODEID");
  VOLT_CHECK(procid.has_value(), "SLURM_NTASKS is set but SLURM_PROCID is not", srun);
  VOLT_CHECK(localid.has_value(), "SLURM_NTASKS is set but SLURM_LOCALID is not", srun);
  env.world_size = env_integer("SLURM_NTASKS", *env_value("SLURM_NTASKS"), "the number of tasks of the job");
  env.global_rank = env_integer("SLURM_PROCID", *procid, "this task's global rank");
  env.local_rank = env_integer("SLURM_LOCALID", *localid, "this task's rank on its node");
  env.node_rank = nodeid ? env_integer("SLURM_NODEID", *nodeid, "this node's rank") : 0;
  VOLT_CHECK(env.world_size >= 1, "SLURM_NTASKS=0: the job needs at least one task; fix SLURM_NTASKS");
  VOLT_CHECK(env.global_rank < env.world_size, "SLURM_PROCID=", env.global_rank,
             " is not below SLURM_NTASKS=", env.world_size,
             ": fix the job's --ntasks or the task's SLURM_PROCID");

  std::optional<int64_t> nodes;
  if (const auto nnodes = env_value("SLURM_NNODES"))
    nodes = env_integer("SLURM_NNODES", *nnodes, "the number of nodes of the job");
  else if (const auto job_nodes = env_value("SLURM_JOB_NUM_NODES"))
    nodes = env_integer("SLURM_JOB_NUM_NODES", *job_nodes, "the number of nodes of the job");
  if (const auto per_node = env_value("SLURM_NTASKS_PER_NODE")) {
    env.local_world_size = env_integer("SLURM_NTASKS_PER_NODE", *per_node, "the number of tasks per node");
  } else if (const auto tasks_per_node = env_value("SLURM_TASKS_PER_NODE")) {
    // "2(x3),1": the leading count is this job's usual tasks per node.
    env.local_world_size = std::strtoll(tasks_per_node->c_str(), nullptr, 10);
  } else if (nodes && *nodes > 0 && env.world_size % *nodes == 0) {
    env.local_world_size = env.world_size / *nodes;
  } else {
    env.local_world_size = devices * num_nodes > 1 ? devices : env.world_size;
  }
  VOLT_CHECK(env.local_world_size >= 1 && env.local_world_size <= env.world_size, "SLURM's tasks per node (",
             env.local_world_size, ") must be in 1..SLURM_NTASKS=", env.world_size,
             ": fix the job's --ntasks-per-node");
  VOLT_CHECK(env.local_rank < env.local_world_size, "SLURM_LOCALID=", env.local_rank,
             " is not below the tasks per node (", env.local_world_size,
             "): fix the job's --ntasks-per-node");
  env.num_nodes = nodes ? *nodes : (env.world_size + env.local_world_size - 1) / env.local_world_size;
  VOLT_CHECK(env.num_nodes >= 1 && env.node_rank < env.num_nodes, "SLURM_NODEID=", env.node_rank,
             " is not below the job's ", env.num_nodes, " node(s): fix the job's --nodes");

  if (const auto addr = env_value("MASTER_ADDR")) {
    env.master_addr = *addr;
  } else {
    const auto nodelist =
        env_value("SLURM_NODELIST") ? env_value("SLURM_NODELIST") : env_value("SLURM_JOB_NODELIST");
    env.master_addr = nodelist ? detail::first_slurm_host(*nodelist) : "127.0.0.1";
    VOLT_CHECK(!env.master_addr.empty(), "cannot read a host from SLURM_NODELIST='", *nodelist,
               "': set MASTER_ADDR to the host of global rank 0");
  }
  if (const auto port = env_value("MASTER_PORT")) {
    env.master_port = master_port_from(*port, "SLURM job");
  } else if (const auto job_id = env_value("SLURM_JOB_ID")) {
    // Lightning's SLURMEnvironment: the last four digits of the job id, moved into the 15000s.
    const std::string digits = job_id->size() > 4 ? job_id->substr(job_id->size() - 4) : *job_id;
    env.master_port = 15000 + static_cast<int>(env_integer("SLURM_JOB_ID", digits, "the job's numeric id"));
  } else {
    env.master_port = 12910;  // Lightning's default without a job id
  }

  if (devices * num_nodes > 1) {
    VOLT_CHECK(env.local_world_size == devices, "the SLURM job runs ", env.local_world_size,
               " task(s) per node (--ntasks-per-node) but the Trainer asked for devices=", devices,
               ": set devices(", env.local_world_size,
               ") or submit the job with --ntasks-per-node=", devices);
    VOLT_CHECK(env.num_nodes == num_nodes, "the SLURM job has ", env.num_nodes,
               " node(s) (--nodes) but the Trainer asked for num_nodes=", num_nodes, ": set num_nodes(",
               env.num_nodes, ") or submit the job with --nodes=", num_nodes);
    check_world_matches(env, devices, num_nodes, "SLURM_NTASKS",
                        "submit the job with --ntasks=devices*num_nodes");
  }
  return env;
}

ClusterEnvironment single(int64_t devices, int64_t num_nodes) {
  ClusterEnvironment env;
  env.source = ClusterSource::kSingle;
  env.local_world_size = devices;
  env.num_nodes = num_nodes;
  env.world_size = devices * num_nodes;
  const auto node_rank = env_value("NODE_RANK");
  const auto addr = env_value("MASTER_ADDR");
  const auto port = env_value("MASTER_PORT");
  if (num_nodes > 1) {
    VOLT_CHECK(node_rank && addr && port, "num_nodes=", num_nodes, " needs ", !node_rank ? "NODE_RANK" : "",
               !node_rank && (!addr || !port) ? ", " : "", !addr ? "MASTER_ADDR" : "",
               !addr && !port ? ", " : "", !port ? "MASTER_PORT" : "", " set on every node: NODE_RANK=0..",
               num_nodes - 1,
               " (a different one per node), MASTER_ADDR=<an address of node 0 the others can reach>, "
               "MASTER_PORT=<a free port there>, the same on every node");
  }
  env.node_rank = node_rank ? env_integer("NODE_RANK", *node_rank, "this node's rank") : 0;
  VOLT_CHECK(env.node_rank < num_nodes, "NODE_RANK=", env.node_rank, " is not below num_nodes=", num_nodes,
             ": set NODE_RANK to 0..", num_nodes - 1, " (a different one per node)");
  env.global_rank = env.node_rank * devices;
  env.local_rank = 0;
  env.master_addr = addr ? *addr : "127.0.0.1";
  env.master_port = port ? master_port_from(*port, "multi-node by hand") : detail::free_loopback_port();
  return env;
}

}  // namespace

ClusterEnvironment ClusterEnvironment::detect(int64_t devices_per_node, int64_t num_nodes) {
  VOLT_CHECK(devices_per_node >= 1, "devices=", devices_per_node,
             ": a run needs at least one device per node");
  VOLT_CHECK(num_nodes >= 1, "num_nodes=", num_nodes, ": a run needs at least one node");
  if (env_value("RANK") || env_value("WORLD_SIZE")) return from_torchrun(devices_per_node, num_nodes);
  if (env_value("SLURM_NTASKS") && !slurm_interactive()) return from_slurm(devices_per_node, num_nodes);
  return single(devices_per_node, num_nodes);
}

}  // namespace volt

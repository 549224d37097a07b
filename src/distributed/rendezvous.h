// The rendezvous of a process group: one c10d TCPStore per master address in a process (global rank 0, or
// torchrun's agent, hosts it), each group under its own key prefix, every rank publishing its host and pid
// so that a failed collective can name the rank that died. Every wait is bounded by the timeout.
#pragma once

#include <sys/types.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <exception>
#include <string>
#include <vector>

#include "volt/distributed/cluster_environment.h"

namespace volt::detail {

/// "8 s": a timeout as the error messages print it.
std::string seconds(std::chrono::milliseconds duration);
/// LibTorch's message without its C++ stack dump.
std::string message_of(const std::exception& error);
std::string this_host();
/// The address of this host on the route to `master_addr` (where Gloo binds, so that peers reach it).
std::string local_address_towards(const std::string& master_addr);

/// A rank as its peers see it: where it runs, to tell a dead one from a slow one.
struct Peer {
  std::string host;
  pid_t pid = 0;
};
/// Whether a peer on this host has ended: no such process, or a zombie its parent has not reaped yet.
bool process_gone(pid_t pid);

struct Joined {
  c10::intrusive_ptr<c10d::Store> store;        // the process's store for `where`
  c10::intrusive_ptr<c10d::Store> group_store;  // this group's prefix of it
  std::string prefix;                           // that prefix
  std::vector<Peer> peers;                      // by rank
};
/// Connects to (or, on global rank 0, hosts) the store at `where` and waits, at most `timeout`, until every
/// rank of `env` has published itself under the next group prefix. A missing rank, an unreachable or
/// silent store become a volt::Error saying which and what to check.
Joined join_world(const ClusterEnvironment& env, std::chrono::milliseconds timeout, const std::string& where);

/// A subgroup's rendezvous under `group_store` (a prefix of the world's store): this member (`rank` of
/// the subgroup) publishes itself and waits, at most `timeout`, for the others; `members` are their global
/// ranks, which name a missing one.
void join_subgroup(const c10::intrusive_ptr<c10d::Store>& group_store, int64_t rank,
                   const std::vector<int64_t>& members, std::chrono::milliseconds timeout,
                   const std::string& where);

}  // namespace volt::detail

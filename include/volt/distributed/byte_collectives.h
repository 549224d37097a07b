// Bytes over a process group — the strings, plans and pickles that ranks must agree on (a log directory, a
// checkpoint's save plan, whether every rank wrote its part) — as tensors on the group's device, so that
// they travel over NCCL as over Gloo. The one home of object collectives in volt.
//
//   const std::string dir = volt::broadcast_bytes(*group, rank == 0 ? chosen : "", /*src=*/0);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "volt/distributed/process_group.h"

namespace volt {

/// Rank `src`'s `bytes` on every rank (the others' `bytes` are ignored). Collective.
std::string broadcast_bytes(ProcessGroup& group, const std::string& bytes, int64_t src = 0);
/// Every rank's `bytes`, in rank order; ranks may pass different lengths. Collective.
std::vector<std::string> all_gather_bytes(ProcessGroup& group, const std::string& bytes);

}  // namespace volt

// What a strategy is built from (the Trainer's accelerator, devices, precision and distributed settings), as
// Lightning's accelerator connector hands them to its strategies. A strategy object a user builds takes
// the same options:
//
//   auto strategy = std::make_shared<volt::DDPStrategy>(volt::StrategyOptions().devices(2));
#pragma once

#include <torch/arg.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "volt/core/precision.h"
#include "volt/init/init_options.h"
#include "volt/strategies/sharding_options.h"

namespace volt {

class PrecisionPlugin;

struct StrategyOptions {
  /// The registered name the strategy was asked for ("auto", "ddp", "fsdp", ...; see StrategyRegistry).
  TORCH_ARG(std::string, name) = "auto";
  TORCH_ARG(std::string, accelerator) = "auto";
  /// Devices per node (processes per node on the CPU).
  TORCH_ARG(int64_t, devices) = 1;
  TORCH_ARG(int64_t, num_nodes) = 1;
  TORCH_ARG(Precision, precision) = Precision("32-true");
  /// A precision plugin of the user's own (Lightning's `plugins=`); null: the one `precision` names.
  TORCH_ARG(std::shared_ptr<PrecisionPlugin>, precision_plugin) = nullptr;
  TORCH_ARG(InitRng, init_rng) = InitRng::kCounter;
  /// Bound of every rendezvous and collective wait (Lightning's default_pg_timeout is 30 minutes).
  TORCH_ARG(std::chrono::milliseconds, timeout) = std::chrono::minutes(30);
  /// DDP's gradient bucket size (PyTorch's bucket_cap_mb = 25).
  TORCH_ARG(int64_t, bucket_cap_bytes) = 25 * 1024 * 1024;
  /// DDP: rank 0's buffers (BatchNorm statistics) are broadcast before each training step, as PyTorch's
  /// DistributedDataParallel(broadcast_buffers=True).
  TORCH_ARG(bool, broadcast_buffers) = true;
  /// Sharded strategies (FSDP and the ZeRO stages): units, mixed precision, checkpoint layout.
  TORCH_ARG(ShardingOptions, sharding) = {};
};

}  // namespace volt

// How an init scope builds tensors: where, in which dtype, with real or empty memory, and which generator.
#pragma once

#include "volt/init/init_stream.h"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Optional.h>
#include <torch/arg.h>

#include <cstdint>

namespace volt {

enum class InitMode {
  /// Real memory, real initialization, on the target device and dtype (the default).
  kMaterialize,
  /// Real but uninitialized memory for parameters: their random init is skipped (a checkpoint fills
  /// them) and recorded, so that whatever no checkpoint fills can be repaired exactly
  /// (volt/init/uninitialized.h; load_state_dict does it); constant fills and buffers computed by model
  /// code still run, so buffers are exact.
  kEmpty,
  /// No memory at all: tensors on the meta device, with shapes and dtypes only.
  kMeta,
  /// Meta tensors whose init is recorded: every tensor built in the scope can later be materialized,
  /// whole or any slice of it, on any device, with the values a kMaterialize scope with the same seed
  /// gives (volt/init/deferred_init.h). The scope's device option is ignored: materialization names it.
  kDeferred,
};

enum class InitRng {
  /// volt's counter-based generator (counter_rng.h): parallel, keyed per tensor, the same on every
  /// device and shard. Values differ from LibTorch's generator but are reproducible under
  /// torch::manual_seed.
  kCounter,
  /// LibTorch's own default generator, serial: bit-identical to a build outside any scope.
  kLibTorch,
};

/// Options of `volt::init_module`:
/// `volt::init_module(volt::InitOptions().device(torch::kCUDA).dtype(torch::kBFloat16).empty(true))`
struct InitOptions {
  /// Device for tensors created without an explicit device; nullopt leaves LibTorch's default (CPU).
  TORCH_ARG(c10::optional<c10::Device>, device) = c10::nullopt;
  /// Dtype for floating tensors created without an explicit dtype; nullopt leaves float32.
  TORCH_ARG(c10::optional<c10::ScalarType>, dtype) = c10::nullopt;
  TORCH_ARG(InitMode, mode) = InitMode::kMaterialize;
  TORCH_ARG(InitRng, rng) = InitRng::kCounter;
  /// Seed of the counter-based generator; nullopt draws one from LibTorch's default generator when the
  /// scope opens, so torch::manual_seed makes runs reproducible.
  TORCH_ARG(c10::optional<uint64_t>, seed) = c10::nullopt;
  /// Definition of the counter-based generator's normal values (init_stream.h): InitStream::
  /// kPhiloxBoxMuller24 gives the values of volt before streams were versioned.
  TORCH_ARG(InitStream, stream) = kDefaultInitStream;
  /// Back CPU tensors of 2 MiB and more with transparent huge pages (first touch is ~20x cheaper).
  TORCH_ARG(bool, huge_pages) = true;

 public:
  /// Lightning's `empty_init`: true selects InitMode::kEmpty, false InitMode::kMaterialize.
  InitOptions& empty(bool empty_init) {
    mode_ = empty_init ? InitMode::kEmpty : InitMode::kMaterialize;
    return *this;
  }
};

}  // namespace volt

// volt's counter-based init generator: the value of element i of the stream (seed, key) is a pure function
// of (seed, key, i) — Philox4x32-10 (Salmon et al., SC'11, "Parallel random numbers: as easy as 1, 2, 3";
// passes TestU01 BigCrush). So a tensor fills the same on any device, with any thread count, whole or
// shard by shard, and whatever other tensors were filled or skipped before it.
#pragma once

#include "volt/init/init_stream.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>

namespace volt {

/// Names one tensor's stream: `seed` is drawn once per init scope, `key` is the tensor's creation index,
/// `stream` the definition of its normal values (init_stream.h). Records of skipped or deferred fills
/// keep the whole RandomKey, so a replay draws from the stream the scope drew from.
struct RandomKey {
  uint64_t seed = 0;
  uint64_t key = 0;
  InitStream stream = kDefaultInitStream;
};

/// Fills `out` (contiguous; float64, float32, float16 or bfloat16; CPU, or CUDA in CUDA builds) with
/// elements [first, first + out.numel()) of the uniform stream U[low, high) of `key`. This is the
/// primitive that sharded and deferred materialization call: the slices of any split concatenate to the
/// whole fill, bit for bit.
void fill_uniform_slice(at::Tensor& out, RandomKey key, int64_t first, double low, double high);

/// As fill_uniform_slice, for the normal stream N(mean, std^2) (Box–Muller on Philox outputs, as
/// key.stream defines it). Every value is defined in src/init/philox.h, and CPU and CUDA compute it bit for
/// bit alike, except float64 normals, which use the platform's double log/sin/cos and may differ from the
/// CPU's in the last bit on CUDA.
void fill_normal_slice(at::Tensor& out, RandomKey key, int64_t first, double mean, double std);

/// In-place fills of a tensor of any strides: the element stored at storage position p (in elements)
/// receives stream element p, so a view fills exactly as the same positions of its base would. They
/// write through `self` (its storage stays); a leaf that requires grad needs torch::NoGradGuard, as
/// torch::nn::init provides.
void keyed_uniform_(at::Tensor& self, RandomKey key, double low, double high);
void keyed_normal_(at::Tensor& self, RandomKey key, double mean, double std);

/// The CPU kernel the fills run here: "avx512bf16" (AVX-512 F/BW/DQ/VL with AVX512_BF16's conversion),
/// "avx512", "avx2" (AVX2 + FMA) or "x86-64". Every kernel computes the same bits; the fills use the best
/// this CPU has, or the one the environment variable VOLT_CPU_KERNEL names where that is lower (to see
/// what a CPU without AVX-512 would do).
std::string counter_rng_cpu_kernel();

/// Runs body(begin, end) over [0, n) in contiguous chunks on the threads CPU fills run on: volt's own,
/// at::get_num_threads() of them counting the caller, on both LibTorch versions. Benchmarks run their
/// memory floors on them, so that floor and fill use the machine alike.
void run_on_init_threads(int64_t n, const std::function<void(int64_t begin, int64_t end)>& body);

/// A scope's seed drawn from LibTorch's default CPU generator (so torch::manual_seed makes runs repeat).
uint64_t seed_from_libtorch();

/// True for the dtypes the kernels write (float64, float32, float16, bfloat16).
bool counter_rng_supports(c10::ScalarType dtype);

}  // namespace volt

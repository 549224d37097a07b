// CUDA kernels of the counter-based generator: grid-stride loops over Philox blocks, every value computed
// by philox.h exactly as on the CPU (this file is built with --fmad=false, so no multiply-add is fused
// behind philox.h's explicit fmas).
#include "counter_rng_kernels.h"
#include "philox.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <string>

namespace volt::detail {

// From volt/error.h (kept out of this file's includes so that it builds with only src/ on the path).
[[noreturn]] void throw_error(const char* file, int line, const std::string& message);

namespace {

namespace px = philox;

constexpr int kThreads = 256;

template <RawDtype kDtype>
__device__ __forceinline__ void store(void* out, int64_t i, float value) {
  if constexpr (kDtype == RawDtype::kFloat32)
    static_cast<float*>(out)[i] = value;
  else if constexpr (kDtype == RawDtype::kBFloat16)
    static_cast<uint16_t*>(out)[i] = px::to_bfloat16(value);
  else
    static_cast<uint16_t*>(out)[i] = px::to_half(value);
}

// One thread per Philox block (four elements, or eight for stream v2's pairs); the blocks at either end
// of [first, first + n) are cut.
template <Distribution kDistribution, RawDtype kDtype>
__global__ void float_kernel(void* out, int64_t n, uint64_t seed, uint64_t key, int64_t first, float a,
                             float b) {
  constexpr int kPerBlock = kDistribution == Distribution::kNormal16 ? 8 : 4;
  const int64_t first_block = first / kPerBlock, end_block = (first + n + kPerBlock - 1) / kPerBlock;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t block = first_block + static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       block < end_block; block += stride) {
    uint32_t x[4];
    px::stream_block(seed, key, static_cast<uint64_t>(block), x);
    float values[kPerBlock];
    if constexpr (kDistribution == Distribution::kNormal16) {
#pragma unroll
      for (int word = 0; word < 4; ++word)
        px::box_muller16(x[word], a, b, &values[2 * word], &values[2 * word + 1]);
    } else if constexpr (kDistribution == Distribution::kNormal24) {
      px::box_muller(x[0], x[1], a, b, &values[0], &values[1]);
      px::box_muller(x[2], x[3], a, b, &values[2], &values[3]);
    } else {
#pragma unroll
      for (int lane = 0; lane < 4; ++lane) values[lane] = px::uniform_float(x[lane], a, b);
    }
#pragma unroll
    for (int lane = 0; lane < kPerBlock; ++lane) {
      const int64_t i = kPerBlock * block + lane - first;
      if (i >= 0 && i < n) store<kDtype>(out, i, values[lane]);
    }
  }
}

template <bool kNormal>
__global__ void double_kernel(double* out, int64_t n, uint64_t seed, uint64_t key, int64_t first, double a,
                              double b) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const auto index = static_cast<uint64_t>(first + i);
    out[i] = kNormal ? px::normal_double(seed, key, index, a, b) : px::uniform_double(seed, key, index, a, b);
  }
}

int grid_size(int64_t work) {
  // Enough blocks to fill any GPU; the grid-stride loops cover the rest.
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((work + kThreads - 1) / kThreads, 8192)));
}

template <Distribution kDistribution>
void launch(void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key, int64_t first, double a,
            double b, void* stream) {
  if (n <= 0) return;
  auto* cuda_stream = static_cast<cudaStream_t>(stream);
  const auto fa = static_cast<float>(a), fb = static_cast<float>(b);
  const int blocks = grid_size(dtype == RawDtype::kFloat64 ? n : n / 4 + 2);
  switch (dtype) {
    case RawDtype::kFloat64:
      double_kernel<kDistribution != Distribution::kUniform>
          <<<blocks, kThreads, 0, cuda_stream>>>(static_cast<double*>(out), n, seed, key, first, a, b);
      break;
    case RawDtype::kFloat32:
      float_kernel<kDistribution, RawDtype::kFloat32>
          <<<blocks, kThreads, 0, cuda_stream>>>(out, n, seed, key, first, fa, fb);
      break;
    case RawDtype::kFloat16:
      float_kernel<kDistribution, RawDtype::kFloat16>
          <<<blocks, kThreads, 0, cuda_stream>>>(out, n, seed, key, first, fa, fb);
      break;
    case RawDtype::kBFloat16:
      float_kernel<kDistribution, RawDtype::kBFloat16>
          <<<blocks, kThreads, 0, cuda_stream>>>(out, n, seed, key, first, fa, fb);
      break;
  }
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess)
    throw_error(__FILE__, __LINE__,
                std::string("volt's counter-based CUDA fill failed to launch: ") + cudaGetErrorString(error));
}

}  // namespace

void cuda_uniform_fill(void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key, int64_t first,
                       double low, double range, void* stream) {
  launch<Distribution::kUniform>(out, dtype, n, seed, key, first, low, range, stream);
}

void cuda_normal_fill(Distribution normal, void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key,
                      int64_t first, double mean, double std, void* stream) {
  if (normal == Distribution::kNormal16)
    launch<Distribution::kNormal16>(out, dtype, n, seed, key, first, mean, std, stream);
  else
    launch<Distribution::kNormal24>(out, dtype, n, seed, key, first, mean, std, stream);
}

}  // namespace volt::detail

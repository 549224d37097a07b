// CUDA kernels of the counter-based generator: one thread per Philox block, the same philox.h arithmetic
// as the CPU (compiled with --fmad=false, so no multiply-add is fused behind our back).
#include "counter_rng_kernels.h"
#include "philox.h"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace volt::detail {
namespace {

namespace px = philox;

template <bool kNormal>
__global__ void float_family_kernel(void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key,
                                    int64_t first, float a, float b) {
  const int64_t first_block = first / 4, last_block = (first + n - 1) / 4;
  for (int64_t block = first_block + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       block <= last_block; block += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t x[4];
    float values[4];
    px::stream_block(seed, key, static_cast<uint64_t>(block), x);
    if (kNormal)
      px::normal4(x, a, b, values);
    else
      px::uniform4(x, a, b, values);
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t element = 4 * block + lane;
      if (element < first || element >= first + n) continue;
      const int64_t i = element - first;
      if (dtype == RawDtype::kFloat32)
        static_cast<float*>(out)[i] = values[lane];
      else if (dtype == RawDtype::kBFloat16)
        static_cast<uint16_t*>(out)[i] = px::to_bfloat16(values[lane]);
      else
        static_cast<uint16_t*>(out)[i] = px::to_half(values[lane]);
    }
  }
}

template <bool kNormal>
__global__ void double_kernel(double* out, int64_t n, uint64_t seed, uint64_t key, int64_t first, double a,
                              double b) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const auto element = static_cast<uint64_t>(first + i);
    uint32_t x[4];
    px::stream_block(seed, key, element / 2, x);
    const bool odd = element % 2 == 1;
    if (!kNormal) {
      const double u = odd ? px::unit_double(x[2], x[3]) : px::unit_double(x[0], x[1]);
      out[i] = fma(u, b, a);
    } else {
      const double u1 = px::unit_double(x[0], x[1]) + 1.1102230246251565e-16;
      const double u2 = px::unit_double(x[2], x[3]);
      const double radius = sqrt(-2.0 * log(u1));
      const double angle = 6.283185307179586477 * u2;
      out[i] = fma(radius * (odd ? sin(angle) : cos(angle)), b, a);
    }
  }
}

void check_launch(const char* what) {
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(error));
}

template <bool kNormal>
void launch(void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key, int64_t first, double a,
            double b, void* stream) {
  if (n <= 0) return;
  constexpr int kThreads = 256;
  const int64_t work = dtype == RawDtype::kFloat64 ? n : n / 4 + 2;
  const int blocks = static_cast<int>(std::min<int64_t>((work + kThreads - 1) / kThreads, 65535));
  auto* cuda_stream = static_cast<cudaStream_t>(stream);
  if (dtype == RawDtype::kFloat64)
    double_kernel<kNormal>
        <<<blocks, kThreads, 0, cuda_stream>>>(static_cast<double*>(out), n, seed, key, first, a, b);
  else
    float_family_kernel<kNormal><<<blocks, kThreads, 0, cuda_stream>>>(
        out, dtype, n, seed, key, first, static_cast<float>(a), static_cast<float>(b));
  check_launch("volt counter-based fill kernel");
}

}  // namespace

void cuda_uniform_fill(void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key, int64_t first,
                       double low, double range, void* stream) {
  launch<false>(out, dtype, n, seed, key, first, low, range, stream);
}

void cuda_normal_fill(void* out, RawDtype dtype, int64_t n, uint64_t seed, uint64_t key, int64_t first,
                      double mean, double std, void* stream) {
  launch<true>(out, dtype, n, seed, key, first, mean, std, stream);
}

}  // namespace volt::detail
